#!/usr/bin/env bash
# The test command: installs the dependencies (Debian packages, libfuse 3.17 into build-deps/,
# and the real loaders from PyPI into build-venv/), builds from scratch (warnings are errors) and
# runs the test suite: unit, integration (real mounts), fuzz replays, the loader tests (real
# loaders reading real mounts) and cluster-quick (three GlusterFS nodes sharing one cache) —
# not the full cluster suite, whose fault cases wait on Gluster's reconnect timers on a loaded
# machine: `meson test --suite cluster` or scripts/bench-cluster --tests (DEVELOPMENT.md);
# then the unit, integration and fuzz-replay suites again under ASan + UBSan, the
# concurrency tests under ThreadSanitizer, then each libFuzzer target (tests/fuzz) for
# FUZZ_SECONDS (default 60) on its seed corpus. Each skipped test's reason is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --loaders --cluster
rm -rf build-test build-314 build-asan build-tsan build-fuzz
# What was skipped and why: the SKIP lines the test scripts printed (a skip is not a pass).
skip_summary() {
  local log=$1/meson-logs/testlog.txt n
  n=$(grep -c '^SKIP ' "$log" || true)
  echo "== $1: $n test case(s) skipped"
  grep '^SKIP ' "$log" | sed 's/^/  /' || true
}
meson setup build-test -Dwerror=true --buildtype=release
ninja -C build-test
meson test -C build-test --print-errorlogs --no-suite cluster
skip_summary build-test
# The build on Debian's libfuse (3.14: no FUSE passthrough, view files through the channel) must
# build and pass too; build-test links the static libfuse 3.17 of scripts/libfuse.sh.
meson setup build-314 -Dwerror=true --buildtype=release -Dlibfuse=system
ninja -C build-314
meson test -C build-314 --print-errorlogs --suite unit
meson test -C build-314 --print-errorlogs integration-view_files integration-deploy \
  integration-reads
skip_summary build-314
if [ "${QUARKFS_SKIP_SANITIZERS:-0}" != 1 ]; then
  meson setup build-asan -Dwerror=true --buildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false
  ninja -C build-asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs --suite unit --suite integration --suite fuzz
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
