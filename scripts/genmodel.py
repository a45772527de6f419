#!/usr/bin/env python3
"""Generate a synthetic Hugging Face Llama-style model directory for quarkfs tests.

Usage:
    python3 scripts/genmodel.py OUT [--preset demo|awkward|llama] [--dtype bf16|f16|f32]
        [--layers N] [--hidden H] [--intermediate I] [--heads N] [--kv-heads N]
        [--vocab V] [--shards N] [--untied] [--seed S] [--nan] [--collision] [--empty]

OUT must not exist or be empty. It receives config.json, generation_config.json and
either model.safetensors or model-0000i-of-0000N.safetensors + model.safetensors.index.json,
written the way the safetensors library and transformers write them:

* safetensors: u64 little-endian header length, compact JSON header starting with
  {"__metadata__":{"format":"pt"}, per-tensor keys dtype, shape, data_offsets; tensors
  ordered by dtype descending in safetensors' enum order, then by name; header padded
  with spaces to a multiple of 8; data back to back from offset 0.
* config.json / index: json.dumps(indent=2, sort_keys=True) + "\\n".
* shards: tensors taken in name order and split greedily into N files of roughly equal size.

Weights are normal(0, 0.02) (norm weights 1.0), deterministic from --seed and the tensor
name (so the values do not depend on the sharding). For speed each tensor draws a pool of
65536 float32 normal samples and fills its elements with pool values picked by uniform
random 16-bit indices (a bootstrap sample of the normal distribution): ~2 ns per element.
bf16 = float32 rounded to nearest-even in the top 16 bits.

Presets (any flag overrides the preset value):
  demo     hidden 256, intermediate 688, 2 layers, 4 heads, 2 kv heads, vocab 1024, 2 shards, tied
  llama    hidden 4096, intermediate 11008, 2 layers, 32 heads, 8 kv heads, vocab 32000,
           2 shards, untied (about 1.2 GB in bf16; --layers 4 gives about 2 GB)
  awkward  the nasty one (hidden 72, intermediate 197, 6 heads, 2 kv heads -> k/v [24,72],
           vocab 131, 2 layers, 3 shards, untied), plus:
           - model.layers.0.mlp.down_proj.weight stored in F32 whatever --dtype is;
           - model.layers.0.mlp.experts_bias.weight: 3-D float [2,3,5];
           - model.layers.0.self_attn.q_proj.bias: 1-D float [hidden] (norms are 1-D too);
           - model.rotary_emb.inv_freq_ids: I64 [8]; model.layers.1.self_attn.some_index.weight: I32 [3,4];
           - model.layers.0.self_attn.k_proj.weight: rows 5 and the last row all zero;
           - model.layers.1.self_attn.v_proj.weight: all zeros;
           - model.layers.1.self_attn.q_proj.weight ("int8 ties"): every row holds +A and -A with
             A = 127.5 * 2**-8 = 0.498046875 (exact in bf16/f16), so the int8 scale is exactly
             2**-8 both per tensor and per row, 1/s = 256 is exact, and every other element is
             (n + 0.5) * 2**-8 for n in -128..126: x * inv lands exactly on a .5 tie (rounds to even);
             +A -> 127.5 -> 128 -> clamped 127, -A -> -127.5 -> -128;
           - model.layers.1.self_attn.o_proj.weight ("fp8 ties"): every row holds +-448 * 2**-10,
             so the fp8 scale is exactly 2**-10 (per tensor and per row) and x / s is exact; the
             other elements are the midpoints between adjacent e4m3 values (ties, both signs),
             tiny negatives that round to -0 (code 0x80), a -0.0, and +-432 (the midpoint
             of 416 and 448, which rounds to 448);
           - the last shard's __metadata__ is {"zeta":"1","format":"pt","alpha":"2"} (extra keys,
             "format" not first) to test metadata handling;
           - extra/notes.txt (a subdirectory) and tokenizer.json -> blobs/tok-0001 (a relative
             symlink into OUT/blobs/, like the Hugging Face cache).
Extra test switches (any preset):
  --nan        put a NaN and an +Inf into model.layers.0.mlp.up_proj.weight (its file must fail with EIO)
  --collision  add a tensor model.layers.0.mlp.gate_proj.weight_scale (F32 [1]) so gate_proj
               must stay unquantized (name collision)
  --empty      add an empty 2-D weight model.layers.0.self_attn.empty_proj.weight [0, hidden]
               (not quantized; listed in the exclude list)

Prints a one-line summary: files, tensors, bytes.
"""

import argparse
import json
import os
import struct
import sys
import zlib

try:
    import numpy as np
except ImportError:  # pragma: no cover - depends on the interpreter used
    # Debian's python3-numpy lives with /usr/bin/python3; re-run under it once.
    _DEBIAN_PY = "/usr/bin/python3"
    if (__name__ == "__main__" and os.path.exists(_DEBIAN_PY)
            and os.path.realpath(sys.executable) != os.path.realpath(_DEBIAN_PY)
            and not os.environ.get("QUARKFS_PY_REEXEC")):
        os.environ["QUARKFS_PY_REEXEC"] = "1"
        os.execv(_DEBIAN_PY, [_DEBIAN_PY] + sys.argv)
    raise

# safetensors' Dtype enum, ascending; files sort tensors by this order descending, then name.
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
               "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
               "C64", "F64", "I64", "U64"]
DTYPE_RANK = {name: i for i, name in enumerate(DTYPE_ORDER)}
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8}
CLI_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
TORCH_DTYPE_NAME = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
CHUNK_ELEMS = 1 << 23          # elements generated per chunk of a large tensor
POOL_SIZE = 1 << 16            # normal samples per tensor pool
INIT_STD = 0.02

PRESETS = {
    "demo": dict(hidden=256, intermediate=688, layers=2, heads=4, kv_heads=2, vocab=1024,
                 shards=2, untied=False),
    "llama": dict(hidden=4096, intermediate=11008, layers=2, heads=32, kv_heads=8, vocab=32000,
                  shards=2, untied=True),
    "awkward": dict(hidden=72, intermediate=197, layers=2, heads=6, kv_heads=2, vocab=131,
                    shards=3, untied=True),
}


class TensorSpec:
    """One tensor to generate: name, safetensors dtype, shape and how to fill it (kind)."""

    def __init__(self, name, dtype, shape, kind="normal"):
        self.name = name
        self.dtype = dtype
        self.shape = list(shape)
        self.kind = kind

    @property
    def numel(self):
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self):
        """Size of the tensor's data in bytes."""
        return self.numel * ITEMSIZE[self.dtype]


def f32_to_bf16_bits(values):
    """Round float32 values to bfloat16 (nearest-even on the top 16 bits); returns uint16 bits."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (u >> np.uint32(16)).astype("<u2")


def encode_float(values, dtype):
    """Encode float32 values as little-endian bytes of a float dtype (BF16, F16 or F32)."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "BF16":
        return f32_to_bf16_bits(values)
    if dtype == "F16":
        return values.astype("<f2")
    if dtype == "F32":
        return values.astype("<f4")
    raise ValueError("not a float dtype: %s" % dtype)


def tensor_rng(seed, name):
    """Deterministic generator for one tensor, from the seed and the tensor name."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def e4m3_values():
    """The 127 non-negative finite float8 e4m3fn values, indexed by code 0..126."""
    vals = []
    for code in range(127):
        exp, man = code >> 3, code & 7
        vals.append(man * 2.0 ** -9 if exp == 0 else (1 + man / 8.0) * 2.0 ** (exp - 7))
    return vals


def special_values(spec, rng):
    """Full float32 array (shape spec.shape) for the awkward preset's hand-built tensors."""
    rows, cols = spec.shape
    if spec.kind == "zeros":
        return np.zeros((rows, cols), dtype=np.float32)
    if spec.kind == "zero_rows":
        x = normal_values(rng, spec.numel).reshape(rows, cols)
        x[min(5, rows - 1)] = 0
        x[rows - 1] = 0
        return x
    if spec.kind == "ties_int8":
        amax = 127.5 * 2.0 ** -8
        ties = [(n + 0.5) * 2.0 ** -8 for n in range(-128, 127)]
        x = np.empty((rows, cols), dtype=np.float32)
        k = 0
        for r in range(rows):
            x[r, 0], x[r, 1] = amax, -amax
            for c in range(2, cols):
                x[r, c] = ties[k % len(ties)]
                k += 1
        return x
    if spec.kind == "ties_fp8":
        unit = 2.0 ** -10           # the scale: amax = 448 * unit
        vals = e4m3_values()
        mids = [(vals[i] + vals[i + 1]) / 2 for i in range(126)]
        pool = []
        for m in mids:
            pool += [m, -m]
        pool += [-2.0 ** -11, -2.0 ** -12, 2.0 ** -11, -0.0, 0.0, 432.0, -432.0]
        x = np.empty((rows, cols), dtype=np.float32)
        k = 0
        for r in range(rows):
            x[r, 0], x[r, 1] = 448 * unit, -448 * unit
            for c in range(2, cols):
                x[r, c] = pool[k % len(pool)] * unit
                k += 1
        return x
    raise ValueError("unknown tensor kind %s" % spec.kind)


def normal_values(rng, count):
    """count float32 values ~ normal(0, 0.02) drawn from a per-tensor pool of normal samples."""
    pool = rng.standard_normal(POOL_SIZE, dtype=np.float32) * np.float32(INIT_STD)
    return pool[rng.integers(0, POOL_SIZE, count, dtype=np.uint16)]


def tensor_chunks(spec, seed):
    """Yield the tensor's data as little-endian numpy arrays (C order), chunk by chunk."""
    rng = tensor_rng(seed, spec.name)
    if spec.dtype in ("I64", "I32"):
        yield np.arange(spec.numel, dtype="<i8" if spec.dtype == "I64" else "<i4")
        return
    if spec.kind == "ones":
        yield encode_float(np.ones(spec.numel, dtype=np.float32), spec.dtype)
        return
    if spec.kind == "normal":
        pool = rng.standard_normal(POOL_SIZE, dtype=np.float32) * np.float32(INIT_STD)
        pool_enc = encode_float(pool, spec.dtype)
        left = spec.numel
        while left > 0:
            n = min(left, CHUNK_ELEMS)
            yield pool_enc[rng.integers(0, POOL_SIZE, n, dtype=np.uint16)]
            left -= n
        return
    x = special_values(spec, rng)
    yield encode_float(x.reshape(-1), spec.dtype)


def build_tensors(cfg):
    """The list of TensorSpec for a configuration dict (see PRESETS plus dtype/preset/flags)."""
    dt = cfg["dtype"]
    hidden, inter, vocab = cfg["hidden"], cfg["intermediate"], cfg["vocab"]
    heads, kv_heads, layers = cfg["heads"], cfg["kv_heads"], cfg["layers"]
    if hidden % heads:
        raise SystemExit("genmodel: hidden (%d) must be a multiple of heads (%d)" % (hidden, heads))
    kv_dim = kv_heads * (hidden // heads)
    awkward = cfg["preset"] == "awkward"
    last = layers - 1
    special = {}
    if awkward:
        special = {
            "model.layers.0.self_attn.k_proj.weight": "zero_rows",
            "model.layers.%d.self_attn.v_proj.weight" % min(1, last): "zeros",
            "model.layers.%d.self_attn.q_proj.weight" % min(1, last): "ties_int8",
            "model.layers.%d.self_attn.o_proj.weight" % min(1, last): "ties_fp8",
        }
    out = [TensorSpec("model.embed_tokens.weight", dt, [vocab, hidden])]
    for layer in range(layers):
        p = "model.layers.%d." % layer
        out.append(TensorSpec(p + "input_layernorm.weight", dt, [hidden], "ones"))
        out.append(TensorSpec(p + "post_attention_layernorm.weight", dt, [hidden], "ones"))
        for proj, shape in (("q_proj", [hidden, hidden]), ("k_proj", [kv_dim, hidden]),
                            ("v_proj", [kv_dim, hidden]), ("o_proj", [hidden, hidden])):
            name = p + "self_attn.%s.weight" % proj
            out.append(TensorSpec(name, dt, shape, special.get(name, "normal")))
        for proj, shape in (("gate_proj", [inter, hidden]), ("up_proj", [inter, hidden]),
                            ("down_proj", [hidden, inter])):
            name = p + "mlp.%s.weight" % proj
            out.append(TensorSpec(name, dt, shape, special.get(name, "normal")))
    out.append(TensorSpec("model.norm.weight", dt, [hidden], "ones"))
    if cfg["untied"]:
        out.append(TensorSpec("lm_head.weight", dt, [vocab, hidden]))
    if awkward:
        for t in out:
            if t.name == "model.layers.0.mlp.down_proj.weight":
                t.dtype = "F32"
        out.append(TensorSpec("model.layers.0.mlp.experts_bias.weight", dt, [2, 3, 5]))
        out.append(TensorSpec("model.layers.0.self_attn.q_proj.bias", dt, [hidden]))
        out.append(TensorSpec("model.rotary_emb.inv_freq_ids", "I64", [8]))
        out.append(TensorSpec("model.layers.%d.self_attn.some_index.weight" % min(1, last),
                              "I32", [3, 4]))
    if cfg["collision"]:
        out.append(TensorSpec("model.layers.0.mlp.gate_proj.weight_scale", "F32", [1]))
    if cfg["empty"]:
        out.append(TensorSpec("model.layers.0.self_attn.empty_proj.weight", dt, [0, hidden]))
    if cfg["nan"]:
        for t in out:
            if t.name == "model.layers.0.mlp.up_proj.weight":
                t.kind = "nan"
    return out


def nan_chunks(spec, seed):
    """Data of a 'nan' tensor: normal values with a NaN at element 3 and +Inf at element 7."""
    x = normal_values(tensor_rng(seed, spec.name), spec.numel)
    x[3 % spec.numel] = np.nan
    x[7 % spec.numel] = np.inf
    yield encode_float(x, spec.dtype)


def chunks_for(spec, seed):
    """Dispatch to the right chunk generator for a tensor."""
    if spec.kind == "nan":
        return nan_chunks(spec, seed)
    return tensor_chunks(spec, seed)


def safetensors_header(tensors, metadata):
    """Header bytes (length prefix included) and the tensors in file order."""
    ordered = sorted(tensors, key=lambda t: (-DTYPE_RANK[t.dtype], t.name.encode("utf-8")))
    header = {"__metadata__": metadata}
    offset = 0
    for t in ordered:
        header[t.name] = {"dtype": t.dtype, "shape": t.shape,
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, ordered


def write_safetensors(path, tensors, seed, metadata):
    """Write one safetensors file, streaming each tensor's data in chunks."""
    head, ordered = safetensors_header(tensors, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for t in ordered:
            written = 0
            for chunk in chunks_for(t, seed):
                f.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
                written += chunk.nbytes
            if written != t.nbytes:
                raise RuntimeError("internal error: %s wrote %d bytes, expected %d"
                                   % (t.name, written, t.nbytes))


def split_shards(tensors, count):
    """Split tensors (in name order) greedily into `count` groups of roughly equal byte size."""
    ordered = sorted(tensors, key=lambda t: t.name.encode("utf-8"))
    if count < 1 or count > len(ordered):
        raise SystemExit("genmodel: --shards must be between 1 and %d" % len(ordered))
    total = sum(t.nbytes for t in ordered)
    target = total / count
    shards = [[]]
    size = 0
    for i, t in enumerate(ordered):
        remaining_tensors = len(ordered) - i
        remaining_shards = count - len(shards)
        must_split = remaining_tensors <= remaining_shards
        if shards[-1] and remaining_shards > 0 and (must_split or size + t.nbytes / 2 > target):
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def write_json(path, obj):
    """Write obj the way transformers does: json.dumps(indent=2, sort_keys=True) + newline."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def model_config(cfg):
    """config.json contents for a LlamaForCausalLM with the chosen shapes."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": cfg["hidden"] // cfg["heads"],
        "hidden_act": "silu",
        "hidden_size": cfg["hidden"],
        "initializer_range": INIT_STD,
        "intermediate_size": cfg["intermediate"],
        "max_position_embeddings": 2048,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": cfg["heads"],
        "num_hidden_layers": cfg["layers"],
        "num_key_value_heads": cfg["kv_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": not cfg["untied"],
        "torch_dtype": TORCH_DTYPE_NAME[cfg["dtype"]],
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": cfg["vocab"],
    }


def write_extras(out):
    """awkward preset: a subdirectory file and an HF-cache-like symlink into OUT/blobs/."""
    os.makedirs(os.path.join(out, "extra"))
    with open(os.path.join(out, "extra", "notes.txt"), "w", encoding="utf-8") as f:
        f.write("genmodel awkward preset: this file must pass through unchanged.\n")
    os.makedirs(os.path.join(out, "blobs"))
    tok = {"version": "1.0", "model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}}}
    with open(os.path.join(out, "blobs", "tok-0001"), "w", encoding="utf-8") as f:
        f.write(json.dumps(tok, indent=2) + "\n")
    os.symlink(os.path.join("blobs", "tok-0001"), os.path.join(out, "tokenizer.json"))


def parse_args(argv):
    """Command-line parsing; preset values are filled in for flags not given."""
    ap = argparse.ArgumentParser(description="Generate a synthetic HF Llama-style model directory.")
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--dtype", choices=sorted(CLI_DTYPES), default="bf16")
    for flag in ("layers", "hidden", "intermediate", "heads", "kv-heads", "vocab", "shards"):
        ap.add_argument("--" + flag, type=int, default=None)
    ap.add_argument("--untied", action="store_true", default=None,
                    help="write a separate lm_head.weight (llama and awkward presets always do)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nan", action="store_true", help="put NaN/Inf into layer 0 up_proj")
    ap.add_argument("--collision", action="store_true",
                    help="add model.layers.0.mlp.gate_proj.weight_scale (name collision)")
    ap.add_argument("--empty", action="store_true",
                    help="add an empty 2-D weight model.layers.0.self_attn.empty_proj.weight [0,H]")
    args = ap.parse_args(argv)
    cfg = dict(PRESETS[args.preset])
    for key in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab", "shards", "untied"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    cfg.update(preset=args.preset, dtype=CLI_DTYPES[args.dtype], seed=args.seed,
               nan=args.nan, collision=args.collision, empty=args.empty, out=args.out)
    for key in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab", "shards"):
        if cfg[key] < 1:
            ap.error("--%s must be >= 1" % key.replace("_", "-"))
    return cfg


def main(argv=None):
    """Entry point: generate the model directory and print a one-line summary."""
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    out = cfg["out"]
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise SystemExit("genmodel: %s exists and is not an empty directory" % out)
    os.makedirs(out, exist_ok=True)
    tensors = build_tensors(cfg)
    shards = split_shards(tensors, cfg["shards"])
    n = len(shards)
    files = ["config.json", "generation_config.json"]
    write_json(os.path.join(out, "config.json"), model_config(cfg))
    write_json(os.path.join(out, "generation_config.json"),
               {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2,
                "transformers_version": "4.46.0"})
    weight_map = {}
    for i, shard in enumerate(shards):
        name = "model.safetensors" if n == 1 else "model-%05d-of-%05d.safetensors" % (i + 1, n)
        meta = {"format": "pt"}
        if cfg["preset"] == "awkward" and n > 1 and i == n - 1:
            meta = {"zeta": "1", "format": "pt", "alpha": "2"}
        write_safetensors(os.path.join(out, name), shard, cfg["seed"], meta)
        files.append(name)
        for t in shard:
            weight_map[t.name] = name
    total = sum(t.nbytes for t in tensors)
    if n > 1:
        write_json(os.path.join(out, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": weight_map})
        files.append("model.safetensors.index.json")
    if cfg["preset"] == "awkward":
        write_extras(out)
        files += ["extra/notes.txt", "blobs/tok-0001", "tokenizer.json"]
    print("genmodel: %s preset=%s dtype=%s: %d files (%d safetensors), %d tensors, %d bytes of tensor data"
          % (out, cfg["preset"], cfg["dtype"], len(files), n, len(tensors), total))


if __name__ == "__main__":
    main()
