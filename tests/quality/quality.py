#!/usr/bin/env python3
"""Quality of quarkfs's quantized views on a real model (stories260K), measured end to end.

    python3 tests/quality/quality.py [--quarkfs build/quarkfs] [--models ../shared/models]
        [--corpus ../shared/corpus/tinystories.tok512.u16] [--seqs 50]
        [--out doc/quality-results.md] [--no-selftest] [--keep DIR]

What it does (numpy only, no torch; independent of the C sources):

1. A numpy float64 Llama forward pass (RMSNorm, HF rotary embeddings with rotate_half, grouped-
   query attention with a causal mask, SiLU-gated MLP, tied output head) that reads a model
   directory's config.json and *.safetensors (parsed here: u64 LE header length, JSON header, raw
   little-endian data). It must reproduce the published perplexities of stories260K-f32/-f16/-bf16
   on the first 50 corpus sequences to 3 decimals, else the script stops.
2. A dequantizer that reads a *view* directory (`quarkfs export` output) and turns every
   quantized weight back into float32 from the view's own bytes, for every layout quarkfs writes
   (quark, awq, fp8, compressed-tensors), driven by the view's config.json quantization_config.
   It checks that the set of quantized modules is exactly "candidates minus the config's exclusion
   list", that every view tensor is accounted for, and that unquantized tensors keep name, dtype and
   bytes of the source.
3. For every valid spec x format pair (`quarkfs --list-specs`): export, dequantize, check that the
   same spec dequantizes to identical weights from every format, compute perplexity and top-1
   agreement with the bf16 model; plus int8/fp8 from the f32 source as a cross-check; plus a layout
   self-test on a synthetic model (tests/fixtures/genmodel.py, shapes divisible by 128) where every
   layout, fp8-block and g128 included, really quantizes something.

Writes a Markdown report (default doc/quality-results.md) and prints it.
"""

import argparse
import collections
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pylib"))
import stfile  # noqa: E402  the safetensors container; the numerics below are this file's own

np = stfile.import_numpy(__name__ == "__main__")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Published with the shared stories260K models (first 50 sequences, 5,003 predicted tokens).
REF_PPL = {"f32": 4.3942, "f16": 4.3939, "bf16": 4.3940}
REF_TOP1_VS_F32 = {"f16": 0.9986, "bf16": 0.9934}
REF_NPRED = 5003


class Fail(Exception):
    pass


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

NP_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
    "BF16": np.dtype("<u2"),       # raw bits, see to_f32
    "F8_E4M3": np.dtype("u1"),     # raw bits, see fp8_e4m3_table
}


class Tensor:
    __slots__ = ("name", "dtype", "shape", "raw")

    def __init__(self, name, dtype, shape, raw):
        self.name, self.dtype, self.shape, self.raw = name, dtype, tuple(shape), raw

    def array(self):
        """The stored values as a numpy array of the storage type (BF16/F8 as raw bits)."""
        dt = NP_DTYPES[self.dtype]
        n = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        if len(self.raw) != n * dt.itemsize:
            raise Fail("%s: %d bytes for %s %s" % (self.name, len(self.raw), self.dtype, self.shape))
        return np.frombuffer(self.raw, dtype=dt).reshape(self.shape)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        header, base = stfile.parse_header(data, path)
    except stfile.HeaderError as exc:
        raise Fail(str(exc)) from exc
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = Tensor(name, info["dtype"], info["shape"], data[base + b:base + e])
    return out


def read_model_dir(d):
    """(config dict, {name: Tensor}) over every *.safetensors file of a model directory."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    files = sorted(x for x in os.listdir(d) if x.endswith(".safetensors"))
    if not files:
        raise Fail("%s: no .safetensors file" % d)
    tensors = {}
    for fn in files:
        for name, t in read_safetensors(os.path.join(d, fn)).items():
            if name in tensors:
                raise Fail("%s: tensor %s in two files" % (d, name))
            tensors[name] = t
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        if set(wm) != set(tensors):
            raise Fail("%s: index weight_map names differ from the files' tensors" % d)
    return cfg, tensors


def bf16_to_f32(bits):
    u = bits.reshape(-1).astype(np.uint32) << np.uint32(16)
    return u.view(np.float32).reshape(bits.shape)


def to_f32(t):
    """A float tensor (F32/F16/BF16/F64) as float32."""
    a = t.array()
    if t.dtype == "BF16":
        return bf16_to_f32(a)
    if t.dtype in ("F32", "F16", "F64"):
        return a.astype(np.float32)
    raise Fail("%s: %s is not a float dtype" % (t.name, t.dtype))


def _fp8_e4m3_table():
    tab = np.zeros(256, dtype=np.float32)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e = (b >> 3) & 0xF
        m = b & 7
        if e == 15 and m == 7:
            tab[b] = np.nan                      # e4m3fn: S.1111.111 is NaN, no infinities
        elif e == 0:
            tab[b] = s * m * 2.0 ** -9           # subnormal: m/8 * 2^(1-7)
        else:
            tab[b] = s * (1 + m / 8.0) * 2.0 ** (e - 7)
    return tab


FP8_E4M3 = _fp8_e4m3_table()
E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)
AWQ_SHIFTS = [0, 16, 4, 20, 8, 24, 12, 28]       # bit offset of element j of each 8-element word


def fp8_to_f32(t):
    if t.dtype != "F8_E4M3":
        raise Fail("%s: expected F8_E4M3, got %s" % (t.name, t.dtype))
    return FP8_E4M3[t.array()]


# --------------------------------------------------------------------------------------------
# the dequantizer
# --------------------------------------------------------------------------------------------

def scheme_for_module(qc, sch, mod):
    """The layout of module mod: a quark config's layer_quant_config entry for it (an exact
    name first, else the first fnmatch key in the file's order, as Quark's importer reads
    it), else the view's scheme sch."""
    if not qc or qc.get("quant_method") != "quark" or not qc.get("layer_quant_config"):
        return sch
    import fnmatch
    layers = qc["layer_quant_config"]
    hit = layers.get(mod) if not any(c in mod for c in "*?[") else None
    if hit is None:
        hit = next((v for k, v in layers.items() if fnmatch.fnmatchcase(mod, k)), None)
    if hit is None:
        return sch
    return quark_scheme(hit["weight"], qc.get("exclude", []))


def quark_scheme(w, excl):
    """The layout of one quark weight spec (a global_quant_config or layer entry's weight)."""
    dt, qs = w["dtype"], w["qscheme"]
    if dt in ("int8", "fp8_e4m3") and qs in ("per_tensor", "per_channel"):
        return dict(kind="direct", elem="i8" if dt == "int8" else "fp8", per=qs[4:],
                    scale="weight_scale", zp="weight_zero_point", excl=excl)
    if dt in ("int4", "uint4") and qs == "per_group":
        return dict(kind="awqpack", signed=dt == "int4", group=int(w["group_size"]),
                    qweight="weight", scale="weight_scale", zp="weight_zero_point",
                    excl=excl)
    if dt == "fp4" and qs == "per_group" and w.get("scale_format") == "e8m0":
        if int(w["group_size"]) != 32:
            raise Fail("mxfp4 with group %s" % w["group_size"])
        return dict(kind="mxfp4", scale="weight_scale", excl=excl)
    raise Fail("unknown quark weight spec %s/%s" % (dt, qs))


def scheme_of(qc):
    """The layout of a view from its quantization_config (None: not quantized)."""
    if qc is None:
        return None
    m = qc.get("quant_method")
    if m == "quark":
        return quark_scheme(qc["global_quant_config"]["weight"], qc.get("exclude", []))
    if m == "awq":
        if int(qc["bits"]) != 4:
            raise Fail("awq bits %s" % qc["bits"])
        return dict(kind="awqpack", signed=not qc["zero_point"], group=int(qc["group_size"]),
                    qweight="qweight", scale="scales", zp="qzeros",
                    excl=qc.get("modules_to_not_convert") or [])
    if m == "fp8":
        excl = (qc.get("modules_to_not_convert") or []) + (qc.get("ignored_layers") or [])
        if qc.get("weight_block_size"):
            return dict(kind="fp8block", block=tuple(qc["weight_block_size"]),
                        scale="weight_scale_inv", excl=excl)
        return dict(kind="direct", elem="fp8", per="tensor", scale="weight_scale", zp=None,
                    excl=excl)
    if m == "compressed-tensors":
        groups = qc["config_groups"]
        if len(groups) != 1:
            raise Fail("compressed-tensors with %d config groups" % len(groups))
        g = next(iter(groups.values()))
        w = g["weights"]
        fmt = g.get("format") or qc.get("format")
        excl = qc.get("ignore", [])
        if fmt == "pack-quantized" and w["type"] == "int":
            nb = int(w["num_bits"])
            if w["strategy"] == "group":
                return dict(kind="ctpack", bits=nb, group=int(w["group_size"]), excl=excl)
            if w["strategy"] == "channel":
                return dict(kind="ctpack", bits=nb, group=None, excl=excl)
        if fmt == "int-quantized" and w["type"] == "int" and int(w["num_bits"]) == 8:
            return dict(kind="direct", elem="i8", per=w["strategy"], scale="weight_scale",
                        zp=None, excl=excl)
        if fmt == "float-quantized" and w["type"] == "float" and int(w["num_bits"]) == 8:
            if w["strategy"] == "block":
                return dict(kind="fp8block", block=tuple(w["block_structure"]),
                            scale="weight_scale", excl=excl)
            return dict(kind="direct", elem="fp8", per=w["strategy"], scale="weight_scale",
                        zp=None, excl=excl)
        raise Fail("unknown compressed-tensors scheme %s %s" % (fmt, w))
    raise Fail("unknown quant_method %r" % m)


def unpack_awq(words, signed):
    """I32 [R, C] -> int [R, 8C]: word c holds columns 8c..8c+7 at AWQ_SHIFTS."""
    u = words.view(np.uint32)
    R, C = u.shape
    out = np.empty((R, C, 8), dtype=np.int32)
    for j, sh in enumerate(AWQ_SHIFTS):
        out[:, :, j] = (u >> np.uint32(sh)) & 0xF
    out = out.reshape(R, C * 8)
    if signed:
        out = np.where(out >= 8, out - 16, out)
    return out


def unpack_seq(words, bits):
    """I32 [R, C] -> int [R, C*32/bits], element e at bits `bits`*(e % per) of word e // per."""
    u = words.view(np.uint32)
    per = 32 // bits
    R, C = u.shape
    out = np.empty((R, C, per), dtype=np.int32)
    for k in range(per):
        out[:, :, k] = (u >> np.uint32(bits * k)) & ((1 << bits) - 1)
    return out.reshape(R, C * per)


def dequant_module(sch, mod, T):
    """float32 [O, I] of module `mod` from the view tensors T; returns (weight, used names)."""
    k = sch["kind"]
    used = []

    def get(suffix, dtype=None):
        name = mod + "." + suffix
        if name not in T:
            raise Fail("%s: missing %s" % (mod, name))
        t = T[name]
        if dtype is not None and t.dtype not in (dtype if isinstance(dtype, tuple) else (dtype,)):
            raise Fail("%s: %s is %s, expected %s" % (mod, name, t.dtype, dtype))
        used.append(name)
        return t

    FLOATS = ("F32", "F16", "BF16")
    if k == "direct":
        q = get("weight", "I8" if sch["elem"] == "i8" else "F8_E4M3")
        O, I = q.shape
        s = get(sch["scale"], FLOATS)
        sv = to_f32(s)
        per = sch["per"]
        if per == "tensor":
            if sv.size != 1:
                raise Fail("%s: per-tensor scale of shape %s" % (mod, s.shape))
            sv = sv.reshape(1, 1)
        elif per == "channel":
            if sv.size != O or (s.shape not in ((O,), (O, 1))):
                raise Fail("%s: per-channel scale of shape %s for O=%d" % (mod, s.shape, O))
            sv = sv.reshape(O, 1)
        else:
            raise Fail("%s: per %s" % (mod, per))
        qv = q.array().astype(np.float32) if sch["elem"] == "i8" else fp8_to_f32(q)
        if sch["zp"] is not None and (mod + "." + sch["zp"]) in T:
            zp = get(sch["zp"], ("I8", "U8", "I32")).array().astype(np.float32).reshape(-1, 1)
            if zp.size != sv.size:
                raise Fail("%s: zero point shape %s" % (mod, T[mod + "." + sch["zp"]].shape))
            if np.any(zp != 0):
                raise Fail("%s: non-zero zero point in a symmetric spec" % mod)
            qv = qv - zp
        elif sch["zp"] is not None and sch["elem"] == "i8":
            raise Fail("%s: no zero point" % mod)
        if sch["elem"] == "i8":
            aux = dict(grid="int", lo=-128, hi=127, s=sv, z=0.0)
        else:
            aux = dict(grid="fp8", s=sv)
        return (qv * sv).astype(np.float32), used, aux

    if k == "awqpack":
        qw = get(sch["qweight"], "I32")
        sc = get(sch["scale"], FLOATS)
        zp = get(sch["zp"], "I32")
        I, O8 = qw.shape
        O = O8 * 8
        G = sch["group"]
        if I % G or sc.shape != (I // G, O) or zp.shape != (I // G, O8):
            raise Fail("%s: shapes %s %s %s for group %d" % (mod, qw.shape, sc.shape, zp.shape, G))
        q = unpack_awq(qw.array(), sch["signed"]).astype(np.float32)          # [I, O]
        z = unpack_awq(zp.array(), sch["signed"]).astype(np.float32)          # [I/G, O]
        s = to_f32(sc)                                                        # [I/G, O]
        z = np.repeat(z, G, axis=0)
        s = np.repeat(s, G, axis=0)
        lo, hi = (-8, 7) if sch["signed"] else (0, 15)
        aux = dict(grid="int", lo=lo, hi=hi, s=s.T, z=z.T)
        return np.ascontiguousarray(((q - z) * s).T).astype(np.float32), used, aux

    if k == "ctpack":
        wp = get("weight_packed", "I32")
        sc = get("weight_scale", FLOATS)
        shp = get("weight_shape", ("I64", "I32")).array().astype(np.int64)
        O, I = int(shp[0]), int(shp[1])
        bits = sch["bits"]
        q = unpack_seq(wp.array(), bits)
        if q.shape[0] != O or q.shape[1] < I:
            raise Fail("%s: packed %s for shape [%d,%d]" % (mod, wp.shape, O, I))
        q = (q[:, :I] - (1 << (bits - 1))).astype(np.float32)
        s = to_f32(sc)
        G = sch["group"]
        if G is None:
            if s.shape != (O, 1):
                raise Fail("%s: channel scale %s" % (mod, s.shape))
        else:
            if I % G or s.shape != (O, I // G):
                raise Fail("%s: group scale %s" % (mod, s.shape))
            s = np.repeat(s, G, axis=1)
        h = 1 << (bits - 1)
        return (q * s).astype(np.float32), used, dict(grid="int", lo=-h, hi=h - 1, s=s, z=0.0)

    if k == "fp8block":
        q = get("weight", "F8_E4M3")
        sc = get(sch["scale"], FLOATS)
        O, I = q.shape
        bo, bi = sch["block"]
        nbo, nbi = -(-O // bo), -(-I // bi)
        if sc.shape != (nbo, nbi):
            raise Fail("%s: block scale %s for [%d,%d]" % (mod, sc.shape, O, I))
        s = np.repeat(np.repeat(to_f32(sc), bo, axis=0), bi, axis=1)[:O, :I]
        return (fp8_to_f32(q) * s).astype(np.float32), used, dict(grid="fp8", s=s)

    if k == "mxfp4":
        q = get("weight", "U8")
        sc = get(sch["scale"], "U8")
        O, I2 = q.shape
        I = 2 * I2
        if sc.shape != (O, I // 32):
            raise Fail("%s: mx scale %s for [%d,%d]" % (mod, sc.shape, O, I))
        b = q.array()
        codes = np.empty((O, I2, 2), dtype=np.uint8)
        codes[:, :, 0] = b & 0xF
        codes[:, :, 1] = b >> 4
        v = E2M1[codes.reshape(O, I)]
        e = sc.array().astype(np.int32)
        if np.any(e == 255):
            raise Fail("%s: NaN e8m0 scale" % mod)
        s = np.repeat(np.ldexp(np.float32(1), e - 127).astype(np.float32), 32, axis=1)
        return (v * s).astype(np.float32), used, dict(grid="e2m1", s=s)

    raise Fail("kind %s" % k)


QUANT_SUFFIX = {"direct": None, "awqpack": None, "ctpack": "weight_packed",
                "fp8block": None, "mxfp4": None}


def quantized_modules(sch, T):
    """Modules the view stores quantized: those with the layout's scale tensor."""
    k = sch["kind"]
    if k == "awqpack":
        key = "." + sch["scale"]
    elif k == "ctpack":
        key = ".weight_packed"
    else:
        key = "." + sch["scale"]
    return sorted(n[:-len(key)] for n in T if n.endswith(key))


def is_candidate(name, t):
    """A source tensor a weight spec may quantize: a 2-D float `.weight` that is no embedding."""
    return (name.endswith(".weight") and len(t.shape) == 2 and t.dtype in ("F32", "F16", "BF16")
            and "embed" not in name)


def dequantize_view(view_dir, src_tensors):
    """{name: float32} for the view, with the source names; plus an info dict.

    Checks: quantized set == candidates - excluded; every view tensor is used; unquantized
    tensors keep the source's dtype, shape and bytes; dequantized shapes equal the source's."""
    cfg, T = read_model_dir(view_dir)
    qc = cfg.get("quantization_config")
    sch = scheme_of(qc)
    W = {}
    used = set()
    aux = {}
    qmods = quantized_modules(sch, T) if sch else []
    for mod in qmods:
        w, u, aux[mod] = dequant_module(scheme_for_module(qc, sch, mod), mod, T)
        name = mod + ".weight"
        if name not in src_tensors:
            raise Fail("%s: %s has no source tensor" % (view_dir, name))
        if w.shape != src_tensors[name].shape:
            raise Fail("%s: %s dequantized to %s, source %s" % (view_dir, name, w.shape,
                                                                src_tensors[name].shape))
        if not np.all(np.isfinite(w)):
            raise Fail("%s: %s dequantized to non-finite values" % (view_dir, name))
        W[name] = w
        used.update(u)
    for name, t in T.items():
        if name in used:
            continue
        s = src_tensors.get(name)
        if s is None:
            raise Fail("%s: view tensor %s is neither quantized data nor a source tensor"
                       % (view_dir, name))
        if (s.dtype, s.shape) != (t.dtype, t.shape) or s.raw != t.raw:
            raise Fail("%s: unquantized %s differs from the source" % (view_dir, name))
        W[name] = to_f32(t) if t.dtype in ("F32", "F16", "BF16", "F64") else t.array()
        used.add(name)
    missing = set(src_tensors) - set(W)
    if missing:
        raise Fail("%s: source tensors missing from the view: %s" % (view_dir, sorted(missing)[:5]))
    cands = sorted(n[:-7] for n, t in src_tensors.items() if is_candidate(n, t))
    excl = set(sch["excl"]) if sch else set()
    expect = sorted(m for m in cands if m not in excl)
    if qmods != expect:
        raise Fail("%s: quantized modules %d != candidates - excluded %d (extra %s, missing %s)"
                   % (view_dir, len(qmods), len(expect), sorted(set(qmods) - set(expect))[:3],
                      sorted(set(expect) - set(qmods))[:3]))
    return W, dict(scheme=sch, quantized=qmods, candidates=cands, cfg=cfg, aux=aux)


def _nearest_on(grid, x):
    """Nearest value of the sorted 1-D `grid` to each element of x."""
    i = np.clip(np.searchsorted(grid, x), 1, len(grid) - 1)
    lo, hi = grid[i - 1], grid[i]
    return np.where(x - lo <= hi - x, lo, hi)


FP8_GRID = np.unique(FP8_E4M3[np.isfinite(FP8_E4M3)].astype(np.float64))
E2M1_GRID = np.unique(E2M1.astype(np.float64))


def rounding_check(Wsrc, Wq, aux):
    """How close each quantized element is to the best it could be *under the stored scales and
    zero points*: (fraction of elements at the nearest grid point, RMS error / RMS error of
    nearest-point rounding) over all quantized modules."""
    at, tot, err, best_err = 0, 0, 0.0, 0.0
    for mod, a in aux.items():
        n = mod + ".weight"
        w = Wsrc[n].astype(np.float64)
        d = Wq[n].astype(np.float64)
        s = np.broadcast_to(np.asarray(a["s"], dtype=np.float64), w.shape)
        if a["grid"] == "int":
            z = np.broadcast_to(np.asarray(a["z"], dtype=np.float64), w.shape)
            b = (np.clip(np.rint(w / s) + z, a["lo"], a["hi"]) - z) * s
        else:
            g = FP8_GRID if a["grid"] == "fp8" else E2M1_GRID
            b = _nearest_on(g, np.clip(w / s, g[0], g[-1])) * s
        ed, eb = np.abs(w - d), np.abs(w - b)
        # tolerance: the float32 rounding of the dequantized product (and exact ties)
        at += int(np.sum(ed <= eb + 2.0 ** -20 * np.abs(d) + 1e-30))
        tot += w.size
        err += float(np.sum(ed * ed))
        best_err += float(np.sum(eb * eb))
    return (at / tot, math.sqrt(err / best_err)) if tot else (None, None)


# --------------------------------------------------------------------------------------------
# the Llama forward pass
# --------------------------------------------------------------------------------------------

def load_corpus(path, nseq):
    toks = np.fromfile(path, dtype="<u2").astype(np.int64)
    starts = np.flatnonzero(toks == 1)
    if len(starts) == 0 or starts[0] != 0:
        raise Fail("corpus does not start with BOS=1")
    ends = list(starts[1:]) + [len(toks)]
    seqs = [toks[s:e] for s, e in zip(starts, ends)][:nseq]
    return seqs


def float_weights(tensors):
    return {n: to_f32(t) for n, t in tensors.items() if t.dtype in ("F32", "F16", "BF16", "F64")}


class Llama:
    def __init__(self, cfg):
        self.H = cfg["num_attention_heads"]
        self.KV = cfg.get("num_key_value_heads", self.H)
        self.D = cfg["hidden_size"]
        self.hd = cfg.get("head_dim") or self.D // self.H
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg.get("rope_theta", 10000.0)
        self.tied = cfg.get("tie_word_embeddings", False)
        if cfg.get("rope_scaling"):
            raise Fail("rope_scaling not supported")
        if cfg.get("hidden_act", "silu") != "silu":
            raise Fail("hidden_act %s" % cfg.get("hidden_act"))

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def logits(self, W, seqs):
        """Logits [N, V] for all positions of all sequences (concatenated), float64."""
        W = {n: np.asarray(a, dtype=np.float64) for n, a in W.items()}
        toks = np.concatenate(seqs)
        bounds = np.cumsum([0] + [len(s) for s in seqs])
        pos = np.concatenate([np.arange(len(s)) for s in seqs]).astype(np.float64)
        H, KV, hd = self.H, self.KV, self.hd
        rep = H // KV
        inv = 1.0 / (self.theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        fr = pos[:, None] * inv[None, :]
        emb = np.concatenate([fr, fr], axis=-1)
        cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]

        def rope(x):
            h = hd // 2
            rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
            return x * cos + rot * sin

        def lin(h, name):
            # h @ W[name].T; numpy here may have no BLAS, and einsum's own loops are ~3x faster
            # than its fallback matmul
            return np.einsum("ij,jk->ik", h, np.ascontiguousarray(W[name].T))

        E = W["model.embed_tokens.weight"]
        x = E[toks]
        N = len(toks)
        scale = 1.0 / math.sqrt(hd)
        masks = {}
        for l in range(self.L):
            p = "model.layers.%d." % l
            h = self.rms(x, W[p + "input_layernorm.weight"])
            q = rope(lin(h, p + "self_attn.q_proj.weight").reshape(N, H, hd))
            k = rope(lin(h, p + "self_attn.k_proj.weight").reshape(N, KV, hd))
            v = lin(h, p + "self_attn.v_proj.weight").reshape(N, KV, hd)
            o = np.empty((N, H * hd))
            for a, b in zip(bounds[:-1], bounds[1:]):
                T = b - a
                # query head h = g*rep + r uses kv head g (HF repeat_kv)
                qs = q[a:b].reshape(T, KV, rep, hd).transpose(1, 2, 0, 3).reshape(KV, rep * T, hd)
                sc = np.matmul(qs, k[a:b].transpose(1, 2, 0)).reshape(KV, rep, T, T) * scale
                if T not in masks:
                    masks[T] = np.triu(np.ones((T, T), dtype=bool), 1)
                sc[..., masks[T]] = -np.inf
                sc -= sc.max(axis=-1, keepdims=True)
                pr = np.exp(sc)
                pr /= pr.sum(axis=-1, keepdims=True)
                ov = np.matmul(pr.reshape(KV, rep * T, T), v[a:b].transpose(1, 0, 2))
                o[a:b] = ov.reshape(KV, rep, T, hd).transpose(2, 0, 1, 3).reshape(T, H * hd)
            x = x + lin(o, p + "self_attn.o_proj.weight")
            h = self.rms(x, W[p + "post_attention_layernorm.weight"])
            g = lin(h, p + "mlp.gate_proj.weight")
            u = lin(h, p + "mlp.up_proj.weight")
            x = x + lin((g / (1.0 + np.exp(-g))) * u, p + "mlp.down_proj.weight")
        x = self.rms(x, W["model.norm.weight"])
        head = "lm_head.weight"
        if head not in W:
            if not self.tied:
                raise Fail("no lm_head.weight and tie_word_embeddings is false")
            head = "model.embed_tokens.weight"
        return lin(x, head), bounds


def fingerprint(W):
    h = hashlib.sha1()
    for n in sorted(W):
        a = np.ascontiguousarray(W[n])
        h.update(n.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def evaluate(model, W, seqs):
    """(perplexity, predicted argmax [Npred], number of predicted tokens)."""
    logits, bounds = model.logits(W, seqs)
    sel = np.concatenate([np.arange(a, b - 1) for a, b in zip(bounds[:-1], bounds[1:])])
    tgt = np.concatenate([s[1:] for s in seqs])
    lg = logits[sel]
    m = lg.max(axis=-1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(lg - m).sum(axis=-1)))
    nll = lse - lg[np.arange(len(tgt)), tgt]
    return float(np.exp(nll.mean())), lg.argmax(axis=-1), len(tgt)


# --------------------------------------------------------------------------------------------
# quarkfs
# --------------------------------------------------------------------------------------------

def list_pairs(qfs):
    out = subprocess.run([qfs, "--list-specs"], check=True, capture_output=True, text=True).stdout
    pairs = []
    for line in out.splitlines()[1:]:
        if not line.strip():
            break                      # the spec descriptions follow the blank line
        f = line.split()
        pairs.append((f[0], f[1]))
    if not pairs:
        raise Fail("quarkfs --list-specs listed nothing")
    return pairs


def export(qfs, spec, fmt, src, out):
    subprocess.run([qfs, "export", "--spec", spec, "--format", fmt, src, out], check=True,
                   capture_output=True, text=True)


def inspect_json(qfs, spec, fmt, src, error=False):
    cmd = [qfs, "inspect", "--json", "--spec", spec, "--format", fmt] + (["--error"] if error else [])
    return json.loads(subprocess.run(cmd + [src], check=True, capture_output=True,
                                     text=True).stdout)


def rel_rms(Wq, Wsrc, names):
    num = sum(float(np.sum((Wq[n].astype(np.float64) - Wsrc[n]) ** 2)) for n in names)
    den = sum(float(np.sum(Wsrc[n].astype(np.float64) ** 2)) for n in names)
    return math.sqrt(num / den) if den else float("nan")


def short_mod(name):
    return name.split(".")[-2] if name.endswith(".weight") else name


def reasons_text(insp, cands):
    """'10 gate/up_proj: reason; 5 down_proj: reason' for candidates inspect left unquantized."""
    by = collections.OrderedDict()
    for t in insp["tensors"]:
        if t["name"][:-7] in cands and not t["quantized"]:
            # "[64, 172] is not made of whole ..." -> one line for all shapes
            shapes = re.findall(r"\[\d+, \d+\]", t["reason"])
            key = re.sub(r"\[\d+, \d+\]", "[O, I]", t["reason"])
            e = by.setdefault(key, [[], []])
            e[0].append(short_mod(t["name"]))
            e[1].extend(x for x in shapes if x not in e[1])
    parts = []
    for r, (mods, shapes) in by.items():
        kinds = "/".join(sorted(set(m.replace("_proj", "") for m in mods)))
        parts.append("%d× %s (%s%s)" % (len(mods), r, kinds,
                                        ": " + " ".join(shapes) if shapes else ""))
    return "; ".join(parts) if parts else "—"


def fmt_pct(x):
    return "%.2f %%" % (100 * x)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def measure_views(args):
    """--view: PPL, top-1 agreement and weight error of each given view, one line each."""
    import shlex
    src = os.path.join(args.models, "stories260K-bf16")
    seqs = load_corpus(args.corpus, args.seqs)
    cfg, T = read_model_dir(src)
    model = Llama(cfg)
    W_b = float_weights(T)
    ppl_b, am_b, npred = evaluate(model, W_b, seqs)
    def weight_bytes(d):
        return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                   if f.startswith("model") and f.endswith(".safetensors"))

    src_bytes = weight_bytes(src)
    print("%-64s %9s %6s %8s %8s %9s" % ("VIEW (stories260K-bf16)", "QUANTIZED", "SIZE", "PPL",
                                         "TOP-1", "REL RMS"))
    print("%-64s %9s %6s %8.4f %8s %9s" % ("(bf16 source)", "", "100%", ppl_b, "100.00%", ""))
    with tempfile.TemporaryDirectory(prefix="quality-") as work:
        for i, view in enumerate(args.view):
            out = os.path.join(work, "v%d" % i)
            subprocess.run([args.quarkfs, "export", "--no-cache"] + shlex.split(view) + [src, out],
                           check=True, capture_output=True, text=True)
            W, info = dequantize_view(out, T)
            qn = [m + ".weight" for m in info["quantized"]]
            ppl, am, _ = evaluate(model, W, seqs)
            print("%-64s %4d/%-4d %5.1f%% %8.4f %8s %9.3e" % (
                view, len(qn), len(info["candidates"]), 100.0 * weight_bytes(out) / src_bytes,
                ppl, fmt_pct(float(np.mean(am == am_b))), rel_rms(W, W_b, qn) if qn else 0.0))
    return 0


class Run:
    """What every step of one run shares: the options, the corpus, the work directory and the
    bf16 reference (model, weights, perplexity, argmax per position)."""

    def __init__(self, args, seqs, work):
        self.args, self.qfs, self.seqs, self.work = args, args.quarkfs, seqs, work
        self.src = {k: os.path.join(args.models, "stories260K-" + k)
                    for k in ("f32", "f16", "bf16")}
        self.srcT, self.refs, self.npred = {}, {}, 0
        self.model = self.W_b = self.am_b = self.ppl_b = None

    def log(self, *a):
        print(*a, file=sys.stderr, flush=True)

    def done_with(self, out):
        """Remove an export unless --keep asked to keep them."""
        if not self.args.keep:
            shutil.rmtree(out)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quarkfs", default=os.path.join(REPO, "build", "quarkfs"))
    ap.add_argument("--models", default=os.path.join(REPO, "..", "shared", "models"))
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus",
                                                     "tinystories.tok512.u16"))
    ap.add_argument("--seqs", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(REPO, "doc", "quality-results.md"))
    ap.add_argument("--no-selftest", action="store_true",
                    help="skip the synthetic-model layout self-test")
    ap.add_argument("--keep", help="export the views into this new directory and keep them")
    ap.add_argument("--view", action="append", default=[], metavar="'QUARKFS VIEW OPTIONS'",
                    help="only measure these views of stories260K-bf16 (repeatable), e.g. "
                         "'--spec int4-g32 --layer *.o_proj=int8-channel'; one line each")
    return ap.parse_args()


def reference_perplexities(run):
    """1. The three unquantized sources through the forward pass; with the default 50
    sequences they must reproduce the published perplexities. Fills run.srcT, run.refs,
    run.npred and the bf16 reference; returns the report's table rows."""
    for k in ("f32", "f16", "bf16"):
        cfg, T = read_model_dir(run.src[k])
        run.srcT[k] = (cfg, T)
        ppl, am, run.npred = evaluate(Llama(cfg), float_weights(T), run.seqs)
        run.refs[k] = (ppl, am)
        run.log("reference %-4s PPL %.4f (%d predicted tokens)" % (k, ppl, run.npred))
    cfg_b, T_b = run.srcT["bf16"]
    run.model = Llama(cfg_b)
    run.W_b = float_weights(T_b)
    run.ppl_b, run.am_b = run.refs["bf16"]
    seqs = run.args.seqs
    ref_ok = True
    ref_rows = []
    for k in ("f32", "f16", "bf16"):
        ppl, am = run.refs[k]
        ok = abs(ppl - REF_PPL[k]) < 5e-4 and (seqs != 50 or run.npred == REF_NPRED)
        ref_ok &= ok
        a32 = float(np.mean(am == run.refs["f32"][1]))
        ref_rows.append("| %s | %.4f | %.4f | %+.4f | %s | %s | %s |" % (
            k.upper(), ppl, REF_PPL[k], ppl - REF_PPL[k],
            "n/a (--seqs %d)" % seqs if seqs != 50 else ("ok" if ok else "**MISMATCH**"),
            fmt_pct(a32) + (" (README %s)" % fmt_pct(REF_TOP1_VS_F32[k])
                            if k in REF_TOP1_VS_F32 else ""),
            fmt_pct(float(np.mean(am == run.am_b)))))
    if seqs == 50 and not ref_ok:
        raise Fail("the forward pass does not reproduce the reference perplexities:\n"
                   + "\n".join(ref_rows))
    return ref_rows


def every_pair(run, pairs):
    """2./3. Every valid spec x format exported from stories260K-bf16, dequantized, checked
    against inspect's quantized list, and through the forward pass. Returns ({(spec, fmt):
    result}, number of forward passes run)."""
    T_b = run.srcT["bf16"][1]
    results = {}
    # views whose dequantized weights are bit-identical (the same spec in two formats, or a
    # spec that quantizes nothing here) share one forward pass
    cache = {fingerprint(run.W_b): (run.ppl_b, run.am_b)}
    nforward = 0
    for spec, fmt in pairs:
        out = os.path.join(run.work, "%s.%s" % (spec, fmt))
        export(run.qfs, spec, fmt, run.src["bf16"], out)
        W, info = dequantize_view(out, T_b)
        insp = inspect_json(run.qfs, spec, fmt, run.src["bf16"], error=True)
        iq = sorted(t["name"][:-7] for t in insp["tensors"] if t["quantized"])
        if iq != info["quantized"]:
            raise Fail("%s/%s: inspect's quantized list differs from the view's" % (spec, fmt))
        qn = [m + ".weight" for m in info["quantized"]]
        fp = fingerprint(W)
        if fp not in cache:
            cache[fp] = evaluate(run.model, W, run.seqs)[:2]
            nforward += 1
        ppl, am = cache[fp]
        ie = insp["totals"].get("error") or {}
        results[(spec, fmt)] = dict(W=W, info=info, insp=insp, ppl=ppl,
                                    agree=float(np.mean(am == run.am_b)),
                                    rel=rel_rms(W, run.W_b, qn) if qn else None,
                                    irel=ie.get("rel_rms"), nq=len(qn),
                                    ncand=len(info["candidates"]),
                                    rcheck=rounding_check(run.W_b, W, info["aux"]))
        run.log("%-12s %-19s %2d/%d quantized  PPL %.4f" % (spec, fmt, len(qn),
                                                             len(info["candidates"]), ppl))
        run.done_with(out)
    return results, nforward


def format_consistency(specs, pairs, results):
    """The same spec from two formats must dequantize to identical weights on the modules both
    quantize. Returns the report's rows (spec, base, format, common, same, all same, note)."""
    consistency = []
    for spec in specs:
        fmts = [f for s, f in pairs if s == spec]
        base = fmts[0]
        Wa = results[(spec, base)]["W"]
        for f in fmts[1:]:
            Wf = results[(spec, f)]["W"]
            qa = set(results[(spec, base)]["info"]["quantized"])
            qf = set(results[(spec, f)]["info"]["quantized"])
            common = sorted(qa & qf)
            same = all(np.array_equal(Wa[m + ".weight"], Wf[m + ".weight"]) for m in common)
            allsame = all(np.array_equal(Wa[n], Wf[n]) for n in Wa)
            note = ""
            if qa != qf:
                only = sorted(qa ^ qf)
                kinds = "/".join(sorted(set(short_mod(m + ".weight") for m in only)))
                note = ("%s quantizes %d, %s quantizes %d (differ on %d %s modules)"
                        % (base, len(qa), f, len(qf), len(only), kinds))
            consistency.append((spec, base, f, len(common), same, allsame, note))
            if not same:
                raise Fail("%s: %s and %s dequantize to different weights" % (spec, base, f))
    return consistency


def f32_cross_check(run, results):
    """int8 and fp8 (format quark) exported from the f32 source instead. Returns the report's
    rows."""
    T_f = run.srcT["f32"][1]
    W_f = float_weights(T_f)
    am_f = run.refs["f32"][1]
    cross = []
    for spec in ("int8", "fp8"):
        out = os.path.join(run.work, "f32.%s.quark" % spec)
        export(run.qfs, spec, "quark", run.src["f32"], out)
        W, info = dequantize_view(out, T_f)
        qn = [m + ".weight" for m in info["quantized"]]
        insp = inspect_json(run.qfs, spec, "quark", run.src["f32"], error=True)
        ppl, am, _ = evaluate(run.model, W, run.seqs)
        cross.append((spec, len(qn), len(info["candidates"]), ppl, ppl - run.refs["f32"][0],
                      float(np.mean(am == am_f)), float(np.mean(am == run.am_b)),
                      rel_rms(W, W_f, qn), insp["totals"]["error"]["rel_rms"],
                      results[(spec, "quark")]["ppl"], rounding_check(W_f, W, info["aux"])))
        run.done_with(out)
    return cross


def synthetic_selftest(run, pairs):
    """Every pair on a synthetic model whose shapes fit every layout: something is quantized,
    this script's rel-RMS agrees with inspect's to 0.1 %, and every format of a spec gives the
    first format's weights. Returns the report's rows."""
    syn = os.path.join(run.work, "synthetic")
    genmodel = os.path.join(REPO, "tests", "fixtures", "genmodel.py")
    subprocess.run([sys.executable, genmodel, syn,
                    "--preset", "demo", "--hidden", "256", "--intermediate", "768",
                    "--layers", "1", "--shards", "2", "--vocab", "256"],
                   check=True, capture_output=True, text=True)
    _, T_s = read_model_dir(syn)
    W_s = float_weights(T_s)
    synW = {}
    selftest = []
    for spec, fmt in pairs:
        out = os.path.join(run.work, "syn.%s.%s" % (spec, fmt))
        export(run.qfs, spec, fmt, syn, out)
        W, info = dequantize_view(out, T_s)
        qn = [m + ".weight" for m in info["quantized"]]
        insp = inspect_json(run.qfs, spec, fmt, syn, error=True)
        mine = rel_rms(W, W_s, qn) if qn else None
        theirs = (insp["totals"].get("error") or {}).get("rel_rms")
        same = None
        if spec in synW:
            Wa = synW[spec]
            same = all(np.array_equal(Wa[n], W[n]) for n in W)
        else:
            synW[spec] = W
        selftest.append((spec, fmt, info["scheme"]["kind"], len(qn),
                         len(info["candidates"]), mine, theirs, same))
        run.done_with(out)
    synW.clear()
    bad = [r for r in selftest if r[3] == 0 or r[7] is False
           or r[5] is None or r[6] is None or abs(r[5] - r[6]) > 1e-3 * r[6]]
    if bad:
        raise Fail("synthetic self-test failed for %s" % [(r[0], r[1]) for r in bad])
    return selftest


def report_reference(md, run, runtime, ref_rows):
    """The report's title, how it was made, and the forward-pass check."""
    cmd = "python3 " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    md.append("# Quality of quarkfs views on stories260K")
    md.append("")
    md.append("Produced by `%s` (from the repository root; %.1f s on %d cores). Numpy forward "
              "pass in float64 on the first %d sequences of `%s` (%d predicted tokens); every "
              "quantized weight dequantized to float32 from the exported view's own bytes."
              % (cmd, runtime, os.cpu_count() or 1, len(run.seqs),
                 os.path.basename(run.args.corpus), run.npred))
    md.append("")
    md.append("## Forward-pass check against the published reference")
    md.append("")
    md.append("| weights | PPL (this script) | PPL (README) | diff | 3-decimal check "
              "| top-1 vs F32 | top-1 vs BF16 |")
    md.append("|---|---|---|---|---|---|---|")
    md.extend(ref_rows)


def report_views(md, run, specs, pairs, results):
    """One row per spec (and per format that quantizes a different set of tensors)."""
    ppl_b, am_b, refs = run.ppl_b, run.am_b, run.refs
    md.append("")
    md.append("## Quantized views (source stories260K-bf16)")
    md.append("")
    md.append("One row per spec (format quark where valid, else the first valid one); an extra row "
              "where another format of the same spec quantizes a different set of tensors. "
              "Candidates = the 35 2-D projection weights (embedding and norms are never "
              "quantized). Weight rel-RMS = sqrt(Σ(w_q−w)²/Σw²) over the quantized tensors, from "
              "this script's dequantizer / from `quarkfs inspect --error`. Top-1 = fraction of "
              "predicted positions whose argmax equals the bf16 model's.")
    md.append("")
    md.append("| spec | format | quantized | not applied (reason) | weight rel-RMS (mine / "
              "inspect) | PPL | Δ vs BF16 | top-1 vs BF16 |")
    md.append("|---|---|---|---|---|---|---|---|")
    md.append("| F32 (reference) | — | — | — | — | %.4f | %+.4f | %s |"
              % (refs["f32"][0], refs["f32"][0] - ppl_b,
                 fmt_pct(float(np.mean(refs["f32"][1] == am_b)))))
    md.append("| F16 (reference) | — | — | — | — | %.4f | %+.4f | %s |"
              % (refs["f16"][0], refs["f16"][0] - ppl_b,
                 fmt_pct(float(np.mean(refs["f16"][1] == am_b)))))
    md.append("| BF16 (reference) | — | — | — | — | %.4f | — | 100.00 %% |" % ppl_b)

    def row(spec, fmt):
        r = results[(spec, fmt)]
        cands = set(r["info"]["candidates"])
        rel = ("%.3e / %.3e" % (r["rel"], r["irel"])) if r["rel"] is not None else "—"
        return "| %s | %s | %d/%d | %s | %s | %.4f | %+.4f | %s |" % (
            spec, fmt, r["nq"], r["ncand"], reasons_text(r["insp"], cands), rel, r["ppl"],
            r["ppl"] - ppl_b, fmt_pct(r["agree"]))

    for spec in specs:
        fmts = [f for s, f in pairs if s == spec]
        main_fmt = "quark" if "quark" in fmts else fmts[0]
        md.append(row(spec, main_fmt))
        seen = {tuple(results[(spec, main_fmt)]["info"]["quantized"])}
        for f in fmts:
            key = tuple(results[(spec, f)]["info"]["quantized"])
            if key not in seen:
                seen.add(key)
                md.append(row(spec, f))


def report_pairs(md, pairs, results, nforward, consistency):
    """Every pair's layout, rounding check and perplexity; the same spec across formats."""
    md.append("")
    md.append("## Every valid spec × format: dequantized, and compared across formats")
    md.append("")
    md.append("All %d valid pairs of `quarkfs --list-specs` were exported from stories260K-bf16 and "
              "dequantized (quantized set = candidates − the config's exclusion list = inspect's "
              "list; every view tensor accounted for; unquantized tensors byte-identical to the "
              "source). PPL of each pair:" % len(pairs))
    md.append("")
    md.append("| spec | format | layout | quantized | at nearest grid point | RMS error / "
              "nearest-rounding RMS error | PPL | top-1 vs BF16 |")
    md.append("|---|---|---|---|---|---|---|---|")
    for spec, fmt in pairs:
        r = results[(spec, fmt)]
        sch = r["info"]["scheme"]
        at, ratio = r["rcheck"]
        md.append("| %s | %s | %s | %d/%d | %s | %s | %.4f | %s |" % (
            spec, fmt, sch["kind"], r["nq"], r["ncand"],
            "—" if at is None else fmt_pct(at), "—" if ratio is None else "%.4f" % ratio,
            r["ppl"], fmt_pct(r["agree"])))
    md.append("")
    md.append("*At nearest grid point*: fraction of quantized elements whose dequantized value is "
              "the representable value (int code, e4m3 or e2m1 value, times the stored scale, "
              "minus the stored zero point) nearest to the source weight; *RMS error / "
              "nearest-rounding RMS error*: 1 means optimal rounding under the stored scales. "
              "%d distinct dequantized models needed a forward pass; pairs with bit-identical "
              "weights share it." % nforward)
    md.append("")
    md.append("Same spec, two formats (weights of the modules both quantize compared bit for bit):")
    md.append("")
    md.append("| spec | formats | common quantized modules | identical | whole model identical "
              "| note |")
    md.append("|---|---|---|---|---|---|")
    for spec, a, b, nc, same, allsame, note in consistency:
        md.append("| %s | %s = %s | %d | %s | %s | %s |" % (spec, a, b, nc, "yes" if same else "NO",
                                                          "yes" if allsame else "no", note or ""))


def report_cross(md, cross):
    """The f32-source cross-check."""
    md.append("")
    md.append("## Cross-check: stories260K-f32 as source (format quark)")
    md.append("")
    md.append("| spec | quantized | weight rel-RMS (mine / inspect) | at nearest grid point "
              "| PPL | Δ vs F32 | top-1 vs F32 | top-1 vs BF16 | PPL from bf16 source |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for spec, nq, nc, ppl, d, a32, ab, mine, theirs, pb, rc in cross:
        md.append("| %s | %d/%d | %.3e / %.3e | %s | %.4f | %+.4f | %s | %s | %.4f |"
                  % (spec, nq, nc, mine, theirs, fmt_pct(rc[0]), ppl, d, fmt_pct(a32),
                     fmt_pct(ab), pb))


def report_selftest(md, selftest):
    """The synthetic-model layout self-test (nothing when it was skipped)."""
    if not selftest:
        return
    md.append("")
    md.append("## Layout self-test on a synthetic model")
    md.append("")
    md.append("`tests/fixtures/genmodel.py --preset demo --hidden 256 --intermediate 768 "
              "--layers 1 --shards 2 --vocab 256` (bf16; every shape a multiple of 128, so "
              "every spec — fp8-block and g128 included — quantizes something). Dequantized "
              "weights vs source: rel-RMS from this script and from `quarkfs inspect --error` "
              "must agree (to 0.1 %), and each format of a spec must give the first format's "
              "weights.")
    md.append("")
    md.append("| spec | format | layout | quantized | rel-RMS mine | rel-RMS inspect "
              "| = first format |")
    md.append("|---|---|---|---|---|---|---|")
    for spec, fmt, kind, nq, nc, mine, theirs, same in selftest:
        md.append("| %s | %s | %s | %d/%d | %.4e | %.4e | %s |" % (
            spec, fmt, kind, nq, nc, mine, theirs,
            "—" if same is None else ("yes" if same else "NO")))


def main():
    args = parse_args()
    if args.view:
        return measure_views(args)
    t0 = time.time()
    work = args.keep or tempfile.mkdtemp(prefix="quality-")
    if args.keep:
        os.makedirs(work)
    try:
        run = Run(args, load_corpus(args.corpus, args.seqs), work)
        ref_rows = reference_perplexities(run)
        pairs = list_pairs(run.qfs)
        specs = list(collections.OrderedDict((s, None) for s, _ in pairs))
        results, nforward = every_pair(run, pairs)
        consistency = format_consistency(specs, pairs, results)
        cross = f32_cross_check(run, results)
        selftest = [] if args.no_selftest else synthetic_selftest(run, pairs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    runtime = time.time() - t0

    md = []
    report_reference(md, run, runtime, ref_rows)
    report_views(md, run, specs, pairs, results)
    report_pairs(md, pairs, results, nforward, consistency)
    report_cross(md, cross)
    report_selftest(md, selftest)
    md.append("")
    text = "\n".join(md)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    run.log("runtime %.1f s; wrote %s" % (runtime, args.out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Fail, subprocess.CalledProcessError) as e:
        msg = str(e)
        if isinstance(e, subprocess.CalledProcessError):
            msg += "\n" + (e.stderr or "")
        print("quality.py: error: " + msg, file=sys.stderr)
        sys.exit(1)
