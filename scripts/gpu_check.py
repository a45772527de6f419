#!/usr/bin/env python3
"""quarkfs "real clients" check: mount views with quarkfs and read them with the real loaders.

Runs on the GPU machine (see scripts/gpu-check.sh `remote`), needs torch, safetensors and
(for the config and forward checks) transformers. For every model and every spec it:

  * mounts SRC with quarkfs on a fresh temporary mountpoint (foreground `-f` child, stderr
    into quarkfs.log; unmounted in `finally`), plus once in daemon mode;
  * opens every view *.safetensors with safetensors' `safe_open(path, "pt")` (mmap of the
    FUSE file) and loads every tensor;
  * checks names/dtypes/shapes against the contract (docs: shared/design/SPECS.md,
    shared/reference/quark-format.md §3(a)-(d)), header order and metadata;
  * checks quantized values bit for bit against an independent torch implementation of Quark's
    formulas (quark-format.md §4.1, §4.3; `ref_quantize` below), and that every other tensor
    and every passed-through file equals the source byte for byte;
  * re-reads each file with read(2) + `safetensors.torch.load(bytes)` (transformers'
    disable_mmap path) and compares with the mmap tensors;
  * loads config.json with transformers' AutoConfig, checks quantization_config, and checks
    model.safetensors.index.json against the view's tensors;
  * dequantizes (q * scale) the view's weights, swaps them into the transformers model loaded
    from SRC and compares logits with the unquantized model (relative error, top-1 agreement);
  * tries transformers' own quark loader on the view (needs amd-quark: recorded as NOT RUN).

Writes OUT/gpu-check-report.md (summary table + details) and OUT/gpu-check-report.json after
every model/spec, so a run cut short still leaves what it did.

Usage:
  gpu_check.py --quarkfs BIN --libdir DIR --bindir DIR --out DIR \
      --model NAME=SRC [--model NAME=SRC ...] [--no-forward NAME ...] [--specs a,b,...] \
      [--timing NAME]
"""

import argparse
import gc
import hashlib
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import torch

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

SPECS = {
    # spec: (kind, per_channel, expected input_tensors (dtype, is_dynamic) or None)
    "int8": ("int", False, None),
    "int8-channel": ("int", True, None),
    "w8a8-int8": ("int", True, ("int8", True)),
    "fp8": ("fp8", False, ("fp8_e4m3", True)),
    "fp8-channel": ("fp8", True, ("fp8_e4m3", True)),
}
ALL_SPECS = list(SPECS)
FLOAT_DTYPES = ("BF16", "F16", "F32")
EMBED_COMPONENTS = ("wte", "wpe", "word_embeddings", "position_embeddings", "shared")
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
               "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
               "C64", "F64", "I64", "U64"]
DTYPE_RANK = {n: i for i, n in enumerate(DTYPE_ORDER)}
TORCH_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
                "F64": torch.float64, "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16,
                "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool}
FP8 = getattr(torch, "float8_e4m3fn", None)
if FP8 is not None:
    TORCH_DTYPES["F8_E4M3"] = FP8
EXPORT_KEYS = {"kv_cache_group", "min_kv_scale", "pack_method", "weight_format",
               "weight_merge_groups"}
EPS = 2.0 ** -23
FORWARD_MAX_REL_ERR = 0.25     # sanity bound only; the bitwise checks are the real ones
PASS, FAIL, NOTRUN, NA = "PASS", "FAIL", "NOT RUN", "n/a"


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------

def log(msg):
    """Progress line on stdout (the remote script tees it into run.log)."""
    print("[%7.1fs] %s" % (time.perf_counter() - T0, msg), flush=True)


T0 = time.perf_counter()


def read_header(path):
    """Raw safetensors header of a file: (ordered list of (key, entry), header length)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        text = f.read(n)
    return json.loads(text.decode("utf-8"), object_pairs_hook=list), n


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
# The contract (independent of quarkfs' own code and of scripts/quarkref.py)
# ---------------------------------------------------------------------------------------------

def is_embedding(module):
    """Embedding by name (SPECS.md 'Which tensors are quantized')."""
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


def plan_view(src_meta, finite, spec):
    """Expected view tensors of one source model.

    src_meta: {tensor name: (file, dtype string, shape)} over all source files;
    finite: {tensor name: bool} (NaN/Inf weights stay unquantized).
    Returns (expected, quantized, unquantized_linear) where expected maps every view tensor to
    (file, dtype string, shape, role, source tensor name); role in copy/weight/scale/zero_point.
    """
    kind, per_channel, _ = SPECS[spec]
    names = set(src_meta)
    suffixes = [".weight_scale"] + ([".weight_zero_point"] if kind == "int" else [])
    expected, quantized, unquantized = {}, [], {}
    for name, (fname, dtype, shape) in sorted(src_meta.items()):
        module = linear_like(name, dtype, shape)
        reason = None
        if module is not None:
            if shape[0] * shape[1] == 0:
                reason = "empty"
            elif module == "lm_head" or module.endswith(".lm_head"):
                reason = "lm_head"
            elif any(module + s in names for s in suffixes):
                reason = "name collision"
            elif not finite.get(name, True):
                reason = "NaN/Inf"
        if module is None or reason is not None:
            expected[name] = (fname, dtype, list(shape), "copy", name)
            if module is not None:
                unquantized[module] = reason
            continue
        quantized.append(name)
        rows = shape[0]
        expected[name] = (fname, "I8" if kind == "int" else "F8_E4M3", list(shape), "weight", name)
        if kind == "int":
            sdt = dtype if per_channel else "F32"
        else:
            sdt = dtype
        sshape = [rows] if per_channel else []
        expected[module + ".weight_scale"] = (fname, sdt, sshape, "scale", name)
        if kind == "int":
            expected[module + ".weight_zero_point"] = (fname, "I8", sshape, "zero_point", name)
    return expected, quantized, unquantized


def ref_quantize(x, spec):
    """Quark's weight quantization, written literally in torch (quark-format.md §4.1, §4.3).

    x: the source weight [O, I] in its own dtype D. Returns (q, scale, zero_point or None).
    """
    kind, per_channel, _ = SPECS[spec]
    dt = x.dtype
    if per_channel:
        mn, mx = x.amin(dim=1), x.amax(dim=1)             # exact in D
    else:
        mn, mx = x.min(), x.max()
    zero = torch.zeros((), dtype=dt)
    amax = torch.maximum(-torch.minimum(mn, zero), torch.maximum(mx, zero))
    xf = x.float()
    if kind == "int":
        s0 = (amax.float() / 127.5).to(dt)                   # rD(amax / 127.5)
        if per_channel:                                      # floor at eps, stays D
            scale = torch.maximum(s0, torch.tensor(EPS, dtype=torch.float32).to(dt))
        else:                                                # per-tensor: promoted to F32
            scale = torch.maximum(s0.float(), torch.tensor(EPS, dtype=torch.float32))
        sf = scale.float()
        inv = torch.ones_like(sf) / sf                       # float32 reciprocal
        if per_channel:
            inv = inv[:, None]
        q = torch.clamp(torch.round(xf * inv), -128, 127).to(torch.int8)
        zp = torch.zeros(scale.shape, dtype=torch.int8)
        return q, scale, zp
    s = (amax.float() / 448.0).to(dt)                        # rD(amax / 448)
    s = torch.where(s == 0, torch.tensor(EPS, dtype=torch.float32).to(dt), s)
    sf = s.float()[:, None] if per_channel else s.float()
    q = (xf / sf).to(dt).clamp(-448, 448).to(FP8)
    return q, s, None


def dequantize(q, scale, per_channel, dt):
    """w = q * scale in float32 (zero point 0), rounded to the model dtype."""
    s = scale.float()
    if per_channel:
        s = s[:, None]
    return (q.float() * s).to(dt)


# ---------------------------------------------------------------------------------------------
# Mounting
# ---------------------------------------------------------------------------------------------

class MountError(Exception):
    """quarkfs did not mount."""


class Mount:
    """A quarkfs mount on a fresh temporary directory (foreground child or daemon)."""

    def __init__(self, args, src, spec, daemon=False):
        self.args, self.src, self.spec, self.daemon = args, src, spec, daemon
        self.mnt = tempfile.mkdtemp(prefix="quarkfs-mnt-")
        self.proc = None
        self.mount_s = None

    def env(self):
        """Environment for quarkfs: bundled libraries and fusermount3 first."""
        env = dict(os.environ)
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = self.args.libdir + (":" + old if old else "")
        env["PATH"] = self.args.bindir + ":" + env.get("PATH", "/usr/bin:/bin")
        return env

    def __enter__(self):
        cmd = [self.args.quarkfs, "--spec", self.spec] + ([] if self.daemon else ["-f"]) + \
              [self.src, self.mnt]
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

def check_view(args, name, src, spec, ref_cache, model_state):
    """All checks of one (model, spec). Returns {check: Check-as-dict} plus timing/forward."""
    kind, per_channel, in_spec = SPECS[spec]
    expected, quantized, unquant = plan_view(src.meta, src.finite, spec)
    res = {}
    info = {"quantized_tensors": len(quantized), "view_tensors": len(expected)}
    c_mount = Check()
    try:
        m = Mount(args, src.path, spec).__enter__()
    except Exception as exc:
        c_mount.fail("%s: %s" % (type(exc).__name__, exc))
        res["mount"] = c_mount.done()
        return res, info
    try:
        c_mount.note("mounted in %.3f s" % m.mount_s)
        info["mount_s"] = m.mount_s
        res["mount"] = c_mount.done()
        mnt = m.mnt

        # ---- files: same list; pass-through files byte for byte
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
        res["files"] = c_files.done()

        # ---- load every tensor through safe_open (mmap); timed
        c_load = Check()
        view = {}
        vmeta = {}
        read_s, nbytes, loaded = timed_read([os.path.join(mnt, f) for f in src.st_files])
        tensors = None
        for (p, meta, tensors, errors), f in zip(loaded, src.st_files):
            vmeta[f] = meta
            for e in errors:
                c_load.fail("%s: %s" % (f, e))
            for k, t in tensors.items():
                view[k] = (f, t)
        del loaded, tensors
        gc.collect()
        # the same read again (quarkfs cache + page cache warm), and of the source on local disk
        info["warm_read_s"], _n, again = timed_read([os.path.join(mnt, f) for f in src.st_files])
        for p, _meta, tensors, errors in again:
            for e in errors:
                c_load.fail("second read: %s: %s" % (os.path.basename(p), e))
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
        info["view_file_bytes"] = sum(os.path.getsize(os.path.join(mnt, f)) for f in src.st_files)
        c_load.note("%d tensors, %.1f MB of tensor data in %.3f s (%.0f MB/s, quantization on "
                    "first read included)" % (len(view), nbytes / 1e6, read_s,
                                              nbytes / 1e6 / max(read_s, 1e-9)))
        res["load"] = c_load.done()

        # ---- contract: names, dtypes, shapes; header layout; metadata
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
            if dt not in TORCH_DTYPES:
                c_con.fail("%s: expected dtype %s has no torch dtype here" % (k, dt))
            elif t.dtype != TORCH_DTYPES[dt] or list(t.shape) != shape:
                c_con.fail("%s: %s%s, expected %s%s" % (k, t.dtype, list(t.shape), dt, shape))
        for f in src.st_files:
            try:
                pairs, n = read_header(os.path.join(mnt, f))
            except Exception as exc:
                c_con.fail("%s: header: %s" % (f, exc))
                continue
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
            offs = [ents[k]["data_offsets"] for k in order]
            pos = 0
            for k, (b, e) in zip(order, offs):
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
        c_con.note("%d view tensors, %d quantized, unquantized Linear-like: %s"
                   % (len(expected), len(quantized), unquant or "none"))
        res["contract"] = c_con.done()

        # ---- values: quantized tensors bitwise vs the torch reference; zero points zero
        c_val = Check()
        ref_s = 0.0
        for w in quantized:
            module = w[: -len(".weight")]
            if w not in view or module + ".weight_scale" not in view:
                c_val.fail("%s: not in view" % w)
                continue
            if FP8 is None and kind == "fp8":
                c_val.note("torch has no float8_e4m3fn: fp8 values not checked")
                break
            t1 = time.perf_counter()
            key = (w, spec)
            if key not in ref_cache:
                ref_cache.clear()
                ref_cache[key] = ref_quantize(src.tensors[w], spec)
            q, s, zp = ref_cache[key]
            ref_s += time.perf_counter() - t1
            vq, vs = view[w][1], view[module + ".weight_scale"][1]
            if not same_bits(vq, q):
                c_val.fail("%s: %s" % (w, diff_examples(vq, q)))
            if not same_bits(vs, s):
                c_val.fail("%s: %s" % (module + ".weight_scale", diff_examples(vs, s)))
            if zp is not None:
                vz = view.get(module + ".weight_zero_point", (None, None))[1]
                if vz is None or not same_bits(vz, zp):
                    c_val.fail("%s: %s" % (module + ".weight_zero_point",
                                           "missing" if vz is None else diff_examples(vz, zp)))
        ref_cache.clear()
        info["ref_s"] = ref_s
        c_val.note("%d quantized weights compared bit for bit (weight, scale%s); reference %.1f s"
                   % (len(quantized), ", zero point" if kind == "int" else "", ref_s))
        res["values"] = c_val.done()

        # ---- unchanged tensors bitwise vs the source
        c_unc = Check()
        ncopy = 0
        for k, (f, dt, shape, role, s) in expected.items():
            if role != "copy" or k not in view:
                continue
            ncopy += 1
            if not same_bits(view[k][1], src.tensors[s]):
                c_unc.fail("%s: %s" % (k, diff_examples(view[k][1], src.tensors[s])))
        c_unc.note("%d tensors compared" % ncopy)
        res["unchanged"] = c_unc.done()

        # ---- read(2) + safetensors.torch.load(bytes) == mmap tensors
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
        c_bytes.note("re-read with read(2) in %.3f s" % info["reread_s"])
        res["bytes_load"] = c_bytes.done()

        # ---- config.json: JSON, AutoConfig, quantization_config
        c_cfg = Check()
        try:
            vtext = open(os.path.join(mnt, "config.json")).read()
            vcfg = json.loads(vtext)
            qc = vcfg.pop("quantization_config", None)
            if vcfg != src.config:
                c_cfg.fail("config.json differs from the source outside quantization_config")
            missing_lines = [ln for ln in src.config_text.splitlines()
                             if ln.strip().rstrip(",") and ln.strip().rstrip(",") not in vtext]
            if missing_lines:
                c_cfg.note("source lines not found verbatim in the view: %s" % missing_lines[:5])
            check_qconfig(c_cfg, qc, spec, quantized, unquant)
        except Exception as exc:
            c_cfg.fail("config.json: %s: %s" % (type(exc).__name__, exc))
        if transformers is None:
            c_cfg.note("transformers not installed: AutoConfig not tried")
        else:
            try:
                acfg = AutoConfig.from_pretrained(mnt)
                aq = getattr(acfg, "quantization_config", None)
                qm = aq.get("quant_method") if isinstance(aq, dict) else getattr(aq, "quant_method", None)
                qm = getattr(qm, "value", qm)
                if qm != "quark":
                    c_cfg.fail("AutoConfig: quantization_config.quant_method = %r" % (qm,))
                else:
                    c_cfg.note("AutoConfig: %s, quant_method quark" % type(acfg).__name__)
            except ImportError as exc:
                if "quark" in str(exc).lower():   # a loader limitation, not a view defect
                    c_cfg.note("AutoConfig needs amd-quark (not run): %s" % str(exc)[:200])
                else:
                    c_cfg.fail("AutoConfig.from_pretrained: ImportError: %s" % exc)
            except Exception as exc:
                c_cfg.fail("AutoConfig.from_pretrained: %s: %s" % (type(exc).__name__, exc))
        res["config"] = c_cfg.done()

        # ---- index
        c_idx = Check()
        ip = os.path.join(mnt, "model.safetensors.index.json")
        if src.index is None:
            if os.path.exists(ip):
                c_idx.fail("view has an index but the source has none")
            res["index"] = c_idx.done(NA)
        else:
            try:
                itext = open(ip).read()
                idx = json.loads(itext)
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
                other = {k: v for k, v in meta.items() if k != "total_size"}
                src_other = {k: v for k, v in src.index.get("metadata", {}).items()
                             if k != "total_size"}
                if other != src_other:
                    c_idx.note("other metadata %s (source %s)" % (other, src_other))
                c_idx.note("%d entries, total_size %d" % (len(wm), meta.get("total_size", -1)))
            except Exception as exc:
                c_idx.fail("%s: %s" % (type(exc).__name__, exc))
            res["index"] = c_idx.done()

        # ---- transformers' own quark loader on the view (needs amd-quark)
        c_ql = Check()
        if transformers is None or not args.forward.get(name, True):
            c_ql.note("not attempted")
            res["quark_loader"] = c_ql.done(NOTRUN)
        else:
            try:
                qm = AutoModelForCausalLM.from_pretrained(mnt, dtype=src.dtype)
                c_ql.note("loaded (%s) - amd-quark present?" % type(qm).__name__)
                del qm
                res["quark_loader"] = c_ql.done(PASS)
            except Exception as exc:
                msg = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0][:200])
                c_ql.note(msg)
                is_missing = isinstance(exc, ImportError) or "quark" in str(exc).lower()
                res["quark_loader"] = c_ql.done(NOTRUN if is_missing else FAIL)
            gc.collect()

        # ---- dequantized forward pass vs the unquantized model
        c_fw = Check()
        if transformers is None or not args.forward.get(name, True) or model_state is None:
            c_fw.note("not run (%s)" % ("no transformers" if transformers is None else
                                         "disabled for this model" if not args.forward.get(name, True)
                                         else "reference model did not load"))
            res["forward"] = c_fw.done(NOTRUN)
        elif kind == "fp8" and FP8 is None:
            res["forward"] = c_fw.done(NOTRUN)
        else:
            try:
                fw = forward_check(model_state, view, quantized, per_channel, src.dtype)
                info.update(fw)
                c_fw.note("rel_err %.5f, top-1 agreement %.4f over %d positions"
                          % (fw["rel_err"], fw["top1"], fw["positions"]))
                if not (fw["rel_err"] < FORWARD_MAX_REL_ERR):
                    c_fw.fail("relative logits error %.4f >= %.2f" % (fw["rel_err"],
                                                                     FORWARD_MAX_REL_ERR))
            except Exception as exc:
                c_fw.fail("%s: %s" % (type(exc).__name__, exc))
                c_fw.note(traceback.format_exc()[-1500:])
            res["forward"] = c_fw.done()
        del view
    finally:
        msgs = m.unmount()
        if msgs:
            c_um = Check()
            for x in msgs:
                c_um.fail("unmount: %s" % x)
            res["unmount"] = c_um.done()
    return res, info


def check_qconfig(c, qc, spec, quantized, unquant):
    """quantization_config fields pinned by the contract."""
    kind, per_channel, in_spec = SPECS[spec]
    if not isinstance(qc, dict):
        c.fail("no quantization_config object")
        return
    if qc.get("quant_method") != "quark":
        c.fail("quant_method %r" % qc.get("quant_method"))
    g = qc.get("global_quant_config") or {}
    w = g.get("weight") or {}
    want_dt = "int8" if kind == "int" else "fp8_e4m3"
    if w.get("dtype") != want_dt:
        c.fail("weight.dtype %r, expected %r" % (w.get("dtype"), want_dt))
    want_q = "per_channel" if per_channel else "per_tensor"
    if w.get("qscheme") != want_q:
        c.fail("weight.qscheme %r, expected %r" % (w.get("qscheme"), want_q))
    if per_channel and w.get("ch_axis") != 0:
        c.fail("weight.ch_axis %r, expected 0" % w.get("ch_axis"))
    if w.get("is_dynamic") is not False:
        c.fail("weight.is_dynamic %r" % w.get("is_dynamic"))
    if kind == "int" and w.get("symmetric") is not True:
        c.fail("weight.symmetric %r" % w.get("symmetric"))
    it = g.get("input_tensors")
    if in_spec is None:
        if it is not None:
            c.fail("input_tensors %r, expected null (weight-only)" % (it,))
    elif not isinstance(it, dict) or it.get("dtype") != in_spec[0] or \
            it.get("is_dynamic") is not in_spec[1]:
        c.fail("input_tensors %r, expected dynamic %s" % (it, in_spec[0]))
    for key in ("layer_quant_config", "layer_type_quant_config", "exclude", "global_quant_config"):
        if key not in qc:
            c.fail("missing %s" % key)
    exp = qc.get("export")
    if not isinstance(exp, dict) or set(exp) != EXPORT_KEYS or \
            not isinstance(exp.get("kv_cache_group"), list):
        c.fail("export %r: must hold exactly %s, kv_cache_group a list" % (exp, sorted(EXPORT_KEYS)))
    excl = qc.get("exclude") or []
    for mod in unquant:
        if mod not in excl:
            c.fail("unquantized module %s not in exclude" % mod)
    qmods = {w[: -len(".weight")] for w in quantized}
    bad = sorted(qmods & set(excl))
    if bad:
        c.fail("quantized modules listed in exclude: %s" % bad[:5])
    c.note("exclude = %s" % excl)


# ---------------------------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------------------------

def load_reference(src, name, device):
    """transformers model from SRC (unquantized) on device, input ids and reference logits."""
    kw = dict(attn_implementation="eager")
    try:
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=src.dtype, **kw)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(src.path, torch_dtype=src.dtype, **kw)
    model = model.to(device).eval()
    bad = [k for k, t in model.state_dict().items() if k in src.tensors
           and not same_bits(t.detach().cpu(), src.tensors[k].to(t.dtype))]
    how = ""
    with torch.no_grad():
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
        else:
            ids = None
        if ids is None:
            g = torch.Generator().manual_seed(1234)
            vocab = model.config.vocab_size
            ids = torch.randint(0, vocab, (2, 128), generator=g).to(device)
            how = how or "fixed random ids (seed 1234), 2 x 128"
        ref = model(ids).logits.float()
    return {"model": model, "ids": ids, "ref": ref, "input": how, "device": device,
            "param_mismatch": bad}


def forward_check(state, view, quantized, per_channel, dt):
    """Swap dequantized view weights into the model, run it, compare, restore."""
    model, ids, ref = state["model"], state["ids"], state["ref"]
    saved = {}
    try:
        with torch.no_grad():
            for w in quantized:
                module = w[: -len(".weight")]
                p = model.get_parameter(w)
                saved[w] = p.detach().clone()
                deq = dequantize(view[w][1].to(p.device),
                                 view[module + ".weight_scale"][1].to(p.device), per_channel,
                                 p.dtype)
                p.copy_(deq)
            out = model(ids).logits.float()
    finally:
        with torch.no_grad():
            for w, t in saved.items():
                model.get_parameter(w).copy_(t)
    rel = float((out - ref).norm() / ref.norm())
    top1 = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    return {"rel_err": rel, "top1": top1, "positions": int(ids.numel()),
            "finite": bool(torch.isfinite(out).all())}


# ---------------------------------------------------------------------------------------------
# Daemon mode
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


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

COLUMNS = ["mount", "files", "load", "contract", "values", "unchanged", "bytes_load", "config",
           "index", "forward", "quark_loader"]


def overall(res):
    """PASS when no check failed (NOT RUN / n/a do not fail)."""
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
    try:
        import importlib.util
        v["amd-quark"] = "present" if importlib.util.find_spec("quark") else "absent"
    except Exception:
        v["amd-quark"] = "?"
    return v


def write_report(args, ver, results, extra, final=False):
    """gpu-check-report.md and .json in --out."""
    rows = []
    for model, specs in results.items():
        for spec, (res, info) in specs.items():
            rows.append((model, spec, res, info))
    js = {"versions": ver, "extra": {k: v.as_dict() if isinstance(v, Check) else v
                                     for k, v in extra.items()},
          "results": [{"model": m, "spec": s, "overall": overall(r),
                       "checks": {k: v.as_dict() for k, v in r.items()}, "info": i}
                      for m, s, r, i in rows], "complete": final}
    with open(os.path.join(args.out, "gpu-check-report.json"), "w") as f:
        json.dump(js, f, indent=1, sort_keys=True, default=str)
    L = []
    L.append("# quarkfs real-clients check (GPU machine)%s\n" % ("" if final else " - INCOMPLETE"))
    L.append("Versions: " + ", ".join("%s %s" % kv for kv in ver.items()) + "\n")
    L.append("| model | spec | " + " | ".join(COLUMNS) + " | rel err | top-1 | overall |")
    L.append("|" + "---|" * (len(COLUMNS) + 5))
    for m, s, r, i in rows:
        cells = [r[c].status if c in r else "-" for c in COLUMNS]
        rel = "%.4f" % i["rel_err"] if "rel_err" in i else "-"
        top = "%.4f" % i["top1"] if "top1" in i else "-"
        L.append("| %s | %s | %s | %s | %s | %s |" % (m, s, " | ".join(cells), rel, top,
                                                     overall(r)))
    L.append("")
    for k, v in extra.items():
        if isinstance(v, Check):
            L.append("- %s: **%s** %s" % (k, v.status, "; ".join(v.details)))
        else:
            L.append("- %s: %s" % (k, v))
    L.append("")
    L.append("## Timing (mount, then every tensor read through safe_open/mmap + clone)\n")
    L.append("first read = quantization on first read included; warm = the same read again "
             "(quarkfs cache and page cache warm); source = the same read of the source files "
             "on local disk (page cache warm); read(2) = whole files read + "
             "safetensors.torch.load(bytes) + bitwise compare with the mmap read.\n")
    L.append("| model | spec | mount s | first read s | view tensor MB | MB/s | warm read s | "
             "source read s (MB) | read(2)+load+compare s | reference s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for m, s, r, i in rows:
        if "read_s" in i:
            L.append("| %s | %s | %.3f | %.3f | %.1f | %.0f | %.3f | %.3f (%.1f) | %.3f | %.1f |"
                     % (m, s, i.get("mount_s", 0), i["read_s"], i["read_bytes"] / 1e6,
                        i["read_bytes"] / 1e6 / max(i["read_s"], 1e-9), i.get("warm_read_s", 0),
                        i.get("src_read_s", 0), i.get("src_bytes", 0) / 1e6,
                        i.get("reread_s", 0), i.get("ref_s", 0)))
    L.append("\n## Details\n")
    for m, s, r, i in rows:
        L.append("### %s / %s: %s\n" % (m, s, overall(r)))
        for k, v in r.items():
            d = "; ".join(v.details)
            L.append("- %s: %s%s" % (k, v.status, (" — " + d) if d else ""))
        L.append("")
    with open(os.path.join(args.out, "gpu-check-report.md"), "w") as f:
        f.write("\n".join(L) + "\n")


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quarkfs", required=True)
    ap.add_argument("--libdir", required=True, help="LD_LIBRARY_PATH for quarkfs")
    ap.add_argument("--bindir", required=True, help="directory holding fusermount3")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", action="append", default=[], help="NAME=SRC (repeatable)")
    ap.add_argument("--no-forward", action="append", default=[],
                    help="model NAME without a transformers forward pass (repeatable)")
    ap.add_argument("--specs", default=",".join(ALL_SPECS))
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
        n, _, p = m.partition("=")
        models.append((n, os.path.abspath(p)))
    args.forward = {n: n not in args.no_forward for n, _ in models}
    specs = [s for s in args.specs.split(",") if s]
    for s in specs:
        if s not in SPECS:
            raise SystemExit("unknown spec %s" % s)

    ver = versions()
    log("versions: %s" % ver)
    results, extra = {}, {}
    ref_cache = {}
    for n, p in models:
        results[n] = {}
        log("model %s: loading source %s" % (n, p))
        try:
            src = Source(p)
        except Exception as exc:
            extra["source " + n] = "FAIL loading source: %s" % exc
            log(traceback.format_exc())
            continue
        extra["source " + n] = "%d files, %d tensors, %.1f MB of safetensors, dtype %s" % (
            len(src.files), len(src.tensors), src.nbytes / 1e6, src.dtype)
        if not extra.get("daemon mode"):
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
        for spec in specs:
            log("model %s spec %s" % (n, spec))
            try:
                res, info = check_view(args, n, src, spec, ref_cache, state)
            except Exception as exc:
                c = Check()
                c.fail("harness error: %s: %s" % (type(exc).__name__, exc))
                c.note(traceback.format_exc()[-2000:])
                res, info = {"mount": c.done()}, {}
                log(traceback.format_exc())
            results[n][spec] = (res, info)
            log("  -> %s %s" % (overall(res), {k: v.status for k, v in res.items()}))
            for k, v in res.items():
                if v.status == FAIL:
                    log("     %s: %s" % (k, "; ".join(v.details)[:1500]))
            write_report(args, ver, results, extra)
        if state is not None:
            del state["model"]
            state = None
        del src
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    write_report(args, ver, results, extra, final=True)
    failed = [(m, s) for m, d in results.items() for s, (r, _i) in d.items() if overall(r) == FAIL]
    if isinstance(extra.get("daemon mode"), Check) and extra["daemon mode"].status == FAIL:
        failed.append(("daemon", "int8"))
    log("done: %d model/spec rows, %d failed %s" % (sum(len(d) for d in results.values()),
                                                    len(failed), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
