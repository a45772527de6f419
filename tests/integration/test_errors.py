"""Errors: read-only view, broken sources, NaN weights, refused sources, bad command lines,
and clean process exit on unmount.

Every damaged source is a private copy of a generated model (the cached models and the shared
models are never written). Expected bytes of the healthy files come from tests/oracle/quarkref.py.
"""

import errno
import json
import os
import signal
import struct
import time

import malformed
import qfstest as q

VALID_SPECS = q.SPECS


def awkward_copy():
    return q.copy_model(q.gen_model("awkward", "bf16"))


def file_of(src, tensor):
    """The model*.safetensors file of src that holds tensor."""
    for f in q.model_files(src):
        if tensor in q.tensor_ranges(os.path.join(src, f)):
            return f
    raise AssertionError("%s not found in %s" % (tensor, src))


def snapshot(root):
    """{relpath: (size, mtime_ns, sha256)} of every file (to prove nothing was written)."""
    out = {}
    for rel in q.tree_files(root):
        p = os.path.join(root, rel)
        st = os.stat(p)
        out[rel] = (st.st_size, st.st_mtime_ns, q.sha256(p))
    return out


# ---------------------------------------------------------------------------------------------
# read-only
# ---------------------------------------------------------------------------------------------

def check_writes_fail(m):
    p = m.p
    ro = errno.EROFS
    f, d = p("config.json"), p("extra")
    shard = p(q.model_files(m.path)[0])
    for path in (f, shard, p("extra", "notes.txt")):
        q.expect_oserror(ro, os.open, path, os.O_WRONLY, what="open(O_WRONLY) " + path)
        q.expect_oserror(ro, os.open, path, os.O_RDWR, what="open(O_RDWR) " + path)
        q.expect_oserror(ro, os.open, path, os.O_RDONLY | os.O_TRUNC, what="open(O_TRUNC) " + path)
        q.expect_oserror(ro, os.open, path, os.O_WRONLY | os.O_APPEND, what="open(O_APPEND) " + path)
        q.expect_oserror(ro, os.truncate, path, 0, what="truncate " + path)
        q.expect_oserror(ro, os.chmod, path, 0o666, what="chmod " + path)
        q.expect_oserror(ro, os.utime, path, (1, 1), what="utime " + path)
        q.expect_oserror(ro, os.utime, path, None, what="utime(now) " + path)
        q.expect_oserror(ro, os.unlink, path, what="unlink " + path)
        q.expect_oserror(ro, os.rename, path, path + ".x", what="rename " + path)
        q.expect_oserror(ro, os.setxattr, path, "user.q", b"1", what="setxattr " + path)
    q.expect_oserror(ro, os.open, p("new-file"), os.O_WRONLY | os.O_CREAT, 0o644, what="create")
    q.expect_oserror(ro, os.open, p("extra", "new"), os.O_RDONLY | os.O_CREAT, 0o644,
                     what="create in a subdirectory")
    q.expect_oserror(ro, os.mkdir, p("newdir"), what="mkdir")
    q.expect_oserror(ro, os.rmdir, d, what="rmdir")
    q.expect_oserror(ro, os.rename, d, p("extra2"), what="rename dir")
    q.expect_oserror(ro, os.chmod, d, 0o777, what="chmod dir")
    q.expect_oserror(ro, os.symlink, "config.json", p("link"), what="symlink")
    q.expect_oserror(ro, os.link, f, p("hardlink"), what="link")
    q.expect_oserror(ro, os.truncate, shard, 10, what="truncate shard")
    with open(f, "rb") as fh:                     # ftruncate on a read-only fd
        q.expect_oserror(errno.EINVAL, os.ftruncate, fh.fileno(), 0, what="ftruncate(O_RDONLY)")
    assert not os.access(f, os.W_OK), "access(W_OK) says the view is writable"
    assert os.access(f, os.R_OK)
    assert os.statvfs(m.path).f_flag & os.ST_RDONLY, "statvfs does not say read-only"
    assert not os.path.exists(p("new-file")) and not os.path.exists(p("newdir"))


@q.test
def writes_fail_with_erofs():
    src = awkward_copy()
    before = snapshot(src)
    with q.mounted(src, "int8") as m:
        check_writes_fail(m)
        q.quarkref_check(src, m.path, "int8")      # the view is intact afterwards
    assert snapshot(src) == before, "the source changed"


@q.test
def writes_fail_even_with_o_rw():
    """`-o rw` must not make the view writable."""
    src = awkward_copy()
    before = snapshot(src)
    with q.mounted(src, "fp8", opts=["rw"]) as m:
        check_writes_fail(m)
    assert snapshot(src) == before, "the source changed"


# ---------------------------------------------------------------------------------------------
# broken shards
# ---------------------------------------------------------------------------------------------

def corrupt_header_length(path):
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))


def truncate_half(path):
    os.truncate(path, os.path.getsize(path) // 2)


def garbage_header(path):
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\x00not json{{{")


def header_past_eof(path):
    """A header length slightly longer than the file."""
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", os.path.getsize(path)))


def rewrite_header(path, fn):
    """Replace a shard's header by fn(header dict) (JSON, padded); the data stays as it was."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header = fn(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def _first_weight(header):
    return sorted(k for k in header if k.endswith("_proj.weight"))[0]


def _wrong_size(h):
    k = _first_weight(h)
    h[k]["shape"] = [h[k]["shape"][0] + 1, h[k]["shape"][1]]
    return h


def _unknown_dtype(h):
    h[_first_weight(h)]["dtype"] = "F7_E3M3"
    return h


def _negative_shape(h):
    k = _first_weight(h)
    h[k]["shape"] = [-h[k]["shape"][0], h[k]["shape"][1]]
    return h


def _offsets_not_pair(h):
    h[_first_weight(h)]["data_offsets"] = [0]
    return h


def _not_an_object(h):
    return [1, 2, 3]


def _hole(path):
    """8 bytes of padding between two tensors (safetensors requires them back to back)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
        data = f.read()
    ks = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    cut = h[ks[1]]["data_offsets"][0]
    for k in ks[1:]:
        a, b = h[k]["data_offsets"]
        h[k]["data_offsets"] = [a + 8, b + 8]
    data = data[:cut] + b"\0" * 8 + data[cut:]
    text = json.dumps(h, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def _zero_length_file(path):
    os.truncate(path, 0)


def _five_bytes(path):
    os.truncate(path, 5)


HEADER_DAMAGE = [
    ("wrong_size", lambda p: rewrite_header(p, _wrong_size)),
    ("overlapping_tensors", lambda p: rewrite_header(p, malformed.overlap_first_two)),
    ("unknown_dtype", lambda p: rewrite_header(p, _unknown_dtype)),
    ("negative_shape", lambda p: rewrite_header(p, _negative_shape)),
    ("offsets_not_a_pair", lambda p: rewrite_header(p, _offsets_not_pair)),
    ("header_not_an_object", lambda p: rewrite_header(p, _not_an_object)),
    ("hole_between_tensors", _hole),
    ("zero_length_file", _zero_length_file),
    ("five_byte_file", _five_bytes),
]


def broken_shard(shard_index, damage, foreground=True, spec="int8"):
    orig = q.gen_model("awkward", "bf16")
    ref = q.quarkref_write(orig, spec)             # expected view of the intact model
    ref_index = json.load(open(os.path.join(ref, "model.safetensors.index.json")))
    src = q.copy_model(orig)
    shards = q.model_files(src)
    bad = shards[shard_index]
    damage(os.path.join(src, bad))
    with q.mounted(src, spec, foreground=foreground) as m:
        if foreground:
            log = m.log()
        else:
            log = None
        # the broken shard: EIO on read (open may already fail with EIO)
        try:
            with open(m.p(bad), "rb") as f:
                f.read()
        except OSError as exc:
            assert exc.errno == errno.EIO, "reading %s: expected EIO, got %s" % (bad, exc)
        else:
            raise AssertionError("reading the broken shard %s succeeded" % bad)
        # the same again (the error is not a one-off)
        q.expect_oserror(errno.EIO, lambda: open(m.p(bad), "rb").read(), what="second read")
        # the healthy shards: byte for byte the reference's
        for s in shards:
            if s != bad:
                q.assert_bytes_equal(q.read_bytes(m.p(s)), q.read_bytes(os.path.join(ref, s)), s)
        # passthrough files
        for rel in ("generation_config.json", "tokenizer.json", "extra/notes.txt", "blobs/tok-0001"):
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(src, rel)), rel)
        # config.json: the source plus a quantization_config
        cfg = json.loads(q.read_bytes(m.p("config.json")))
        qc = cfg.pop("quantization_config")
        assert cfg == json.loads(q.read_bytes(os.path.join(src, "config.json")))
        assert qc.get("quant_method") == "quark", qc
        # the index still maps the healthy shards' tensors as the reference does
        index = json.loads(q.read_bytes(m.p("model.safetensors.index.json")))
        for s in shards:
            if s != bad:
                got = sorted(k for k, v in index["weight_map"].items() if v == s)
                exp = sorted(k for k, v in ref_index["weight_map"].items() if v == s)
                assert got == exp, "index entries of %s: %s, expected %s" % (s, got, exp)
        # the directory listing still shows the broken shard
        assert sorted(os.listdir(m.path)) == sorted(os.listdir(src))
        if foreground:
            log = m.log()
    if not foreground:
        return
    assert bad in log, "the log does not name the broken file %s:\n%s" % (bad, log)
    return log


def problem_named(log, bad, words):
    lines = [l for l in log.splitlines() if bad in l]
    assert any(any(w in l.lower() for w in words) for l in lines), \
        "no line naming %s says what is wrong (%s):\n%s" % (bad, "/".join(words), log)


@q.test
def broken_shard_header_length():
    log = broken_shard(1, corrupt_header_length)
    problem_named(log, q.model_files(q.gen_model("awkward", "bf16"))[1], ["header"])


@q.test
def broken_shard_truncated():
    log = broken_shard(2, truncate_half)
    problem_named(log, q.model_files(q.gen_model("awkward", "bf16"))[2],
                  ["truncat", "short", "covered", "size", "bytes", "end of file", "eof"])


@q.test
def broken_shard_garbage_header():
    log = broken_shard(0, garbage_header, spec="fp8")
    problem_named(log, q.model_files(q.gen_model("awkward", "bf16"))[0], ["header", "json"])


@q.test
def broken_shard_header_past_eof():
    log = broken_shard(1, header_past_eof, spec="int8-channel")
    problem_named(log, q.model_files(q.gen_model("awkward", "bf16"))[1], ["header"])


for _i, (_label, _damage) in enumerate(HEADER_DAMAGE):
    q.add_test("broken_shard_" + _label,
               lambda i=_i, d=_damage: broken_shard(i % 3, d, spec=q.SPECS[i % len(q.SPECS)]))


@q.test
def broken_shard_daemon_mode():
    """Daemon mode: the mount comes up (exit 0) and the warning goes to the starter's stderr."""
    orig = q.gen_model("awkward", "bf16")
    src = q.copy_model(orig)
    bad = q.model_files(src)[1]
    truncate_half(os.path.join(src, bad))
    mnt = q.tmpdir("mnt")
    res = q.quarkfs("--spec", "int8", src, mnt)
    try:
        assert res.returncode == 0, "daemon start with a broken shard: %r" % res
        assert q.is_mounted(mnt), "not mounted"
        assert bad in res.stderr, "stderr does not name %s: %r" % (bad, res)
        q.expect_oserror(errno.EIO, lambda: open(os.path.join(mnt, bad), "rb").read(),
                         what="read broken shard")
        assert q.read_bytes(os.path.join(mnt, "extra", "notes.txt")) == \
            q.read_bytes(os.path.join(src, "extra", "notes.txt"))
    finally:
        pids = q.pids_serving(mnt)
        q.unmount(mnt)
        left = q.wait_gone(pids, q.EXIT_TIMEOUT)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        os.rmdir(mnt)
    assert not left, "daemon %s still running after unmount" % left


@q.test
def source_truncated_under_the_mount():
    """Source files cut short after the mount: EIO for them, no crash, the rest is served."""
    orig = q.gen_model("awkward", "bf16")
    ref = q.quarkref_write(orig, "int8")
    src = q.copy_model(orig)
    shards = q.model_files(src)
    with q.mounted(src, "int8") as m:
        sizes = {rel: os.path.getsize(m.p(rel)) for rel in q.tree_files(m.path)}
        os.truncate(os.path.join(src, shards[0]), 4096)
        os.truncate(os.path.join(src, "extra", "notes.txt"), 10)
        q.expect_oserror(errno.EIO, lambda: open(m.p(shards[0]), "rb").read(), what="shard")
        q.expect_oserror(errno.EIO, lambda: open(m.p("extra", "notes.txt"), "rb").read(),
                         what="passthrough file")
        for s in shards[1:]:
            q.assert_bytes_equal(q.read_bytes(m.p(s)), q.read_bytes(os.path.join(ref, s)), s)
        q.assert_bytes_equal(q.read_bytes(m.p("tokenizer.json")),
                             q.read_bytes(os.path.join(orig, "tokenizer.json")), "tokenizer.json")
        for rel, size in sizes.items():                     # sizes do not move
            assert os.path.getsize(m.p(rel)) == size, rel
        assert m.proc.poll() is None, "quarkfs died:\n" + m.log()
        log = m.log()
    assert shards[0] in log and "notes.txt" in log, log


# ---------------------------------------------------------------------------------------------
# NaN / Inf weights
# ---------------------------------------------------------------------------------------------

NAN_BITS = {"BF16": b"\xc0\x7f", "F16": b"\x00\x7e", "F32": b"\x00\x00\xc0\x7f"}
INF_BITS = {"BF16": b"\x80\x7f", "F16": b"\x00\x7c", "F32": b"\x00\x00\x80\x7f"}


def patch_value(src, tensor, element, bits_by_dtype):
    """Overwrite one element of a tensor in the source copy; returns the file name."""
    rel = file_of(src, tensor)
    path = os.path.join(src, rel)
    header, _, start = q.st_header(path)
    info = header[tensor]
    bits = bits_by_dtype[info["dtype"]]
    with open(path, "r+b") as f:
        f.seek(start + info["data_offsets"][0] + element * len(bits))
        f.write(bits)
    return rel


def nan_case(dtype, tensor, bits, spec):
    src = q.copy_model(q.gen_model("demo", dtype))
    bad = patch_value(src, tensor, 37, bits)
    others = [f for f in q.model_files(src) if f != bad]
    assert others
    with q.mounted(src, spec) as m:
        q.expect_oserror(errno.EIO, lambda: open(m.p(bad), "rb").read(), what="read " + bad)
        # the other files, checked by the reference (which skips the NaN file's bytes)
        res = q.quarkref_check(src, m.path, spec)
        n_files = len(q.tree_files(src))
        assert ("%d files checked" % (n_files - 1)) in res.stdout, res
        log = m.log()
    module = tensor[: -len(".weight")]
    assert any(bad in l and module in l for l in log.splitlines()), \
        "no log line names %s and %s:\n%s" % (bad, tensor, log)
    # --exclude of that module makes the whole view readable (the tensor passes through)
    with q.mounted(src, spec, excludes=[module]) as m:
        q.quarkref_check(src, m.path, spec, excludes=[module])
        res_bytes = q.read_bytes(m.p(bad))
        assert len(res_bytes) == os.stat(m.p(bad)).st_size


@q.test
def nan_weight_bf16_gives_eio():
    nan_case("bf16", "model.layers.1.self_attn.o_proj.weight", NAN_BITS, "int8")


@q.test
def inf_weight_f16_gives_eio():
    nan_case("f16", "model.layers.0.mlp.gate_proj.weight", INF_BITS, "fp8-channel")


@q.test
def nan_weight_f32_gives_eio():
    nan_case("f32", "model.layers.1.mlp.down_proj.weight", NAN_BITS, "w8a8-int8")


@q.test
def nan_weight_export_fails():
    """export of a source with a NaN weight fails with exit 1 naming the tensor."""
    src = q.copy_model(q.gen_model("demo", "bf16"))
    tensor = "model.layers.0.self_attn.q_proj.weight"
    patch_value(src, tensor, 3, NAN_BITS)
    out = q.tmppath("export")
    res = q.quarkfs("export", "--spec", "int8", src, out)
    assert res.returncode == 1, res
    assert tensor in res.stderr, res
    assert not os.path.exists(out), "a failed export left %s behind" % out


@q.test
def check_finite_leaves_nan_tensor_unquantized():
    """--check-finite: the NaN tensor passes through, listed in the config's exclude, and the
    whole view equals the reference's view with that module excluded (doc/FORMAT.md §4.8)."""
    src = q.copy_model(q.gen_model("demo", "bf16"))
    tensor = "model.layers.1.mlp.gate_proj.weight"
    module = tensor[: -len(".weight")]
    patch_value(src, tensor, 11, INF_BITS)
    with q.mounted(src, "fp8", opts=["check_finite"]) as m:
        q.quarkref_check(src, m.path, "fp8", excludes=[module])
        assert module in json.load(open(m.p("config.json")))["quantization_config"]["exclude"]
        log = m.log()
    assert tensor in log and "NaN or Inf" in log, log
    out = q.tmppath("export")
    res = q.quarkfs("export", "--check-finite", "--spec", "fp8", src, out)
    assert res.returncode == 0, res
    q.quarkref_check(src, out, "fp8", excludes=[module])


# ---------------------------------------------------------------------------------------------
# refused sources and bad command lines
# ---------------------------------------------------------------------------------------------

def assert_refused(args, rc, words, what, mnt=None):
    res = q.quarkfs(*args, timeout=60)
    try:
        assert res.returncode == rc, "%s: expected exit %d: %r" % (what, rc, res)
        for w in words:
            assert w in res.stderr, "%s: stderr does not mention %r: %r" % (what, w, res)
    finally:
        if mnt is not None and q.is_mounted(mnt):
            q.unmount(mnt)
            raise AssertionError("%s: %s got mounted" % (what, mnt))
    return res


@q.test
def already_quantized_source_refused():
    src = awkward_copy()
    path = os.path.join(src, "config.json")
    cfg = json.load(open(path))
    cfg["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    mnt = q.tmpdir("mnt")
    for args in (["--spec", "int8", src, mnt], ["-f", "--spec", "int8", src, mnt]):
        res = assert_refused(args, 1, ["config.json"], "mount of a quantized source", mnt)
        assert "quantiz" in res.stderr.lower(), res
    out = q.tmppath("export")
    res = assert_refused(["export", "--spec", "fp8", src, out], 1, ["config.json"],
                         "export of a quantized source")
    assert "quantiz" in res.stderr.lower(), res
    assert not os.path.exists(out) or not os.listdir(out), "export left files in %s" % out
    assert_refused(["inspect", src], 1, ["config.json"], "inspect of a quantized source")
    os.rmdir(mnt)


@q.test
def bad_config_json_refused():
    """config.json that is not JSON, or not an object: the view is refused (exit 1)."""
    for text in ('{"model_type": "llama",\n', "[1, 2]\n", ""):
        src = awkward_copy()
        with open(os.path.join(src, "config.json"), "w") as f:
            f.write(text)
        mnt = q.tmpdir("mnt")
        assert_refused([src, mnt], 1, ["config.json"], "mount with config.json %r" % text, mnt)
        out = q.tmppath("export")
        assert_refused(["export", src, out], 1, ["config.json"], "export, config.json %r" % text)
        os.rmdir(mnt)


@q.test
def broken_index_gives_eio_only_there():
    """An index that is not JSON: EIO on the index, every other file still served."""
    orig = q.gen_model("awkward", "bf16")
    ref = q.quarkref_write(orig, "fp8")
    src = q.copy_model(orig)
    with open(os.path.join(src, "model.safetensors.index.json"), "w") as f:
        f.write('{"metadata": {"total_size": 1}, "weight_map": {')
    with q.mounted(src, "fp8") as m:
        q.expect_oserror(errno.EIO, lambda: open(m.p("model.safetensors.index.json"), "rb").read(),
                         what="read the broken index")
        for rel in q.tree_files(ref):
            if rel != "model.safetensors.index.json":
                q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(ref, rel)), rel)
        log = m.log()
    assert "model.safetensors.index.json" in log, log


@q.test
def missing_src():
    src = os.path.join(q.TMP, "no-such-model-dir")
    mnt = q.tmpdir("mnt")
    for args in ([src, mnt], ["-f", src, mnt]):
        assert_refused(args, 1, [src], "mount of a missing SRC", mnt)
    out = q.tmppath("export")
    assert_refused(["export", src, out], 1, [src], "export of a missing SRC")
    assert not os.path.exists(out), "export created %s" % out
    assert_refused(["inspect", src], 1, [src], "inspect of a missing SRC")
    os.rmdir(mnt)


@q.test
def src_is_a_file():
    src = os.path.join(awkward_copy(), "config.json")
    mnt = q.tmpdir("mnt")
    for args in ([src, mnt], ["-f", src, mnt]):
        assert_refused(args, 1, [src], "mount of a file as SRC", mnt)
    out = q.tmppath("export")
    assert_refused(["export", src, out], 1, [src], "export of a file as SRC")
    assert not os.path.exists(out), "export created %s" % out
    os.rmdir(mnt)


@q.test
def bad_spec():
    src = q.gen_model("awkward", "bf16")
    mnt = q.tmpdir("mnt")
    out = q.tmppath("export")
    for args in (["--spec", "int9", src, mnt], ["-f", "--spec", "int9", src, mnt],
                 ["-o", "spec=int9", src, mnt], ["--spec=int9", src, mnt],
                 ["export", "--spec", "int9", src, out], ["inspect", "--spec", "int9", src]):
        assert_refused(args, 2, ["int9"] + VALID_SPECS, " ".join(args), mnt)
    assert not os.path.exists(out)
    os.rmdir(mnt)


@q.test
def bad_command_lines():
    src = q.gen_model("awkward", "bf16")
    mnt = q.tmpdir("mnt")
    assert_refused([src], 2, [], "no mountpoint")
    assert_refused([], 2, [], "no arguments")
    assert_refused(["--spec"], 2, ["--spec"], "--spec without a value")
    assert_refused(["-o", "cache_mem=lots", src, mnt], 2, ["lots"], "bad cache_mem", mnt)
    assert_refused(["--threads", "0", src, mnt], 2, ["--threads"], "bad --threads", mnt)
    assert_refused(["--format", "nope", src, mnt], 2, ["nope"], "bad --format", mnt)
    # a mountpoint that does not exist: refused (not mounted anywhere), naming the path
    missing = os.path.join(q.TMP, "no-such-mountpoint")
    res = q.quarkfs(src, missing)
    assert res.returncode != 0, res
    assert missing in res.stderr, res
    assert not os.path.exists(missing)
    # export into a non-empty directory: refused, nothing overwritten
    out = q.tmpdir("export")
    with open(os.path.join(out, "keep.txt"), "w") as f:
        f.write("mine")
    assert_refused(["export", src, out], 1, [out], "export into a non-empty directory")
    assert os.listdir(out) == ["keep.txt"] and q.read_bytes(os.path.join(out, "keep.txt")) == b"mine"
    os.rmdir(mnt)


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------

@q.test
def foreground_exits_zero_on_unmount():
    src = q.gen_model("awkward", "bf16")
    m = q.start_mount(src, "int8", foreground=True)
    try:
        pid = m.proc.pid
        assert q.pids_serving(m.path) == [pid], q.pids_serving(m.path)
        q.read_bytes(m.p(q.model_files(src)[0]))          # some work first
        assert q.run(["fusermount3", "-u", m.path]).returncode == 0
        t = time.monotonic()
        rc = m.proc.wait(timeout=5)
        assert rc == 0, "quarkfs -f exited with %d after the unmount:\n%s" % (rc, m.log())
        assert time.monotonic() - t < 5
        assert not q.pid_alive(pid) and q.pids_serving(m.path) == []
        assert not q.is_mounted(m.path)
    finally:
        m.close()


@q.test
def daemon_exits_on_unmount():
    src = q.gen_model("awkward", "bf16")
    m = q.start_mount(src, "fp8", foreground=False)
    try:
        pids = q.pids_serving(m.path)
        assert len(pids) == 1, "expected one daemon for %s, found %s" % (m.path, pids)
        q.quarkref_check(src, m.path, "fp8")
        assert q.run(["fusermount3", "-u", m.path]).returncode == 0
        left = q.wait_gone(pids, 5)
        assert not left, "daemon %s still running 5 s after the unmount" % left
    finally:
        m.close()


@q.test
def sigterm_unmounts():
    """SIGTERM to quarkfs -f: the mount goes away and the process exits."""
    src = q.gen_model("awkward", "bf16")
    m = q.start_mount(src, "int8", foreground=True)
    try:
        os.kill(m.proc.pid, signal.SIGTERM)
        m.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while q.is_mounted(m.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not q.is_mounted(m.path), "still mounted after SIGTERM"
    finally:
        m.close()


if __name__ == "__main__":
    q.main()
