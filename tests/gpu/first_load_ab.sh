#!/usr/bin/env bash
# A/B of the first load with the disk cache on the GPU machine: tests/gpu/repeat_load.py's rows
# `off` and `first` (cache=off, then the first load that fills an empty cache), for two quarkfs
# binaries in alternation (A B A B ...), one repetition each per round, both readers, the same
# model and work directory. Writes OUT/ab-<round>-<A|B>.json (repeat_load.json of each run)
# and OUT/ab.log.
#
#   bash tests/gpu/first_load_ab.sh BIN_A BIN_B [ROUNDS]     (on the GPU machine, OUT set)
#
# Bundle both binaries with tests/gpu/gpu-check.sh bundle (B: copy another build into .gpu/bin).
set -uo pipefail
A=$1 B=$2 ROUNDS=${3:-2}
: "${OUT:?OUT must name the output folder}"
export PYTHONUNBUFFERED=1
for r in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=$A; [ "$side" = B ] && bin=$B
        tmp=/tmp/qfs-ab/$r-$side
        python3 tests/gpu/repeat_load.py --quarkfs "$bin" --out "$tmp" --rows off,first \
            --reps 1 --readers hf,cat 2>&1 | tee -a "$OUT/ab.log"
        cp "$tmp/repeat_load.json" "$OUT/ab-$r-$side.json" 2>/dev/null ||
            echo "first_load_ab: no result for round $r $side" | tee -a "$OUT/ab.log"
    done
done
