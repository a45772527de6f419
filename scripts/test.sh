#!/usr/bin/env bash
# The test command: installs the dependencies, builds from scratch (warnings are errors) and runs
# the whole test suite, then the unit and integration suites again under ASan + UBSan, then each
# libFuzzer target (tests/fuzz) for FUZZ_SECONDS (default 60) on its seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
rm -rf build-test build-asan build-fuzz
meson setup build-test -Dwerror=true --buildtype=release
ninja -C build-test
meson test -C build-test --print-errorlogs
if [ "${QUARKFS_SKIP_SANITIZERS:-0}" != 1 ]; then
  meson setup build-asan -Dwerror=true --buildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false
  ninja -C build-asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs
fi
if [ "${QUARKFS_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash tests/fuzz/run.sh
fi
