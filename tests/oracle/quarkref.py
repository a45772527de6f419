#!/usr/bin/env python3
"""Independent reference of the quarkfs quantized view, in numpy.

Usage:
    python3 tests/oracle/quarkref.py --spec S [--format F] [--exclude GLOB]... [--include GLOB]...
            [--layer GLOB=SPEC]... SRC OUT
        write the expected view of model directory SRC into OUT (must not exist or be empty)
    python3 tests/oracle/quarkref.py --spec S [--format F] [--exclude GLOB]... [--include GLOB]...
            --check SRC VIEW
        compare directory VIEW (a FUSE mount or an export) with the expected view of SRC;
        prints one line per mismatch and "N files checked, M mismatches"; exit 0 only if M == 0
    python3 tests/oracle/quarkref.py --selftest
        check the numeric kernels against slower, differently written versions and
        hand-computed values
Exit 2: bad command line, a spec/format pair that cannot be written, or an unusable source.

Specs: int8, int8-channel, w8a8-int8, fp8, fp8-channel, fp8-block, uint4 (= uint4-g128),
uint4-g32/-g64/-g128, int4 (= int4-g128), int4-g32/-g64/-g128, mxfp4.
Formats (default quark) and the specs they take (FORMATS):
  quark               every spec except fp8-block
  awq                 uint4*, int4*  (qweight/scales/qzeros)
  fp8                 fp8, fp8-block (weight_scale_inv)
  compressed-tensors  int8-channel, w8a8-int8, fp8, fp8-channel, fp8-block, int4*

Written from notes on Quark's export code and the loaders' source (the contract they give is
restated in doc/FORMAT.md §1-§8), without looking at the C implementation. Library use:
plan_view(src, spec, excludes, includes, fmt, layers) builds a ViewPlan; write_view(plan, out) writes
it; check_view(plan, view) compares. The tensors written per quantized weight are in layout(),
the shape rule in shape_reason(), the configs in quantization_config().

The view of SRC:
* model*.safetensors directly in SRC: quantized (plan_safetensors, Quantizer and the kernels).
* config.json: the source text with "quantization_config" inserted before the last "}".
* model.safetensors.index.json: weight_map/total_size rewritten (expected_index).
* everything else, subdirectories included, symlinks followed: passed through byte for byte
  (only a directory symlink back to one of its own ancestors is a loop and left out).
A model file with a NaN/Inf in a tensor to be quantized is served with EIO by quarkfs; the
checker notes it and skips its bytes (the writer leaves it out).
"""

import argparse
import fnmatch
import json
import os
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pylib"))
import stfile  # noqa: E402  the safetensors container; no numerics

np = stfile.import_numpy(__name__ == "__main__")

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

DTYPE_RANK = stfile.DTYPE_RANK
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
              "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16,
              "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
              "F64": 64, "I64": 64, "U64": 64}
FLOAT_DTYPES = ("BF16", "F16", "F32")
# numpy views used only to print values in mismatch reports
REPORT_NP = {"BOOL": "u1", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
             "I32": "<i4", "U32": "<u4", "F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8"}

EPS = np.float32(2.0 ** -23)          # torch.finfo(torch.float32).eps
F32_127_5 = np.float32(127.5)         # (qmax - qmin) / 2 for int8
F32_448 = np.float32(448.0)           # e4m3fn max finite
F32_ONE = np.float32(1.0)
INT8_MIN, INT8_MAX = -128, 127

class Spec:
    """A quantization spec: kind ('int8', 'fp8', 'fp8-block', 'uint4', 'int4', 'mxfp4'),
    per_channel (one scale per output row, int8/fp8 only) and group (per-group size, 4-bit)."""

    def __init__(self, name, kind, per_channel=False, group=0):
        self.name, self.kind, self.per_channel, self.group = name, kind, per_channel, group

    @property
    def is_4bit(self):
        """True for the per-group uint4/int4 specs."""
        return self.kind in ("uint4", "int4")


SPECS = {
    "int8": Spec("int8", "int8"),
    "int8-channel": Spec("int8-channel", "int8", True),
    "w8a8-int8": Spec("w8a8-int8", "int8", True),
    "fp8": Spec("fp8", "fp8"),
    "fp8-channel": Spec("fp8-channel", "fp8", True),
    "fp8-block": Spec("fp8-block", "fp8-block"),
    "mxfp4": Spec("mxfp4", "mxfp4"),
}
for _kind in ("uint4", "int4"):
    for _g in (32, 64, 128):
        SPECS["%s-g%d" % (_kind, _g)] = Spec("%s-g%d" % (_kind, _g), _kind, group=_g)
    SPECS[_kind] = Spec(_kind, _kind, group=128)          # uint4 = uint4-g128, int4 = int4-g128
FOUR_BIT = sorted(name for name, sp in SPECS.items() if sp.is_4bit)
FORMATS = {
    # format: the specs it can be written in
    "quark": sorted(name for name in SPECS if name != "fp8-block"),
    "awq": FOUR_BIT,
    "fp8": ["fp8", "fp8-block"],
    "compressed-tensors": sorted(["int8-channel", "w8a8-int8", "fp8", "fp8-channel", "fp8-block"]
                                 + [n for n in FOUR_BIT if n.startswith("int4")]),
}
BLOCK = 128                           # fp8-block block edge
MX_BLOCK = 32                         # mxfp4 block along the input dim
CT_VERSION = "0.12.0"
EMBED_COMPONENTS = ("wte", "wpe", "word_embeddings", "position_embeddings", "shared")
QUARK_VERSION = "0.13"                # the amd-quark release whose export is matched
COPY_CHUNK = 64 << 20                 # bytes per read when copying/comparing passthrough data
MAX_REPORT_EXAMPLES = 5


class QuarkRefError(Exception):
    """A source that cannot be handled (bad safetensors, already quantized config...)."""


# ---------------------------------------------------------------------------------------------
# Float formats (all arithmetic in float32)
# ---------------------------------------------------------------------------------------------

def bf16_bits(values):
    """float32 -> bfloat16 bits (uint16) with torch's rounding: (u + 0x7FFF + lsb) >> 16."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (u >> np.uint32(16)).astype(np.uint16)


def round_to(values, dtype):
    """rD: round float32 values to dtype D (nearest-even) and return them as float32."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "F32":
        return values
    if dtype == "BF16":
        return (bf16_bits(values).astype(np.uint32) << np.uint32(16)).view(np.float32).reshape(values.shape)
    if dtype == "F16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16).astype(np.float32)
    raise ValueError("not a float dtype: %s" % dtype)


def encode_float(values, dtype):
    """Little-endian bytes (as a uint8 array) of float32 values already representable in dtype."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "F32":
        out = values.astype("<f4")
    elif dtype == "BF16":
        out = bf16_bits(values).astype("<u2")
    elif dtype == "F16":
        out = values.astype("<f2")
    else:
        raise ValueError("not a float dtype: %s" % dtype)
    return np.ascontiguousarray(out).reshape(-1).view(np.uint8)


def decode_float(raw, dtype, shape):
    """Raw little-endian bytes (uint8 array) of a BF16/F16/F32 tensor -> float32 array."""
    if dtype == "BF16":
        u = raw.view("<u2").astype(np.uint32) << np.uint32(16)
        x = u.view(np.float32)
    elif dtype == "F16":
        x = raw.view("<f2").astype(np.float32)
    elif dtype == "F32":
        x = raw.view("<f4").astype(np.float32)
    else:
        raise ValueError("not a float dtype: %s" % dtype)
    return x.reshape(shape)


def e4m3_table():
    """The 127 non-negative finite e4m3fn values as float64, indexed by code 0..126."""
    codes = np.arange(127)
    exp, man = codes >> 3, codes & 7
    return np.where(exp == 0, man * 2.0 ** -9, (1.0 + man / 8.0) * np.exp2(exp - 7.0))


def e4m3_encode(y):
    """float32 values with |y| <= 448 -> e4m3fn codes (uint8), round-to-nearest-even.

    Works on the float32 bits: for |y| >= 2**-6 (normal e4m3) round the 23-bit mantissa to
    3 bits (RNE, carry into the exponent) and rebias the exponent 127 -> 7; below that the
    value is a subnormal m * 2**-9 with m = rint(|y| * 512) (exact scaling, half-even),
    m == 8 being the smallest normal (code 8). The sign bit is always kept (-0 -> 0x80).
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    bits = y.view(np.uint32)
    sign = ((bits >> np.uint32(24)) & np.uint32(0x80)).astype(np.uint8)
    mag = bits & np.uint32(0x7FFFFFFF)
    rounded = (mag + np.uint32(0x7FFFF) + ((mag >> np.uint32(20)) & np.uint32(1))) >> np.uint32(20)
    normal = (rounded - np.uint32(120 << 3)).astype(np.uint8)   # (e - 127 + 7) << 3 | m
    a = mag.view(np.float32)
    sub = np.rint(a * np.float32(512.0)).astype(np.uint8)
    code = np.where(a < np.float32(2.0 ** -6), sub, normal)
    return code | sign


def e4m3_encode_by_table(y):
    """Slow reference e4m3 encoder: nearest of the 127 finite values, ties to the even code."""
    y = np.asarray(y, dtype=np.float32)
    table = e4m3_table()
    a = np.abs(y).astype(np.float64)
    hi = np.clip(np.searchsorted(table, a, side="left"), 1, 126)
    lo = hi - 1
    dlo, dhi = a - table[lo], table[hi] - a
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    pick = np.where(a == 0, 0, pick)
    return (pick | np.where(np.signbit(y), 0x80, 0)).astype(np.uint8)


def e4m3_decode(codes):
    """e4m3fn codes -> float64 values (NaN for 0x7F/0xFF)."""
    codes = np.asarray(codes, dtype=np.uint8)
    table = np.append(e4m3_table(), np.nan)
    mag = table[codes & 0x7F]
    return np.where(codes & 0x80, -mag, mag)


# ---------------------------------------------------------------------------------------------
# Quantization kernels
# ---------------------------------------------------------------------------------------------

def absmax(x, per_channel):
    """amax = max(-min(min(x), 0), max(max(x), 0)) over the tensor or each row (float32)."""
    if per_channel:
        mn, mx = x.min(axis=1), x.max(axis=1)
    else:
        mn, mx = np.float32(x.min()), np.float32(x.max())
    zero = np.float32(0.0)
    return np.maximum(-np.minimum(mn, zero), np.maximum(mx, zero)), mn, mx


def int8_scale(x, per_channel, dtype):
    """Symmetric int8 scale: max(rD(amax / 127.5), eps); float32 values (D-representable).

    Returns (scale, finite) where finite is False when x holds NaN or Inf.
    """
    amax, mn, mx = absmax(x, per_channel)
    finite = bool(np.all(np.isfinite(mn)) and np.all(np.isfinite(mx)))
    s0 = round_to(np.divide(amax, F32_127_5, dtype=np.float32), dtype)
    return np.maximum(s0, EPS).astype(np.float32), finite


def int8_quantize(x, scale, per_channel):
    """q = clamp(rint(x * fl32(1 / s)), -128, 127) as int8 (multiply by the reciprocal)."""
    inv = np.divide(F32_ONE, scale, dtype=np.float32)
    if per_channel:
        inv = inv[:, None]
    q = np.multiply(x, inv, dtype=np.float32)
    np.rint(q, out=q)
    np.clip(q, INT8_MIN, INT8_MAX, out=q)
    return q.astype(np.int8)


def fp8_scale(x, per_channel, dtype):
    """FP8 scale: s = rD(amax / 448), s == 0 -> rD(eps); float32 values (D-representable).

    Returns (scale, finite) where finite is False when x holds NaN or Inf.
    """
    amax, mn, mx = absmax(x, per_channel)
    finite = bool(np.all(np.isfinite(mn)) and np.all(np.isfinite(mx)))
    s = round_to(np.divide(amax, F32_448, dtype=np.float32), dtype)
    s = np.where(s == 0, round_to(EPS, dtype), s).astype(np.float32)
    return s, finite


def fp8_quantize(x, scale, per_channel, dtype):
    """q = e4m3fn(clamp(rD(fl32(x / s)), -448, 448)) (a true float32 division)."""
    s = scale[:, None] if per_channel else scale
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        y = np.divide(x, s, dtype=np.float32)
        y = round_to(y, dtype)
    y = np.clip(y, -F32_448, F32_448)
    return e4m3_encode(y)


def group_minmax(x, group):
    """(mn, mx) per group of `group` consecutive elements of each row: min(min, 0), max(max, 0)."""
    rows, cols = x.shape
    xg = x.reshape(rows, cols // group, group)
    zero = np.float32(0.0)
    return np.minimum(xg.min(axis=2), zero), np.maximum(xg.max(axis=2), zero)


def int4_params(x, group, signed, dtype):
    """Per-group 4-bit (scale, zero point, finite): float32 scales (D-representable) and
    integer zero points, both [O, I/G].

    uint4 (asymmetric, 0..15): s = max(rD(rD(mx - mn) / 15), eps), zp = clamp(-rne(rD(mn / s)),
    0, 15). int4 (symmetric, -8..7): s = max(rD(amax / 7.5), eps), zp = 0.
    """
    mn, mx = group_minmax(x, group)
    finite = bool(np.isfinite(mn).all() and np.isfinite(mx).all())
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if signed:
            amax = np.maximum(-mn, mx)
            s0 = round_to(np.divide(amax, np.float32(7.5), dtype=np.float32), dtype)
            s = np.maximum(s0, EPS).astype(np.float32)
            zp = np.zeros(s.shape, dtype=np.int32)
        else:
            span = round_to(np.subtract(mx, mn, dtype=np.float32), dtype)
            s0 = round_to(np.divide(span, np.float32(15.0), dtype=np.float32), dtype)
            s = np.maximum(s0, EPS).astype(np.float32)
            r = np.rint(round_to(np.divide(mn, s, dtype=np.float32), dtype))
            zp = np.clip(np.float32(0.0) - r, 0, 15)
            zp = np.where(np.isfinite(zp), zp, 0).astype(np.int32)
    return s, zp, finite


def int4_quantize(x, scale, zp, group, signed):
    """q = clamp(rne(fl32(x * fl32(1/s))) + zp, qmin, qmax) per group; int8 [O, I].

    The zero point is added after rounding: Quark's freeze() keeps the fake-quantized weight,
    made by PyTorch's rule round(x * inv) + zp, and its export re-quantizes that weight exactly
    (checked against amd-quark 0.13's export by tests/loaders/test_quark_export.py)."""
    rows, cols = x.shape
    inv = np.divide(F32_ONE, scale, dtype=np.float32)
    xg = x.reshape(rows, cols // group, group)
    y = np.multiply(xg, inv[:, :, None], dtype=np.float32)
    np.rint(y, out=y)
    y = np.add(y, zp.astype(np.float32)[:, :, None], dtype=np.float32)
    lo, hi = (-8, 7) if signed else (0, 15)
    np.clip(y, lo, hi, out=y)
    return y.astype(np.int8).reshape(rows, cols)


AWQ_SHIFTS = np.array([0, 16, 4, 20, 8, 24, 12, 28], dtype=np.uint32)   # element j of 8 -> bit offset
SEQ4_SHIFTS = np.arange(8, dtype=np.uint32) * np.uint32(4)


def pack_reorder(q):
    """Quark/AWQ "reorder" packing of 4-bit values q [R, C] (C % 8 == 0) along the last dim:
    word c holds elements 8c..8c+7, element j at bit AWQ_SHIFTS[j], masked & 0xF. int32 [R, C/8]."""
    rows, cols = q.shape
    u = (np.asarray(q).astype(np.int32) & 0xF).astype(np.uint32).reshape(rows, cols // 8, 8)
    return np.bitwise_or.reduce(u << AWQ_SHIFTS, axis=2).astype("<u4").view("<i4")


def pack_ct4(q):
    """compressed-tensors 4-bit packing of int4 q [R, C]: element e at bit 4*(e%8) of word e//8,
    stored as (q + 8) & 0xF. int32 [R, C/8]."""
    rows, cols = q.shape
    u = ((np.asarray(q).astype(np.int32) + 8) & 0xF).astype(np.uint32).reshape(rows, cols // 8, 8)
    return np.bitwise_or.reduce(u << SEQ4_SHIFTS, axis=2).astype("<u4").view("<i4")


def pack_ct8(q):
    """compressed-tensors 8-bit packing of int8 q [R, C]: element e at bits 8*(e%4) of word e//4,
    stored as (q + 128) & 0xFF. int32 [R, C/4] (little-endian: the bytes q + 128 in order)."""
    rows, cols = q.shape
    u = ((np.asarray(q).astype(np.int32) + 128) & 0xFF).astype(np.uint32).reshape(rows, cols // 4, 4)
    shifts = np.arange(4, dtype=np.uint32) * np.uint32(8)
    return np.bitwise_or.reduce(u << shifts, axis=2).astype("<u4").view("<i4")


# E2M1 rounding thresholds between adjacent magnitude codes k and k+1 (grid 0,.5,1,1.5,2,3,4,6);
# at a tie the even code wins: moving up from an even code needs y > mid, from an odd one y >= mid.
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
E2M1_MIDS = (E2M1_VALUES[:-1] + E2M1_VALUES[1:]) / 2


def mx_exponents(x):
    """(e [O, I/32] int32, finite): MXFP4 "even" shared exponents per block of 32 of each row.

    amax = max|x| (float32); v = bits(amax) + (1 << 21) with the mantissa cleared (v = 2^-126
    when amax == 0); e = clamp(floor(log2 v) - 2, -127, 127), v == 0 (exponent field 0) -> -127.
    """
    rows, cols = x.shape
    amax = np.abs(x.reshape(rows, cols // MX_BLOCK, MX_BLOCK)).max(axis=2).astype(np.float32)
    finite = bool(np.isfinite(amax).all())
    bits = amax.view(np.uint32) + np.uint32(1 << 21)
    field = ((bits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32)
    field = np.where(amax == 0, 1, field)                 # v = 2^-126
    e = np.where(field == 0, -127, field - 127 - 2)       # log2(0) = -inf -> clamp -> -127
    e = np.where(field == 255, 127, e)                    # v = inf -> +inf -> clamp -> 127
    return np.clip(e, -127, 127).astype(np.int32), finite


def mxfp4_codes(x, e):
    """E2M1 codes (uint8 [O, I]) of x / 2^e (exact, float64), nearest-even, saturating at 6;
    negative values get bit 3 except when the magnitude code is 0."""
    rows, cols = x.shape
    y = x.astype(np.float64).reshape(rows, cols // MX_BLOCK, MX_BLOCK) * np.exp2(-e.astype(np.float64))[:, :, None]
    a = np.abs(y)
    code = np.zeros(a.shape, dtype=np.uint8)
    for k, mid in enumerate(E2M1_MIDS):
        code += (a > mid) if k % 2 == 0 else (a >= mid)
    code |= np.where((y < 0) & (code != 0), 8, 0).astype(np.uint8)
    return code.reshape(rows, cols)


def mxfp4_pack(codes):
    """Two E2M1 codes per byte: element 2j in bits 0-3, 2j+1 in bits 4-7. uint8 [O, I/2]."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def mx_scale_bytes(e):
    """e8m0 scale bytes: max(e, -126) + 127."""
    return (np.maximum(e, -126) + 127).astype(np.uint8)


def fp8_block_scale(x):
    """(s [O/128, I/128] float32, finite): s = fl32(amax / 448) per 128x128 block, 0 -> 2^-23."""
    rows, cols = x.shape
    xb = x.reshape(rows // BLOCK, BLOCK, cols // BLOCK, BLOCK)
    amax = np.abs(xb).max(axis=(1, 3)).astype(np.float32)
    finite = bool(np.isfinite(amax).all())
    s = np.divide(amax, F32_448, dtype=np.float32)
    return np.where(s == 0, EPS, s).astype(np.float32), finite


def fp8_block_quantize(x, s):
    """q = e4m3(clamp(fl32(x / s), +-448)) per block, no rounding to D. uint8 codes [O, I]."""
    rows, cols = x.shape
    xb = x.reshape(rows // BLOCK, BLOCK, cols // BLOCK, BLOCK)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        y = np.divide(xb, s[:, None, :, None], dtype=np.float32)
    y = np.clip(y, -F32_448, F32_448)
    return e4m3_encode(y).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------
# safetensors source files
# ---------------------------------------------------------------------------------------------

class TensorInfo:
    """A tensor of a source file: name, dtype, shape and byte range in the data section."""

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape = name, dtype, list(shape)
        self.begin, self.end = begin, end

    @property
    def numel(self):
        """Number of elements."""
        return stfile.numel(self.shape)

    @property
    def nbytes(self):
        """Byte size of the data."""
        return self.end - self.begin


class SafetensorsFile:
    """Parsed header of a source safetensors file (data is read on demand)."""

    def __init__(self, path):
        self.path = path
        try:
            header, self.data_start = stfile.read_header(path)
        except stfile.HeaderError as exc:
            raise QuarkRefError(str(exc)) from exc
        self.metadata = header.pop("__metadata__", None)
        self.tensors = {}
        for name, entry in header.items():
            dtype = entry["dtype"]
            if dtype not in DTYPE_RANK:
                raise QuarkRefError("%s: unknown dtype %s for %s" % (path, dtype, name))
            begin, end = entry["data_offsets"]
            self.tensors[name] = TensorInfo(name, dtype, entry["shape"], begin, end)

    def read_raw(self, info, start=0, count=None):
        """Bytes [start, start+count) of a tensor's data as a uint8 array."""
        count = info.nbytes - start if count is None else count
        with open(self.path, "rb") as f:
            f.seek(self.data_start + info.begin + start)
            raw = np.fromfile(f, dtype=np.uint8, count=count)
        if raw.size != count:
            raise QuarkRefError("%s: short read for %s" % (self.path, info.name))
        return raw

    def read_float32(self, info):
        """A float tensor's values as a float32 array of its shape."""
        return decode_float(self.read_raw(info), info.dtype, info.shape)


# ---------------------------------------------------------------------------------------------
# Which tensors are quantized
# ---------------------------------------------------------------------------------------------

def is_embedding(module):
    """Embedding by name: 'embed' anywhere, or a component wte/wpe/word_embeddings/..."""
    return "embed" in module or any(c in EMBED_COMPONENTS for c in module.split("."))


def is_norm(module):
    """Norm by name: 'norm' (any case) anywhere, or a component 'ln' or starting with 'ln_'."""
    return "norm" in module.lower() or any(c == "ln" or c.startswith("ln_")
                                           for c in module.split("."))


def layout(spec, fmt, module, shape, dtype):
    """Output tensors written for quantized `module`.weight [O, I] of dtype D, as a list of
    (name, dtype, shape, role); role is 'weight', 'scale', 'zero_point' or 'shape'."""
    sp = SPECS[spec]
    rows, cols = shape
    m = module
    if sp.is_4bit:
        g = sp.group
        if fmt in ("quark", "awq"):
            names = ((".weight", ".weight_scale", ".weight_zero_point") if fmt == "quark"
                     else (".qweight", ".scales", ".qzeros"))
            return [(m + names[0], "I32", [cols, rows // 8], "weight"),
                    (m + names[1], dtype, [cols // g, rows], "scale"),
                    (m + names[2], "I32", [cols // g, rows // 8], "zero_point")]
        return [(m + ".weight_packed", "I32", [rows, cols // 8], "weight"),      # compressed-tensors
                (m + ".weight_scale", dtype, [rows, cols // g], "scale"),
                (m + ".weight_shape", "I64", [2], "shape")]
    if sp.kind == "mxfp4":
        return [(m + ".weight", "U8", [rows, cols // 2], "weight"),
                (m + ".weight_scale", "U8", [rows, cols // MX_BLOCK], "scale")]
    if sp.kind == "fp8-block":
        scale_name = ".weight_scale_inv" if fmt == "fp8" else ".weight_scale"
        return [(m + ".weight", "F8_E4M3", [rows, cols], "weight"),
                (m + scale_name, "F32", [rows // BLOCK, cols // BLOCK], "scale")]
    if sp.kind == "int8":
        if fmt == "quark":
            if sp.per_channel:
                return [(m + ".weight", "I8", [rows, cols], "weight"),
                        (m + ".weight_scale", dtype, [rows], "scale"),
                        (m + ".weight_zero_point", "I8", [rows], "zero_point")]
            return [(m + ".weight", "I8", [rows, cols], "weight"),
                    (m + ".weight_scale", "F32", [], "scale"),
                    (m + ".weight_zero_point", "I8", [], "zero_point")]
        if spec == "int8-channel":                                  # compressed-tensors, packed
            return [(m + ".weight_packed", "I32", [rows, cols // 4], "weight"),
                    (m + ".weight_scale", dtype, [rows, 1], "scale"),
                    (m + ".weight_shape", "I64", [2], "shape")]
        return [(m + ".weight", "I8", [rows, cols], "weight"),      # compressed-tensors w8a8
                (m + ".weight_scale", dtype, [rows, 1], "scale")]
    # fp8 per tensor / per channel
    if fmt == "compressed-tensors":
        scale_shape = [rows, 1] if sp.per_channel else [1]
    else:
        scale_shape = [rows] if sp.per_channel else []
    return [(m + ".weight", "F8_E4M3", [rows, cols], "weight"),
            (m + ".weight_scale", dtype, scale_shape, "scale")]


def shape_reason(spec, fmt, shape):
    """Why a [O, I] weight cannot take the spec in the format, or None when it can."""
    sp = SPECS[spec]
    rows, cols = shape
    if sp.is_4bit:
        if cols % sp.group:
            return "in features %d not a multiple of the group size %d" % (cols, sp.group)
        if fmt in ("quark", "awq") and rows % 8:
            return "out features %d not a multiple of 8 (packing)" % rows
    elif sp.kind == "mxfp4":
        if cols % MX_BLOCK:
            return "in features %d not a multiple of %d" % (cols, MX_BLOCK)
    elif sp.kind == "fp8-block":
        if rows % BLOCK or cols % BLOCK:
            return "shape [%d, %d] not a multiple of %d x %d blocks" % (rows, cols, BLOCK, BLOCK)
    elif fmt == "compressed-tensors" and spec == "int8-channel":
        if cols % 4:
            return "in features %d not a multiple of 4 (packing)" % cols
    return None


def has_magic(glob):
    """True if an fnmatch pattern holds a wildcard."""
    return any(c in glob for c in "*?[")


def module_spec(module, spec, layers):
    """The spec of one module under per-layer rules (an ordered dict glob -> spec, Quark's
    layer_quant_config as given): an entry naming the module exactly comes first (Quark's
    quantizer looks exact names up before matching), then the first glob in order that
    matches; else the view's spec."""
    if module in layers and not has_magic(module):
        return layers[module]
    for glob, s in layers.items():
        if fnmatch.fnmatchcase(module, glob):
            return s
    return spec


def classify(info, names, spec, excludes, includes, fmt="quark", layers=None):
    """('quantize' | 'linear' | None, reason): how one source tensor is treated.

    'linear' = Linear-like (2-D float *.weight, not an embedding nor a norm) but left
    unquantized (its module goes into the config's exclude list); None = not Linear-like.
    """
    name = info.name
    if not name.endswith(".weight") or len(info.shape) != 2 or info.dtype not in FLOAT_DTYPES:
        return None, "not a 2-D float .weight"
    module = name[: -len(".weight")]
    if is_embedding(module):
        return None, "embedding"
    if is_norm(module):
        return None, "norm"
    if info.numel == 0:
        return "linear", "empty tensor"
    if module == "lm_head" or module.endswith(".lm_head"):
        # only a per-layer rule naming it exactly (no wildcard) quantizes an lm_head
        if not (layers and module in layers and not has_magic(module)):
            return "linear", "lm_head"
    if any(fnmatch.fnmatchcase(module, g) for g in excludes):
        return "linear", "--exclude"
    if includes and not any(fnmatch.fnmatchcase(module, g) for g in includes):
        return "linear", "not --include'd"
    for out_name, _, _, _ in layout(spec, fmt, module, info.shape, info.dtype):
        if out_name != name and out_name in names:
            return "linear", "name collision with %s" % out_name
    reason = shape_reason(spec, fmt, info.shape)
    if reason:
        return "linear", reason
    return "quantize", ""


# ---------------------------------------------------------------------------------------------
# View plan
# ---------------------------------------------------------------------------------------------

class OutTensor:
    """A tensor of a view file: name, dtype, shape, offsets, and where its bytes come from.

    role: 'copy' (source tensor `src` unchanged), 'weight', 'scale' or 'zero_point'
    (outputs of quantizing source tensor `src`).
    """

    def __init__(self, name, dtype, shape, nbytes, role, src):
        self.name, self.dtype, self.shape, self.nbytes = name, dtype, list(shape), nbytes
        self.role, self.src = role, src
        self.begin = self.end = 0


class FilePlan:
    """Expected layout of one view safetensors file (header bytes + ordered outputs)."""

    def __init__(self, relpath, source, spec, fmt="quark"):
        self.relpath, self.source, self.spec, self.fmt = relpath, source, spec, fmt
        self.quantized = {}        # source tensor name -> TensorInfo
        self.spec_of = {}          # quantized source tensor name -> its spec (per-layer rules)
        self.out_names = {}        # source tensor name -> its output tensor names
        self.unquantized_linear = {}   # module -> reason
        self.outputs = []
        self.header = b""
        self.data_size = 0

    @property
    def size(self):
        """Total file size."""
        return len(self.header) + self.data_size


def plan_safetensors(relpath, path, spec, excludes, includes, fmt="quark", layers=None):
    """Build the FilePlan of one model*.safetensors file (headers only, no data read)."""
    src = SafetensorsFile(path)
    plan = FilePlan(relpath, src, spec, fmt)
    outputs = []
    for name, info in src.tensors.items():
        tspec = module_spec(name[: -len(".weight")], spec, layers or {})
        verdict, reason = classify(info, src.tensors, tspec, excludes, includes, fmt, layers)
        if verdict != "quantize":
            if verdict == "linear":
                plan.unquantized_linear[name[: -len(".weight")]] = reason
            outputs.append(OutTensor(name, info.dtype, info.shape, info.nbytes, "copy", name))
            continue
        plan.quantized[name] = info
        plan.spec_of[name] = tspec
        module = name[: -len(".weight")]
        plan.out_names[name] = []
        for out_name, dtype, shape, role in layout(tspec, fmt, module, info.shape, info.dtype):
            outputs.append(OutTensor(out_name, dtype, shape,
                                     stfile.numel(shape) * DTYPE_BITS[dtype] // 8,
                                     role, name))
            plan.out_names[name].append(out_name)
    outputs = stfile.file_order(outputs)
    names = [t.name for t in outputs]
    if len(set(names)) != len(names):
        raise QuarkRefError("%s: duplicate output tensor names" % relpath)
    metadata = {"format": "pt"}
    if isinstance(src.metadata, dict):
        for key, value in src.metadata.items():
            if key != "format":
                metadata[key] = value
    offset = 0
    for t in outputs:
        t.begin, t.end = offset, offset + t.nbytes
        offset = t.end
    plan.header = stfile.header_bytes([(t.name, t.dtype, t.shape, t.nbytes) for t in outputs],
                                      metadata)
    plan.outputs = outputs
    plan.data_size = offset
    return plan


class ViewPlan:
    """Everything the view of SRC contains, decided from headers and file names only."""

    def __init__(self, src, spec, excludes, includes, fmt="quark", layers=()):
        self.src, self.spec, self.fmt = src, spec, fmt
        self.excludes, self.includes = list(excludes), list(includes)
        self.layers = {}           # glob -> spec, in the order given (a repeated glob: last spec)
        for glob, lspec in layers:
            self.layers[glob] = lspec
        self.files = {}            # relpath -> ('safetensors'|'config'|'index'|'copy', abspath)
        self.dirs = set()          # relpaths of directories
        self.safetensors = {}      # relpath -> FilePlan
        self.notes = []


def is_model_file(relpath):
    """True for the files quarkfs quantizes: model*.safetensors directly in SRC."""
    return "/" not in relpath and fnmatch.fnmatchcase(relpath, "model*.safetensors")


def walk_source(src):
    """(files, dirs, notes): relative paths under src, following symlinks.

    A directory whose real path is that of one of its own ancestors (a symlink back up the
    tree) is a loop: left out, with a note. Any other directory is walked, even when another
    path already led to it (two links to one directory both appear in the view).
    """
    files, dirs, notes = {}, set(), []
    stack = [(src, ".", frozenset())]
    while stack:
        path, rel_root, ancestors = stack.pop()
        real = os.path.realpath(path)
        if real in ancestors:
            notes.append("symlink loop at %s skipped" % rel_root)
            continue
        if rel_root != ".":
            dirs.add(rel_root)
        below = ancestors | {real}
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            notes.append("%s: cannot list (%s); not checked" % (rel_root, exc))
            continue
        for fname in names:
            child = os.path.join(path, fname)
            rel = fname if rel_root == "." else os.path.join(rel_root, fname)
            if os.path.isdir(child):
                stack.append((child, rel, below))
            elif os.path.isfile(child):
                files[rel] = child
            else:
                notes.append("%s: broken symlink or not a regular file; not checked" % rel)
    return files, dirs, notes


def check_pair(spec, fmt):
    """Raise QuarkRefError unless spec and fmt are known and the pair can be written."""
    if spec not in SPECS:
        raise QuarkRefError("unknown spec %s (known: %s)" % (spec, ", ".join(sorted(SPECS))))
    if fmt not in FORMATS:
        raise QuarkRefError("unknown format %s (known: %s)" % (fmt, ", ".join(FORMATS)))
    if spec not in FORMATS[fmt]:
        raise QuarkRefError("spec %s cannot be written in format %s (format %s takes: %s)"
                            % (spec, fmt, fmt, ", ".join(FORMATS[fmt])))


def plan_view(src, spec, excludes=(), includes=(), fmt="quark", layers=()):
    """Build the ViewPlan of model directory src for one spec and format; layers: ((glob,
    spec), ...) per-layer rules, written as Quark's layer_quant_config (format quark only)."""
    check_pair(spec, fmt)
    for glob, lspec in layers:
        check_pair(lspec, fmt)
        if fmt != "quark":
            raise QuarkRefError("per-layer specs are Quark's layer_quant_config: format quark "
                                "only, not %s" % fmt)
    plan = ViewPlan(src, spec, excludes, includes, fmt, layers)
    files, plan.dirs, plan.notes = walk_source(src)
    for rel, path in sorted(files.items()):
        if is_model_file(rel):
            plan.files[rel] = ("safetensors", path)
            plan.safetensors[rel] = plan_safetensors(rel, path, spec, plan.excludes,
                                                     plan.includes, fmt, plan.layers)
        elif rel == "config.json":
            plan.files[rel] = ("config", path)
        elif rel == "model.safetensors.index.json":
            plan.files[rel] = ("index", path)
        else:
            plan.files[rel] = ("copy", path)
    return plan


# ---------------------------------------------------------------------------------------------
# config.json and the index
# ---------------------------------------------------------------------------------------------

def tensor_spec(dtype, qscheme, ch_axis, observer, dynamic, group_size=None, symmetric=True,
                scale_calculation_mode=None, scale_format=None):
    """One Quark tensor spec dict (QTensorConfig.to_dict of amd-quark 0.13)."""
    return {"block_size": None, "ch_axis": ch_axis, "dtype": dtype, "enable_buffer_reuse": False,
            "group_size": group_size, "is_dynamic": dynamic, "is_scale_quant": False,
            "max_input_numel": 4194304, "mx_element_dtype": None, "observer_cls": observer,
            "qscheme": qscheme, "round_method": "half_even",
            "scale_calculation_mode": scale_calculation_mode, "scale_format": scale_format,
            "scale_type": "float", "symmetric": symmetric, "zero_point_type": "int32"}


def exclude_list(plan):
    """Sorted exact module names of every unquantized Linear-like tensor, plus 'lm_head'
    unless a per-layer rule had lm_head.weight quantized."""
    names = set()
    if not any("lm_head.weight" in f.quantized for f in plan.safetensors.values()):
        names.add("lm_head")
    for fplan in plan.safetensors.values():
        names.update(fplan.unquantized_linear)
    return sorted(names)


EXPORT = {"kv_cache_group": [], "min_kv_scale": 0.0, "pack_method": "reorder",
          "weight_format": "real_quantized", "weight_merge_groups": None}


def quark_layer(spec):
    """One Quark layer config (QLayerConfig.to_dict) for a spec."""
    sp = SPECS[spec]
    per_tensor = ("per_tensor", None, "PerTensorMinMaxObserver")
    per_channel_w = ("per_channel", 0, "PerChannelMinMaxObserver")
    per_token = ("per_channel", 1, "PerChannelMinMaxObserver")
    inp = None
    if sp.kind == "int8":
        weight = tensor_spec("int8", *(per_channel_w if sp.per_channel else per_tensor), False)
        if spec == "w8a8-int8":
            inp = tensor_spec("int8", *per_token, True)
    elif sp.kind == "fp8":
        if sp.per_channel:
            weight = tensor_spec("fp8_e4m3", *per_channel_w, False)
            inp = tensor_spec("fp8_e4m3", *per_token, True)
        else:
            weight = tensor_spec("fp8_e4m3", *per_tensor, False)
            inp = tensor_spec("fp8_e4m3", *per_tensor, True)
    elif sp.is_4bit:
        weight = tensor_spec(sp.kind, "per_group", -1, "PerGroupMinMaxObserver", False,
                             group_size=sp.group, symmetric=sp.kind == "int4")
    elif sp.kind == "mxfp4":
        mx = dict(group_size=MX_BLOCK, symmetric=None, scale_calculation_mode="even",
                  scale_format="e8m0")
        weight = tensor_spec("fp4", "per_group", -1, "PerBlockMXObserver", False, **mx)
        inp = tensor_spec("fp4", "per_group", -1, "PerBlockMXObserver", True, **mx)
    else:
        raise QuarkRefError("spec %s has no quark config" % spec)
    return {"bias": None, "input_tensors": inp, "output_tensors": None, "target_device": None,
            "weight": weight}


def quark_config(plan):
    """quantization_config of format quark."""
    return {
        "algo_config": None,
        "exclude": exclude_list(plan),
        "export": dict(EXPORT),
        "global_quant_config": quark_layer(plan.spec),
        "kv_cache_post_rope": False,
        "kv_cache_quant_config": {},
        "layer_quant_config": {g: quark_layer(s) for g, s in plan.layers.items()},
        "layer_type_quant_config": {},
        "quant_method": "quark",
        "quant_mode": "eager_mode",
        "softmax_quant_spec": None,
        "version": QUARK_VERSION,
    }


def ct_args(bits, qtype, strategy, group, dynamic, block):
    """compressed-tensors QuantizationArgs dict."""
    return {"actorder": None, "block_structure": [block, block] if block else None,
            "dynamic": dynamic, "group_size": group if group else None, "num_bits": bits,
            "observer": None if dynamic else "minmax", "strategy": strategy, "symmetric": True,
            "type": qtype}


def ct_config(plan):
    """quantization_config of format compressed-tensors."""
    sp = SPECS[plan.spec]
    inp = None
    if sp.is_4bit:
        fmt, weight = "pack-quantized", ct_args(4, "int", "group", sp.group, False, 0)
    elif plan.spec == "int8-channel":
        fmt, weight = "pack-quantized", ct_args(8, "int", "channel", 0, False, 0)
    elif plan.spec == "w8a8-int8":
        fmt, weight = "int-quantized", ct_args(8, "int", "channel", 0, False, 0)
        inp = ct_args(8, "int", "token", 0, True, 0)
    elif plan.spec == "fp8":
        fmt, weight = "float-quantized", ct_args(8, "float", "tensor", 0, False, 0)
        inp = ct_args(8, "float", "tensor", 0, True, 0)
    elif plan.spec == "fp8-channel":
        fmt, weight = "float-quantized", ct_args(8, "float", "channel", 0, False, 0)
        inp = ct_args(8, "float", "token", 0, True, 0)
    elif plan.spec == "fp8-block":
        fmt, weight = "float-quantized", ct_args(8, "float", "block", 0, False, BLOCK)
        inp = ct_args(8, "float", "group", BLOCK, True, 0)
    else:
        raise QuarkRefError("spec %s has no compressed-tensors config" % plan.spec)
    return {
        "config_groups": {"group_0": {"format": fmt, "input_activations": inp,
                                      "output_activations": None, "targets": ["Linear"],
                                      "weights": weight}},
        "format": fmt,
        "global_compression_ratio": None,
        "ignore": exclude_list(plan),
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": CT_VERSION,
    }


def quantization_config(plan):
    """The expected "quantization_config" dict for a plan."""
    sp = SPECS[plan.spec]
    if plan.fmt == "quark":
        return quark_config(plan)
    if plan.fmt == "awq":
        return {"bits": 4, "export": dict(EXPORT), "group_size": sp.group,
                "modules_to_not_convert": exclude_list(plan), "pack_method": "reorder",
                "quant_method": "awq", "version": "gemm", "zero_point": sp.kind == "uint4"}
    if plan.fmt == "fp8":
        if sp.kind == "fp8-block":
            return {"activation_scheme": "dynamic", "modules_to_not_convert": exclude_list(plan),
                    "quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]}
        return {"activation_scheme": "dynamic", "export": dict(EXPORT),
                "ignored_layers": exclude_list(plan), "kv_cache_scheme": None,
                "quant_method": "fp8"}
    return ct_config(plan)


def read_text(path):
    """A file's text (UTF-8)."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def config_prefix(src_text):
    """Source text up to its last '}', trailing whitespace stripped: the view must start so."""
    last = src_text.rfind("}")
    if last < 0:
        raise QuarkRefError("config.json: no closing brace")
    return src_text[:last].rstrip()


def expected_config(plan, src_text):
    """(expected object, required text prefix) of the view's config.json."""
    obj = json.loads(src_text)
    if not isinstance(obj, dict):
        raise QuarkRefError("config.json: not a JSON object")
    if "quantization_config" in obj:
        raise QuarkRefError("config.json: source is already quantized (has quantization_config)")
    obj["quantization_config"] = quantization_config(plan)
    return obj, config_prefix(src_text)


def render_config(plan, src_text):
    """The text written by write_view for config.json (source text + inserted member)."""
    obj, prefix = expected_config(plan, src_text)
    tail = src_text[src_text.rfind("}") + 1:]
    body = json.dumps(obj["quantization_config"], indent=2, sort_keys=True)
    body = body.replace("\n", "\n  ")
    sep = "" if prefix.endswith("{") else ","
    return prefix + sep + '\n  "quantization_config": ' + body + "\n}" + tail


def expected_index(plan, src_text):
    """The expected model.safetensors.index.json object of the view."""
    obj = json.loads(src_text)
    weight_map = obj.get("weight_map", {})
    new_map = {}
    referenced = set()
    for name, fname in weight_map.items():
        fplan = plan.safetensors.get(fname) if isinstance(fname, str) else None
        if fplan is None:
            new_map[name] = fname
            continue
        referenced.add(fname)
        if name in fplan.quantized:
            for out_name in fplan.out_names[name]:
                new_map[out_name] = fname
        else:
            new_map[name] = fname
    for fname in sorted(referenced):
        for t in plan.safetensors[fname].outputs:
            new_map[t.name] = fname
    total = sum(plan.safetensors[f].data_size for f in set(new_map.values())
                if isinstance(f, str) and f in plan.safetensors)
    metadata = dict(obj.get("metadata") or {})
    metadata["total_size"] = total
    obj["metadata"] = metadata
    obj["weight_map"] = new_map
    return obj


def render_index(plan, src_text):
    """The text written by write_view for the index (transformers style, sorted)."""
    return json.dumps(expected_index(plan, src_text), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------
# Producing the expected tensor bytes
# ---------------------------------------------------------------------------------------------

class Quantizer:
    """Computes the quantized outputs of one view file, caching the (small) quantization
    parameters: scales, zero points, shared exponents."""

    def __init__(self, fplan):
        self.fplan = fplan
        self.sp = SPECS[fplan.spec]     # the file's spec; a tensor's own is spec_of(name)
        self.fmt = fplan.fmt
        self.per_channel = self.sp.per_channel
        self.params = {}           # source tensor name -> parameters (see compute_scales)
        self.nonfinite = []        # source tensor names holding NaN/Inf

    def spec_of(self, name):
        """The Spec a quantized source tensor is quantized with (per-layer rules applied)."""
        return SPECS[self.fplan.spec_of.get(name, self.fplan.spec)]

    @property
    def scales(self):
        """Source tensor name -> float32 scales (int8/fp8 specs; kept for library users)."""
        return {name: p[0] for name, p in self.params.items()}

    def compute_scales(self):
        """Pre-pass over every quantized tensor: quantization parameters and the NaN/Inf check.

        params[name]: int8/fp8: (scale,); uint4/int4: (scale [O, I/G], zp [O, I/G]);
        mxfp4: (e [O, I/32],); fp8-block: (scale [O/128, I/128],).
        """
        for name, info in self.fplan.quantized.items():
            sp = self.spec_of(name)
            x = self.fplan.source.read_float32(info)
            if sp.kind == "int8":
                s, finite = int8_scale(x, sp.per_channel, info.dtype)
                params = (s,)
            elif sp.kind == "fp8":
                s, finite = fp8_scale(x, sp.per_channel, info.dtype)
                params = (s,)
            elif sp.is_4bit:
                s, zp, finite = int4_params(x, sp.group, sp.kind == "int4", info.dtype)
                params = (s, zp)
            elif sp.kind == "mxfp4":
                e, finite = mx_exponents(x)
                params = (e,)
            else:
                s, finite = fp8_block_scale(x)
                params = (s,)
            self.params[name] = params
            if not finite:
                self.nonfinite.append(name)

    def scale_bytes(self, name):
        """Bytes of the scale tensor of source tensor `name`."""
        info = self.fplan.quantized[name]
        sp, params = self.spec_of(name), self.params[name]
        if sp.kind == "int8" and not sp.per_channel:
            return encode_float(params[0], "F32")
        if sp.is_4bit:
            s = params[0]
            return encode_float(s.T if self.fmt in ("quark", "awq") else s, info.dtype)
        if sp.kind == "mxfp4":
            return mx_scale_bytes(params[0]).reshape(-1)
        if sp.kind == "fp8-block":
            return encode_float(params[0], "F32")
        return encode_float(params[0], info.dtype)

    def zero_point_bytes(self, name, nbytes):
        """Bytes of the zero-point tensor of source tensor `name`."""
        if self.spec_of(name).kind == "uint4":
            return pack_reorder(self.params[name][1].T).reshape(-1).view(np.uint8)
        return np.zeros(nbytes, dtype=np.uint8)

    def shape_bytes(self, name):
        """Bytes of X.weight_shape: I64 [O, I]."""
        return np.array(self.fplan.quantized[name].shape, dtype="<i8").view(np.uint8)

    def weight_values(self, name):
        """The quantized weight tensor as stored (int8, e4m3 codes, packed int32 or bytes)."""
        info = self.fplan.quantized[name]
        sp, params = self.spec_of(name), self.params[name]
        x = self.fplan.source.read_float32(info)
        if sp.kind == "int8":
            q = int8_quantize(x, params[0], sp.per_channel)
            if self.fmt == "compressed-tensors" and sp.name == "int8-channel":
                return pack_ct8(q)
            return q
        if sp.kind == "fp8":
            return fp8_quantize(x, params[0], sp.per_channel, info.dtype)
        if sp.is_4bit:
            q = int4_quantize(x, params[0], params[1], sp.group, sp.kind == "int4")
            if self.fmt in ("quark", "awq"):
                return pack_reorder(q.T)
            return pack_ct4(q)
        if sp.kind == "mxfp4":
            return mxfp4_pack(mxfp4_codes(x, params[0]))
        return fp8_block_quantize(x, params[0])

    def chunks(self, out):
        """Yield the expected data of output tensor `out` as uint8 arrays (in order)."""
        if out.role == "copy":
            info = self.fplan.source.tensors[out.src]
            for start in range(0, info.nbytes, COPY_CHUNK):
                yield self.fplan.source.read_raw(info, start, min(COPY_CHUNK, info.nbytes - start))
        elif out.role == "scale":
            yield self.scale_bytes(out.src)
        elif out.role == "zero_point":
            yield self.zero_point_bytes(out.src, out.nbytes)
        elif out.role == "shape":
            yield self.shape_bytes(out.src)
        else:
            yield self.weight_values(out.src).reshape(-1).view(np.uint8)


# ---------------------------------------------------------------------------------------------
# Writing the expected view
# ---------------------------------------------------------------------------------------------

def write_view(plan, out, log=print):
    """Write every file of the expected view into directory out (created if needed)."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise QuarkRefError("%s exists and is not an empty directory" % out)
    os.makedirs(out, exist_ok=True)
    for rel in sorted(plan.dirs):
        os.makedirs(os.path.join(out, rel), exist_ok=True)
    for rel, (kind, path) in sorted(plan.files.items()):
        dest = os.path.join(out, rel)
        if kind == "copy":
            shutil.copyfile(path, dest)
        elif kind == "config":
            with open(dest, "w", encoding="utf-8") as f:
                f.write(render_config(plan, read_text(path)))
        elif kind == "index":
            with open(dest, "w", encoding="utf-8") as f:
                f.write(render_index(plan, read_text(path)))
        else:
            fplan = plan.safetensors[rel]
            quant = Quantizer(fplan)
            quant.compute_scales()
            if quant.nonfinite:
                log("note: %s: NaN/Inf in %s: quarkfs serves this file with EIO; not written"
                    % (rel, ", ".join(quant.nonfinite)))
                continue
            with open(dest, "wb") as f:
                f.write(fplan.header)
                for t in fplan.outputs:
                    for chunk in quant.chunks(t):
                        f.write(memoryview(chunk))
    for note in plan.notes:
        log("note: " + note)


# ---------------------------------------------------------------------------------------------
# Checking a view
# ---------------------------------------------------------------------------------------------

class Report:
    """Collects mismatch lines (printed as they come) and counts checked files."""

    def __init__(self, log=print):
        self.log = log
        self.mismatches = []
        self.files_checked = 0

    def mismatch(self, rel, what):
        """Record and print one mismatch."""
        line = "MISMATCH %s: %s" % (rel, what)
        self.mismatches.append(line)
        self.log(line)

    def note(self, text):
        """Print a note that is not a mismatch."""
        self.log("note: " + text)


def format_value(dtype, raw):
    """Human-readable value of one element given its raw little-endian bytes."""
    raw = np.frombuffer(bytes(raw), dtype=np.uint8)
    hexs = "0x" + bytes(raw[::-1]).hex()
    if dtype == "BF16" and raw.size == 2:
        return "%r (%s)" % (float(decode_float(raw.copy(), "BF16", [1])[0]), hexs)
    if dtype == "F8_E4M3" and raw.size == 1:
        return "%r (%s)" % (float(e4m3_decode(raw)[0]), hexs)
    np_dtype = REPORT_NP.get(dtype)
    if np_dtype and raw.size == np.dtype(np_dtype).itemsize:
        value = raw.view(np_dtype)[0]
        return "%r (%s)" % (value.item(), hexs)
    return hexs


def first_difference(expected, got):
    """(index of first differing byte, number of differing bytes) of two uint8 arrays."""
    n = min(expected.size, got.size)
    diff = np.flatnonzero(expected[:n] != got[:n])
    count = diff.size + abs(expected.size - got.size)
    if diff.size:
        return int(diff[0]), count
    return n, count


def unravel(index, shape):
    """Multi-index of flat element `index` in `shape` as a string."""
    if not shape:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(index, shape)))


def compare_tensor(report, rel, out, quant, view_file, view_begin):
    """Compare one output tensor's expected bytes with the view's bytes at view_begin."""
    item = max(DTYPE_BITS[out.dtype] // 8, 1)
    pos = 0
    for chunk in quant.chunks(out):
        view_file.seek(view_begin + pos)
        got = np.frombuffer(view_file.read(chunk.size), dtype=np.uint8)
        if got.size == chunk.size and bytes(memoryview(got)) == bytes(memoryview(chunk)):
            pos += chunk.size
            continue
        idx, count = first_difference(chunk, got)
        byte = pos + idx
        elem = byte // item
        lo = (idx // item) * item
        exp_v = format_value(out.dtype, chunk[lo:lo + item])
        got_v = format_value(out.dtype, got[lo:lo + item]) if got.size >= lo + item else "<EOF>"
        more = "" if got.size == chunk.size else " (view data ends early)"
        whole = chunk.size == out.nbytes
        report.mismatch(rel, "tensor %s (%s %s): first differing byte at file offset %d "
                        "(tensor byte %d, element %d %s): expected %s, got %s; %d%s bytes differ%s"
                        % (out.name, out.dtype, out.shape, view_begin + byte, byte, elem,
                           unravel(elem, out.shape), exp_v, got_v, count, "" if whole else "+",
                           more))
        return


def parse_view_header(raw, rel):
    """(tensors dict, data start) of a view file's header bytes, or (None, reason)."""
    try:
        header, start = stfile.parse_header(raw, rel)
    except stfile.HeaderError as exc:
        return None, str(exc)
    header.pop("__metadata__", None)
    return header, start


def check_safetensors(report, plan, rel, view_path):
    """Check one quantized model file of the view."""
    fplan = plan.safetensors[rel]
    quant = Quantizer(fplan)
    quant.compute_scales()
    if quant.nonfinite:
        report.note("%s: NaN/Inf in %s: quarkfs must fail reads of this file with EIO; bytes "
                    "not compared" % (rel, ", ".join(quant.nonfinite)))
        return
    report.files_checked += 1
    size = os.path.getsize(view_path)
    if size != fplan.size:
        report.mismatch(rel, "file size %d, expected %d" % (size, fplan.size))
    with open(view_path, "rb") as f:
        head = f.read(max(len(fplan.header), 8))
        if len(head) >= 8:
            (n,) = struct.unpack("<Q", head[:8])
            if 8 + n > len(head):
                head += f.read(min(8 + n, size) - len(head))
        same_header = head[:len(fplan.header)] == fplan.header and \
            struct.unpack("<Q", head[:8])[0] == len(fplan.header) - 8
        if not same_header:
            exp = np.frombuffer(fplan.header, dtype=np.uint8)
            got = np.frombuffer(head, dtype=np.uint8)
            idx, _ = first_difference(exp, got)
            report.mismatch(rel, "header differs at byte %d: expected %r, got %r"
                            % (idx, fplan.header[max(idx - 40, 0):idx + 40],
                               head[max(idx - 40, 0):idx + 40]))
            view_tensors, view_start = parse_view_header(head, rel)
            if view_tensors is None:
                report.mismatch(rel, "cannot read the view's header (%s); data not compared"
                                % view_start)
                return
        for out in fplan.outputs:
            begin = len(fplan.header) + out.begin
            if not same_header:
                entry = view_tensors.get(out.name)
                if not isinstance(entry, dict):
                    report.mismatch(rel, "tensor %s missing from the view" % out.name)
                    continue
                if entry.get("dtype") != out.dtype or entry.get("shape") != out.shape:
                    report.mismatch(rel, "tensor %s: dtype/shape %s %s, expected %s %s"
                                    % (out.name, entry.get("dtype"), entry.get("shape"),
                                       out.dtype, out.shape))
                    continue
                try:
                    begin = view_start + int(entry["data_offsets"][0])
                except (KeyError, TypeError, ValueError, IndexError):
                    report.mismatch(rel, "tensor %s: bad data_offsets" % out.name)
                    continue
            compare_tensor(report, rel, out, quant, f, begin)


def strict_json_diff(expected, got, path="$"):
    """First difference between two JSON values (bools are not numbers here), or None."""
    if isinstance(expected, bool) or isinstance(got, bool) or expected is None or got is None:
        if type(expected) is not type(got) or expected != got:
            return "%s: expected %s, got %s" % (path, json.dumps(expected), json.dumps(got))
        return None
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            if key not in got:
                return "%s: key %s missing" % (path, json.dumps(key))
        for key in got:
            if key not in expected:
                return "%s: unexpected key %s" % (path, json.dumps(key))
        for key in expected:
            diff = strict_json_diff(expected[key], got[key], "%s.%s" % (path, key))
            if diff:
                return diff
        return None
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return "%s: expected %s, got %s" % (path, json.dumps(expected), json.dumps(got))
        for i, (a, b) in enumerate(zip(expected, got)):
            diff = strict_json_diff(a, b, "%s[%d]" % (path, i))
            if diff:
                return diff
        return None
    numbers = (int, float)
    if isinstance(expected, numbers) and isinstance(got, numbers):
        return None if expected == got else "%s: expected %r, got %r" % (path, expected, got)
    if type(expected) is not type(got) or expected != got:
        return "%s: expected %s, got %s" % (path, json.dumps(expected), json.dumps(got))
    return None


def load_json_pairs(text):
    """json.loads keeping key order; raises ValueError on a duplicate key."""
    def hook(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key in JSON object")
        return dict(pairs)
    return json.loads(text, object_pairs_hook=hook)


def check_config(report, plan, rel, src_path, view_path):
    """Check config.json: same JSON plus quantization_config; source formatting kept."""
    report.files_checked += 1
    src_text = read_text(src_path)
    expected, prefix = expected_config(plan, src_text)
    try:
        view_text = read_text(view_path)
        got = load_json_pairs(view_text)
    except (UnicodeDecodeError, ValueError) as exc:
        report.mismatch(rel, "not valid JSON: %s" % exc)
        return
    diff = strict_json_diff(expected, got)
    if diff:
        report.mismatch(rel, diff)
    if not view_text.startswith(prefix):
        idx = next((i for i, (a, b) in enumerate(zip(prefix, view_text)) if a != b),
                   min(len(prefix), len(view_text)))
        report.mismatch(rel, "source formatting not kept: text differs from the source at "
                        "character %d: expected %r, got %r"
                        % (idx, prefix[idx:idx + 40], view_text[idx:idx + 40]))


def check_index(report, plan, rel, src_path, view_path):
    """Check model.safetensors.index.json against expected_index (and sorted weight_map)."""
    report.files_checked += 1
    expected = expected_index(plan, read_text(src_path))
    try:
        got = load_json_pairs(read_text(view_path))
    except (UnicodeDecodeError, ValueError) as exc:
        report.mismatch(rel, "not valid JSON: %s" % exc)
        return
    if not isinstance(got, dict) or not isinstance(got.get("weight_map"), dict):
        report.mismatch(rel, "no weight_map object")
        return
    exp_map, got_map = expected["weight_map"], got["weight_map"]
    missing = [k for k in exp_map if k not in got_map]
    extra = [k for k in got_map if k not in exp_map]
    wrong = [k for k in exp_map if k in got_map and exp_map[k] != got_map[k]]
    for label, keys in (("missing from weight_map", missing), ("unexpected in weight_map", extra),
                        ("mapped to the wrong file", wrong)):
        if keys:
            shown = ", ".join("%s%s" % (k, "" if label != "mapped to the wrong file" else
                                        " (%s, expected %s)" % (got_map[k], exp_map[k]))
                              for k in sorted(keys)[:MAX_REPORT_EXAMPLES])
            report.mismatch(rel, "%d tensor(s) %s: %s%s" % (len(keys), label, shown,
                                                             ", ..." if len(keys) > MAX_REPORT_EXAMPLES else ""))
    keys = list(got_map)
    if keys != sorted(keys):
        bad = next(i for i in range(len(keys) - 1) if keys[i] > keys[i + 1])
        report.mismatch(rel, "weight_map keys not sorted: %s before %s" % (keys[bad], keys[bad + 1]))
    rest_exp = {k: v for k, v in expected.items() if k != "weight_map"}
    rest_got = {k: v for k, v in got.items() if k != "weight_map"}
    diff = strict_json_diff(rest_exp, rest_got)
    if diff:
        report.mismatch(rel, diff)


def check_copy(report, rel, src_path, view_path):
    """Check a passthrough file byte for byte."""
    report.files_checked += 1
    with open(src_path, "rb") as a, open(view_path, "rb") as b:
        pos = 0
        while True:
            x, y = a.read(COPY_CHUNK), b.read(COPY_CHUNK)
            if x != y:
                ex, gy = np.frombuffer(x, dtype=np.uint8), np.frombuffer(y, dtype=np.uint8)
                idx, _ = first_difference(ex, gy)
                if idx >= len(x) or idx >= len(y):
                    report.mismatch(rel, "passthrough file: sizes differ (expected %d, got %d)"
                                    % (os.path.getsize(src_path), os.path.getsize(view_path)))
                else:
                    report.mismatch(rel, "passthrough file differs at byte %d: expected 0x%02x, "
                                    "got 0x%02x" % (pos + idx, x[idx], y[idx]))
                return
            if not x:
                return
            pos += len(x)


def walk_view(view):
    """(files, dirs, links) relative paths under a view directory (symlinks are followed;
    links lists the entries that are symlinks, which a view should not have)."""
    files, dirs, links = set(), set(), []
    for root, dnames, fnames in os.walk(view, followlinks=True):
        rel_root = os.path.relpath(root, view)
        if rel_root != ".":
            dirs.add(rel_root)
        for entry in dnames + fnames:
            if os.path.islink(os.path.join(root, entry)):
                links.append(entry if rel_root == "." else os.path.join(rel_root, entry))
        for fname in fnames:
            files.add(fname if rel_root == "." else os.path.join(rel_root, fname))
    return files, dirs, links


def check_view(plan, view, log=print):
    """Compare directory `view` with the expected view; returns the Report."""
    report = Report(log)
    for note in plan.notes:
        report.note(note)
    view_files, view_dirs, view_links = walk_view(view)
    for rel in sorted(view_links):
        report.mismatch(rel, "is a symlink in the view (expected a regular file or directory)")
    for rel in sorted(set(plan.files) - view_files):
        if rel in plan.safetensors:
            quant = Quantizer(plan.safetensors[rel])
            quant.compute_scales()
            if quant.nonfinite:
                report.note("%s: NaN/Inf in %s: absent from the view (expected EIO when "
                            "served)" % (rel, ", ".join(quant.nonfinite)))
                continue
        report.mismatch(rel, "missing from the view")
    for rel in sorted(view_files - set(plan.files)):
        if not any(note.startswith(rel + ":") for note in plan.notes):
            report.mismatch(rel, "in the view but not in the source")
    for rel in sorted(plan.dirs - view_dirs):
        report.mismatch(rel + "/", "directory missing from the view")
    for rel in sorted(view_dirs - plan.dirs):
        report.mismatch(rel + "/", "directory in the view but not in the source")
    for rel, (kind, path) in sorted(plan.files.items()):
        view_path = os.path.join(view, rel)
        if rel not in view_files:
            continue
        try:
            if kind == "safetensors":
                check_safetensors(report, plan, rel, view_path)
            elif kind == "config":
                check_config(report, plan, rel, path, view_path)
            elif kind == "index":
                check_index(report, plan, rel, path, view_path)
            else:
                check_copy(report, rel, path, view_path)
        except OSError as exc:
            report.mismatch(rel, "error reading the view: %s" % exc)
    return report


# ---------------------------------------------------------------------------------------------
# Self test of the numeric kernels
# ---------------------------------------------------------------------------------------------

def selftest(log=print):
    """Cross-check e4m3_encode, bf16 rounding and the quantizers on crafted values."""
    failures = 0
    table = e4m3_table()
    # every float32 between 0 and 448 with the low 12 mantissa bits stepping, plus midpoints +- 1 ulp
    lo, hi = 0, int(np.float32(448.0).view(np.uint32))
    bits = np.arange(lo, hi + 1, 4093, dtype=np.uint64).astype(np.uint32)
    mids = ((table[:-1] + table[1:]) / 2).astype(np.float32)
    extra = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(1e9)),
                            table.astype(np.float32)])
    y = np.concatenate([bits.view(np.float32), extra])
    y = np.concatenate([y, -y])
    fast, slow = e4m3_encode(y), e4m3_encode_by_table(y)
    if not np.array_equal(fast, slow):
        bad = np.flatnonzero(fast != slow)[:5]
        log("selftest FAIL e4m3: %s" % [(float(y[i]), int(fast[i]), int(slow[i])) for i in bad])
        failures += 1
    # known values (PyTorch: 17 -> 16, 19 -> 20, -0 -> 0x80, 448 -> 0x7E, 2**-10 -> 0)
    known = {17.0: 0x58, 19.0: 0x5A, -0.0: 0x80, 448.0: 0x7E, 2.0 ** -10: 0x00, -2.0 ** -11: 0x80,
             2.0 ** -9: 0x01, 1.0: 0x38, -1.5: 0xBC, 432.0: 0x7E}
    got = e4m3_encode(np.array(list(known), dtype=np.float32))
    for (value, code), g in zip(known.items(), got):
        if int(g) != code:
            log("selftest FAIL e4m3(%r) = 0x%02x, expected 0x%02x" % (value, int(g), code))
            failures += 1
    # bf16 rounding vs a float64 nearest-even computation
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(200000) * 10.0 ** rng.integers(-8, 8, 200000)).astype(np.float32)
    x = np.concatenate([x, np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20],
                                    dtype=np.float32)])
    ref = []
    for v in x[:20000].tolist() + x[-3:].tolist():
        m, e = np.frexp(v)                      # v = m * 2**e, 0.5 <= |m| < 1
        ref.append(float(np.round(m * 256.0) / 256.0 * 2.0 ** e))
    got = round_to(np.concatenate([x[:20000], x[-3:]]), "BF16").astype(np.float64)
    if not np.array_equal(got, np.array(ref)):
        log("selftest FAIL bf16 rounding")
        failures += 1
    # int8 ties: amax = 127.5 * 2**-8 gives scale 2**-8; (n + 0.5) * 2**-8 rounds to even
    row = np.array([127.5, -127.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5], dtype=np.float32) / 256
    s, _ = int8_scale(row[None, :], False, "BF16")
    q = int8_quantize(row[None, :], s, False)
    if float(s) != 2 ** -8 or q.tolist() != [[127, -128, 0, 2, 2, 0, -2, -2, 126]]:
        log("selftest FAIL int8 ties: s=%r q=%s" % (float(s), q.tolist()))
        failures += 1
    failures += selftest_new_kernels(log)
    log("selftest %s" % ("passed" if failures == 0 else "FAILED (%d)" % failures))
    return failures == 0


def selftest_new_kernels(log=print):
    """Hand-computed values of the 4-bit, packing, MXFP4 and fp8-block kernels; returns the
    number of failures."""
    failures = 0

    def expect(label, got, want):
        nonlocal failures
        if not np.array_equal(np.asarray(got), np.asarray(want)):
            log("selftest FAIL %s: got %s, expected %s" % (label, np.asarray(got).tolist(),
                                                          np.asarray(want).tolist()))
            failures += 1

    def group(values, fill=0.0, n=32):
        row = np.full(n, fill, dtype=np.float32)
        row[:len(values)] = values
        return row

    # uint4, BF16: mn -1, mx 2 -> s = rD(rD(3)/15) = bf16(0.2) = 0.2001953125;
    # mn / s = -4.9951 -> bf16 -5.0 -> zp 5; q = rne(x * 4.99512 + 5)
    x = group([-1.0, 2.0, 0.0, 0.5, 1.0, -0.6015625])[None, :]
    s, zp, _ = int4_params(x, 32, False, "BF16")
    expect("uint4 bf16 scale", s, [[0.2001953125]])
    expect("uint4 bf16 zp", zp, [[5]])
    expect("uint4 bf16 q", int4_quantize(x, s, zp, 32, False)[0, :6], [0, 15, 5, 7, 10, 2])
    # uint4, F32, exact ties: span 0.9375 -> s = 1/16; mn = -0.53125 -> mn/s = -8.5 -> rne -8
    # -> zp 8 (not 9); x*16 + 8 ties: 6.5+8 -> 14, 0.5+8 -> 8, 1.5+8 -> 10, -6.5+8 -> 2, -8.5+8 -> 0
    x = group([-0.53125, 0.40625, 0.03125, 0.09375, -0.40625])[None, :]
    s, zp, _ = int4_params(x, 32, False, "F32")
    expect("uint4 tie scale/zp", [float(s[0, 0]), int(zp[0, 0])], [0.0625, 8])
    expect("uint4 tie q", int4_quantize(x, s, zp, 32, False)[0, :5], [0, 14, 8, 10, 2])
    # uint4, F32, ties with an odd zero point (the rounding comes before + zp): span 0.9375 ->
    # s = 1/16; mn = -0.4375 -> zp 7; x*16 = 2.5 -> 2+7 = 9 (rne(9.5) would give 10),
    # -3.5 -> -4+7 = 3 (not 4), 1.5 -> 2+7 = 9 (not 8); -7 -> 0, 8 -> 15
    x = group([-0.4375, 0.5, 0.15625, -0.21875, 0.09375])[None, :]
    s, zp, _ = int4_params(x, 32, False, "F32")
    expect("uint4 odd-zp tie scale/zp", [float(s[0, 0]), int(zp[0, 0])], [0.0625, 7])
    expect("uint4 odd-zp tie q", int4_quantize(x, s, zp, 32, False)[0, :5], [0, 15, 9, 3, 9])
    # uint4 one-signed groups: all >= 0 -> zp 0; all <= 0 -> zp 15; all zero -> s = 2^-23, zp 0;
    # s = bf16(0.1) = 0.10009765625: 0.75 / s = 7.49 -> 7; mn / s = -14.985 -> bf16 -15 -> zp 15
    x = np.stack([group([0.0, 1.5, 0.75]), group([-1.5, -0.75, 0.0]), group([])])
    s, zp, _ = int4_params(x, 32, False, "BF16")
    expect("uint4 one-signed zp", zp[:, 0], [0, 15, 0])
    expect("uint4 zero group scale", s[2, 0], EPS)
    expect("uint4 one-signed q", int4_quantize(x, s, zp, 32, False)[:, :3],
           [[0, 15, 7], [0, 8, 15], [0, 0, 0]])
    # int4: amax 0.9375 -> s = 0.125; 0.5 -> 0, 1.5 -> 2, -7.5 -> -8, 7.5 -> 8 -> 7, -2.5 -> -2
    x = group([0.0625, 0.1875, -0.9375, 0.9375, -0.3125])[None, :]
    s, zp, _ = int4_params(x, 32, True, "F32")
    expect("int4 scale/zp", [float(s[0, 0]), int(zp[0, 0])], [0.125, 0])
    expect("int4 q", int4_quantize(x, s, zp, 32, True)[0, :5], [0, 2, -8, 7, -2])
    # AWQ/Quark reorder packing on an 8 x 2 matrix (O=8): column i of q = the 8 channels of word
    # row i; slot k holds channel [0,2,4,6,1,3,5,7][k]: channels 1..8 -> 0x86427531
    q = np.array([[1, 9], [2, 10], [3, 11], [4, 12], [5, 13], [6, 14], [7, 15], [8, 0]])
    words = pack_reorder(q.T).view("<u4")
    expect("awq pack", words.ravel(), [0x86427531, 0x0ECAFDB9])
    # int4 negatives are nibbles of two's complement: -8..-1 -> 8..15
    words = pack_reorder(np.array([[-8, -7, -6, -5, -4, -3, -2, -1]])).view("<u4")
    expect("awq pack signed", words.ravel(), [0xFDB9ECA8])
    # compressed-tensors 4 bit: plain order, +8: -8..-1 -> 0x76543210; 8 bit: +128, bytes in order
    expect("ct4 pack", pack_ct4(np.array([[-8, -7, -6, -5, -4, -3, -2, -1]])).view("<u4").ravel(),
           [0x76543210])
    expect("ct8 pack", pack_ct8(np.array([[-128, -1, 0, 127]])).view("<u4").ravel(), [0xFF807F00])
    # MXFP4: amax 6 (1.5 * 2^2: no carry) -> v = 4 -> e = 0, y = x; ties to even
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -0.75, -6.0, 0.26, 7.0 / 8, -0.0,
            0.5, 3.0]
    x = group(ties)[None, :]
    e, _ = mx_exponents(x)
    expect("mx e (amax 6)", e, [[0]])
    expect("mx codes ties", mxfp4_codes(x, e)[0, :len(ties)],
           [0, 2, 2, 4, 4, 6, 6, 7, 0, 0xA, 0xF, 1, 2, 0, 1, 5])
    expect("mx scale byte", mx_scale_bytes(e), [[127]])
    # amax 7 = 1.75 * 2^2 -> carry -> v = 8 -> e = 1 (scale 2): 7 / 2 = 3.5 -> 4 (code 6)
    x = group([7.0, -1.0, 0.5])[None, :]
    e, _ = mx_exponents(x)
    expect("mx e (amax 7)", e, [[1]])
    expect("mx codes amax 7", mxfp4_codes(x, e)[0, :3], [6, 0x9, 0])
    # all-zero block -> e = -127 -> byte 1; subnormal amax 2^-127 (field stays 0) -> e = -127,
    # y = x * 2^127; 2^-125 (field 2) -> e = -127 too, y = 4; all three stored as byte 1
    x = np.stack([group([]), group([2.0 ** -127, -2.0 ** -128]), group([2.0 ** -125])])
    e, _ = mx_exponents(x)
    expect("mx e zero/tiny", e[:, 0], [-127, -127, -127])
    expect("mx scale byte zero/tiny", mx_scale_bytes(e)[:, 0], [1, 1, 1])
    expect("mx codes tiny", mxfp4_codes(x, e)[:, :2], [[0, 0], [2, 0x9], [6, 0]])
    # E2M1 rounding vs a nearest-grid-point search (ties to the even code) on random values,
    # the midpoints and their float32 neighbours
    rng = np.random.default_rng(1)
    mids = E2M1_MIDS.astype(np.float32)
    y = np.concatenate([rng.uniform(-8, 8, 4000).astype(np.float32), mids, -mids,
                        np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(9)),
                        np.float32([6.0, 6.5, 100.0, -7.0, 0.0, -0.0, 1e-30, -1e-30])])
    y = np.concatenate([y, np.zeros(-y.size % MX_BLOCK, dtype=np.float32)])[None, :]
    dist = np.abs(np.abs(y.astype(np.float64))[..., None] - E2M1_VALUES)
    best = dist.min(axis=-1, keepdims=True)
    cand = np.where(dist == best, np.arange(8), 99)
    even = np.where(cand % 2 == 0, cand, 99).min(axis=-1)
    slow = np.where(even < 99, even, cand.min(axis=-1)).astype(np.uint8)
    slow = np.where((y < 0) & (slow != 0), slow | 8, slow)
    expect("mx codes vs table", mxfp4_codes(y, np.zeros((1, y.size // MX_BLOCK), np.int32)), slow)
    expect("mx pack", mxfp4_pack(np.array([[1, 2, 0xF, 0]], dtype=np.uint8)), [[0x21, 0x0F]])
    # fp8-block: block (0,0) amax 448 * 2^-10 -> s = 2^-10, block (0,1) zero -> s = 2^-23,
    # block (1,0) amax 1.0 -> s = fl32(1/448); (1,1) 2^-149 -> fl32(2^-149/448) = 0 -> 2^-23
    x = np.zeros((256, 256), dtype=np.float32)
    x[0, 0], x[5, 7], x[6, 6] = 448 * 2.0 ** -10, -17 * 2.0 ** -10, -0.0
    x[128, 0], x[200, 100] = 1.0, -0.5
    x[128, 128] = np.float32(2.0 ** -149)
    s, _ = fp8_block_scale(x)
    expect("fp8-block scale", s.view(np.uint32),
           [[0x3A800000, 0x34000000], [np.float32(1.0 / 448.0).view(np.uint32), 0x34000000]])
    q = fp8_block_quantize(x, s)
    expect("fp8-block q", [q[0, 0], q[5, 7], q[6, 6], q[128, 0], q[200, 100], q[128, 128]],
           [0x7E, 0xD8, 0x80, 0x7E, 0xF6, 0x00])
    return failures


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description="Reference of the quarkfs quantized view.")
    ap.add_argument("--spec", choices=sorted(SPECS))
    ap.add_argument("--format", default="quark", choices=list(FORMATS))
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="module-name glob to leave unquantized (repeatable)")
    ap.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="quantize only modules matching one of these globs (repeatable)")
    ap.add_argument("--layer", action="append", default=[], metavar="GLOB=SPEC",
                    help="per-layer spec, repeatable, in order (format quark)")
    ap.add_argument("--check", action="store_true", help="compare VIEW with the expected view of SRC")
    ap.add_argument("--selftest", action="store_true", help="test the numeric kernels and exit")
    ap.add_argument("src", nargs="?", metavar="SRC")
    ap.add_argument("dest", nargs="?", metavar="OUT|VIEW")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.selftest:
        return 0 if selftest() else 1
    if not args.spec or not args.src or not args.dest:
        ap.error("--spec, SRC and OUT/VIEW are required")
    if not os.path.isdir(args.src):
        ap.error("SRC %s is not a directory" % args.src)
    try:
        check_pair(args.spec, args.format)
    except QuarkRefError as exc:
        print("quarkref: error: %s" % exc, file=sys.stderr)
        return 2
    start = time.time()
    try:
        layers = []
        for arg in args.layer:
            glob, eq, lspec = arg.rpartition("=")
            if not eq or not glob:
                raise QuarkRefError("--layer %r: expected GLOB=SPEC" % arg)
            layers.append((glob, lspec))
        plan = plan_view(args.src, args.spec, args.exclude, args.include, args.format, layers)
        if args.check:
            if not os.path.isdir(args.dest):
                ap.error("VIEW %s is not a directory" % args.dest)
            report = check_view(plan, args.dest)
            print("%d files checked, %d mismatches (spec %s, format %s, %.1f s)"
                  % (report.files_checked, len(report.mismatches), args.spec, args.format,
                     time.time() - start))
            return 0 if not report.mismatches else 1
        write_view(plan, args.dest)
        print("quarkref: wrote %s (spec %s, format %s, %d files, %d quantized tensors, %.1f s)"
              % (args.dest, args.spec, args.format, len(plan.files),
                 sum(len(p.quantized) for p in plan.safetensors.values()), time.time() - start))
        return 0
    except QuarkRefError as exc:
        print("quarkref: error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
