#!/usr/bin/env bash
# quarkfs "real clients" check: read quarkfs views with the real safetensors / transformers /
# torch stack on the GPU machine (which has no libfuse and no network).
#
#   scripts/gpu-check.sh bundle    here: build quarkfs and fill .gpu/ (git-ignored) with
#                                  bin/quarkfs, bin/fusermount3, lib/<the shared libraries the
#                                  GPU image lacks, named by soname>, models/stories260K-{bf16,f16,f32}
#   scripts/gpu-check.sh command   print the device `run` call that runs the check there
#   scripts/gpu-check.sh remote    on the GPU machine (through `run`, carry [".gpu"]): generate the
#                                  synthetic models on local disk, run scripts/gpu_check.py, write
#                                  gpu-check-report.{md,json}, run.log, quarkfs.log, env.txt to $OUT
#
# The summary of the last run is kept in scripts/gpu-check-results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GPU=$ROOT/.gpu
MODELS_SRC=${QUARKFS_MODELS:-$ROOT/../shared/models}
LIBS="libfuse3.so.3 libjansson.so.4 libgomp.so.1"
STORIES="stories260K-bf16 stories260K-f16 stories260K-f32"
RUN_TIMEOUT=${GPU_CHECK_TIMEOUT:-440}     # inside the run tool's 480 s limit
# GPU_CHECK_ARGS: extra gpu_check.py arguments for `remote` (e.g. "--specs int8,fp8")

bundle() {
    ninja -C "$ROOT/build" >/dev/null
    git -C "$ROOT" check-ignore -q .gpu/x || { echo "gpu-check: .gpu/ is not git-ignored" >&2; exit 1; }
    [ -d "$GPU" ] && chmod -R u+w "$GPU" && rm -rf "$GPU"
    mkdir -p "$GPU/bin" "$GPU/lib" "$GPU/models"
    cp "$ROOT/build/quarkfs" "$GPU/bin/quarkfs"
    for lib in $LIBS; do
        path=$(ldd "$ROOT/build/quarkfs" | awk -v l="$lib" '$1 == l { print $3 }')
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
    [ "$size" -lt 60 ] || { echo "gpu-check: bundle too large for carry (64 MiB)" >&2; exit 1; }
}

command_line() {
    echo 'run(command="bash scripts/gpu-check.sh remote", carry=[".gpu"], timeout_s=480)'
}

remote() {
    : "${OUT:?remote needs OUT, the output folder of the device machine}"
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
        python3 scripts/genmodel.py "$work/llama-bf16" --preset llama --layers 2 &&
        python3 scripts/genmodel.py "$work/awkward-bf16" --preset awkward &&
        python3 scripts/genmodel.py "$work/awkward-f16" --preset awkward --dtype f16
    } 2>&1 | tee "$OUT/genmodel.log"
    echo "genmodel: $((SECONDS - t0)) s" | tee -a "$OUT/genmodel.log"
    local models=()
    for m in $STORIES; do models+=(--model "$m=$ROOT/.gpu/models/$m"); done
    models+=(--model "llama-bf16=$work/llama-bf16")
    models+=(--model "awkward-bf16=$work/awkward-bf16" --no-forward awkward-bf16)
    models+=(--model "awkward-f16=$work/awkward-f16" --no-forward awkward-f16)
    set +e
    PYTHONUNBUFFERED=1 timeout -k 10 "$RUN_TIMEOUT" python3 scripts/gpu_check.py \
        --quarkfs .gpu/bin/quarkfs --libdir .gpu/lib --bindir .gpu/bin --out "$OUT" \
        "${models[@]}" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/run.log"
    local rc=${PIPESTATUS[0]}
    set -e
    echo "gpu_check.py exit status $rc" | tee -a "$OUT/run.log"
    # leave no mount behind (a killed run could)
    awk '$3 ~ /^fuse/ && $2 ~ /quarkfs-mnt-/ { print $2 }' /proc/mounts | while read -r m; do
        umount -l "$m" || true
    done
    return "$rc"
}

case "${1:-}" in
    bundle) bundle; command_line ;;
    command) command_line ;;
    remote) remote ;;
    *) echo "usage: $0 bundle|command|remote" >&2; exit 2 ;;
esac
