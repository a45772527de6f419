#!/usr/bin/env bash
# Here (a machine that reaches PyPI): download vLLM and the loader packages the GPU machine's image
# lacks, for its Python 3.12 / x86-64, drop what the GPU run cannot need, and cut the result into
# parts small enough to travel one per `run` call (each call carries at most 64 MiB, working tree
# included). Output, all git-ignored:
#   .gpu-vllm/site.tar        the unpacked packages (one tree, installed with tar -x on the device)
#   .gpu-vllm/site.tar.sha256
#   .gpu-vllm/partN/site.tar.partN   the pieces (split -b $PART_MB MiB), carried one per call
#   .gpu-vllm/hf/*.whl        the few wheels transformers' quark and compressed-tensors loaders need
#                             (small; carried whole by the first call)
# Prints the sizes. The pins below are the versions the GPU run was made with.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTD=$ROOT/.gpu-vllm
W=${FETCH_WORK:-/tmp/quarkfs-fetch-wheels}
PART_MB=${PART_MB:-52}
git -C "$ROOT" check-ignore -q .gpu-vllm/x || { echo "fetch-wheels: .gpu-vllm/ is not git-ignored" >&2; exit 1; }

PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)

# vLLM 0.26.0 is the newest release that pins torch==2.11.0 (the image's torch; 0.27 pins 2.13).
VLLM=vllm==0.26.0
# What `import vllm`, LLM(...) and the engine import and the image lacks (found by importing the
# engine, worker, model runner, llama, the quark / compressed-tensors / fp8 / awq methods and the
# structured-output backends). Exact pins of vLLM's metadata where it has one. openai stays on 2.x
# (3.x needs httpx2); xgrammar 0.2.7 is the last that accepts vLLM's apache-tvm-ffi==0.1.10.
# Deliberately absent (lazy in vLLM, unused by a dense Llama on the Triton attention backend):
# flashinfer-python, nvidia-cutlass-dsl, quack-kernels, tilelang, humming-kernels,
# tokenspeed-mla, fastsafetensors, torchcodec, PyNvVideoCodec, anthropic, mcp, opentelemetry-*.
DEPS=(annotated-types==0.8.0 apache-tvm-ffi==0.1.10 astor==0.8.1 blake3==1.0.11 cachetools==8.0.2
      cbor2==6.3.0 compressed-tensors==0.17.0 depyf==0.20.0 dill==0.4.1 distro==1.9.0
      docstring-parser==0.18.0 fastapi==0.136.3 ijson==3.6.0 interegular==0.3.3 jiter==0.19.0
      jsonschema==4.26.0 jsonschema-specifications==2025.9.1 lark==1.2.2 llguidance==1.7.6
      lm-format-enforcer==0.11.3 loguru==0.7.3 mistral-common==1.13.1
      model-hosting-container-standards==0.1.16 msgspec==0.23.0 openai==2.54.0
      openai-harmony==0.0.8 outlines-core==0.2.14 partial-json-parser==0.2.1.1.post7
      prometheus-fastapi-instrumentator==8.1.0 pybase64==1.5.1 pycountry==26.2.16
      pydantic==2.14.4 pydantic-core==2.50.5 pydantic-extra-types==2.11.1 python-json-logger==4.2.0
      pyzmq==27.3.0 referencing==0.37.0 rpds-py==2026.9.1 setproctitle==1.3.8 sniffio==1.3.1
      starlette==1.10.0 typing-inspection==0.4.5 watchfiles==1.3.0 xgrammar==0.2.7)
# transformers' quark loader (amd-quark 0.13, the version tests/loaders pins) and the
# compressed-tensors loader (0.17.0: vLLM's pin; transformers 5.17 wants >= 0.15).
HF=(amd-quark==0.13 compressed-tensors==0.17.0 pydantic==2.14.4 pydantic-core==2.50.5
    annotated-types==0.8.0 typing-inspection==0.4.5 loguru==0.7.3
    onnxslim==0.1.98)

mkdir -p "$W/whl" "$OUTD"
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$W/whl" "$VLLM" "${DEPS[@]}"
rm -rf "$OUTD/hf" && mkdir -p "$OUTD/hf"
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$OUTD/hf" "${HF[@]}"

# Unpack every wheel into one tree (a wheel is a zip; --no-deps install == unzip + RECORD).
rm -rf "$W/site" && mkdir -p "$W/site"
for f in "$W"/whl/*.whl; do unzip -q -o "$f" -d "$W/site"; done
V=$W/site/vllm
before=$(du -sm "$W/site" | cut -f1)
# Not needed with attention_backend=TRITON_ATTN on a dense model (measured in the wheel):
# the FlashAttention 2/3 libraries (305 + 153 MB), the MoE kernels (48 MB; vLLM imports them
# under contextlib.suppress(ImportError)), the vllm-rs front-end binary (43 MB), DeepGEMM and
# the SM100 FMHA sources (65 MB), FlashMLA.
rm -f "$V"/vllm_flash_attn/_vllm_fa2_C.abi3.so "$V"/vllm_flash_attn/_vllm_fa3_C.abi3.so \
      "$V"/_moe_C_stable_libtorch.abi3.so "$V"/vllm-rs "$V"/_flashmla_C.abi3.so \
      "$V"/_flashmla_extension_C.abi3.so
rm -rf "$V"/third_party/deep_gemm "$V"/third_party/fmha_sm100
after=$(du -sm "$W/site" | cut -f1)

rm -f "$OUTD"/site.tar* && rm -rf "$OUTD"/part*
tar -C "$W/site" -cf - . | gzip -1 > "$OUTD/site.tar"
(cd "$OUTD" && sha256sum site.tar > site.tar.sha256)
(cd "$OUTD" && split -b "${PART_MB}M" -d -a 1 site.tar site.tar.part)
for p in "$OUTD"/site.tar.part?; do
    n=${p##*.part}; mkdir -p "$OUTD/part$n"; mv "$p" "$OUTD/part$n/"
done
rm -f "$OUTD/site.tar"

echo "fetch-wheels: vllm wheel $(du -m "$W"/whl/vllm-*.whl | cut -f1) MiB;" \
     "$(ls "$W"/whl | wc -l) wheels; unpacked ${before} MiB, pruned ${after} MiB"
echo "fetch-wheels: parts (gzip -1 tar, ${PART_MB} MiB each):"
du -b "$OUTD"/part*/* | sed 's/^/  /'
echo "fetch-wheels: hf wheels: $(du -sm "$OUTD/hf" | cut -f1) MiB"
ls "$OUTD/hf" | sed 's/^/  /'
