#!/usr/bin/env bash
# A/B of the first load with the disk cache on the GPU machine: tests/gpu/repeat_load.py's rows
# `off` and `first` (cache=off, then the first load that fills an empty cache; ROWS= names
# others; ROWS_LAST= the last binary's, e.g. off,first,off_write to measure the limit row once
# per round), for two or more quarkfs binaries in alternation
# (A B A B ...), one repetition each per round, both readers, the same model and work
# directory. After each first load only the writer's queue is waited for (no `quarkfs warm`).
# Writes OUT/ab-<round>-<A|B|C...>.json (repeat_load.json of each run) and OUT/ab.log.
#
#   [ROWS=off,first] [ROWS_LAST=...] [ROUNDS=2] bash tests/gpu/first_load_ab.sh BIN_A BIN_B [BIN_C ...]
#                                                          (on the GPU machine, OUT set)
#
# Bundle the current build with tests/gpu/gpu-check.sh bundle, others with
# tests/gpu/gpu-check.sh rev REV NAME (into .gpu/bin/NAME).
set -uo pipefail
: "${OUT:?OUT must name the output folder}"
[ $# -ge 2 ] || { echo "usage: first_load_ab.sh BIN_A BIN_B [BIN_C ...]" >&2; exit 2; }
ROWS=${ROWS:-off,first} ROUNDS=${ROUNDS:-2}
ROWS_LAST=${ROWS_LAST:-$ROWS}
export PYTHONUNBUFFERED=1
sides=(A B C D E F)
for r in $(seq 1 "$ROUNDS"); do
    i=0
    for bin in "$@"; do
        side=${sides[$i]}; i=$((i + 1))
        rows=$ROWS; [ "$i" -eq $# ] && rows=$ROWS_LAST
        tmp=/tmp/qfs-ab/$r-$side
        echo "first_load_ab: round $r, $side = $bin" | tee -a "$OUT/ab.log"
        python3 tests/gpu/repeat_load.py --quarkfs "$bin" --out "$tmp" --rows "$rows" \
            --reps 1 --readers hf,cat --after-first writer 2>&1 | tee -a "$OUT/ab.log"
        cp "$tmp/repeat_load.json" "$OUT/ab-$r-$side.json" 2>/dev/null ||
            echo "first_load_ab: no result for round $r $side" | tee -a "$OUT/ab.log"
    done
done
