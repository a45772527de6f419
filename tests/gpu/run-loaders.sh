#!/usr/bin/env bash
# The device-side entry of the real-loader run (tests/gpu/loaders_gpu.py); runs on the GPU
# machine through the device tool, as root, from the repository root. Steps, in the order given:
#   stash    move the carried vLLM parts (.gpu-vllm/partN/, made here by fetch-wheels.sh) to
#            /tmp/qfs-parts: /tmp outlives a call while the machine stays warm, the carry does not
#   install  join the parts, check the sha256, unpack into /tmp/site (PYTHONPATH for vLLM)
#   big      Llama-3.1-8B-shaped model through a fp8-block mount (loaders_gpu.py big)
#   vllm     vLLM from mounts / exports / the dense source (loaders_gpu.py vllm); installs first
#            if /tmp/site is not there yet (carry .gpu-vllm/hf too for the mxfp4 view: amd-quark)
#   hf       transformers from mounts (quark, compressed-tensors, fp8) with .gpu-vllm/hf wheels
# e.g.  run(command="bash tests/gpu/run-loaders.sh stash big",
#           carry=[".gpu", ".gpu-vllm/part0", ".gpu-vllm/site.tar.sha256"])  (doc/loaders-gpu.md)
# Needs the quarkfs bundle in .gpu/ (tests/gpu/gpu-check.sh bundle). Reports land in $OUT.
# Environment: VLLM_VIEWS / HF_VIEWS (spec/format,... to run only those), VLLM_DEADLINE,
# HF_DEADLINE, BIG_LAYERS, VLLM_STORIES=1 (add stories260K-bf16 to the vLLM run).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
: "${OUT:?run-loaders needs OUT, the output folder of the device machine}"
PARTS=/tmp/qfs-parts
WORK=/tmp/qfs-loaders
mkdir -p "$PARTS" "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
Q=(--quarkfs .gpu/bin/quarkfs --libdir "$ROOT/.gpu/lib" --bindir "$ROOT/.gpu/bin" --work "$WORK"
   --out "$OUT")
t0=$SECONDS

envinfo() {
    {
        echo "== date"; date -u
        echo "== nvidia-smi"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        echo "== python"; python3 --version
        python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|safetensors|triton|numpy|accelerate|pydantic|compressed|amd-quark|vllm) '
        echo "== nproc"; nproc
        echo "== df /tmp"; df -h /tmp
        echo "== free"; free -g
        echo "== parts"; ls -l "$PARTS"
    } >>"$OUT/env.txt" 2>&1
}

stash() {
    for p in .gpu-vllm/part*/site.tar.part*; do
        [ -e "$p" ] || continue
        mv -f "$p" "$PARTS/" && echo "stash: $(basename "$p") $(stat -c %s "$PARTS/$(basename "$p")") B"
    done
    [ -e .gpu-vllm/site.tar.sha256 ] && cp .gpu-vllm/site.tar.sha256 "$PARTS/"
    ls -l "$PARTS"
}

install() {
    [ -d /tmp/site/vllm ] && { echo "install: /tmp/site already there"; return 0; }
    local s=$SECONDS
    (cd "$PARTS" && cat site.tar.part? > site.tar && sha256sum -c site.tar.sha256) || {
        echo "install: parts incomplete or damaged:"; ls -l "$PARTS"; return 1; }
    mkdir -p /tmp/site && tar -C /tmp/site -xzf "$PARTS/site.tar" && rm -f "$PARTS/site.tar"
    # vllm.vllm_flash_attn raises ImportError without the FlashAttention libraries (not carried),
    # and the model registry imports it while inspecting LlamaForCausalLM even when another
    # attention backend is chosen: let the package import, its kernels stay unavailable.
    sed -i 's/^if not (FA2_AVAILABLE or FA3_AVAILABLE):/if False:  # quarkfs: FA not carried/' \
        /tmp/site/vllm/vllm_flash_attn/__init__.py
    echo "install: /tmp/site in $((SECONDS - s)) s ($(du -sm /tmp/site | cut -f1) MiB)"
}

unmount_all() {
    awk '$3 ~ /^fuse/ && $2 ~ /quarkfs-mnt-/ { print $2 }' /proc/mounts |
        while read -r m; do umount -l "$m" || true; done
}

big() {
    envinfo
    timeout -k 10 "${BIG_TIMEOUT:-420}" python3 tests/gpu/loaders_gpu.py big "${Q[@]}" \
        --big-layers "${BIG_LAYERS:-32}" --run-timeout 200 >"$OUT/big.log" 2>&1
    echo "big: exit $? after $((SECONDS - t0)) s"
    unmount_all
    rm -rf "$WORK/llama8b-bf16" "$WORK/llama8b-export"
    tail -n 15 "$OUT/big.log"; cat "$OUT/big.md" 2>/dev/null
}

vllm() {
    install || return 1
    envinfo
    rm -rf "$WORK/syn-bf16"
    python3 tests/fixtures/genmodel.py "$WORK/syn-bf16" --hidden 512 --intermediate 1536 \
        --layers 2 --heads 8 --kv-heads 4 --vocab 2048 --shards 2 --untied >"$OUT/genmodel.log" 2>&1 ||
        { echo "genmodel failed"; cat "$OUT/genmodel.log"; return 1; }
    local models=(--model "syn-bf16=$WORK/syn-bf16")
    # stories260K's head_dim 8 is below what the Triton and FlexAttention backends take
    [ "${VLLM_STORIES:-0}" = 1 ] && models+=(--model "stories260K-bf16=$ROOT/.gpu/models/stories260K-bf16")
    # vLLM's quark method imports amd-quark for MX-FP4 only: add it when the hf wheels travel
    if [ ! -d /tmp/quarksite ] && ls .gpu-vllm/hf/amd_quark-*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/quarksite .gpu-vllm/hf/amd_quark-*.whl .gpu-vllm/hf/onnxslim-*.whl
    fi
    PYTHONPATH=/tmp/site:/tmp/quarksite TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
        timeout -k 10 "${VLLM_TIMEOUT:-540}" python3 tests/gpu/loaders_gpu.py vllm \
        "${Q[@]}" "${models[@]}" ${VLLM_VIEWS:+--views "$VLLM_VIEWS"} \
        --deadline "${VLLM_DEADLINE:-440}" --run-timeout 120 >"$OUT/vllm.log" 2>&1
    echo "vllm: exit $? after $((SECONDS - t0)) s"
    unmount_all
    grep -E '^\[ *[0-9.]+\]' "$OUT/vllm.log" | tail -n 40
    cat "$OUT/vllm.md" 2>/dev/null | head -c 6000
}

hf() {
    envinfo
    if [ ! -d /tmp/hfsite ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/hfsite \
            .gpu-vllm/hf/*.whl || { echo "hf: pip install failed"; return 1; }
    fi
    rm -rf "$WORK/syn-bf16h"
    python3 tests/fixtures/genmodel.py "$WORK/syn-bf16h" --hidden 512 --intermediate 1536 \
        --layers 2 --heads 8 --kv-heads 4 --vocab 2048 --shards 2 --untied >>"$OUT/genmodel.log" 2>&1
    # quark JIT-compiles its kernels at import: Hopper only, all cores
    TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONPATH=/tmp/hfsite timeout -k 10 "${HF_TIMEOUT:-480}" \
        python3 tests/gpu/loaders_gpu.py hf "${Q[@]}" --model "syn-bf16=$WORK/syn-bf16h" \
        ${HF_VIEWS:+--views "$HF_VIEWS"} --deadline "${HF_DEADLINE:-380}" --run-timeout 240 \
        --max-tokens 16 >"$OUT/hf.log" 2>&1
    echo "hf: exit $? after $((SECONDS - t0)) s"
    unmount_all
    grep -E '^\[ *[0-9.]+\]' "$OUT/hf.log" | tail -n 30
    cat "$OUT/hf.md" 2>/dev/null | head -c 5000
}

for step in "$@"; do
    case $step in
        stash) stash ;;
        install) install ;;
        big) big ;;
        vllm) vllm ;;
        hf) hf ;;
        *) echo "run-loaders: unknown step $step" >&2; exit 2 ;;
    esac
done
