#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in their own build directory and runs each for a
# bounded time on a copy of its seed corpus (the repository is not modified). Fails if any target
# finds a crash, a sanitizer error, a violated invariant, a leak, a timeout or an out-of-memory.
#
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_TARGETS  targets to run (default "safetensors rewrite plan")
#   FUZZ_BUILD    build directory (default build-fuzz; reused if it is already configured)
#   FUZZ_ARGS     extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
#   FUZZ_KEEP     a directory to keep each target's grown corpus and log in (default: none)
# Crash inputs are kept in $FUZZ_BUILD/fuzz-artifacts/<target>/ (until that target's next run) and
# printed (hex) in the log.
# Reproduce one with: $FUZZ_BUILD/tests/fuzz/fuzz_<target> <file>
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-safetensors rewrite plan}
build=${FUZZ_BUILD:-build-fuzz}
case $build in /*) artifacts=$build/fuzz-artifacts ;; *) artifacts=$root/$build/fuzz-artifacts ;; esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" -Dfuzz=true -Dtests=false -Dwerror=true \
    --buildtype=debugoptimized >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log"; exit 1; }
fi
bins=()
for t in $targets; do bins+=("tests/fuzz/fuzz_$t"); done
ninja -C "$build" "${bins[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
failed=()
for t in $targets; do
  src=tests/fuzz/corpus/$t
  rm -rf "${artifacts:?}/$t"
  mkdir -p "$tmp/$t/corpus" "$tmp/$t/regressions" "$artifacts/$t"
  cp "$src"/* "$tmp/$t/corpus/"
  find "tests/fuzz/regressions/$t" -maxdepth 1 -type f ! -name '.*' -exec cp {} "$tmp/$t/regressions/" \;
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
  echo "=== fuzz_$t: $seconds s, seeds: $(ls "$tmp/$t/corpus" | wc -l) corpus + $(ls "$tmp/$t/regressions" | wc -l) regressions"
  log=$tmp/$t/log
  rc=0
  # The first corpus directory receives new inputs; the regressions are read only.
  # shellcheck disable=SC2086
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t/" "${dict[@]}" \
    ${FUZZ_ARGS:-} "$tmp/$t/corpus" "$tmp/$t/regressions" >"$log" 2>&1 || rc=$?
  # The summary: the last status line and the final stats.
  grep -E '^#[0-9]+' "$log" | tail -1 || true
  grep -E '^stat::' "$log" || true
  echo "    corpus grown to $(ls "$tmp/$t/corpus" | wc -l) inputs"
  if [ -n "${FUZZ_KEEP:-}" ]; then
    mkdir -p "$FUZZ_KEEP/$t"
    cp -r "$tmp/$t/corpus" "$FUZZ_KEEP/$t/" && cp "$log" "$FUZZ_KEEP/$t/log"
  fi
  if [ "$rc" != 0 ]; then
    echo "!!! fuzz_$t failed (exit $rc); the end of its log:"
    tail -n 80 "$log"
    for a in "$artifacts/$t"/*; do
      [ -f "$a" ] || continue
      echo "--- $a ($(stat -c %s "$a") bytes), first 4 KiB in hex:"
      head -c 4096 "$a" | od -A d -t x1z -v | head -n 260
    done
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs under $artifacts/)" >&2
  exit 1
fi
echo "fuzzing: no crash in $targets ($seconds s each)"
