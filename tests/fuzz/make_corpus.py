#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/ (checked in; run again only to change them).

Usage: python3 tests/fuzz/make_corpus.py [SHARED_DIR]   (default: ../shared beside the repo)

safetensors/: whole files (header + zero data): the stories260K header as it is (its data left
  out, so the parser refuses it at the coverage check), the same names and dtypes with small
  shapes (a complete file), and synthetic headers (every dtype, F4/F6, scalars, empty tensors,
  metadata, padding, data order unlike JSON order, name clashes).
rewrite/: [spec][format][plan mask] config \\0 index \\0 exclude names (fuzz_rewrite.c).
plan/: bytes for fuzz_plan.c's generator (random, fixed seed).
No model data goes in: headers and JSON text only, a few KB each.
The distilled-* files beside them are not written here: they are the inputs that
`fuzz_<target> -merge=1` kept from the 10-minute runs (README.md), so that a short CI run starts
from the coverage those reached.
"""
import json
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
        "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
        "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
        "I64": 64, "U64": 64}


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * BITS[dtype] // 8


def st_file(tensors, metadata=None, pad=None, data_order=None, indent=None):
    """tensors: list of (name, dtype, shape) in JSON order; data_order: names in data order."""
    order = data_order or [t[0] for t in tensors]
    info = {t[0]: t for t in tensors}
    offs, pos = {}, 0
    for name in order:
        _, dt, shape = info[name]
        offs[name] = (pos, pos + nbytes(dt, shape))
        pos += nbytes(dt, shape)
    head = {}
    if metadata is not None:
        head["__metadata__"] = metadata
    for name, dt, shape in tensors:
        head[name] = {"dtype": dt, "shape": shape, "data_offsets": list(offs[name])}
    js = json.dumps(head, indent=indent, separators=None if indent else (",", ":")).encode()
    if pad is None:
        pad = (8 - len(js) % 8) % 8
    js += b" " * pad
    return struct.pack("<Q", len(js)) + js + b"\0" * pos


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared")
    model = os.path.join(shared, "models", "stories260K-bf16")
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
    head = json.loads(raw)

    # --- safetensors ---
    write("safetensors", "stories260K-header-only", struct.pack("<Q", n) + raw)
    small = {512: 16, 64: 8, 32: 8, 172: 12}
    tensors = [(k, v["dtype"], [small.get(d, d) for d in v["shape"]])
               for k, v in head.items() if k != "__metadata__"]
    write("safetensors", "stories260K-small-shapes", st_file(tensors, head.get("__metadata__")))
    f32 = [(k, "F32", s) for k, _, s in tensors[:12]]
    write("safetensors", "stories260K-f32-layers0-1", st_file(f32, {"format": "pt"}, indent=2))
    every = [("t.%s" % dt.lower(), dt, [2, 4]) for dt in BITS]
    write("safetensors", "every-dtype", st_file(every, None, data_order=sorted(t[0] for t in every)))
    write("safetensors", "scalars-empty-3d", st_file([
        ("s.weight", "F32", []), ("e.weight", "BF16", [0, 64]), ("z", "F16", [0]),
        ("c.weight", "BF16", [2, 3, 4]), ("x.proj.weight", "F16", [16, 32])],
        {"format": "pt", "note": "caf\u00e9"}, pad=13))
    write("safetensors", "name-clash", st_file([
        ("m.q_proj.weight", "BF16", [8, 32]), ("m.q_proj.weight_scale", "BF16", []),
        ("m.k_proj.weight", "F32", [8, 128]), ("m.k_proj.weight_packed", "I32", [8, 16]),
        ("lm_head.weight", "BF16", [16, 8]), ("model.norm.weight", "BF16", [8]),
        ("model.layers.0.mlp.up_proj.bias", "BF16", [8])], {"format": "pt"},
        data_order=["lm_head.weight", "m.k_proj.weight", "m.k_proj.weight_packed",
                    "m.q_proj.weight", "m.q_proj.weight_scale", "model.norm.weight",
                    "model.layers.0.mlp.up_proj.bias"]))
    write("safetensors", "empty-header", st_file([], {}, pad=6))

    # --- rewrite ---
    with open(os.path.join(model, "config.json"), "rb") as f:
        config = f.read()
    index = {"metadata": {"total_size": 520064},
             "weight_map": {k: ("model-00001-of-00002.safetensors" if i % 2 else
                                "model-00002-of-00002.safetensors")
                            for i, k in enumerate(list(head)[1:12])}}
    index["weight_map"]["extra.bias"] = "other.safetensors"
    idx = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
    write("rewrite", "stories260K-quark-int8",
          bytes([0, 0, 7]) + config + b"\0" + idx + b"\0" + b"lm_head\nmodel.layers.0.mlp.down_proj")
    write("rewrite", "stories260K-awq-uint4",
          bytes([6, 1, 3]) + config + b"\0" + idx + b"\0" + b"lm_head")
    write("rewrite", "ct-fp8-block", bytes([5, 1, 1]) + b'{"a": 1, "b": [1, 2.5e-3, null]}\n'
          + b"\0" + b'{"weight_map": {"a.weight": "model-00001-of-00002.safetensors", '
          b'"\\u00e9": "model.safetensors"}, "metadata": 3, "x": {}}' + b"\0" + b"caf\xc3\xa9\nz\nz")
    write("rewrite", "empty-objects", bytes([14, 0, 4]) + b"{}" + b"\0" + b'{"weight_map":{}}')
    write("rewrite", "odd-whitespace", bytes([3, 2, 2]) + b' \r\n\t{ "k" : "v" } \n\n'
          + b"\0" + b'{"weight_map": {"shared.weight": "model-00002-of-00002.safetensors", '
          b'"shared.weight.x": "model-00001-of-00002.safetensors"}}')

    # --- plan ---
    rng = random.Random(6)
    for i, size in enumerate([16, 64, 128, 256, 512, 1024]):
        write("plan", "random-%d" % i, bytes(rng.randrange(256) for _ in range(size)))


if __name__ == "__main__":
    main()
