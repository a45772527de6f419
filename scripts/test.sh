#!/usr/bin/env bash
# The test command: installs the dependencies, builds from scratch (warnings are errors) and runs
# the whole test suite, then the unit and integration suites again under ASan + UBSan, the
# concurrency tests under ThreadSanitizer, then each libFuzzer target (tests/fuzz) for
# FUZZ_SECONDS (default 60) on its seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
rm -rf build-test build-asan build-tsan build-fuzz
meson setup build-test -Dwerror=true --buildtype=release
ninja -C build-test
meson test -C build-test --print-errorlogs
# meson counts skips; each test file lists its own with the reason (e.g. no ../shared models)
grep -h "^  SKIP " build-test/meson-logs/testlog.txt || true
if [ "${QUARKFS_SKIP_SANITIZERS:-0}" != 1 ]; then
  meson setup build-asan -Dwerror=true --buildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false
  ninja -C build-asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs
  # ThreadSanitizer: the concurrent read tests, the load test (10 s) and the fault tests.
  # OMP_NUM_THREADS=1: libgomp is not built with TSan, so any OpenMP team gives false reports;
  # with one thread there is no team, and TSan checks the daemon's own threads.
  meson setup build-tsan -Dwerror=true --buildtype=debugoptimized -Db_sanitize=thread \
    -Db_lundef=false
  ninja -C build-tsan
  OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C build-tsan --print-errorlogs integration-reads \
      --test-args 'threads_random_tensors threads_same_tensor big/o_direct_threads single_threaded_loop'
  OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 QUARKFS_LOAD_SECONDS=10 \
    meson test -C build-tsan --print-errorlogs integration-load integration-faults
fi
if [ "${QUARKFS_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash tests/fuzz/run.sh
fi
