#!/usr/bin/env python3
"""Compare the C build's export with the independent reference (tests/oracle/quarkref.py).

Usage:
    python3 tests/oracle/quarkref-compare.py [--quarkfs build/quarkfs] [-j N] [--self-only]
        [--spec S]... [--format F]... MODEL_DIR...

For every model directory and every valid spec x format pair (or the ones given):
  1. self-check: quarkref writes its expected view, --check of it passes, and a copy with one
     byte flipped in a quantized tensor (and one in the config) fails;
  2. unless --self-only: `quarkfs export --spec S --format F MODEL OUT`, then quarkref --check
     MODEL OUT (the mismatch lines are kept).
Prints one line per model x pair and a summary; exit 0 only if everything agrees.

    python3 tests/oracle/quarkref-compare.py --make-edge OUT BF16|F16|F32 [collide]
        write a model whose weights hit the corner cases of the 4-bit, MXFP4 and fp8-block
        kernels (ties, zero groups and blocks, subnormals, odd shapes); with "collide", also
        tensors named like other layouts' outputs (qzeros, weight_scale_inv, weight_shape, ...)
"""

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "pylib"))
import quarkref  # noqa: E402  (same directory)
import stfile  # noqa: E402  the safetensors container

PY = stfile.numpy_python()
QUARKREF = os.path.join(HERE, "quarkref.py")


def run(cmd):
    """(returncode, stdout + stderr) of a command."""
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


def flip_quantized_byte(plan, out):
    """Flip one byte in the middle of the first quantized weight of the view in `out`;
    returns a description or None when nothing is quantized."""
    for rel, fplan in sorted(plan.safetensors.items()):
        for t in fplan.outputs:
            if t.role == "weight" and t.nbytes and os.path.exists(os.path.join(out, rel)):
                pos = len(fplan.header) + t.begin + t.nbytes // 2
                path = os.path.join(out, rel)
                with open(path, "r+b") as f:
                    f.seek(pos)
                    b = f.read(1)
                    f.seek(pos)
                    f.write(bytes([b[0] ^ 0x10]))
                return "%s %s byte %d" % (rel, t.name, pos)
    return None


def self_check(model, spec, fmt, work):
    """Reference-only check; returns (ok, text)."""
    out = os.path.join(work, "ref")
    rc, text = run([PY, QUARKREF, "--spec", spec, "--format", fmt, model, out])
    if rc != 0:
        return False, "writer failed: " + text
    rc, text = run([PY, QUARKREF, "--spec", spec, "--format", fmt, "--check", model, out])
    if rc != 0:
        return False, "own output fails --check: " + text
    plan = quarkref.plan_view(model, spec, fmt=fmt)
    where = flip_quantized_byte(plan, out)
    if where:
        rc, text = run([PY, QUARKREF, "--spec", spec, "--format", fmt, "--check", model, out])
        if rc != 1:
            return False, "flipped byte (%s) not detected: %s" % (where, text)
    cfg = os.path.join(out, "config.json")
    if os.path.exists(cfg):
        with open(cfg, "rb") as f:
            data = f.read()
        with open(cfg, "wb") as f:
            f.write(data.replace(b'"quantization_config"', b'"quantization_confix"', 1))
        rc, text = run([PY, QUARKREF, "--spec", spec, "--format", fmt, "--check", model, out])
        if rc != 1:
            return False, "altered config not detected: " + text
    nq = sum(len(p.quantized) for p in plan.safetensors.values())
    return True, "%d quantized%s" % (nq, "" if where else " (nothing to flip)")


def c_check(quarkfs, model, spec, fmt, work):
    """C export + quarkref --check; returns (ok, text)."""
    out = os.path.join(work, "c")
    rc, text = run([quarkfs, "export", "--spec", spec, "--format", fmt, model, out])
    if rc != 0:
        return False, "quarkfs export failed (rc %d): %s" % (rc, text.strip())
    rc, text = run([PY, QUARKREF, "--spec", spec, "--format", fmt, "--check", model, out])
    lines = [l for l in text.splitlines() if l.startswith("MISMATCH")]
    return rc == 0, (text.strip().splitlines()[-1] if rc == 0 else "\n    ".join([""] + lines))


def job(args, model, spec, fmt):
    """One model x pair."""
    work = tempfile.mkdtemp(prefix="qrcmp-")
    try:
        ok1, t1 = self_check(model, spec, fmt, work)
        if args.self_only:
            return ok1, "self %s: %s" % ("ok" if ok1 else "FAIL", t1)
        ok2, t2 = c_check(args.quarkfs, model, spec, fmt, work)
        return ok1 and ok2, "self %s: %s | C %s: %s" % ("ok" if ok1 else "FAIL", t1,
                                                       "ok" if ok2 else "DIFF", t2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def edge_tensors(dtype, seed=7):
    """Weights built to hit the kernels' corner cases (ties, zero groups/blocks, one-signed
    groups, subnormal magnitudes, odd shapes). Values are representable in dtype."""
    np = quarkref.np
    rng = np.random.default_rng(seed)
    t = {}
    # uint4 ties: per group of 32, s = 2^k, mn = -a * s (a half-integer -> zp tie), mx = mn + 15 s,
    # elements on the s/2 grid between them -> x/s + zp lands on .5 ties
    rows, cols = 256, 256
    k = rng.integers(-9, -2, (rows, cols // 32)).astype(np.float64)
    s = np.exp2(k)[..., None]
    a = rng.integers(0, 31, (rows, cols // 32))[..., None] / 2.0
    m = rng.integers(0, 31, (rows, cols // 32, 32)) / 2.0
    x = (m - a) * s
    x[..., 0], x[..., 1] = -a[..., 0] * s[..., 0], (15 - a[..., 0]) * s[..., 0]
    t["model.layers.0.mlp.gate_proj.weight"] = x.reshape(rows, cols)
    # int4 ties: amax = 7.5 * 2^k, elements (n + 0.5) * 2^k
    n = rng.integers(-8, 8, (rows, cols // 32, 32)) + 0.5
    x = n * s
    x[..., 0] = 7.5 * s[..., 0] * np.where(rng.random((rows, cols // 32)) < 0.5, 1, -1)
    t["model.layers.0.mlp.up_proj.weight"] = x.reshape(rows, cols)
    # MXFP4 ties: per block amax chosen around 1.75 * 2^n (carry or not), elements grid midpoints
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.5, 3.0, 6.0, 0.0])
    e = rng.integers(-6, 3, (rows, cols // 32)).astype(np.float64)
    x = rng.choice(mids, (rows, cols // 32, 32)) * np.where(rng.random((rows, cols // 32, 32)) < 0.5, 1, -1)
    x = x * np.exp2(e)[..., None]
    top = rng.choice([6.0, 7.0, 6.5, 7.5, 3.5, 4.0], (rows, cols // 32))
    x[..., 3] = top * np.exp2(e)
    t["model.layers.0.mlp.down_proj.weight"] = x.reshape(rows, cols)
    # fp8 per-block: amax 448 * 2^k per block, elements e4m3 midpoints; zero blocks; -0.0
    table = quarkref.e4m3_table()
    emids = (table[:-1] + table[1:]) / 2
    x = rng.choice(np.concatenate([emids[emids > 2.0 ** -6], table]), (rows, cols))
    x *= np.where(rng.random((rows, cols)) < 0.5, 1, -1)
    kb = rng.integers(-12, -4, (2, 2)).astype(np.float64)
    x = x.reshape(2, 128, 2, 128) * np.exp2(kb)[:, None, :, None]
    x[:, 0, :, 0] = 448 * np.exp2(kb)
    x[1, :, 1, :] = 0.0
    x[0, 5, 0, 5] = -0.0
    t["model.layers.0.self_attn.o_proj.weight"] = x.reshape(rows, cols)
    # zero rows, zero groups, one-signed groups, tiny (subnormal in D) groups
    x = rng.standard_normal((rows, cols)) * 0.02
    x[3] = 0.0
    x[7, 32:64] = 0.0
    x[8, :32] = np.abs(x[8, :32])
    x[9, :32] = -np.abs(x[9, :32])
    x[10, :64] = np.abs(x[10, :64])
    x[11, :] *= 1e-6                       # f16 subnormal range
    x[12, :] *= 1e-36                      # bf16/f32 tiny
    x[13, :128] = 1e-39                    # f32 subnormal (bf16 too)
    x[14, :] *= 3e3
    t["model.layers.0.self_attn.q_proj.weight"] = x
    # odd shapes: [200, 256] (not 128 rows), [260, 256] (rows % 8 = 4), [96, 96] (in % 64 = 32)
    t["model.layers.0.self_attn.k_proj.weight"] = rng.standard_normal((200, 256)) * 0.05
    t["model.layers.0.self_attn.v_proj.weight"] = rng.standard_normal((260, 256)) * 0.05
    t["model.layers.1.mlp.gate_proj.weight"] = rng.standard_normal((96, 96)) * 0.05
    t["model.layers.1.mlp.up_proj.weight"] = rng.standard_normal((384, 128)) * 10.0
    t["model.norm.weight"] = np.ones(256)
    t["lm_head.weight"] = rng.standard_normal((64, 256)) * 0.05
    out = {}
    for name, v in t.items():
        v = quarkref.round_to(np.asarray(v, dtype=np.float32), dtype)
        out[name] = quarkref.encode_float(v, dtype).tobytes(), list(v.shape)
    return out


COLLIDERS = {
    # extra source tensors named like another layout's outputs (each keeps its module unquantized
    # in the formats whose layout has that name; I32 [1] holding 7)
    "model.layers.0.mlp.up_proj.qzeros": "awq",
    "model.layers.0.self_attn.o_proj.weight_scale_inv": "fp8 (fp8-block)",
    "model.layers.0.mlp.down_proj.weight_shape": "compressed-tensors packed",
    "model.layers.0.self_attn.q_proj.weight_packed": "compressed-tensors packed",
    "model.layers.0.self_attn.k_proj.weight_zero_point": "quark int",
}


def make_edge(path, dtype, collide=False):
    """Write the edge-case model (config.json + model.safetensors) into a new directory;
    collide adds the COLLIDERS tensors."""
    import json
    import struct
    os.makedirs(path)
    tensors = edge_tensors(dtype)
    if collide:
        for name in COLLIDERS:
            tensors[name] = (struct.pack("<i", 7), [1], "I32")
    entries, blobs = [], []
    for name in sorted(tensors):
        raw, shape = tensors[name][:2]
        tdtype = tensors[name][2] if len(tensors[name]) > 2 else dtype
        entries.append((name, tdtype, shape, len(raw)))
        blobs.append(raw)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(stfile.header_bytes(entries, {"format": "pt"}) + b"".join(blobs))
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                            "rms_norm_eps": 1e-05}, indent=2, sort_keys=True) + "\n")


def main():
    """Entry point."""
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--make-edge":
        make_edge(sys.argv[2], sys.argv[3].upper(), sys.argv[4:] == ["collide"])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quarkfs", default=os.path.join(HERE, "..", "..", "build", "quarkfs"))
    ap.add_argument("-j", type=int, default=os.cpu_count() or 4)
    ap.add_argument("--self-only", action="store_true")
    ap.add_argument("--spec", action="append", default=[])
    ap.add_argument("--format", action="append", default=[])
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    pairs = [(spec, fmt) for fmt, specs in quarkref.FORMATS.items() for spec in specs
             if (not args.spec or spec in args.spec) and (not args.format or fmt in args.format)]
    jobs = [(m, s, f) for m in args.models for s, f in pairs]
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(args.j) as pool:
        futs = [pool.submit(job, args, m, s, f) for m, s, f in jobs]
        for (m, s, f), fut in zip(jobs, futs):
            ok, text = fut.result()
            bad += not ok
            print("%-4s %s  %s/%s  %s" % ("ok" if ok else "FAIL", os.path.basename(m.rstrip("/")),
                                         s, f, text), flush=True)
    print("%d model x pair runs, %d failed" % (len(jobs), bad))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
