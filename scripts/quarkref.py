#!/usr/bin/env python3
"""Independent reference of the quarkfs quantized view (format "quark"), in numpy.

Usage:
    python3 scripts/quarkref.py --spec S [--exclude GLOB]... [--include GLOB]... SRC OUT
        write the expected view of model directory SRC into OUT (must not exist or be empty)
    python3 scripts/quarkref.py --spec S [--exclude GLOB]... [--include GLOB]... --check SRC VIEW
        compare directory VIEW (a FUSE mount or an export) with the expected view of SRC;
        prints one line per mismatch and "N files checked, M mismatches"; exit 0 only if M == 0
    python3 scripts/quarkref.py --selftest
        check the numeric kernels against slower, differently written versions

Specs: int8, int8-channel, w8a8-int8, fp8, fp8-channel.

Written from the rules of quark-format.md §1, §3a-d, §4.1, §4.3 and the quarkfs brief, without
looking at the C implementation. Library use: plan_view(src, spec, excludes, includes) builds a
ViewPlan; write_view(plan, out) writes it; check_view(plan, view) compares.

The view of SRC:
* model*.safetensors directly in SRC: quantized (plan_safetensors, int8_*, fp8_*).
* config.json: the source text with "quantization_config" inserted before the last "}".
* model.safetensors.index.json: weight_map/total_size rewritten (expected_index).
* everything else, subdirectories included, symlinks followed: passed through byte for byte.
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

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

# safetensors' Dtype enum in ascending order; files order tensors by it descending, then name.
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
               "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
               "C64", "F64", "I64", "U64"]
DTYPE_RANK = {name: i for i, name in enumerate(DTYPE_ORDER)}
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

SPECS = {
    # spec: (kind of weight quantization, per output channel?)
    "int8": ("int", False),
    "int8-channel": ("int", True),
    "w8a8-int8": ("int", True),
    "fp8": ("fp8", False),
    "fp8-channel": ("fp8", True),
}
EMBED_COMPONENTS = ("wte", "wpe", "word_embeddings", "position_embeddings", "shared")
QUARK_VERSION = "0.11"
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
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self):
        """Byte size of the data."""
        return self.end - self.begin


class SafetensorsFile:
    """Parsed header of a source safetensors file (data is read on demand)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise QuarkRefError("%s: header too small" % path)
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise QuarkRefError("%s: header too large" % path)
            text = f.read(n)
        if len(text) != n:
            raise QuarkRefError("%s: invalid header length" % path)
        try:
            header = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise QuarkRefError("%s: bad header: %s" % (path, exc)) from exc
        self.data_start = 8 + n
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


def output_suffixes(spec):
    """Names (suffixes of the module) of the tensors written per quantized weight."""
    kind = SPECS[spec][0]
    return [".weight", ".weight_scale"] + ([".weight_zero_point"] if kind == "int" else [])


def classify(info, names, spec, excludes, includes):
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
        return "linear", "lm_head"
    if any(fnmatch.fnmatchcase(module, g) for g in excludes):
        return "linear", "--exclude"
    if includes and not any(fnmatch.fnmatchcase(module, g) for g in includes):
        return "linear", "not --include'd"
    for suffix in output_suffixes(spec)[1:]:
        if module + suffix in names:
            return "linear", "name collision with %s" % (module + suffix)
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

    def __init__(self, relpath, source, spec):
        self.relpath, self.source, self.spec = relpath, source, spec
        self.quantized = {}        # source tensor name -> TensorInfo
        self.unquantized_linear = {}   # module -> reason
        self.outputs = []
        self.header = b""
        self.data_size = 0

    @property
    def size(self):
        """Total file size."""
        return len(self.header) + self.data_size


def plan_safetensors(relpath, path, spec, excludes, includes):
    """Build the FilePlan of one model*.safetensors file (headers only, no data read)."""
    src = SafetensorsFile(path)
    plan = FilePlan(relpath, src, spec)
    kind, per_channel = SPECS[spec]
    outputs = []
    for name, info in src.tensors.items():
        verdict, reason = classify(info, src.tensors, spec, excludes, includes)
        if verdict != "quantize":
            if verdict == "linear":
                plan.unquantized_linear[name[: -len(".weight")]] = reason
            outputs.append(OutTensor(name, info.dtype, info.shape, info.nbytes, "copy", name))
            continue
        plan.quantized[name] = info
        module = name[: -len(".weight")]
        rows, cols = info.shape
        if kind == "int":
            outputs.append(OutTensor(name, "I8", [rows, cols], rows * cols, "weight", name))
            if per_channel:
                sbytes = rows * DTYPE_BITS[info.dtype] // 8
                outputs.append(OutTensor(module + ".weight_scale", info.dtype, [rows], sbytes,
                                         "scale", name))
                outputs.append(OutTensor(module + ".weight_zero_point", "I8", [rows], rows,
                                         "zero_point", name))
            else:
                outputs.append(OutTensor(module + ".weight_scale", "F32", [], 4, "scale", name))
                outputs.append(OutTensor(module + ".weight_zero_point", "I8", [], 1,
                                         "zero_point", name))
        else:
            outputs.append(OutTensor(name, "F8_E4M3", [rows, cols], rows * cols, "weight", name))
            shape = [rows] if per_channel else []
            count = rows if per_channel else 1
            outputs.append(OutTensor(module + ".weight_scale", info.dtype, shape,
                                     count * DTYPE_BITS[info.dtype] // 8, "scale", name))
    outputs.sort(key=lambda t: (-DTYPE_RANK[t.dtype], t.name.encode("utf-8")))
    names = [t.name for t in outputs]
    if len(set(names)) != len(names):
        raise QuarkRefError("%s: duplicate output tensor names" % relpath)
    metadata = {"format": "pt"}
    if isinstance(src.metadata, dict):
        for key, value in src.metadata.items():
            if key != "format":
                metadata[key] = value
    header = {"__metadata__": metadata}
    offset = 0
    for t in outputs:
        t.begin, t.end = offset, offset + t.nbytes
        offset = t.end
        header[t.name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [t.begin, t.end]}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    plan.header = struct.pack("<Q", len(text)) + text
    plan.outputs = outputs
    plan.data_size = offset
    return plan


class ViewPlan:
    """Everything the view of SRC contains, decided from headers and file names only."""

    def __init__(self, src, spec, excludes, includes):
        self.src, self.spec = src, spec
        self.excludes, self.includes = list(excludes), list(includes)
        self.files = {}            # relpath -> ('safetensors'|'config'|'index'|'copy', abspath)
        self.dirs = set()          # relpaths of directories
        self.safetensors = {}      # relpath -> FilePlan
        self.notes = []


def is_model_file(relpath):
    """True for the files quarkfs quantizes: model*.safetensors directly in SRC."""
    return "/" not in relpath and fnmatch.fnmatchcase(relpath, "model*.safetensors")


def walk_source(src):
    """(files, dirs, notes): relative paths under src, following symlinks (loops skipped)."""
    files, dirs, notes = {}, set(), []
    seen = set()
    for root, dnames, fnames in os.walk(src, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            notes.append("symlink loop at %s skipped" % os.path.relpath(root, src))
            dnames[:] = []
            continue
        seen.add(real)
        rel_root = os.path.relpath(root, src)
        if rel_root != ".":
            dirs.add(rel_root)
        for fname in fnames:
            path = os.path.join(root, fname)
            rel = fname if rel_root == "." else os.path.join(rel_root, fname)
            if not os.path.isfile(path):
                notes.append("%s: broken symlink or not a regular file; not checked" % rel)
                continue
            files[rel] = path
    return files, dirs, notes


def plan_view(src, spec, excludes=(), includes=()):
    """Build the ViewPlan of model directory src for one spec."""
    if spec not in SPECS:
        raise QuarkRefError("unknown spec %s (known: %s)" % (spec, ", ".join(SPECS)))
    plan = ViewPlan(src, spec, excludes, includes)
    files, plan.dirs, plan.notes = walk_source(src)
    for rel, path in sorted(files.items()):
        if is_model_file(rel):
            plan.files[rel] = ("safetensors", path)
            plan.safetensors[rel] = plan_safetensors(rel, path, spec, plan.excludes, plan.includes)
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

def tensor_spec(dtype, qscheme, ch_axis, observer, dynamic):
    """One Quark tensor spec dict (QTensorConfig.to_dict, recent main)."""
    return {"block_size": None, "ch_axis": ch_axis, "dtype": dtype, "enable_buffer_reuse": False,
            "group_size": None, "is_dynamic": dynamic, "is_scale_quant": False,
            "max_input_numel": 4194304, "mx_element_dtype": None, "observer_cls": observer,
            "qscheme": qscheme, "round_method": "half_even", "scale_calculation_mode": None,
            "scale_format": None, "scale_type": "float", "symmetric": True}


def exclude_list(plan):
    """Sorted exact module names of every unquantized Linear-like tensor, plus 'lm_head'."""
    names = {"lm_head"}
    for fplan in plan.safetensors.values():
        names.update(fplan.unquantized_linear)
    return sorted(names)


def quantization_config(plan):
    """The expected "quantization_config" dict for a plan."""
    spec = plan.spec
    per_tensor = ("per_tensor", None, "PerTensorMinMaxObserver")
    per_channel_w = ("per_channel", 0, "PerChannelMinMaxObserver")
    per_token = ("per_channel", 1, "PerChannelMinMaxObserver")
    if spec == "int8":
        weight, inp = tensor_spec("int8", *per_tensor, False), None
    elif spec == "int8-channel":
        weight, inp = tensor_spec("int8", *per_channel_w, False), None
    elif spec == "w8a8-int8":
        weight, inp = tensor_spec("int8", *per_channel_w, False), tensor_spec("int8", *per_token, True)
    elif spec == "fp8":
        weight = tensor_spec("fp8_e4m3", *per_tensor, False)
        inp = tensor_spec("fp8_e4m3", *per_tensor, True)
    else:
        weight = tensor_spec("fp8_e4m3", *per_channel_w, False)
        inp = tensor_spec("fp8_e4m3", *per_token, True)
    return {
        "algo_config": None,
        "exclude": exclude_list(plan),
        "export": {"kv_cache_group": [], "min_kv_scale": 0.0, "pack_method": "reorder",
                   "weight_format": "real_quantized", "weight_merge_groups": None},
        "global_quant_config": {"bias": None, "input_tensors": inp, "output_tensors": None,
                                "target_device": None, "weight": weight},
        "kv_cache_post_rope": False,
        "kv_cache_quant_config": {},
        "layer_quant_config": {},
        "layer_type_quant_config": {},
        "quant_method": "quark",
        "quant_mode": "eager_mode",
        "softmax_quant_spec": None,
        "version": QUARK_VERSION,
    }


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
            module = name[: -len(".weight")]
            for suffix in output_suffixes(plan.spec):
                new_map[module + suffix] = fname
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
    """Computes the quantized outputs of one view file, caching the (small) scales."""

    def __init__(self, fplan):
        self.fplan = fplan
        kind, self.per_channel = SPECS[fplan.spec]
        self.is_int = kind == "int"
        self.scales = {}           # source tensor name -> float32 scale values
        self.nonfinite = []        # source tensor names holding NaN/Inf

    def compute_scales(self):
        """Pre-pass over every quantized tensor: scales and the NaN/Inf check."""
        for name, info in self.fplan.quantized.items():
            x = self.fplan.source.read_float32(info)
            if self.is_int:
                s, finite = int8_scale(x, self.per_channel, info.dtype)
            else:
                s, finite = fp8_scale(x, self.per_channel, info.dtype)
            self.scales[name] = s
            if not finite:
                self.nonfinite.append(name)

    def scale_bytes(self, name):
        """Bytes of X.weight_scale (F32 for int8 per tensor, else the weight's dtype)."""
        info = self.fplan.quantized[name]
        s = self.scales[name]
        if self.is_int and not self.per_channel:
            return encode_float(s, "F32")
        return encode_float(s, info.dtype)

    def weight_values(self, name):
        """The quantized weight as an int8 (int specs) or uint8 e4m3 code (fp8) array."""
        info = self.fplan.quantized[name]
        x = self.fplan.source.read_float32(info)
        if self.is_int:
            return int8_quantize(x, self.scales[name], self.per_channel)
        return fp8_quantize(x, self.scales[name], self.per_channel, info.dtype)

    def chunks(self, out):
        """Yield the expected data of output tensor `out` as uint8 arrays (in order)."""
        if out.role == "copy":
            info = self.fplan.source.tensors[out.src]
            for start in range(0, info.nbytes, COPY_CHUNK):
                yield self.fplan.source.read_raw(info, start, min(COPY_CHUNK, info.nbytes - start))
        elif out.role == "scale":
            yield self.scale_bytes(out.src)
        elif out.role == "zero_point":
            yield np.zeros(out.nbytes, dtype=np.uint8)
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


def parse_view_header(raw):
    """(tensors dict, data start) of a view file's header bytes, or (None, reason)."""
    if len(raw) < 8:
        return None, "file shorter than 8 bytes"
    (n,) = struct.unpack("<Q", raw[:8])
    if len(raw) < 8 + n:
        return None, "header length %d runs past the end of the file" % n
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, "header is not valid JSON: %s" % exc
    if not isinstance(header, dict):
        return None, "header is not a JSON object"
    header.pop("__metadata__", None)
    return header, 8 + n


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
            view_tensors, view_start = parse_view_header(head)
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
    log("selftest %s" % ("passed" if failures == 0 else "FAILED (%d)" % failures))
    return failures == 0


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description="Reference of the quarkfs quantized view (quark format).")
    ap.add_argument("--spec", choices=sorted(SPECS))
    ap.add_argument("--format", default="quark", choices=["quark"])
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="module-name glob to leave unquantized (repeatable)")
    ap.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="quantize only modules matching one of these globs (repeatable)")
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
    start = time.time()
    try:
        plan = plan_view(args.src, args.spec, args.exclude, args.include)
        if args.check:
            if not os.path.isdir(args.dest):
                ap.error("VIEW %s is not a directory" % args.dest)
            report = check_view(plan, args.dest)
            print("%d files checked, %d mismatches (spec %s, %.1f s)"
                  % (report.files_checked, len(report.mismatches), args.spec, time.time() - start))
            return 0 if not report.mismatches else 1
        write_view(plan, args.dest)
        print("quarkref: wrote %s (spec %s, %d files, %d quantized tensors, %.1f s)"
              % (args.dest, args.spec, len(plan.files),
                 sum(len(p.quantized) for p in plan.safetensors.values()), time.time() - start))
        return 0
    except QuarkRefError as exc:
        print("quarkref: error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
