#!/usr/bin/env bash
# quarkfs "real clients" check: read quarkfs views with the real safetensors / transformers /
# torch stack on the GPU machine (which has no libfuse and no network).
#
#   tests/gpu/gpu-check.sh bundle    here: build quarkfs and fill .gpu/ (git-ignored) with
#                                    bin/quarkfs, bin/fusermount3, lib/<the shared libraries
#                                    the GPU image lacks, named by soname>,
#                                    models/stories260K-{bf16,f16,f32}
#   tests/gpu/gpu-check.sh rev REV NAME
#                                    here, after bundle: build git revision REV (a commit or a
#                                    branch) in a temporary worktree, release, on the same
#                                    static libfuse, into .gpu/bin/NAME: the other side of an
#                                    A/B (tests/gpu/first_load_ab.sh); the libraries in .gpu/lib
#                                    serve it too
#   tests/gpu/gpu-check.sh command   print the commands that run the check on the GPU machine
#   tests/gpu/gpu-check.sh stage DIR copy this script, gpu_check.py, genmodel.py, stfile.py (at
#                                    their paths under tests/) and .gpu/ into DIR, a git-ignored
#                                    folder of another checkout (when the remote runner ships
#                                    that checkout, not this worktree), and print the command
#                                    to run there
#   tests/gpu/gpu-check.sh bench     on the GPU machine (.gpu/ from `bundle` copied there, OUT
#                                    set): tests/gpu/gpu-bench.py, the cold/warm read and
#                                    from_pretrained benchmark (BENCHMARKS.md "GPU machine");
#                                    writes gpu-bench.{md,json,log}, load-*.log, quarkfs.log,
#                                    env.txt to $OUT
#   tests/gpu/gpu-check.sh remote    on the GPU machine (.gpu/ there, OUT set): generate the
#                                    synthetic models on local disk, run tests/gpu/gpu_check.py,
#                                    write gpu-check-report.{md,json}, run.log, quarkfs.log,
#                                    env.txt, genmodel.log to $OUT
#
# Rows, in this order (a row = one mount of one model with one spec x format):
#   stories260K-bf16 and syn-bf16 with every valid pair of `quarkfs --list-specs` (33 each);
#   syn-bf16 = genmodel --hidden 512 --intermediate 1536 --layers 2 --heads 8 --kv-heads 4
#   --vocab 2048 --shards 2 --untied (every dimension a multiple of 128, so every spec quantizes
#   every projection), then rows 0..127 of layer 0's q_proj and columns 0..127 of layer 1's
#   down_proj zeroed (all-zero groups, channels, 128x128 blocks and MX blocks);
#   then the original 5 specs in format quark on stories260K-f16/-f32, awkward-bf16/-f16 and
#   llama-bf16 (1.2 GB). Rows not started by GPU_CHECK_DEADLINE seconds are skipped (listed).
#
# The summary of the last run is kept in doc/gpu-check-results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GPU=$ROOT/.gpu
MODELS_SRC=${QUARKFS_MODELS:-$ROOT/../shared/models}
LIBS="libfuse3.so.3 libjansson.so.4 libyajl.so.2 libgomp.so.1 libxxhash.so.0"
STORIES="stories260K-bf16 stories260K-f16 stories260K-f32"
RUN_TIMEOUT=${GPU_CHECK_TIMEOUT:-420}     # inside a 480 s limit per remote command
DEADLINE=${GPU_CHECK_DEADLINE:-330}       # no new row after this many seconds of gpu_check.py
# GPU_CHECK_ARGS: extra gpu_check.py arguments for `remote` (e.g. "--specs int8,fp8")

bundle() {
    ninja -C "$ROOT/build" >/dev/null
    git -C "$ROOT" check-ignore -q .gpu/x || { echo "gpu-check: .gpu/ is not git-ignored" >&2; exit 1; }
    [ -d "$GPU" ] && chmod -R u+w "$GPU" && rm -rf "$GPU"
    mkdir -p "$GPU/bin" "$GPU/lib" "$GPU/models"
    cp "$ROOT/build/quarkfs" "$GPU/bin/quarkfs"
    for lib in $LIBS; do
        path=$(ldd "$ROOT/build/quarkfs" | awk -v l="$lib" '$1 == l { print $3 }')
        # A build on the static libfuse of scripts/libfuse.sh has no libfuse3.so to carry.
        [ "$lib" = libfuse3.so.3 ] && [ -z "$path" ] && continue
        [ -n "$path" ] && [ -e "$path" ] || { echo "gpu-check: ldd finds no $lib" >&2; exit 1; }
        cp -L "$path" "$GPU/lib/$lib"          # the real file, named by its soname
    done
    cp -L "$(command -v fusermount3)" "$GPU/bin/fusermount3"
    for m in $STORIES; do
        cp -rL "$MODELS_SRC/$m" "$GPU/models/$m"
    done
    cp -L "$MODELS_SRC/LICENSE-stories260K.txt" "$GPU/models/" 2>/dev/null || true
    chmod -R u+w "$GPU"
    size=$(du -sm "$GPU" | cut -f1)
    echo "gpu-check: bundle $GPU ready (${size} MiB):"
    (cd "$GPU" && find . -type f | sort | sed 's/^/  /')
    [ "$size" -lt 60 ] || { echo "gpu-check: bundle too large to ship (64 MiB limit)" >&2; exit 1; }
}

# Another revision's binary beside the bundle's, for A/B runs.
rev() {
    local rev=$1 name=$2 wt
    [ -x "$GPU/bin/quarkfs" ] || { echo "gpu-check: run bundle first" >&2; exit 1; }
    wt=$(mktemp -d /tmp/quarkfs-rev-XXXXXX)
    git -C "$ROOT" worktree add --detach "$wt" "$rev" >/dev/null
    trap 'git -C "$ROOT" worktree remove --force "$wt"' RETURN
    [ -d "$ROOT/build-deps" ] && ln -s "$ROOT/build-deps" "$wt/build-deps"
    meson setup "$wt/build" "$wt" -Dtests=false --buildtype=release >/dev/null
    ninja -C "$wt/build" quarkfs >/dev/null
    cp "$wt/build/quarkfs" "$GPU/bin/$name"
    echo "gpu-check: $rev ($(git -C "$ROOT" rev-parse --short "$rev")) built into $GPU/bin/$name"
}

command_line() {
    echo 'on the GPU machine, in a checkout with .gpu/ copied in and OUT set to an output folder:'
    echo '  bash tests/gpu/gpu-check.sh remote    # the check'
    echo '  bash tests/gpu/gpu-check.sh bench     # the benchmark'
}

# The benchmark (tests/gpu/gpu-bench.py) on the GPU machine. GPU_BENCH_ARGS: extra arguments
# (e.g. "--reps 5"); GPU_BENCH_DEADLINE: no new measurement after this many seconds.
bench() {
    : "${OUT:?bench needs OUT, the folder for its results}"
    cd "$ROOT"
    local work=${GPU_BENCH_WORK:-/tmp/quarkfs-gpu-bench}
    rm -rf "$work" && mkdir -p "$work"
    {
        echo "== uname"; uname -a
        echo "== nvidia-smi"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
        echo "== lscpu"; lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)' || true
        echo "== ldd .gpu/bin/quarkfs (LD_LIBRARY_PATH=.gpu/lib)"
        LD_LIBRARY_PATH=$ROOT/.gpu/lib ldd .gpu/bin/quarkfs || true
        echo "== df $work"; df -hT "$work" || true
        echo "== free"; free -g || true
    } >"$OUT/env.txt" 2>&1
    set +e
    PYTHONUNBUFFERED=1 timeout -k 10 "${GPU_BENCH_TIMEOUT:-440}" python3 tests/gpu/gpu-bench.py \
        --quarkfs .gpu/bin/quarkfs --libdir .gpu/lib --work "$work" --out "$OUT" \
        --deadline "${GPU_BENCH_DEADLINE:-340}" ${GPU_BENCH_ARGS:-}
    local rc=$?
    set -e
    echo "gpu-bench.py exit status $rc"
    awk -v w="$work/quarkfs-mnt-" '$3 ~ /^fuse/ && index($2, w) == 1 { print $2 }' /proc/mounts |
        while read -r m; do umount -l "$m" || true; done
    cat "$OUT/gpu-bench.md" 2>/dev/null || true
    return "$rc"
}

remote() {
    : "${OUT:?remote needs OUT, the folder for its results}"
    cd "$ROOT"
    local work=${GPU_CHECK_WORK:-/tmp/quarkfs-gpu-check}
    rm -rf "$work" && mkdir -p "$work"
    {
        echo "== uname"; uname -a
        echo "== nvidia-smi"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
        echo "== python"; command -v python3; python3 --version
        echo "== ldd .gpu/bin/quarkfs (LD_LIBRARY_PATH=.gpu/lib)"
        LD_LIBRARY_PATH=$ROOT/.gpu/lib ldd .gpu/bin/quarkfs || true
        echo "== quarkfs --version"; LD_LIBRARY_PATH=$ROOT/.gpu/lib .gpu/bin/quarkfs --version || true
        echo "== /dev/fuse"; ls -l /dev/fuse || true
        echo "== umount"; command -v umount || true
        echo "== df $work"; df -h "$work" || true
        echo "== nproc"; nproc
    } >"$OUT/env.txt" 2>&1
    local t0=$SECONDS
    {
        python3 tests/fixtures/genmodel.py "$work/syn-bf16" --hidden 512 --intermediate 1536 \
            --layers 2 --heads 8 --kv-heads 4 --vocab 2048 --shards 2 --untied &&
        python3 tests/gpu/gpu_check.py --zero-blocks "$work/syn-bf16" &&
        python3 tests/fixtures/genmodel.py "$work/awkward-bf16" --preset awkward &&
        python3 tests/fixtures/genmodel.py "$work/awkward-f16" --preset awkward --dtype f16 &&
        python3 tests/fixtures/genmodel.py "$work/llama-bf16" --preset llama --layers 2
    } 2>&1 | tee "$OUT/genmodel.log"
    echo "genmodel: $((SECONDS - t0)) s" | tee -a "$OUT/genmodel.log"
    local models=(--model "stories260K-bf16=$ROOT/.gpu/models/stories260K-bf16"
                  --model "syn-bf16=$work/syn-bf16"
                  --all-pairs stories260K-bf16 --all-pairs syn-bf16)
    for m in stories260K-f16 stories260K-f32; do models+=(--model "$m=$ROOT/.gpu/models/$m"); done
    models+=(--model "awkward-bf16=$work/awkward-bf16" --no-forward awkward-bf16)
    models+=(--model "awkward-f16=$work/awkward-f16" --no-forward awkward-f16)
    models+=(--model "llama-bf16=$work/llama-bf16")
    set +e
    PYTHONUNBUFFERED=1 timeout -k 10 "$RUN_TIMEOUT" python3 tests/gpu/gpu_check.py \
        --quarkfs .gpu/bin/quarkfs --libdir .gpu/lib --bindir .gpu/bin --out "$OUT" \
        --deadline "$DEADLINE" "${models[@]}" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/run.log"
    local rc=${PIPESTATUS[0]}
    set -e
    echo "gpu_check.py exit status $rc" | tee -a "$OUT/run.log"
    # leave no mount behind (a killed run could)
    awk '$3 ~ /^fuse/ && $2 ~ /quarkfs-mnt-/ { print $2 }' /proc/mounts | while read -r m; do
        umount -l "$m" || true
    done
    return "$rc"
}

stage() {
    local dest=${1:?stage needs DIR, a git-ignored folder of the checkout the remote runner ships}
    [ -d "$GPU" ] || { echo "gpu-check: run \`$0 bundle\` first" >&2; exit 1; }
    local top rel
    top=$(git -C "$(dirname "$dest")" rev-parse --show-toplevel)
    mkdir -p "$dest"
    git -C "$top" check-ignore -q "$dest/x" || { echo "gpu-check: $dest is not git-ignored" >&2; exit 1; }
    rm -rf "${dest:?}/tests" "${dest:?}/.gpu"
    mkdir -p "$dest/tests/gpu" "$dest/tests/fixtures" "$dest/tests/pylib"
    cp "$ROOT/tests/gpu/gpu-check.sh" "$ROOT/tests/gpu/gpu_check.py" "$dest/tests/gpu/"
    cp "$ROOT/tests/fixtures/genmodel.py" "$dest/tests/fixtures/"
    cp "$ROOT/tests/pylib/stfile.py" "$dest/tests/pylib/"
    cp -r "$GPU" "$dest/.gpu"
    rel=$(realpath --relative-to="$top" "$dest")
    echo "gpu-check: staged into $dest ($(du -sm "$dest" | cut -f1) MiB)"
    echo "on the GPU machine ($rel shipped, OUT set): cd $rel && bash tests/gpu/gpu-check.sh remote"
}

case "${1:-}" in
    bundle) bundle; command_line ;;
    command) command_line ;;
    stage) stage "${2:-}" ;;
    rev) [ $# -eq 3 ] || { echo "usage: $0 rev REV NAME" >&2; exit 2; }; rev "$2" "$3" ;;
    remote) remote ;;
    bench) bench ;;
    *) echo "usage: $0 bundle|rev REV NAME|command|stage DIR|remote|bench" >&2; exit 2 ;;
esac
