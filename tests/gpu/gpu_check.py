#!/usr/bin/env python3
"""quarkfs "real clients" check: mount views with quarkfs and read them with the real loaders.

Runs on the GPU machine (see tests/gpu/gpu-check.sh `remote`), needs torch, safetensors and
(for the config, forward and loader checks) transformers. For every model and every spec x
format pair asked for (all 33 valid pairs of `quarkfs --list-specs` with --all-pairs NAME, else
the --specs list in format quark) it:

  * mounts SRC with quarkfs (`--spec S --format F -f`) on a fresh temporary mountpoint (stderr
    into quarkfs.log; unmounted in `finally`), plus once in daemon mode;
  * opens every view *.safetensors with safetensors' `safe_open(path, "pt")` (mmap of the
    FUSE file) and loads every tensor;
  * contract: tensor names/dtypes/shapes of every layout (doc/FORMAT.md §5, the loaders'
    needs in §9), which modules are quantized (doc/FORMAT.md §3 and §5.5: shape rules of
    each spec), header order and metadata;
  * values: decodes each quantized module of the view (its own layout: AWQ nibble order
    [0,2,4,6,1,3,5,7] in the transposed [I, O/8] words; compressed-tensors plain packing with
    the +8/+128 offset; mxfp4 e2m1 codes + e8m0 bytes; fp8-block weight_scale_inv) into
    canonical codes/scales/zero points and compares them bit for bit with an independent torch
    implementation of the arithmetic (doc/FORMAT.md §4.2-§4.6):
    `ref_quantize` below;
  * dequant: dequantizes every quantized weight and measures its relative RMS error against the
    source (8-bit specs < 3 %, 4-bit < 15 %); xformat: the same spec must dequantize to
    identical weights in every format that quantizes the same tensors;
  * every other tensor and every passed-through file equals the source byte for byte;
    read(2) + `safetensors.torch.load(bytes)` equals the mmap read;
  * config.json (AutoConfig, quantization_config of the format, exclusion list) and
    model.safetensors.index.json;
  * forward: the dequantized weights swapped into the transformers model of SRC, logits
    compared with the unquantized model (relative error, top-1 agreement);
  * loader: transformers loading the view itself. Format fp8: `from_pretrained(view,
    quantization_config=FineGrainedFP8Config(dequantize=True))`, logits compared, missing/
    unexpected weights reported. Formats quark/awq/compressed-tensors need packages absent
    on the machine (amd-quark, gptqmodel, compressed-tensors): the exact error is recorded as
    NOT RUN.

Writes OUT/gpu-check-report.md (summary table + details) and OUT/gpu-check-report.json after
every row, so a run cut short still leaves what it did.

Usage:
  gpu_check.py --quarkfs BIN --libdir DIR --bindir DIR --out DIR \
      --model NAME=SRC [--model NAME=SRC ...] [--all-pairs NAME ...] [--no-forward NAME ...] \
      [--specs a,b,...] [--deadline SECONDS]
  gpu_check.py --zero-blocks DIR     (zero some 128-row / 128-column blocks of a genmodel model
                                      in place, so all-zero groups/blocks get exercised)
"""

import argparse
import gc
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pylib"))
import stfile  # noqa: E402  the safetensors container; the numerics below are this file's own

try:
    import safetensors
    import safetensors.torch as st_torch
    from safetensors import safe_open
except ImportError as exc:  # nothing can be checked without it
    raise SystemExit("gpu_check: safetensors is required: %s" % exc)

try:
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
except ImportError:  # pragma: no cover - local runs without transformers
    transformers = None


def _spec_table():
    """spec -> parameters (doc/FORMAT.md §4.1, §5)."""
    t = {
        "int8": dict(kind="int8", per="tensor", bits=8, inp=None),
        "int8-channel": dict(kind="int8", per="channel", bits=8, inp=None),
        "w8a8-int8": dict(kind="int8", per="channel", bits=8, inp=("int8", True)),
        "fp8": dict(kind="fp8", per="tensor", bits=8, inp=("fp8_e4m3", True)),
        "fp8-channel": dict(kind="fp8", per="channel", bits=8, inp=("fp8_e4m3", True)),
        "fp8-block": dict(kind="fp8", per="block", bits=8, block=128, inp=("fp8_e4m3", True)),
        "mxfp4": dict(kind="mxfp4", per="group", group=32, bits=4, inp=("fp4", True)),
    }
    for g in (32, 64, 128):
        t["uint4-g%d" % g] = dict(kind="int4", signed=False, per="group", group=g, bits=4, inp=None)
        t["int4-g%d" % g] = dict(kind="int4", signed=True, per="group", group=g, bits=4, inp=None)
    t["uint4"] = dict(t["uint4-g128"])
    t["int4"] = dict(t["int4-g128"])
    return t


SPECS = _spec_table()
ORIGINAL_SPECS = ["int8", "int8-channel", "w8a8-int8", "fp8", "fp8-channel"]
FORMATS = ("quark", "awq", "fp8", "compressed-tensors")
# The valid pairs as the contract documents them (checked against `quarkfs --list-specs`).
CONTRACT_PAIRS = (
    [("int8", "quark"), ("int8-channel", "quark"), ("int8-channel", "compressed-tensors"),
     ("w8a8-int8", "quark"), ("w8a8-int8", "compressed-tensors"),
     ("fp8", "quark"), ("fp8", "fp8"), ("fp8", "compressed-tensors"),
     ("fp8-channel", "quark"), ("fp8-channel", "compressed-tensors"),
     ("fp8-block", "fp8"), ("fp8-block", "compressed-tensors")]
    + [(s, f) for s in ("uint4", "uint4-g32", "uint4-g64", "uint4-g128") for f in ("quark", "awq")]
    + [(s, f) for s in ("int4", "int4-g32", "int4-g64", "int4-g128")
       for f in ("quark", "awq", "compressed-tensors")]
    + [("mxfp4", "quark")])
REL_RMS_BOUND = {8: 0.03, 4: 0.15}          # relative RMS weight error, by bit width
FORWARD_MAX_REL_ERR = {8: 0.25, 4: 1.0}     # sanity bounds only (garbage gives ~1.4)
LOADER_MAX_REL_ERR = 0.25

FLOAT_DTYPES = ("BF16", "F16", "F32")
EMBED_COMPONENTS = ("wte", "wpe", "word_embeddings", "position_embeddings", "shared")
DTYPE_RANK = stfile.DTYPE_RANK
TORCH_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
                "F64": torch.float64, "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16,
                "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool}
FP8 = getattr(torch, "float8_e4m3fn", None)
# A torch without float8 (a local run with a stand-in safetensors) reads F8_E4M3 as uint8 bytes;
# the raw header dtype is checked separately, so the contract check keeps its meaning.
TORCH_DTYPES["F8_E4M3"] = FP8 if FP8 is not None else torch.uint8
EXPORT_KEYS = {"kv_cache_group", "min_kv_scale", "pack_method", "weight_format",
               "weight_merge_groups"}
EPS = 2.0 ** -23
PASS, FAIL, NOTRUN, NA, INCOMPAT = "PASS", "FAIL", "NOT RUN", "n/a", "INCOMPATIBLE"
AWQ_SHIFTS = [0, 16, 4, 20, 8, 24, 12, 28]   # bit offset of element j of each group of 8
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------

def log(msg):
    """Progress line on stdout (the remote script tees it into run.log)."""
    print("[%7.1fs] %s" % (time.perf_counter() - T0, msg), flush=True)


T0 = time.perf_counter()


def read_header(path):
    """Raw safetensors header of a file: (ordered list of (key, entry), header length)."""
    pairs, start = stfile.read_header(path, pairs=True)
    return pairs, start - 8


def header_dict(pairs):
    """Ordered pairs (object_pairs_hook=list) -> dict of tensor entries (each a dict)."""
    return {k: dict(v) for k, v in pairs if k != "__metadata__"}


def bits(t):
    """Flat uint8 view of a tensor's bytes (for bitwise comparison)."""
    t = t.contiguous().reshape(-1)
    return t.view(torch.uint8) if t.dtype != torch.uint8 else t


def same_bits(a, b):
    """True when a and b have the same dtype, shape and bytes."""
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and torch.equal(bits(a), bits(b))


def diff_examples(got, exp, limit=4):
    """A short description of where two same-shaped tensors differ bitwise."""
    try:
        g, e = got.contiguous().reshape(-1), exp.contiguous().reshape(-1)
        if g.dtype != e.dtype or g.numel() != e.numel():
            return "dtype/shape %s%s vs expected %s%s" % (got.dtype, list(got.shape), exp.dtype,
                                                          list(exp.shape))
        esz = g.element_size()
        gb, eb = bits(g).reshape(-1, esz), bits(e).reshape(-1, esz)
        bad = (gb != eb).any(dim=1).nonzero().reshape(-1)
        out = ["%d of %d elements differ" % (bad.numel(), g.numel())]
        for i in bad[:limit].tolist():
            gv, ev = g[i], e[i]
            if gv.dtype == FP8:
                gv, ev = gv.float(), ev.float()
            out.append("[%s] got %s (0x%s) expected %s (0x%s)"
                       % (unravel(i, got.shape), gv.item(), bytes(gb[i].tolist())[::-1].hex(),
                          ev.item(), bytes(eb[i].tolist())[::-1].hex()))
        return "; ".join(out)
    except Exception as exc:  # never let reporting hide the failure itself
        return "(could not describe difference: %s)" % exc


def unravel(i, shape):
    """Flat index -> multi-index string."""
    idx = []
    for d in reversed(list(shape)):
        idx.append(i % d if d else 0)
        i //= d if d else 1
    return ",".join(str(x) for x in reversed(idx))


def file_digest(path):
    """sha256 of a file (read in 16 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(16 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def walk_files(root):
    """Relative paths of all regular files under root (symlinks followed)."""
    out = []
    for d, _dirs, files in os.walk(root, followlinks=True):
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def load_safetensors(path, collect=True):
    """safe_open(path, "pt") (mmap), every tensor cloned (faults every page now, and leaves no
    reference to the mapping, so the mount can be unmounted). Returns (metadata, tensors, errors).
    collect=False skips the final gc.collect() (timed reads: with transformers loaded one
    collection costs ~0.2 s, which the first GPU run had counted into every file's read time).
    """
    tensors, errors, meta = {}, [], None
    try:
        with safe_open(path, "pt") as h:
            meta = h.metadata()
            for k in h.keys():
                try:
                    tensors[k] = h.get_tensor(k).clone()
                except Exception as exc:
                    errors.append("%s: %s: %s" % (k, type(exc).__name__, exc))
        del h
    except Exception as exc:
        errors.append("safe_open: %s: %s" % (type(exc).__name__, exc))
    if collect:
        gc.collect()
    return meta, tensors, errors


def timed_read(paths):
    """Read every tensor of the files with load_safetensors, garbage collector off.

    Returns (seconds, bytes, [(file, metadata, tensors, errors)]).
    """
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out, nbytes = [], 0
        for p in paths:
            meta, tensors, errors = load_safetensors(p, collect=False)
            nbytes += sum(t.numel() * t.element_size() for t in tensors.values())
            out.append((p, meta, tensors, errors))
        secs = time.perf_counter() - t0
    finally:
        gc.enable()
    return secs, nbytes, out


class Check:
    """Result of one check: status (PASS/FAIL/NOT RUN/n/a) and detail text."""

    def __init__(self):
        self.status = None
        self.details = []

    def fail(self, msg):
        """Record a failure (the first FAIL sticks)."""
        self.status = FAIL
        if len(self.details) < 40:
            self.details.append(msg)
        elif len(self.details) == 40:
            self.details.append("... (more failures not listed)")

    def note(self, msg):
        """Record information without changing the status."""
        self.details.append(msg)

    def done(self, status=PASS):
        """Close the check: PASS (or the given status) unless a failure was recorded."""
        if self.status is None:
            self.status = status
        return self

    def as_dict(self):
        """JSON form."""
        return {"status": self.status or NOTRUN, "details": self.details}


# ---------------------------------------------------------------------------------------------
# The contract (independent of quarkfs' own code and of tests/oracle/quarkref.py)
# ---------------------------------------------------------------------------------------------

def is_embedding(module):
    """Embedding by name (doc/FORMAT.md §3.1, rule 4)."""
    return "embed" in module or any(c in EMBED_COMPONENTS for c in module.split("."))


def is_norm(module):
    """Norm by name."""
    return "norm" in module.lower() or any(c == "ln" or c.startswith("ln_")
                                           for c in module.split("."))


def linear_like(name, dtype, shape):
    """Module name if `name` is a Linear-like weight (2-D float X.weight, not embedding/norm)."""
    if not name.endswith(".weight") or len(shape) != 2 or dtype not in FLOAT_DTYPES:
        return None
    module = name[: -len(".weight")]
    if is_embedding(module) or is_norm(module):
        return None
    return module


def layout(spec, fmt, O, I, D):
    """The tensors a quantized module [O, I] of source dtype D becomes: {suffix: (dtype, shape)}.

    quark: doc/FORMAT.md §5.1; awq: §5.2; fp8: §5.3 (block:
    weight_scale_inv F32 [O/128, I/128]); compressed-tensors: §5.4
    (pack-quantized weight_packed I32 [O, ceil(I*bits/32)] + weight_scale + weight_shape I64 [2];
    int-/float-quantized weight + weight_scale; scales [O,1] channel, [O, I/G] group, [1] tensor,
    [O/128, I/128] block).
    """
    p = SPECS[spec]
    k, per = p["kind"], p["per"]
    if k == "int8":
        if fmt == "quark":
            if per == "tensor":
                return {"weight": ("I8", [O, I]), "weight_scale": ("F32", []),
                        "weight_zero_point": ("I8", [])}
            return {"weight": ("I8", [O, I]), "weight_scale": (D, [O]),
                    "weight_zero_point": ("I8", [O])}
        if fmt == "compressed-tensors":
            if spec == "w8a8-int8":                      # int-quantized
                return {"weight": ("I8", [O, I]), "weight_scale": (D, [O, 1])}
            return {"weight_packed": ("I32", [O, -(-I * 8 // 32)]),   # pack-quantized, 8 bits
                    "weight_scale": (D, [O, 1]), "weight_shape": ("I64", [2])}
    if k == "fp8":
        if per == "block":
            b = p["block"]
            name = "weight_scale_inv" if fmt == "fp8" else "weight_scale"
            return {"weight": ("F8_E4M3", [O, I]), name: ("F32", [O // b, I // b])}
        if fmt in ("quark", "fp8"):
            return {"weight": ("F8_E4M3", [O, I]), "weight_scale": (D, [] if per == "tensor" else [O])}
        if fmt == "compressed-tensors":
            return {"weight": ("F8_E4M3", [O, I]),
                    "weight_scale": (D, [1] if per == "tensor" else [O, 1])}
    if k == "int4":
        G = p["group"]
        if fmt in ("quark", "awq"):
            n = ("weight", "weight_scale", "weight_zero_point") if fmt == "quark" else \
                ("qweight", "scales", "qzeros")
            return {n[0]: ("I32", [I, O // 8]), n[1]: (D, [I // G, O]),
                    n[2]: ("I32", [I // G, O // 8])}
        if fmt == "compressed-tensors" and p["signed"]:
            return {"weight_packed": ("I32", [O, -(-I * 4 // 32)]), "weight_scale": (D, [O, I // G]),
                    "weight_shape": ("I64", [2])}
    if k == "mxfp4" and fmt == "quark":
        return {"weight": ("U8", [O, I // 2]), "weight_scale": ("U8", [O, I // 32])}
    raise ValueError("no layout for %s/%s" % (spec, fmt))


def ineligible(spec, fmt, O, I):
    """Why a candidate [O, I] cannot take the spec in this format (None: it can)."""
    p = SPECS[spec]
    if p["per"] == "block" and (O % p["block"] or I % p["block"]):
        return "not whole %dx%d blocks" % (p["block"], p["block"])
    if p["kind"] == "int4":
        if I % p["group"]:
            return "in=%d not a multiple of the group %d" % (I, p["group"])
        if fmt in ("quark", "awq") and O % 8:
            return "out=%d not a multiple of 8 (int32 packing along out)" % O
    if p["kind"] == "mxfp4" and I % 32:
        return "in=%d not a multiple of the MX block 32" % I
    return None


def plan_view(src_meta, finite, spec, fmt):
    """Expected view tensors of one source model.

    src_meta: {tensor name: (file, dtype string, shape)} over all source files;
    finite: {tensor name: bool} (NaN/Inf weights stay unquantized).
    Returns (expected, quantized, unquantized) where expected maps every view tensor to
    (file, dtype string, shape, role, source tensor name); role 'copy' or the layout suffix;
    quantized lists the source weight names; unquantized maps Linear-like modules left alone
    to the reason.
    """
    names = set(src_meta)
    expected, quantized, unquantized = {}, [], {}
    for name, (fname, dtype, shape) in sorted(src_meta.items()):
        module = linear_like(name, dtype, shape)
        reason = None
        lay = None
        if module is not None:
            O, I = shape
            if O * I == 0:
                reason = "empty"
            elif module == "lm_head" or module.endswith(".lm_head"):
                reason = "lm_head"
            elif not finite.get(name, True):
                reason = "NaN/Inf"
            else:
                reason = ineligible(spec, fmt, O, I)
                if reason is None:
                    lay = layout(spec, fmt, O, I, dtype)
                    if any(module + "." + s in names for s in lay if s != "weight"):
                        reason = "name collision"
        if module is None or reason is not None:
            expected[name] = (fname, dtype, list(shape), "copy", name)
            if module is not None:
                unquantized[module] = reason
            continue
        quantized.append(name)
        for suffix, (dt, shp) in lay.items():
            expected[module + "." + suffix] = (fname, dt, list(shp), suffix, name)
    return expected, quantized, unquantized


# ---------------------------------------------------------------------------------------------
# The arithmetic, written from the contract in torch (CPU): canonical codes / scales / zero points
#   codes [O, I]: int8 / int4 values, e4m3 bit patterns (0..255), e2m1 codes (0..15)
#   scale: per-tensor [], per-channel [O], per-group [O, I/G], per-block [O/B, I/B]
#          (mxfp4: the e8m0 bytes [O, I/32] as uint8)
#   zp: like the scale, integer (None where the layout has no zero point = 0)
# ---------------------------------------------------------------------------------------------

def _e4m3_table():
    tab = []
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e, m = (b >> 3) & 0xF, b & 7
        if e == 15 and m == 7:
            tab.append(float("nan"))
        elif e == 0:
            tab.append(s * m * 2.0 ** -9)
        else:
            tab.append(s * (1 + m / 8.0) * 2.0 ** (e - 7))
    return torch.tensor(tab, dtype=torch.float32)


E4M3_TABLE = _e4m3_table()
E2M1_TABLE = torch.tensor(E2M1 + [-v for v in E2M1], dtype=torch.float32)


def e4m3_encode_sw(v):
    """float32 tensor already clamped to [-448, 448] -> e4m3fn bytes (int32), round to nearest
    even, written without torch's float8 (used where torch has none, and cross-checked against
    torch's .to(float8_e4m3fn) on the GPU machine)."""
    a = v.double().abs()
    sign = torch.signbit(v).to(torch.int32) << 7
    sub = a < 2.0 ** -6
    code_sub = torch.round(a * 2.0 ** 9).to(torch.int32)        # 0..8 (8 = smallest normal)
    mant, ex = torch.frexp(torch.where(sub, torch.ones_like(a), a))
    e = ex.to(torch.int32) - 1                                  # a = (1 + m) 2^e
    m = torch.round((a / torch.pow(2.0, e.double()) - 1.0) * 8).to(torch.int32)
    e = torch.where(m == 8, e + 1, e)
    m = torch.where(m == 8, torch.zeros_like(m), m)
    code_n = ((e + 7) << 3) | m
    return torch.where(sub, code_sub, code_n) | sign


def e4m3_encode(v):
    """e4m3fn bytes (int32) of a clamped float tensor: torch's cast where torch has float8."""
    if FP8 is not None:
        return v.to(FP8).view(torch.uint8).to(torch.int32)
    return e4m3_encode_sw(v.float())


def ref_quantize(x, spec):
    """Quantize the source weight x [O, I] (its own dtype D) the way the contract says.

    Returns dict(codes, scale, zp)."""
    p = SPECS[spec]
    k, per = p["kind"], p["per"]
    dt = x.dtype
    O, I = x.shape
    zero = torch.zeros((), dtype=dt)
    eps32 = torch.tensor(EPS, dtype=torch.float32)
    if k in ("int8", "fp8") and per in ("tensor", "channel"):      # FORMAT.md §4.2 / §4.3
        if per == "channel":
            mn, mx = x.amin(dim=1), x.amax(dim=1)                   # exact in D
        else:
            mn, mx = x.min(), x.max()
        amax = torch.maximum(-torch.minimum(mn, zero), torch.maximum(mx, zero))
        xf = x.float()
        if k == "int8":
            s0 = (amax.float() / 127.5).to(dt)                       # rD(amax / 127.5)
            if per == "channel":                                     # floor at eps, stays D
                scale = torch.maximum(s0, eps32.to(dt))
            else:                                                    # per-tensor: promoted to F32
                scale = torch.maximum(s0.float(), eps32)
            sf = scale.float()
            inv = torch.ones_like(sf) / sf                           # float32 reciprocal
            if per == "channel":
                inv = inv[:, None]
            q = torch.clamp(torch.round(xf * inv), -128, 127).to(torch.int32)
            return dict(codes=q, scale=scale, zp=torch.zeros(scale.shape, dtype=torch.int32))
        s = (amax.float() / 448.0).to(dt)                            # rD(amax / 448)
        s = torch.where(s == 0, eps32.to(dt), s)
        sf = s.float()[:, None] if per == "channel" else s.float()
        y = (xf / sf).to(dt).float().clamp(-448, 448)                # rD(x / s), clamped (exact)
        return dict(codes=e4m3_encode(y), scale=s, zp=None)
    if k == "fp8" and per == "block":                                # FORMAT.md §4.4
        B = p["block"]
        xb = x.float().reshape(O // B, B, I // B, B)
        amax = xb.abs().amax(dim=3).amax(dim=1)                      # exact, float32
        s = amax / 448.0                                             # fl32(amax / 448)
        s = torch.where(s == 0, eps32, s)
        y = torch.clamp(xb / s[:, None, :, None], -448, 448)         # fl32(x / s), not rD
        return dict(codes=e4m3_encode(y).reshape(O, I), scale=s, zp=None)
    if k == "int4":                                                  # FORMAT.md §4.5
        G = p["group"]
        xg = x.reshape(O, I // G, G)
        mn, mx = xg.amin(dim=2), xg.amax(dim=2)                      # exact in D
        mn_neg, mx_pos = torch.minimum(mn, zero), torch.maximum(mx, zero)
        if p["signed"]:
            qmin, qmax = -8, 7
            amax = torch.maximum(-mn_neg, mx_pos)
            s0 = (amax.float() / 7.5).to(dt)                         # rD(amax / 7.5)
        else:
            qmin, qmax = 0, 15
            rng = (mx_pos.float() - mn_neg.float()).to(dt)           # rD(mx_pos - mn_neg)
            s0 = (rng.float() / 15.0).to(dt)                         # rD(rng / 15)
        s = torch.maximum(s0, eps32.to(dt))                          # per-group: stays D
        sf = s.float()
        if p["signed"]:
            zp = torch.zeros(s.shape, dtype=torch.int32)
        else:                                                        # zp = clamp(qmin - rne(rD(mn/s)))
            r = torch.round((mn_neg.float() / sf).to(dt).float())
            zp = torch.clamp(qmin - r, qmin, qmax).to(torch.int32)
        inv = torch.ones_like(sf) / sf
        y = torch.round(xg.float() * inv[:, :, None])               # Quark: round, then + zp
        q = torch.clamp(y + zp.float()[:, :, None], qmin, qmax).to(torch.int32).reshape(O, I)
        return dict(codes=q, scale=s, zp=zp)
    if k == "mxfp4":                                                 # FORMAT.md §4.6
        xb = x.float().reshape(O, I // 32, 32)
        amax = xb.abs().amax(dim=2)
        vb = (amax.view(torch.int32) + (1 << 21)) & ~0x7FFFFF        # even_round: v = 2^k
        E = (vb >> 23) & 0xFF
        e = torch.clamp(E - 127 - 2, -127, 127)                      # amax 0 / tiny: -127
        e = torch.where(E == 255, torch.full_like(e, 127), e)        # v = +inf: log2 = inf
        y = xb.double() * torch.pow(2.0, -e.double())[:, :, None]    # x / 2^e, exact
        a = y.abs()
        grid = torch.tensor(E2M1, dtype=torch.float64)
        i = torch.clamp(torch.bucketize(a, grid, right=True) - 1, 0, 7)
        lo = grid[i]
        hi = grid[torch.clamp(i + 1, max=7)]
        dl, dh = a - lo, hi - a
        idx = torch.where(dl < dh, i, torch.where(dl > dh, i + 1, torch.where(i % 2 == 0, i, i + 1)))
        idx = torch.where(a >= 6.0, torch.full_like(idx, 7), idx)
        code = idx | torch.where((y < 0) & (idx != 0), 8, 0)
        byte = torch.clamp(e, min=-126) + 127
        return dict(codes=code.reshape(O, I).to(torch.int32), scale=byte.to(torch.uint8), zp=None)
    raise ValueError(spec)


# ---------------------------------------------------------------------------------------------
# Decoding a view's module (its own layout) into canonical codes / scales / zero points
# ---------------------------------------------------------------------------------------------

def _u32(words):
    return words.to(torch.int64) & 0xFFFFFFFF


def unpack_awq(words, signed):
    """I32 [R, C] -> int32 [R, 8C]: element j of word c at bit AWQ_SHIFTS[j] (FORMAT.md §4.9)."""
    u = _u32(words)
    R, C = u.shape
    out = torch.stack([(u >> sh) & 0xF for sh in AWQ_SHIFTS], dim=-1).reshape(R, C * 8)
    if signed:
        out = torch.where(out >= 8, out - 16, out)
    return out.to(torch.int32)


def unpack_plain(words, bits):
    """I32 [R, C] -> int32 [R, C*32/bits]: element e at bits*(e % per) of word e // per,
    unsigned (compressed-tensors pack_to_int32, doc/FORMAT.md §4.9)."""
    u = _u32(words)
    per = 32 // bits
    R, C = u.shape
    out = torch.stack([(u >> (bits * k)) & ((1 << bits) - 1) for k in range(per)], dim=-1)
    return out.reshape(R, C * per).to(torch.int32)


def fp8_bytes(t):
    """int32 e4m3 byte values of an F8_E4M3 tensor (float8 or stand-in uint8)."""
    if FP8 is not None and t.dtype == FP8:
        return t.view(torch.uint8).to(torch.int32)
    if t.dtype == torch.uint8:
        return t.to(torch.int32)
    raise ValueError("not an fp8 tensor: %s" % t.dtype)


def decode_view(spec, fmt, module, get, O, I):
    """Canonical dict(codes, scale, zp) of one quantized module, from the view's own tensors.

    get(suffix) -> the view tensor `module.suffix`."""
    p = SPECS[spec]
    k, per = p["kind"], p["per"]
    if k == "int8":
        if fmt == "quark":
            return dict(codes=get("weight").to(torch.int32), scale=get("weight_scale"),
                        zp=get("weight_zero_point").to(torch.int32))
        s = get("weight_scale").reshape(O)                           # [O, 1] -> [O]
        if spec == "w8a8-int8":
            return dict(codes=get("weight").to(torch.int32), scale=s, zp=None)
        shape = get("weight_shape").tolist()
        if shape != [O, I]:
            raise ValueError("weight_shape %s, expected %s" % (shape, [O, I]))
        q = unpack_plain(get("weight_packed"), 8)[:, :I] - 128       # +128 offset
        return dict(codes=q, scale=s, zp=None)
    if k == "fp8":
        if per == "block":
            s = get("weight_scale_inv" if fmt == "fp8" else "weight_scale")
        else:
            s = get("weight_scale")
            s = s.reshape(()) if per == "tensor" else s.reshape(O)
        return dict(codes=fp8_bytes(get("weight")), scale=s, zp=None)
    if k == "int4":
        if fmt in ("quark", "awq"):
            n = ("weight", "weight_scale", "weight_zero_point") if fmt == "quark" else \
                ("qweight", "scales", "qzeros")
            q = unpack_awq(get(n[0]), p["signed"]).t().contiguous()        # [I, O] -> [O, I]
            s = get(n[1]).t().contiguous()                                 # [I/G, O] -> [O, I/G]
            zp = unpack_awq(get(n[2]), p["signed"]).t().contiguous()
            return dict(codes=q, scale=s, zp=zp)
        shape = get("weight_shape").tolist()
        if shape != [O, I]:
            raise ValueError("weight_shape %s, expected %s" % (shape, [O, I]))
        q = unpack_plain(get("weight_packed"), 4)[:, :I] - 8              # +8 offset
        return dict(codes=q, scale=get("weight_scale"), zp=None)
    if k == "mxfp4":
        b = get("weight").to(torch.int32)                                  # [O, I/2]
        q = torch.stack([b & 0xF, b >> 4], dim=-1).reshape(O, I)           # low nibble first
        return dict(codes=q, scale=get("weight_scale"), zp=None)
    raise ValueError(spec)


def expand(s, spec, O, I):
    """A canonical scale / zero point broadcast to [O, I] (float32)."""
    p = SPECS[spec]
    s = s.float()
    per = p["per"]
    if per == "tensor":
        return s.reshape(1, 1).expand(O, I)
    if per == "channel":
        return s.reshape(O, 1).expand(O, I)
    if per == "block":
        B = p["block"]
        return s.repeat_interleave(B, dim=0).repeat_interleave(B, dim=1)
    return s.repeat_interleave(p["group"], dim=1)


def dequantize(can, spec, O, I):
    """float32 [O, I] from canonical codes/scales/zero points."""
    k = SPECS[spec]["kind"]
    c = can["codes"]
    if k == "fp8":
        return E4M3_TABLE[c.long()] * expand(can["scale"], spec, O, I)
    if k == "mxfp4":
        sc = torch.pow(2.0, can["scale"].to(torch.float64) - 127).float()
        return E2M1_TABLE[c.long()] * expand(sc, spec, O, I)
    q = c.float()
    if can["zp"] is not None:
        q = q - expand(can["zp"], spec, O, I)
    return q * expand(can["scale"], spec, O, I)


def compare_canonical(got, ref):
    """Differences between a decoded view module and the reference: list of strings."""
    out = []
    g, r = got["codes"].to(torch.int32), ref["codes"].to(torch.int32)
    if g.shape != r.shape:
        out.append("codes shape %s vs %s" % (list(g.shape), list(r.shape)))
    elif not torch.equal(g, r):
        bad = (g != r).nonzero()
        i = tuple(bad[0].tolist())
        out.append("codes: %d of %d differ, first at %s: got %d expected %d"
                   % (bad.shape[0], g.numel(), list(i), g[i].item(), r[i].item()))
    gs, rs = got["scale"], ref["scale"]
    if tuple(gs.shape) != tuple(rs.shape):
        out.append("scale shape %s vs %s" % (list(gs.shape), list(rs.shape)))
    else:
        a = gs.float() if gs.is_floating_point() else gs.to(torch.int32)
        b = rs.float() if rs.is_floating_point() else rs.to(torch.int32)
        if not same_bits(a, b):
            out.append("scale: %s" % diff_examples(a, b))
    gz = got["zp"] if got["zp"] is not None else None
    rz = ref["zp"] if ref["zp"] is not None else None
    if rz is not None and gz is None:
        if bool((rz != 0).any()):
            out.append("zero point: none in the view, reference has non-zero ones")
    elif gz is not None:
        if rz is None:
            rz = torch.zeros_like(gz)
        if tuple(gz.shape) != tuple(rz.shape) or not torch.equal(gz.to(torch.int32),
                                                                 rz.to(torch.int32)):
            out.append("zero point: %s" % diff_examples(gz.to(torch.int32), rz.to(torch.int32)))
    return out


# ---------------------------------------------------------------------------------------------
# Mounting
# ---------------------------------------------------------------------------------------------

class MountError(Exception):
    """quarkfs did not mount."""


class Mount:
    """A quarkfs mount on a fresh temporary directory (foreground child or daemon)."""

    def __init__(self, args, src, spec, daemon=False, fmt="quark"):
        self.args, self.src, self.spec, self.daemon = args, src, spec, daemon
        self.fmt = fmt
        self.mnt = tempfile.mkdtemp(prefix="quarkfs-mnt-")
        self.proc = None
        self.mount_s = None
        self.unmount_msgs = []

    def env(self):
        """Environment for quarkfs: bundled libraries and fusermount3 first."""
        env = dict(os.environ)
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = self.args.libdir + (":" + old if old else "")
        env["PATH"] = self.args.bindir + ":" + env.get("PATH", "/usr/bin:/bin")
        return env

    def __enter__(self):
        cmd = [self.args.quarkfs, "--spec", self.spec, "--format", self.fmt] + \
            ([] if self.daemon else ["-f"]) + [self.src, self.mnt]
        with open(self.args.quarkfs_log, "a") as lf:
            lf.write("\n==== %s\n" % " ".join(cmd))
        logf = open(self.args.quarkfs_log, "ab")
        t0 = time.perf_counter()
        try:
            if self.daemon:
                r = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env(),
                                   timeout=120)
                self.mount_s = time.perf_counter() - t0
                if r.returncode != 0:
                    raise MountError("quarkfs exited %d (see quarkfs.log)" % r.returncode)
                if not os.path.ismount(self.mnt):
                    raise MountError("quarkfs returned 0 but %s is not a mount point" % self.mnt)
                return self
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         env=self.env())
            while not os.path.ismount(self.mnt):
                if self.proc.poll() is not None:
                    raise MountError("quarkfs exited %d before mounting (see quarkfs.log)"
                                     % self.proc.returncode)
                if time.perf_counter() - t0 > 120:
                    raise MountError("not mounted after 120 s")
                time.sleep(0.005)
            self.mount_s = time.perf_counter() - t0
            return self
        except BaseException:
            self.unmount()
            raise
        finally:
            logf.close()

    def unmount(self):
        """Unmount (umount, then fusermount3 -u, then lazy), reap the child, remove the dir."""
        gc.collect()
        tries = [["umount", self.mnt],
                 [os.path.join(self.args.bindir, "fusermount3"), "-u", self.mnt],
                 ["umount", "-l", self.mnt]]
        msgs = []
        for cmd in tries:
            if not os.path.ismount(self.mnt):
                break
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=60)
                if r.returncode:
                    msgs.append("%s: rc %d %s" % (" ".join(cmd[:2]), r.returncode,
                                                   (r.stderr or "").strip()))
            except Exception as exc:
                msgs.append("%s: %s" % (cmd[0], exc))
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=20)
                if rc != 0:
                    msgs.append("quarkfs -f exited %d after unmount" % rc)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                msgs.append("quarkfs -f did not exit after unmount: killed")
        if os.path.ismount(self.mnt):
            msgs.append("still mounted")
        else:
            try:
                os.rmdir(self.mnt)
            except OSError as exc:
                msgs.append("rmdir: %s" % exc)
        if msgs:
            with open(self.args.quarkfs_log, "a") as lf:
                lf.write("unmount %s: %s\n" % (self.mnt, "; ".join(msgs)))
        self.unmount_msgs = msgs
        return msgs

    def __exit__(self, *exc):
        self.unmount()
        return False


# ---------------------------------------------------------------------------------------------
# Source model
# ---------------------------------------------------------------------------------------------

class Source:
    """A source model directory: headers, tensors (CPU), file digests."""

    def __init__(self, path):
        self.path = path
        self.files = walk_files(path)
        self.st_files = [f for f in self.files if f.endswith(".safetensors")]
        self.meta = {}          # tensor -> (file, dtype, shape)
        self.metadata = {}      # file -> __metadata__
        for f in self.st_files:
            pairs, _ = read_header(os.path.join(path, f))
            for k, v in pairs:
                if k == "__metadata__":
                    self.metadata[f] = dict(v)
                else:
                    v = dict(v)
                    self.meta[k] = (f, v["dtype"], list(v["shape"]))
        self.tensors = {}
        for f in self.st_files:
            _meta, tensors, errors = load_safetensors(os.path.join(path, f))
            if errors:
                raise RuntimeError("source %s: %s" % (f, errors[0]))
            self.tensors.update(tensors)
        self.finite = {}
        for k, (_f, dt, shape) in self.meta.items():
            if linear_like(k, dt, shape):
                self.finite[k] = bool(torch.isfinite(self.tensors[k]).all())
        self.digest = {f: file_digest(os.path.join(path, f)) for f in self.files
                       if not f.endswith(".safetensors")}
        self.config = json.load(open(os.path.join(path, "config.json")))
        with open(os.path.join(path, "config.json")) as fh:
            self.config_text = fh.read()
        idx = os.path.join(path, "model.safetensors.index.json")
        self.index = json.load(open(idx)) if os.path.exists(idx) else None
        first = self.meta.get("model.embed_tokens.weight") or next(iter(self.meta.values()))
        self.dtype = TORCH_DTYPES[first[1]]
        self.nbytes = sum(os.path.getsize(os.path.join(path, f)) for f in self.st_files)


# ---------------------------------------------------------------------------------------------
# Checks of one mounted view
# ---------------------------------------------------------------------------------------------

def check_view(args, name, src, spec, fmt, state, xcache):
    """All checks of one (model, spec, format), in order, on one mount. Returns
    ({check: Check}, info)."""
    expected, quantized, unquant = plan_view(src.meta, src.finite, spec, fmt)
    res = {}
    info = {"quantized_tensors": len(quantized), "view_tensors": len(expected),
            "candidates": len(quantized) + len(unquant)}
    c_mount = Check()
    try:
        m = Mount(args, src.path, spec, fmt=fmt).__enter__()
    except Exception as exc:
        c_mount.fail("%s: %s" % (type(exc).__name__, exc))
        res["mount"] = c_mount.done()
        return res, info
    try:
        c_mount.note("mounted in %.3f s" % m.mount_s)
        info["mount_s"] = m.mount_s
        res["mount"] = c_mount.done()
        mnt = m.mnt
        res["files"] = check_files(mnt, src)
        view, vmeta, res["load"] = check_load(mnt, src, info)
        res["contract"] = check_contract(mnt, src, view, vmeta, expected, quantized, unquant)
        deq, res["values"], res["dequant"] = check_values(src, spec, fmt, view, quantized, info)
        res["xformat"] = check_xformat(xcache, spec, fmt, deq, info)
        res["unchanged"] = check_unchanged(src, view, expected)
        res["bytes_load"] = check_bytes_load(mnt, src, view, info)
        res["config"] = check_config(mnt, src, spec, fmt, quantized, unquant)
        res["index"] = check_index(mnt, src, view)
        res["loader"] = check_loader(args, name, mnt, src, spec, fmt, state, quantized, deq, info)
        res["forward"] = check_forward(args, name, state, spec, quantized, deq, info)
        del view, deq
    finally:
        msgs = m.unmount()
        if msgs:
            c_um = Check()
            for x in msgs:
                c_um.fail("unmount: %s" % x)
            res["unmount"] = c_um.done()
    return res, info


def check_files(mnt, src):
    """files: the view lists the source's files; pass-through files equal the source byte for
    byte; nothing is writable."""
    c_files = Check()
    vfiles = walk_files(mnt)
    if vfiles != src.files:
        c_files.fail("file list differs: only in view %s, only in source %s"
                     % (sorted(set(vfiles) - set(src.files)),
                        sorted(set(src.files) - set(vfiles))))
    for f in src.files:
        if f.endswith(".safetensors") or f in ("config.json", "model.safetensors.index.json"):
            continue
        vp = os.path.join(mnt, f)
        if not os.path.exists(vp):
            continue
        if file_digest(vp) != src.digest[f]:
            c_files.fail("%s differs from the source" % f)
    for f in vfiles:
        st = os.stat(os.path.join(mnt, f))
        if st.st_mode & 0o222:
            c_files.fail("%s has write bits (%o)" % (f, st.st_mode & 0o777))
    return c_files.done()


def check_load(mnt, src, info):
    """(a) load: every tensor of the view through safe_open (mmap), timed, twice (the second
    read must equal the first), and the source's files the same way for comparison.
    Returns (view {name: (file, tensor)}, {file: metadata}, Check)."""
    c_load = Check()
    view = {}
    vmeta = {}
    read_s, nbytes, loaded = timed_read([os.path.join(mnt, f) for f in src.st_files])
    tensors = None
    for (pth, meta, tensors, errors), f in zip(loaded, src.st_files):
        vmeta[f] = meta
        for e in errors:
            c_load.fail("%s: %s" % (f, e))
        for k, t in tensors.items():
            view[k] = (f, t)
    del loaded, tensors
    info["warm_read_s"], _n, again = timed_read([os.path.join(mnt, f) for f in src.st_files])
    for pth, _meta, tensors, errors in again:
        for e in errors:
            c_load.fail("second read: %s: %s" % (os.path.basename(pth), e))
        for k, t in tensors.items():
            if k not in view or not same_bits(t, view[k][1]):
                c_load.fail("second read of %s differs from the first" % k)
    del again, tensors
    info["src_read_s"], info["src_bytes"], dropped = timed_read(
        [os.path.join(src.path, f) for f in src.st_files])
    del dropped
    gc.collect()
    info["read_s"] = read_s
    info["read_bytes"] = nbytes
    c_load.note("%d tensors, %.1f MB of tensor data in %.3f s" % (len(view), nbytes / 1e6,
                                                                 read_s))
    return view, vmeta, c_load.done()


def check_contract(mnt, src, view, vmeta, expected, quantized, unquant):
    """(a) contract: tensor names, dtypes, shapes and files; each header's layout (metadata
    first, length a multiple of 8, dtype-then-name order, data back to back); metadata."""
    c_con = Check()
    if set(view) != set(expected):
        extra, missing = sorted(set(view) - set(expected)), sorted(set(expected) - set(view))
        if extra:
            c_con.fail("unexpected view tensors: %s" % extra[:10])
        if missing:
            c_con.fail("missing view tensors: %s" % missing[:10])
    for k, (f, dt, shape, role, _s) in sorted(expected.items()):
        if k not in view:
            continue
        vf, t = view[k]
        if vf != f:
            c_con.fail("%s is in %s, expected %s" % (k, vf, f))
        if t.dtype != TORCH_DTYPES[dt] or list(t.shape) != shape:
            c_con.fail("%s: %s%s, expected %s%s" % (k, t.dtype, list(t.shape), dt, shape))
    for f in src.st_files:
        check_header_layout(c_con, mnt, src, f, vmeta, expected)
    c_con.note("%d view tensors, %d of %d Linear-like quantized; unquantized: %s"
               % (len(expected), len(quantized), len(quantized) + len(unquant),
                  summarize_reasons(unquant)))
    return c_con.done()


def check_header_layout(c_con, mnt, src, f, vmeta, expected):
    """The header of view file f, into c_con (see check_contract)."""
    try:
        pairs, n = read_header(os.path.join(mnt, f))
    except Exception as exc:
        c_con.fail("%s: header: %s" % (f, exc))
        return
    if not pairs or pairs[0][0] != "__metadata__":
        c_con.fail("%s: __metadata__ is not the first header key" % f)
    if n % 8:
        c_con.fail("%s: header length %d not a multiple of 8" % (f, n))
    ents = header_dict(pairs)
    for k, e in ents.items():
        if k in expected and e["dtype"] != expected[k][1]:
            c_con.fail("%s: header dtype %s, expected %s" % (k, e["dtype"], expected[k][1]))
    order = [k for k, _ in pairs if k != "__metadata__"]
    want = sorted(order, key=lambda k: (-DTYPE_RANK[ents[k]["dtype"]], k.encode("utf-8")))
    if order != want:
        c_con.fail("%s: header order is not (dtype desc, name)" % f)
    pos = 0
    for k in order:
        b, e = ents[k]["data_offsets"]
        if b != pos:
            c_con.fail("%s: %s starts at %d, expected %d (data not in header order)"
                       % (f, k, b, pos))
            break
        pos = e
    meta = vmeta.get(f) or {}
    want_meta = dict(src.metadata.get(f) or {})
    want_meta["format"] = "pt"
    if meta != want_meta:
        c_con.fail("%s: metadata %s, expected %s" % (f, meta, want_meta))


def check_values(src, spec, fmt, view, quantized, info):
    """(c) values: each quantized module's canonical codes, scales and zero points bit for bit
    against the torch reference; (b) dequant: the dequantized weights against the source
    (relative RMS under the bound of the bit width). Returns ({weight: dequantized}, values
    Check, dequant Check)."""
    p = SPECS[spec]
    c_val, c_deq = Check(), Check()
    deq = {}
    ref_s, err2, ref2, worst = 0.0, 0.0, 0.0, (0.0, None)
    for w in quantized:
        module = w[: -len(".weight")]
        O, I = src.meta[w][2]

        def get(suffix, module=module, vt=view):
            key = module + "." + suffix
            if key not in vt:
                raise KeyError("%s not in the view" % key)
            return vt[key][1]
        try:
            got = decode_view(spec, fmt, module, get, O, I)
        except Exception as exc:
            c_val.fail("%s: cannot decode: %s: %s" % (module, type(exc).__name__, exc))
            c_deq.fail("%s: cannot decode" % module)
            continue
        t1 = time.perf_counter()
        ref = ref_quantize(src.tensors[w], spec)
        ref_s += time.perf_counter() - t1
        for d in compare_canonical(got, ref):
            c_val.fail("%s: %s" % (module, d))
        del ref
        wq = dequantize(got, spec, O, I)
        if not bool(torch.isfinite(wq).all()):
            c_deq.fail("%s: non-finite dequantized values" % module)
        x = src.tensors[w].float()
        e2 = float(((wq.double() - x.double()) ** 2).sum())
        r2 = float((x.double() ** 2).sum())
        err2 += e2
        ref2 += r2
        rel = math.sqrt(e2 / r2) if r2 > 0 else 0.0
        if rel > worst[0]:
            worst = (rel, module)
        deq[w] = wq
    info["ref_s"] = ref_s
    c_val.note("%d quantized modules decoded from the %s layout and compared with the "
               "reference (codes, scales%s); reference %.1f s"
               % (len(quantized), fmt, ", zero points" if p["kind"] in ("int8", "int4") else "",
                  ref_s))
    if quantized and ref2 > 0:
        rel = math.sqrt(err2 / ref2)
        info["rel_rms"] = rel
        info["rel_rms_max"] = worst[0]
        bound = REL_RMS_BOUND[p["bits"]]
        c_deq.note("weight rel-RMS %.4f over %d tensors (max %.4f, %s); bound %.2f"
                   % (rel, len(deq), worst[0], worst[1], bound))
        if not rel < bound:
            c_deq.fail("weight rel-RMS %.4f >= %.2f" % (rel, bound))
    return deq, c_val.done(PASS if quantized else NA), c_deq.done(PASS if quantized else NA)


def check_xformat(xcache, spec, fmt, deq, info):
    """xformat: the spec's dequantized weights equal those of its first format checked
    (xcache holds that one: {spec: (format, deq)}, reset when the spec changes)."""
    c_x = Check()
    first = xcache.get(spec)
    if first is None:
        xcache.clear()
        xcache[spec] = (fmt, deq)
        c_x.note("first format of %s" % spec)
        return c_x.done(NA)
    ffmt, fdeq = first
    common = sorted(set(fdeq) & set(deq))
    diff = [w for w in common if not same_bits(fdeq[w], deq[w])]
    for w in diff[:5]:
        c_x.fail("%s: dequantizes differently from format %s" % (w, ffmt))
    only = sorted(set(fdeq) ^ set(deq))
    c_x.note("%d common quantized modules identical to format %s%s"
             % (len(common) - len(diff), ffmt,
                ("; %d quantized in only one of them (shape rules of the formats)"
                 % len(only)) if only else ""))
    info["xformat_common"] = len(common)
    return c_x.done()


def check_unchanged(src, view, expected):
    """unchanged: every tensor the view copies equals the source's bit for bit."""
    c_unc = Check()
    ncopy = 0
    for k, (f, dt, shape, role, s) in expected.items():
        if role != "copy" or k not in view:
            continue
        ncopy += 1
        if not same_bits(view[k][1], src.tensors[s]):
            c_unc.fail("%s: %s" % (k, diff_examples(view[k][1], src.tensors[s])))
    c_unc.note("%d tensors compared" % ncopy)
    return c_unc.done()


def check_bytes_load(mnt, src, view, info):
    """bytes_load: read(2) of each view file + safetensors.torch.load(bytes) equals the mmap
    read."""
    c_bytes = Check()
    t0 = time.perf_counter()
    for f in src.st_files:
        try:
            with open(os.path.join(mnt, f), "rb") as fh:
                data = fh.read()
            loaded = st_torch.load(data)
            del data
        except Exception as exc:
            c_bytes.fail("%s: %s: %s" % (f, type(exc).__name__, exc))
            continue
        for k, t in loaded.items():
            if k not in view or not same_bits(t, view[k][1]):
                c_bytes.fail("%s: %s differs from the mmap read" % (f, k))
        del loaded
    info["reread_s"] = time.perf_counter() - t0
    return c_bytes.done()


def check_config(mnt, src, spec, fmt, quantized, unquant):
    """config: config.json is the source's plus the format's quantization_config, and
    transformers' AutoConfig reads it with the format's quant_method."""
    c_cfg = Check()
    try:
        vtext = open(os.path.join(mnt, "config.json")).read()
        vcfg = json.loads(vtext)
        qc = vcfg.pop("quantization_config", None)
        if vcfg != src.config:
            c_cfg.fail("config.json differs from the source outside quantization_config")
        check_qconfig(c_cfg, qc, spec, fmt, quantized, unquant)
    except Exception as exc:
        c_cfg.fail("config.json: %s: %s" % (type(exc).__name__, exc))
    if transformers is None:
        c_cfg.note("transformers not installed: AutoConfig not tried")
        return c_cfg.done()
    want_qm = "compressed-tensors" if fmt == "compressed-tensors" else fmt
    try:
        acfg = AutoConfig.from_pretrained(mnt)
        aq = getattr(acfg, "quantization_config", None)
        qm = aq.get("quant_method") if isinstance(aq, dict) else getattr(aq, "quant_method", None)
        qm = getattr(qm, "value", qm)
        if qm != want_qm:
            c_cfg.fail("AutoConfig: quantization_config.quant_method = %r" % (qm,))
        else:
            c_cfg.note("AutoConfig: %s, quant_method %s" % (type(acfg).__name__, qm))
    except ImportError as exc:
        c_cfg.note("AutoConfig needs a package (not run): %s" % str(exc)[:200])
    except Exception as exc:
        c_cfg.fail("AutoConfig.from_pretrained: %s: %s" % (type(exc).__name__, exc))
    return c_cfg.done()


def check_index(mnt, src, view):
    """index: model.safetensors.index.json maps every view tensor to its file, sorted, with
    the tensors' total size (n/a when the source has no index)."""
    c_idx = Check()
    ip = os.path.join(mnt, "model.safetensors.index.json")
    if src.index is None:
        if os.path.exists(ip):
            c_idx.fail("view has an index but the source has none")
        return c_idx.done(NA)
    try:
        idx = json.loads(open(ip).read())
        wm = idx.get("weight_map", {})
        want = {k: f for k, (f, t) in view.items()}
        if set(wm) != set(view):
            c_idx.fail("weight_map: %d keys; not in view %s; view tensors missing %s"
                       % (len(wm), sorted(set(wm) - set(view))[:5],
                          sorted(set(view) - set(wm))[:5]))
        bad = [k for k in wm if k in want and wm[k] != want[k]]
        if bad:
            c_idx.fail("weight_map points to the wrong file for %s" % bad[:5])
        if list(wm) != sorted(wm):
            c_idx.fail("weight_map keys not sorted")
        total = sum(t.numel() * t.element_size() for _f, t in view.values())
        meta = idx.get("metadata", {})
        if meta.get("total_size") != total:
            c_idx.fail("metadata.total_size %s, tensors hold %d bytes"
                       % (meta.get("total_size"), total))
    except Exception as exc:
        c_idx.fail("%s: %s" % (type(exc).__name__, exc))
    return c_idx.done()


def check_loader(args, name, mnt, src, spec, fmt, state, quantized, deq, info):
    """(d) loader: transformers loading the view itself (loader_check); an error of the
    harness is a FAIL with its traceback, not an abort of the row."""
    try:
        return loader_check(args, name, mnt, src, spec, fmt, state, quantized, deq, info)
    except Exception as exc:
        c_l = Check()
        c_l.fail("harness error: %s: %s" % (type(exc).__name__, exc))
        c_l.note(traceback.format_exc()[-1500:])
        return c_l.done()


def check_forward(args, name, state, spec, quantized, deq, info):
    """forward: the dequantized weights in the unquantized transformers model; logits within
    the bit width's bound of the reference's."""
    c_fw = Check()
    if transformers is None or not args.forward.get(name, True) or state is None:
        c_fw.note("not run (%s)" % ("no transformers" if transformers is None else
                                     "disabled for this model" if not args.forward.get(name, True)
                                     else "reference model did not load"))
        return c_fw.done(NOTRUN)
    if not quantized:
        c_fw.note("nothing quantized: the view's weights are the source's")
        return c_fw.done(NA)
    try:
        fw = forward_check(state, deq)
        info.update(fw)
        c_fw.note("rel_err %.5f, top-1 agreement %.4f over %d positions"
                  % (fw["rel_err"], fw["top1"], fw["positions"]))
        bound = FORWARD_MAX_REL_ERR[SPECS[spec]["bits"]]
        if not (fw["rel_err"] < bound):
            c_fw.fail("relative logits error %.4f >= %.2f" % (fw["rel_err"], bound))
    except Exception as exc:
        c_fw.fail("%s: %s" % (type(exc).__name__, exc))
        c_fw.note(traceback.format_exc()[-1500:])
    return c_fw.done()


def summarize_reasons(unquant):
    """{module: reason} -> 'N x reason; ...'."""
    if not unquant:
        return "none"
    cnt = {}
    for r in unquant.values():
        cnt[r] = cnt.get(r, 0) + 1
    return "; ".join("%d x %s" % (n, r) for r, n in sorted(cnt.items(), key=lambda x: -x[1]))


def check_exclusion(c, excl, unquant, quantized, key):
    """The format's exclusion list names every unquantized Linear-like module, no quantized one."""
    if not isinstance(excl, list):
        c.fail("%s is %r, expected a list" % (key, excl))
        return
    for mod in sorted(unquant):
        if mod not in excl:
            c.fail("unquantized module %s not in %s" % (mod, key))
    qmods = {w[: -len(".weight")] for w in quantized}
    bad = sorted(qmods & set(excl))
    if bad:
        c.fail("quantized modules listed in %s: %s" % (key, bad[:5]))
    c.note("%s: %d entries" % (key, len(excl)))


def check_qconfig(c, qc, spec, fmt, quantized, unquant):
    """quantization_config fields pinned by the contract, per format."""
    p = SPECS[spec]
    k, per = p["kind"], p["per"]
    if not isinstance(qc, dict):
        c.fail("no quantization_config object")
        return
    want_qm = {"quark": "quark", "awq": "awq", "fp8": "fp8",
               "compressed-tensors": "compressed-tensors"}[fmt]
    if qc.get("quant_method") != want_qm:
        c.fail("quant_method %r, expected %r" % (qc.get("quant_method"), want_qm))
    if fmt == "quark":                                       # FORMAT.md §6.1
        g = qc.get("global_quant_config") or {}
        w = g.get("weight") or {}
        want_dt = {"int8": "int8", "fp8": "fp8_e4m3", "mxfp4": "fp4",
                   "int4": "int4" if p.get("signed") else "uint4"}[k]
        if w.get("dtype") != want_dt:
            c.fail("weight.dtype %r, expected %r" % (w.get("dtype"), want_dt))
        want_q = {"tensor": "per_tensor", "channel": "per_channel", "group": "per_group"}[per]
        if w.get("qscheme") != want_q:
            c.fail("weight.qscheme %r, expected %r" % (w.get("qscheme"), want_q))
        if per == "channel" and w.get("ch_axis") != 0:
            c.fail("weight.ch_axis %r, expected 0" % w.get("ch_axis"))
        if per == "group":
            if w.get("ch_axis") not in (-1, 1):
                c.fail("weight.ch_axis %r, expected -1" % w.get("ch_axis"))
            if w.get("group_size") != p["group"]:
                c.fail("weight.group_size %r, expected %d" % (w.get("group_size"), p["group"]))
        if w.get("is_dynamic") is not False:
            c.fail("weight.is_dynamic %r" % w.get("is_dynamic"))
        want_sym = {"int8": True, "int4": bool(p.get("signed")), "fp8": None, "mxfp4": None}[k]
        if want_sym is not None and w.get("symmetric") is not want_sym:
            c.fail("weight.symmetric %r, expected %r" % (w.get("symmetric"), want_sym))
        if k == "mxfp4" and (w.get("scale_format") != "e8m0"
                             or w.get("scale_calculation_mode") != "even"):
            c.fail("mxfp4 weight scale_format %r / scale_calculation_mode %r"
                   % (w.get("scale_format"), w.get("scale_calculation_mode")))
        it = g.get("input_tensors")
        if p["inp"] is None:
            if it is not None:
                c.fail("input_tensors %r, expected null (weight-only)" % (it,))
        elif not isinstance(it, dict) or it.get("dtype") != p["inp"][0] or \
                it.get("is_dynamic") is not p["inp"][1]:
            c.fail("input_tensors %r, expected dynamic %s" % (it, p["inp"][0]))
        for key in ("layer_quant_config", "layer_type_quant_config", "exclude",
                    "global_quant_config"):
            if key not in qc:
                c.fail("missing %s" % key)
        exp = qc.get("export")
        if not isinstance(exp, dict) or set(exp) != EXPORT_KEYS or \
                not isinstance(exp.get("kv_cache_group"), list):
            c.fail("export %r: must hold exactly %s" % (exp, sorted(EXPORT_KEYS)))
        elif k == "int4" and exp.get("pack_method") != "reorder":
            c.fail("export.pack_method %r, expected reorder" % exp.get("pack_method"))
        check_exclusion(c, qc.get("exclude") or [], unquant, quantized, "exclude")
    elif fmt == "awq":                                       # FORMAT.md §6.2
        for key, want in (("bits", 4), ("group_size", p["group"]), ("version", "gemm"),
                          ("zero_point", not p["signed"]), ("pack_method", "reorder")):
            if qc.get(key) != want:
                c.fail("%s %r, expected %r" % (key, qc.get(key), want))
        check_exclusion(c, qc.get("modules_to_not_convert") or [], unquant, quantized,
                        "modules_to_not_convert")
    elif fmt == "fp8":                                       # FORMAT.md §6.3, §9
        if qc.get("activation_scheme") != "dynamic":
            c.fail("activation_scheme %r, expected dynamic" % qc.get("activation_scheme"))
        if per == "block":
            if qc.get("weight_block_size") != [128, 128]:
                c.fail("weight_block_size %r, expected [128, 128]" % qc.get("weight_block_size"))
        else:
            if qc.get("weight_block_size") is not None:
                c.fail("weight_block_size %r in a per-tensor config" % qc.get("weight_block_size"))
            c.note("no weight_block_size (Quark custom_mode fp8 writes none; transformers then "
                   "defaults to [128, 128], doc/FORMAT.md §9)")
        lists = [key for key in ("modules_to_not_convert", "ignored_layers") if key in qc]
        if not lists:
            c.fail("neither modules_to_not_convert nor ignored_layers")
        for key in lists:
            check_exclusion(c, qc.get(key) or [], unquant, quantized, key)
    else:                                                    # FORMAT.md §6.4
        if qc.get("quantization_status") != "compressed":
            c.fail("quantization_status %r" % qc.get("quantization_status"))
        want_fmt = ("int-quantized" if spec == "w8a8-int8" else
                    "float-quantized" if k == "fp8" else "pack-quantized")
        groups = qc.get("config_groups") or {}
        if len(groups) != 1:
            c.fail("config_groups has %d groups, expected 1" % len(groups))
        for gname, g in groups.items():
            if (g.get("format") or qc.get("format")) != want_fmt:
                c.fail("%s format %r, expected %r" % (gname, g.get("format") or qc.get("format"),
                                                      want_fmt))
            if g.get("targets") != ["Linear"]:
                c.fail("%s targets %r" % (gname, g.get("targets")))
            w = g.get("weights") or {}
            want = {"num_bits": p["bits"], "type": "float" if k == "fp8" else "int",
                    "symmetric": True, "dynamic": False,
                    "strategy": {"tensor": "tensor", "channel": "channel", "group": "group",
                                 "block": "block"}[per]}
            if per == "group":
                want["group_size"] = p["group"]
            if per == "block":
                want["block_structure"] = [128, 128]
            for key, v in want.items():
                if w.get(key) != v:
                    c.fail("%s weights.%s %r, expected %r" % (gname, key, w.get(key), v))
            ia = g.get("input_activations")
            if p["inp"] is None:
                if ia is not None:
                    c.fail("%s input_activations %r, expected null" % (gname, ia))
            elif not isinstance(ia, dict) or ia.get("dynamic") is not True or \
                    ia.get("type") != ("int" if k == "int8" else "float"):
                c.fail("%s input_activations %r, expected dynamic" % (gname, ia))
        check_exclusion(c, qc.get("ignore") or [], unquant, quantized, "ignore")


# ---------------------------------------------------------------------------------------------
# Forward pass and loaders
# ---------------------------------------------------------------------------------------------

def _from_pretrained(path, dtype, **kw):
    """AutoModelForCausalLM.from_pretrained with `dtype` (transformers 5) or `torch_dtype`."""
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)
    except TypeError as exc:
        if "dtype" not in str(exc):
            raise
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, **kw)


def load_reference(src, name, device):
    """transformers model from SRC (unquantized) on device, input ids and reference logits."""
    model = _from_pretrained(src.path, src.dtype, attn_implementation="eager")
    model = model.to(device).eval()
    bad = [k for k, t in model.state_dict().items() if k in src.tensors
           and not same_bits(t.detach().cpu(), src.tensors[k].to(t.dtype))]
    how = ""
    with torch.no_grad():
        ids = None
        if name.startswith("stories"):
            # a real model: greedy continuation of BOS, so the input is in-distribution text
            try:
                bos = int(getattr(model.config, "bos_token_id", 1) or 1)
                ids = model.generate(torch.tensor([[bos]], device=device), max_new_tokens=127,
                                     min_new_tokens=127, do_sample=False, pad_token_id=0)
                how = "greedy continuation of BOS, %d tokens" % ids.shape[1]
            except Exception as exc:  # fall back to fixed ids
                how = "generate failed (%s); fixed random ids" % exc
                ids = None
        if ids is None:
            g = torch.Generator().manual_seed(1234)
            vocab = model.config.vocab_size
            ids = torch.randint(0, vocab, (2, 128), generator=g).to(device)
            how = how or "fixed random ids (seed 1234), 2 x 128"
        ref = model(ids).logits.float()
    return {"model": model, "ids": ids, "ref": ref, "input": how, "device": device,
            "param_mismatch": bad}


def forward_check(state, deq):
    """Swap the dequantized view weights into the model, run it, compare, restore."""
    model, ids, ref = state["model"], state["ids"], state["ref"]
    saved = {}
    try:
        with torch.no_grad():
            for w, wq in deq.items():
                prm = model.get_parameter(w)
                saved[w] = prm.detach().clone()
                prm.copy_(wq.to(prm.device).to(prm.dtype))
            out = model(ids).logits.float()
    finally:
        with torch.no_grad():
            for w, t in saved.items():
                model.get_parameter(w).copy_(t)
    return compare_logits(out, ref, ids)


def compare_logits(out, ref, ids):
    """rel err = |out - ref| / |ref|, top-1 agreement."""
    rel = float((out - ref).norm() / ref.norm())
    top1 = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    return {"rel_err": rel, "top1": top1, "positions": int(ids.numel()),
            "finite": bool(torch.isfinite(out).all())}


class _LogCapture(logging.Handler):
    """Collects transformers' log records (missing/unexpected weight reports)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append(record.getMessage())
        except Exception:
            pass


PACKAGES = {"quark": "amd-quark", "awq": "gptqmodel", "compressed-tensors": "compressed-tensors"}


def loader_check(args, name, mnt, src, spec, fmt, state, quantized, deq, info):
    """(d) transformers' own loading of the view."""
    c = Check()
    if transformers is None or not args.forward.get(name, True):
        c.note("not attempted (%s)" % ("no transformers" if transformers is None else
                                       "disabled for this model"))
        return c.done(NOTRUN)
    if fmt != "fp8":
        try:
            qm = _from_pretrained(mnt, src.dtype)
            c.note("loaded (%s) - %s present?" % (type(qm).__name__, PACKAGES[fmt]))
            del qm
            gc.collect()
            return c.done(PASS)
        except Exception as exc:
            msg = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0][:300])
            c.note(msg)
            info["loader_error"] = msg
            low = str(exc).lower()
            missing_pkg = isinstance(exc, ImportError) or "install" in low
            return c.done(NOTRUN if missing_pkg else FAIL)
    # format fp8: FineGrainedFP8 with dequantize=True (doc/FORMAT.md §9)
    from transformers import FineGrainedFP8Config
    cap = _LogCapture()
    lg = logging.getLogger("transformers")
    lg.addHandler(cap)
    per_tensor = SPECS[spec]["per"] != "block"
    model = None
    try:
        out = _from_pretrained(mnt, src.dtype, attn_implementation="eager",
                               quantization_config=FineGrainedFP8Config(dequantize=True),
                               output_loading_info=True)
        model, li = out if isinstance(out, tuple) else (out, {})
        li = {k: list(v) if isinstance(v, (set, list, tuple)) else v
              for k, v in (li or {}).items()}
        miss = list(li.get("missing_keys") or [])
        unexp = list(li.get("unexpected_keys") or [])
        mism = list(li.get("mismatched_keys") or [])
        info["loader_missing"], info["loader_unexpected"] = len(miss), len(unexp)
        c.note("loaded; missing %d %s, unexpected %d %s, mismatched %d %s"
               % (len(miss), miss[:4], len(unexp), unexp[:4], len(mism), mism[:4]))
        mods = sorted({type(m).__name__ for m in model.modules()
                       if "Linear" in type(m).__name__})
        c.note("Linear module types: %s" % mods)
        model = model.to(state["device"]).eval() if state else model
        problems = []
        if miss or unexp or mism:
            problems.append("weights reported missing/unexpected/mismatched")
        if state is not None:
            with torch.no_grad():
                lo = compare_logits(model(state["ids"]).logits.float(), state["ref"], state["ids"])
            info["loader_rel_err"], info["loader_top1"] = lo["rel_err"], lo["top1"]
            c.note("logits vs the unquantized model: rel err %.5f, top-1 %.4f"
                   % (lo["rel_err"], lo["top1"]))
            if not (lo["rel_err"] < LOADER_MAX_REL_ERR) or not lo["finite"]:
                problems.append("logits rel err %.4f" % lo["rel_err"])
        # the weights transformers ended up with vs this script's dequantization
        same, tot, worst = 0, 0, 0.0
        for w in quantized:
            try:
                prm = model.get_parameter(w).detach().float().cpu()
            except Exception as exc:
                problems.append("%s: %s" % (w, exc))
                break
            ref = deq[w].to(src.tensors[w].dtype).float()
            if prm.shape != ref.shape:
                problems.append("%s: loaded shape %s" % (w, list(prm.shape)))
                continue
            same += int((prm == ref).sum())
            tot += prm.numel()
            worst = max(worst, float((prm - ref).abs().max()))
        if tot:
            c.note("loaded quantized weights vs this script's dequantization (rounded to the "
                   "model dtype): %.4f %% equal, max abs diff %.3g" % (100.0 * same / tot, worst))
            info["loader_weights_equal"] = same / tot
        if problems:
            c.note("; ".join(problems))
            if per_tensor:
                c.note("per-tensor fp8 is not a transformers layout (doc/FORMAT.md §9: it wants "
                       "weight_scale_inv; `quarkfs --list-specs` names only vLLM for fp8/fp8)")
                return c.done(INCOMPAT)
            for pr in problems:
                c.fail(pr)
        return c.done()
    except Exception as exc:
        msg = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0][:300])
        c.note("from_pretrained raised %s" % msg)
        c.note(traceback.format_exc()[-1200:])
        info["loader_error"] = msg
        if per_tensor:
            return c.done(INCOMPAT)
        c.fail(msg)
        return c.done()
    finally:
        lg.removeHandler(cap)
        rel = [ln for ln in cap.lines if any(s in ln.lower() for s in
                                              ("missing", "unexpected", "not used", "newly",
                                               "mismatch", "not initialized"))]
        if rel:
            c.note("transformers log: %s" % " | ".join(ln.replace("\n", " ")[:400]
                                                        for ln in rel[:3]))
        del model
        gc.collect()


# ---------------------------------------------------------------------------------------------
# Daemon mode, self-tests, pairs, test-model patching
# ---------------------------------------------------------------------------------------------

def daemon_check(args, src):
    """Mount without -f: the command must return 0 with the mount up; read; unmount."""
    c = Check()
    try:
        with Mount(args, src.path, "int8", daemon=True) as m:
            c.note("quarkfs returned after %.3f s with the mount up" % m.mount_s)
            cfg = json.load(open(os.path.join(m.mnt, "config.json")))
            if (cfg.get("quantization_config") or {}).get("quant_method") != "quark":
                c.fail("config.json of the daemon mount has no quark quantization_config")
            _meta, tensors, errors = load_safetensors(os.path.join(m.mnt, src.st_files[0]))
            for e in errors:
                c.fail(e)
            c.note("%d tensors read" % len(tensors))
            del tensors
            gc.collect()
        if m.unmount_msgs:
            c.fail("unmount: %s" % "; ".join(m.unmount_msgs))
    except Exception as exc:
        c.fail("%s: %s" % (type(exc).__name__, exc))
    return c.done()


def selftest():
    """The reference's own arithmetic on hand-worked values, and the software e4m3 encoder
    against torch's float8 cast (where torch has one)."""
    c = Check()

    def expect(what, got, want):
        if got != want:
            c.fail("%s: got %s, expected %s" % (what, got, want))
    # mxfp4 (FORMAT.md §4.6): amax 6 -> even_round keeps 4 -> e = 0, byte 127; ties -> even code
    row = [6.0, 0.25, 0.75, 2.5, 5.0, -0.0, -0.1, 1.25, 1.75, 3.5, -6.0, -7.0] + [0.0] * 20
    r = ref_quantize(torch.tensor([row], dtype=torch.bfloat16), "mxfp4")
    expect("mxfp4 byte, amax 7", r["scale"].tolist(), [[128]])   # 7 = 1.75*4 rounds up to 8: e = 1
    row[11] = -4.5
    r = ref_quantize(torch.tensor([row], dtype=torch.bfloat16), "mxfp4")
    expect("mxfp4 byte, amax 6", r["scale"].tolist(), [[127]])
    expect("mxfp4 codes", r["codes"][0, :12].tolist(), [7, 0, 2, 4, 6, 0, 0, 2, 4, 6, 15, 14])
    r = ref_quantize(torch.zeros(1, 32, dtype=torch.bfloat16), "mxfp4")
    expect("mxfp4 all-zero byte", r["scale"].tolist(), [[1]])
    # int4 symmetric: amax = 7.5 * 2^-4 -> s = 2^-4; +amax -> 7.5 -> 8 -> 7, -amax -> -8
    x = torch.zeros(1, 32, dtype=torch.bfloat16)
    x[0, 0], x[0, 1], x[0, 2] = 7.5 / 16, -7.5 / 16, 2.5 / 16
    r = ref_quantize(x, "int4-g32")
    expect("int4 scale", r["scale"].float().tolist(), [[1 / 16]])
    expect("int4 codes", r["codes"][0, :4].tolist(), [7, -8, 2, 0])
    # uint4 asymmetric: mn -0.5, mx 1 -> s = rD(1.5/15) = 0.10009765625, zp = -rne(rD(-4.995)) = 5
    x = torch.zeros(1, 32, dtype=torch.bfloat16)
    x[0, 0], x[0, 1] = -0.5, 1.0
    r = ref_quantize(x, "uint4-g32")
    expect("uint4 scale", r["scale"].float().tolist(), [[0.10009765625]])
    expect("uint4 zp", r["zp"].tolist(), [[5]])
    expect("uint4 codes", r["codes"][0, :3].tolist(), [0, 15, 5])
    r = ref_quantize(torch.zeros(1, 32, dtype=torch.bfloat16), "uint4-g32")
    expect("uint4 all-zero group", (r["scale"].float().tolist(), r["zp"].tolist()),
           ([[EPS]], [[0]]))
    # fp8-block: all-zero block -> 2^-23; amax 448 -> s = 1 exactly
    x = torch.zeros(128, 256, dtype=torch.bfloat16)
    x[3, 130] = 448.0
    x[4, 131] = -17.0                  # e4m3 tie 16/18 -> 16 (even mantissa): 0x80 | 11 << 3
    r = ref_quantize(x, "fp8-block")
    expect("fp8-block scales", r["scale"].tolist(), [[EPS, 1.0]])
    expect("fp8-block codes", [r["codes"][3, 130].item(), r["codes"][4, 131].item()],
           [0x7E, 0xD8])
    # the software e4m3 encoder vs torch's cast
    if FP8 is not None:
        g = torch.Generator().manual_seed(7)
        v = torch.cat([torch.randn(200000, generator=g) * 50,
                       torch.randn(200000, generator=g) * 2.0 ** -8,
                       torch.arange(-65536, 65536, dtype=torch.int32).to(torch.int16)
                       .view(torch.bfloat16).float()])
        v = v[torch.isfinite(v)].clamp(-448, 448)
        sw, hw = e4m3_encode_sw(v), v.to(FP8).view(torch.uint8).to(torch.int32)
        nbad = int((sw != hw).sum())
        if nbad:
            i = int((sw != hw).nonzero()[0])
            c.fail("software e4m3 encoder differs from torch on %d of %d values (e.g. %r: %d vs %d)"
                   % (nbad, v.numel(), v[i].item(), sw[i].item(), hw[i].item()))
        else:
            c.note("software e4m3 encoder = torch float8_e4m3fn cast on %d values" % v.numel())
    else:
        c.note("torch has no float8_e4m3fn: the software e4m3 encoder is used")
    return c.done()


def list_pairs(args):
    """The valid spec x format pairs printed by `quarkfs --list-specs` (first table)."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = args.libdir + (":" + env["LD_LIBRARY_PATH"]
                                            if env.get("LD_LIBRARY_PATH") else "")
    out = subprocess.run([args.quarkfs, "--list-specs"], capture_output=True, text=True,
                         env=env, check=True).stdout
    pairs = []
    for ln in out.splitlines()[1:]:
        if not ln.strip():
            break
        t = ln.split()
        if len(t) >= 2 and t[0] in SPECS and t[1] in FORMATS:
            pairs.append((t[0], t[1]))
    return pairs


def zero_blocks(path):
    """Zero, in place, rows 0..127 of layer 0's q_proj and columns 0..127 of layer 1's down_proj
    of a genmodel model (all-zero groups, channels, 128x128 blocks and MX blocks)."""
    done = []
    for f in sorted(os.listdir(path)):
        if not f.endswith(".safetensors"):
            continue
        pairs, n = read_header(os.path.join(path, f))
        ents = header_dict(pairs)
        with open(os.path.join(path, f), "r+b") as fh:
            for name, how in (("model.layers.0.self_attn.q_proj.weight", "rows"),
                              ("model.layers.1.mlp.down_proj.weight", "cols")):
                if name not in ents:
                    continue
                e = ents[name]
                esz = {"BF16": 2, "F16": 2, "F32": 4}[e["dtype"]]
                O, I = e["shape"]
                base = 8 + n + e["data_offsets"][0]
                if how == "rows":
                    fh.seek(base)
                    fh.write(b"\0" * (min(128, O) * I * esz))
                else:
                    for r in range(O):
                        fh.seek(base + r * I * esz)
                        fh.write(b"\0" * (min(128, I) * esz))
                done.append("%s %s" % (name, how))
    print("zero-blocks: %s" % done)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

COLUMNS = ["mount", "files", "load", "contract", "values", "dequant", "xformat", "unchanged",
           "bytes_load", "config", "index", "forward", "loader"]


def overall(res):
    """PASS when no check failed (NOT RUN / n/a / INCOMPATIBLE do not fail)."""
    if not res:
        return FAIL
    return FAIL if any(r.status == FAIL for r in res.values()) else PASS


def versions():
    """Versions and machine facts for the report."""
    v = {"python": platform.python_version(), "torch": torch.__version__,
         "safetensors": getattr(safetensors, "__version__", "?"),
         "transformers": getattr(transformers, "__version__", "absent") if transformers else "absent",
         "kernel": platform.release(), "machine": platform.machine()}
    try:
        v["numpy"] = __import__("numpy").__version__
    except ImportError:
        v["numpy"] = "absent"
    v["cuda"] = torch.version.cuda
    v["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    for mod, pkg in (("quark", "amd-quark"), ("gptqmodel", "gptqmodel"),
                     ("compressed_tensors", "compressed-tensors"), ("vllm", "vllm"),
                     ("kernels", "kernels"), ("awq", "autoawq")):
        try:
            v[pkg] = "present" if importlib.util.find_spec(mod) else "absent"
        except Exception:
            v[pkg] = "?"
    return v


def fmt_num(i, key, f="%.4f"):
    return f % i[key] if key in i else "-"


def write_report(args, ver, rows, extra, final=False):
    """gpu-check-report.md and .json in --out. rows: [(model, spec, fmt, res, info)]."""
    js = {"versions": ver, "extra": {k: v.as_dict() if isinstance(v, Check) else v
                                     for k, v in extra.items()},
          "results": [{"model": m, "spec": s, "format": f, "overall": overall(r),
                       "checks": {k: v.as_dict() for k, v in r.items()}, "info": i}
                      for m, s, f, r, i in rows], "complete": final}
    with open(os.path.join(args.out, "gpu-check-report.json"), "w") as fh:
        json.dump(js, fh, indent=1, sort_keys=True, default=str)
    L = []
    L.append("# quarkfs real-clients check (GPU machine)%s\n" % ("" if final else " - INCOMPLETE"))
    L.append("Versions: " + ", ".join("%s %s" % kv for kv in ver.items()) + "\n")
    L.append("| model | spec | format | quantized | " + " | ".join(COLUMNS) +
             " | weight rel-RMS | fwd rel err | fwd top-1 | loader rel err | loader top-1 | overall |")
    L.append("|" + "---|" * (len(COLUMNS) + 10))
    for m, s, f, r, i in rows:
        cells = [r[c].status if c in r else "-" for c in COLUMNS]
        L.append("| %s | %s | %s | %s/%s | %s | %s | %s | %s | %s | %s | %s |" % (
            m, s, f, i.get("quantized_tensors", "?"), i.get("candidates", "?"), " | ".join(cells),
            fmt_num(i, "rel_rms"), fmt_num(i, "rel_err"), fmt_num(i, "top1"),
            fmt_num(i, "loader_rel_err"), fmt_num(i, "loader_top1"), overall(r)))
    L.append("")
    for k, v in extra.items():
        if isinstance(v, Check):
            L.append("- %s: **%s** %s" % (k, v.status, "; ".join(v.details)))
        else:
            L.append("- %s: %s" % (k, v))
    L.append("")
    L.append("## Timing (mount, then every tensor read through safe_open/mmap + clone)\n")
    L.append("| model | spec | format | mount s | first read s | view tensor MB | warm read s | "
             "source read s | read(2)+load s | reference s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for m, s, f, r, i in rows:
        if "read_s" in i:
            L.append("| %s | %s | %s | %.3f | %.3f | %.1f | %.3f | %.3f | %.3f | %.2f |"
                     % (m, s, f, i.get("mount_s", 0), i["read_s"], i["read_bytes"] / 1e6,
                        i.get("warm_read_s", 0), i.get("src_read_s", 0), i.get("reread_s", 0),
                        i.get("ref_s", 0)))
    L.append("\n## Details\n")
    for m, s, f, r, i in rows:
        L.append("### %s / %s / %s: %s\n" % (m, s, f, overall(r)))
        for k, v in r.items():
            d = "; ".join(v.details)
            L.append("- %s: %s%s" % (k, v.status, (" — " + d) if d else ""))
        L.append("")
    with open(os.path.join(args.out, "gpu-check-report.md"), "w") as fh:
        fh.write("\n".join(L) + "\n")


# ---------------------------------------------------------------------------------------------

def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--zero-blocks":
        zero_blocks(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quarkfs", required=True)
    ap.add_argument("--libdir", required=True, help="LD_LIBRARY_PATH for quarkfs")
    ap.add_argument("--bindir", required=True, help="directory holding fusermount3")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", action="append", default=[], help="NAME=SRC (repeatable)")
    ap.add_argument("--all-pairs", action="append", default=[],
                    help="model NAME checked with every valid spec x format pair (repeatable)")
    ap.add_argument("--no-forward", action="append", default=[],
                    help="model NAME without a transformers forward pass (repeatable)")
    ap.add_argument("--specs", default=",".join(ORIGINAL_SPECS),
                    help="specs (format quark) for the models not in --all-pairs")
    ap.add_argument("--pairs", default="", help="restrict --all-pairs to SPEC/FORMAT,...")
    ap.add_argument("--deadline", type=float, default=0,
                    help="seconds after which the remaining rows are skipped (0 = none)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    args.quarkfs = os.path.abspath(args.quarkfs)
    args.libdir = os.path.abspath(args.libdir)
    args.bindir = os.path.abspath(args.bindir)
    os.makedirs(args.out, exist_ok=True)
    args.quarkfs_log = os.path.join(os.path.abspath(args.out), "quarkfs.log")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    for m in args.model:
        n, _, pth = m.partition("=")
        models.append((n, os.path.abspath(pth)))
    args.forward = {n: n not in args.no_forward for n, _ in models}
    specs = [s for s in args.specs.split(",") if s]
    for s in specs:
        if s not in SPECS:
            raise SystemExit("unknown spec %s" % s)

    ver = versions()
    log("versions: %s" % ver)
    rows, extra = [], {}
    extra["selftest"] = selftest()
    log("selftest: %s %s" % (extra["selftest"].status, extra["selftest"].details))
    pairs = list_pairs(args)
    cp = Check()
    if pairs != CONTRACT_PAIRS:
        cp.fail("quarkfs --list-specs pairs differ from the contract's: only quarkfs %s, only "
                "contract %s" % (sorted(set(pairs) - set(CONTRACT_PAIRS)),
                                 sorted(set(CONTRACT_PAIRS) - set(pairs))))
    cp.note("%d valid pairs" % len(pairs))
    extra["list-specs pairs"] = cp.done()
    if args.pairs:
        want = {tuple(x.split("/")) for x in args.pairs.split(",") if x}
        pairs = [pr for pr in pairs if pr in want]
    for n, pth in models:
        todo = pairs if n in args.all_pairs else [(s, "quark") for s in specs]
        log("model %s: loading source %s" % (n, pth))
        try:
            src = Source(pth)
        except Exception as exc:
            extra["source " + n] = "FAIL loading source: %s" % exc
            log(traceback.format_exc())
            continue
        extra["source " + n] = "%d files, %d tensors, %.1f MB of safetensors, dtype %s" % (
            len(src.files), len(src.tensors), src.nbytes / 1e6, src.dtype)
        if "daemon mode" not in extra:
            extra["daemon mode"] = daemon_check(args, src)
            log("daemon mode: %s" % extra["daemon mode"].status)
        state = None
        if transformers is not None and args.forward[n]:
            try:
                t0 = time.perf_counter()
                state = load_reference(src, n, args.device)
                extra["forward input " + n] = "%s; reference model loaded in %.1f s%s" % (
                    state["input"], time.perf_counter() - t0,
                    ("; WARNING params differing from the source: %s" % state["param_mismatch"][:5])
                    if state["param_mismatch"] else "")
            except Exception as exc:
                extra["forward input " + n] = "reference model failed: %s: %s" % (
                    type(exc).__name__, exc)
                log(traceback.format_exc())
        xcache = {}
        for spec, fmt in todo:
            if args.deadline and time.perf_counter() - T0 > args.deadline:
                extra.setdefault("skipped (deadline)", [])
                extra["skipped (deadline)"].append("%s %s/%s" % (n, spec, fmt))
                continue
            log("model %s spec %s format %s" % (n, spec, fmt))
            try:
                res, info = check_view(args, n, src, spec, fmt, state, xcache)
            except Exception as exc:
                c = Check()
                c.fail("harness error: %s: %s" % (type(exc).__name__, exc))
                c.note(traceback.format_exc()[-2000:])
                res, info = {"mount": c.done()}, {}
                log(traceback.format_exc())
            rows.append((n, spec, fmt, res, info))
            log("  -> %s %s" % (overall(res), {k: v.status for k, v in res.items()}))
            for k, v in res.items():
                if v.status == FAIL:
                    log("     %s: %s" % (k, "; ".join(v.details)[:1500]))
            write_report(args, ver, rows, extra)
        xcache.clear()
        if state is not None:
            del state["model"]
            state = None
        del src
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    write_report(args, ver, rows, extra, final=True)
    failed = [(m, s, f) for m, s, f, r, _i in rows if overall(r) == FAIL]
    for k in ("daemon mode", "selftest", "list-specs pairs"):
        if isinstance(extra.get(k), Check) and extra[k].status == FAIL:
            failed.append((k,))
    log("done: %d rows, %d failed %s" % (len(rows), len(failed), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
