"""Bit-exactness of the quantized view against the independent reference (tests/oracle/quarkref.py).

For every spec, on the real stories260K (bf16, f16, f32) and on generated `awkward` models
(bf16 and f16): the export and the mount both equal quarkref's expected view byte for byte,
and the mount equals the export file by file. Plus --exclude / --include / -o spec= cases and
a negative control proving the checker can fail.

Exit 77 (skip) only when $QUARKFS_SHARED/models is missing, after the synthetic part passed.
"""

import json
import os
import struct

import numpy as np

import qfstest as q


def check_model(src, spec, excludes=(), includes=(), foreground=False, opts=()):
    """export + quarkref --check; mount + quarkref --check; mount == export, file by file."""
    out = q.export(src, spec, excludes, includes)
    q.quarkref_check(src, out, spec, excludes, includes)
    mount_opts = list(opts)
    flags_spec = spec
    if any(o.startswith("spec=") for o in opts):
        flags_spec = None                 # the spec comes from -o spec=
    with q.mounted(src, flags_spec, excludes, includes, opts=mount_opts,
                   foreground=foreground) as m:
        q.quarkref_check(src, m.path, spec, excludes, includes)
        files = q.assert_trees_equal(m.path, out, "mount vs export")
    assert files, "empty view"
    assert q.model_files(out), "no model*.safetensors in the view of %s" % src
    return out


def add_case(label, src_fn, spec, **kw):
    def case():
        check_model(src_fn(), spec, **kw)
    q.add_test("%s/%s" % (label, spec), case)


# ---- synthetic models first (they run even without the shared models) ----

def awkward(dtype):
    return lambda: q.gen_model("awkward", dtype)


for _spec in q.SPECS:
    add_case("awkward-bf16", awkward("bf16"), _spec)
for _spec in q.SPECS:
    add_case("awkward-f16", awkward("f16"), _spec)
add_case("awkward-f32", awkward("f32"), "fp8-channel")
# the daemon mode is used above; one case in the foreground mode too
add_case("awkward-bf16-foreground", awkward("bf16"), "int8", foreground=True)


@q.test
def exclude_glob():
    """--exclude 'model.layers.0.*': layer 0 stays in the source dtype, the rest is quantized."""
    src = q.gen_model("awkward", "bf16")
    glob = "model.layers.0.*"
    out = check_model(src, "int8-channel", excludes=[glob])
    dtypes = {}
    for f in q.model_files(out):
        header, _, _ = q.st_header(os.path.join(out, f))
        dtypes.update({k: v["dtype"] for k, v in header.items()})
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == "BF16", dtypes
    assert "model.layers.0.self_attn.q_proj.weight_scale" not in dtypes
    assert dtypes["model.layers.1.self_attn.q_proj.weight"] == "I8", dtypes
    excl = json.load(open(os.path.join(out, "config.json")))["quantization_config"]["exclude"]
    assert "model.layers.0.self_attn.q_proj" in excl, excl
    assert "model.layers.1.self_attn.q_proj" not in excl, excl


@q.test
def include_glob():
    """--include '*.mlp.*' with fp8: only MLP projections are quantized."""
    src = q.gen_model("awkward", "bf16")
    out = check_model(src, "fp8", includes=["*.mlp.*"])
    dtypes = {}
    for f in q.model_files(out):
        header, _, _ = q.st_header(os.path.join(out, f))
        dtypes.update({k: v["dtype"] for k, v in header.items()})
    assert dtypes["model.layers.1.mlp.up_proj.weight"] == "F8_E4M3", dtypes
    assert dtypes["model.layers.1.self_attn.k_proj.weight"] == "BF16", dtypes


@q.test
def spec_as_mount_option():
    """-o spec=fp8-channel selects the spec like --spec does."""
    check_model(q.gen_model("awkward", "bf16"), "fp8-channel", opts=["spec=fp8-channel"])


@q.test
def relative_paths_daemon():
    """Relative SRC and MNT in daemon mode (the daemon changes its directory to /)."""
    src = q.gen_model("awkward", "bf16")
    mnt = q.tmpdir("mnt")
    base = os.path.dirname(mnt)
    rel_src, rel_mnt = os.path.relpath(src, base), os.path.relpath(mnt, base)
    res = q.run([q.QUARKFS, "--spec", "w8a8-int8", "-o", "cache=off", rel_src + "/", rel_mnt],
                cwd=base)
    try:
        assert res.returncode == 0 and q.is_mounted(mnt), res
        assert len(q.pids_serving(mnt, also=[rel_mnt])) == 1
        q.quarkref_check(src, mnt, "w8a8-int8")
    finally:
        pids = q.pids_serving(mnt, also=[rel_mnt])
        q.unmount(mnt)
        left = q.wait_gone(pids, q.EXIT_TIMEOUT)
        for pid in left:
            os.kill(pid, 9)
        os.rmdir(mnt)
    assert not left


@q.test
def checker_can_fail():
    """Negative control: an int8 view checked as int8-channel, and a flipped byte, must fail."""
    src = q.gen_model("awkward", "bf16")
    out = q.export(src, "int8")
    q.quarkref_check(src, out, "int8-channel", expect_ok=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    f = [os.path.join(out, x) for x in q.model_files(out)
         if name in q.tensor_ranges(os.path.join(out, x))][0]
    begin, end = q.tensor_ranges(f)[name]
    with open(f, "r+b") as fh:
        fh.seek((begin + end) // 2)
        b = fh.read(1)
        fh.seek((begin + end) // 2)
        fh.write(bytes([b[0] ^ 1]))
    q.quarkref_check(src, out, "int8", expect_ok=False)


# ---- hand-written sources: odd tensors, names, headers and configs ----

def to_bytes(values, dtype):
    """float32 values -> little-endian bytes of BF16 (nearest-even), F16 or F32."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


def write_safetensors(path, tensors, metadata=None, pad=True, reverse_data=False, indent=None):
    """tensors: [(name, dtype, shape, raw bytes)] in header order; data stored in that order
    (or reversed); header JSON as given (not sorted), optionally unpadded / indented."""
    header = {} if metadata is None else {"__metadata__": metadata}
    order = list(reversed(tensors)) if reverse_data else list(tensors)
    offsets, pos = {}, 0
    for name, dtype, shape, raw in order:
        offsets[name] = (pos, pos + len(raw))
        pos += len(raw)
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": list(offsets[name])}
    text = json.dumps(header, indent=indent, ensure_ascii=False).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, _, _, raw in order:
            f.write(raw)


def odd_model():
    """A source no generator writes: mixed dtypes in a file, scalars, empty and 1x1 tensors,
    names needing JSON escapes and UTF-8, extreme and subnormal values, integer tensors,
    an unpadded indented header, data stored out of header order, no __metadata__."""
    out = q.tmpdir("odd")
    rng = np.random.default_rng(11)

    def normal(shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    big = normal([24, 40])
    big[3, 7] = 3.0e4                      # one outlier dominating the per-tensor scale
    sub = np.full([8, 16], 1e-41, dtype=np.float32)       # f32 subnormals only
    sub[0, 0] = -3e-39
    huge = normal([8, 16]) * np.float32(1e36)
    equal = np.full([5, 9], -0.375, dtype=np.float32)
    mixed_rows = normal([6, 10])
    mixed_rows[2] = 0.0
    mixed_rows[4] = -0.0
    mixed_rows[5] = 1e-3
    t1 = [
        ("model.layers.0.mlp.gate_proj.weight", "BF16", [24, 40], to_bytes(big, "BF16")),
        ("model.layers.0.self_attn.q_proj.weight", "F16", [6, 10], to_bytes(mixed_rows, "F16")),
        ("model.layers.0.mlp.tiny.weight", "F32", [8, 16], to_bytes(sub, "F32")),
        ("model.layers.0.mlp.huge.weight", "F32", [8, 16], to_bytes(huge, "F32")),
        ("model.layers.0.mlp.equal.weight", "BF16", [5, 9], to_bytes(equal, "BF16")),
        ("model.layers.0.one.weight", "BF16", [1, 1], to_bytes(np.array([[-0.7]]), "BF16")),
        ("model.layers.0.empty.weight", "BF16", [0, 16], b""),
        ("model.scale", "F32", [], to_bytes(np.array(2.5), "F32")),
        ("model.layers.0.\u00f1_proj.weight", "BF16", [4, 8],
         to_bytes(normal([4, 8]), "BF16")),
        ('model.layers.0.q"x\\y/z.weight', "F16", [3, 5], to_bytes(normal([3, 5]), "F16")),
        ("model.layers.0.ln_1.weight", "BF16", [2, 8], to_bytes(normal([2, 8]), "BF16")),
        ("transformer.wte.weight", "BF16", [7, 8], to_bytes(normal([7, 8]), "BF16")),
        ("lm_head.weight", "BF16", [7, 8], to_bytes(normal([7, 8]), "BF16")),
        ("model.mask", "BOOL", [3], bytes([1, 0, 1])),
        ("model.codes", "U8", [2, 3], bytes(range(6))),
        ("model.ids", "I64", [2], struct.pack("<qq", -1, 2 ** 40)),
        ("model.layers.0.mlp.down_proj.bias", "BF16", [24], to_bytes(normal([24]), "BF16")),
    ]
    write_safetensors(os.path.join(out, "model-00001-of-00002.safetensors"), t1, metadata=None,
                      pad=False, reverse_data=True, indent=1)
    t2 = [
        ("model.layers.1.mlp.up_proj.weight", "F32", [16, 24], to_bytes(normal([16, 24]), "F32")),
        ("model.layers.1.mlp.zero.weight", "F16", [4, 4], to_bytes(np.zeros([4, 4]), "F16")),
    ]
    write_safetensors(os.path.join(out, "model-00002-of-00002.safetensors"), t2,
                      metadata={"format": "pt", "note": "caf\u00e9 \u2603"})
    weight_map = {n: "model-00001-of-00002.safetensors" for n, _, _, _ in t1}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n, _, _, _ in t2})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0, "origin": "hand"}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "config.json"), "w", newline="") as f:
        f.write('{\r\n\t"model_type": "llama",\r\n\t"rms_norm_eps": 1e-05,\r\n'
                '\t"x": {"nested": [1, 2.50, 1E-7]}\r\n}\r\n')
    return out


def single_file_model():
    """model.safetensors only, no index, config '{}', header without __metadata__."""
    out = q.tmpdir("single")
    rng = np.random.default_rng(3)
    w = (rng.standard_normal([12, 20]) * 0.1).astype(np.float32)
    write_safetensors(os.path.join(out, "model.safetensors"),
                      [("model.layers.0.mlp.up_proj.weight", "BF16", [12, 20], to_bytes(w, "BF16")),
                       ("model.norm.weight", "BF16", [20], to_bytes(np.ones(20), "BF16"))])
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write("{}")
    return out


_odd = {}


def cached(key, fn):
    if key not in _odd:
        _odd[key] = fn()
    return _odd[key]


for _spec in q.SPECS:
    add_case("odd", lambda: cached("odd", odd_model), _spec)
    add_case("single-file", lambda: cached("single", single_file_model), _spec)
for _spec in ("int8", "fp8-channel"):
    add_case("demo-collision", lambda: q.gen_model("demo", "bf16", "--collision"), _spec)


# ---- the real model (skipped, not failed, when the shared copy is absent) ----

for _dtype in ("bf16", "f16", "f32"):
    for _spec in q.SPECS:
        add_case("stories260K-%s" % _dtype, (lambda d: lambda: q.shared_model(d))(_dtype), _spec)


if __name__ == "__main__":
    q.main()
