"""Every spec x format pair against the independent reference (tests/oracle/quarkref.py).

The pairs come from the reference's own table (not from quarkfs). For each pair: the export of
stories260K (bf16, f16, f32), of a synthetic model whose shapes fit every spec (so 4-bit groups,
MX blocks and 128x128 fp8 blocks really quantize) and of the awkward model equals the
reference byte for byte; the mount of the fitting model equals the reference and the export.
quarkfs refuses every pair that is not in the table, naming the pairs that can be written.
"""

import importlib.util
import os

import qfstest as q

spec_ = importlib.util.spec_from_file_location("quarkref", q.QUARKREF)
quarkref = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(quarkref)
PAIRS = sorted((spec, fmt) for fmt, specs in quarkref.FORMATS.items() for spec in specs)
ALL_SPECS = sorted(quarkref.SPECS)


def fitting_model():
    """All dims multiples of 128 (k/v: 2 kv heads x 64 = 128), two shards."""
    return q.gen_model("demo", "bf16", "--hidden", "256", "--intermediate", "512", "--layers",
                       "2", "--heads", "4", "--kv-heads", "2", "--vocab", "512")


def check_export(src, spec, fmt):
    out = q.export(src, spec, fmt=fmt)
    q.quarkref_check(src, out, spec, fmt=fmt)
    return out


def add_pair(spec, fmt):
    def case():
        src = fitting_model()
        out = check_export(src, spec, fmt)
        quantized = [n for n in q.st_header(os.path.join(out, q.model_files(out)[0]))[0]
                     if n != "__metadata__"]
        assert quantized, "empty view"
        with q.mounted(src, spec, fmt=fmt, foreground=False) as m:
            q.quarkref_check(src, m.path, spec, fmt=fmt)
            q.assert_trees_equal(m.path, out, "mount vs export")
        check_export(q.gen_model("awkward", "bf16"), spec, fmt)
        if q.have_shared_models():
            for dtype in ("bf16", "f16", "f32"):
                check_export(q.shared_model(dtype), spec, fmt)
    q.add_test("%s/%s" % (fmt, spec), case)


for _spec, _fmt in PAIRS:
    add_pair(_spec, _fmt)


@q.test
def invalid_pairs_refused():
    """Every pair outside the table exits 2 and names what can be written instead."""
    valid = set(PAIRS)
    src = fitting_model()
    n = 0
    for fmt in quarkref.FORMATS:
        for spec in ALL_SPECS:
            if (spec, fmt) in valid:
                continue
            res = q.quarkfs("inspect", "--spec", spec, "--format", fmt, src)
            assert res.returncode == 2, res
            assert "cannot be written in format '%s'" % fmt in res.stderr, res
            some_ok = next(s for s, f in PAIRS if f == fmt)
            assert some_ok in res.stderr, res
            n += 1
    assert n > 0


@q.test
def fitting_model_quantizes_every_pair():
    """The fitting model really exercises each layout: every candidate is quantized."""
    src = fitting_model()
    for spec, fmt in PAIRS:
        res = q.quarkfs("inspect", "--json", "--spec", spec, "--format", fmt, src)
        assert res.returncode == 0, res
        import json
        doc = json.loads(res.stdout)
        lin = [t for t in doc["tensors"] if t["name"].endswith("_proj.weight")]
        assert lin and all(t["quantized"] for t in lin), (spec, fmt,
            [(t["name"], t["reason"]) for t in lin if not t["quantized"]])


def load_script(folder, name):
    path = os.path.join(q.SOURCE_ROOT, "tests", folder, name + ".py")
    sp = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(sp)
    sp.loader.exec_module(mod)
    return mod


@q.test
def inspect_error_matches_an_independent_dequantizer():
    """`inspect --error` (C: quantize, dequantize, compare) gives the relative RMS error that
    tests/quality/quality.py's own numpy dequantizer finds in the exported view's bytes."""
    import json
    import numpy as np
    quality = load_script("quality", "quality")
    src = fitting_model()
    _, src_tensors = quality.read_model_dir(src)
    W_src = {n: quality.to_f32(t) for n, t in src_tensors.items() if t.dtype in ("BF16", "F16", "F32")}
    for spec, fmt in [("int8", "quark"), ("fp8-channel", "quark"), ("uint4-g32", "awq"),
                      ("int4-g64", "compressed-tensors"), ("mxfp4", "quark"), ("fp8-block", "fp8"),
                      ("int8-channel", "compressed-tensors")]:
        out = q.export(src, spec, fmt=fmt)
        W, info = quality.dequantize_view(out, src_tensors)
        names = [m + ".weight" for m in info["quantized"]]
        assert names, (spec, fmt)
        expect = quality.rel_rms(W, W_src, names)
        res = q.quarkfs("inspect", "--error", "--json", "--spec", spec, "--format", fmt, src)
        assert res.returncode == 0, res
        got = json.loads(res.stdout)["totals"]["error"]["rel_rms"]
        assert abs(got - expect) <= 1e-6 * expect, (spec, fmt, got, expect)
        worst = max(float(np.max(np.abs(W[n] - W_src[n]))) for n in names)
        got_max = json.loads(res.stdout)["totals"]["error"]["max_abs"]
        assert abs(got_max - worst) <= 1e-6 * worst, (spec, fmt, got_max, worst)


if __name__ == "__main__":
    q.main()
