"""Several views in one mount (--specs S[:F],...): MNT/<view>/ each the complete view of one
spec/format pair, byte for byte what `quarkfs export` writes for it and what quarkref expects;
the listing root; one engine for all (one memory budget: status counts every view's tensors);
status per view; warm covers every view; one disk cache and no complete view files (those
serve one view); the -o spelling; the refusals.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfstest as q  # noqa: E402

# (spec, format, directory) written out by hand from README: the directory is the spec, or
# spec-format for a format other than quark.
VIEWS = [("int8", None, "int8"), ("fp8", None, "fp8"), ("fp8-block", "fp8", "fp8-block-fp8"),
         ("uint4-g128", "awq", "uint4-g128-awq")]
SPECS = ",".join(s + (":" + f if f else "") for s, f, _ in VIEWS)


def fitting():
    """Linear dims multiples of 128 (fp8-block and g128 quantize here), two shards + index."""
    return q.gen_model("demo", "bf16", "--hidden", "256", "--intermediate", "512", "--layers",
                       "2", "--heads", "4", "--kv-heads", "2", "--vocab", "512")


def same_tree(a, b):
    fa, fb = sorted(q.tree_files(a)), sorted(q.tree_files(b))
    assert fa == fb, (fa, fb)
    for rel in fa:
        x, y = q.read_bytes(os.path.join(a, rel)), q.read_bytes(os.path.join(b, rel))
        assert x == y, "%s differs from byte %d" % (rel, q.first_diff(x, y))


def status(mnt):
    res = q.quarkfs("status", mnt, "--json")
    assert res.returncode == 0, res
    return json.loads(res.stdout)


@q.test
def every_view_is_its_export():
    """Each MNT/<view>/ equals `quarkfs export` of its pair and quarkref's view."""
    src = fitting()
    with q.mounted(src, None, extra=["--specs", SPECS]) as m:
        assert sorted(os.listdir(m.path)) == sorted(d for _, _, d in VIEWS)
        for spec, fmt, d in VIEWS:
            view = m.p(d)
            same_tree(view, q.export(src, spec, fmt=fmt))
            q.quarkref_check(src, view, spec, fmt=fmt)
        # the listing root: a directory; a view's ".." is it
        st_top, st_view = os.stat(m.path), os.stat(m.p("int8"))
        assert st_top.st_ino != st_view.st_ino
        assert os.stat(os.path.join(m.p("int8"), "..")).st_ino == st_top.st_ino
        assert not os.access(m.path, os.W_OK) or os.geteuid() == 0


@q.test
def one_engine_status_per_view():
    """Reading one view counts in that view's bytes_served only; tensors_quantized (one engine)
    counts its weights; the other views served nothing; warm then computes the other view's."""
    src = fitting()
    with q.mounted(src, None, extra=["--specs", "int8,fp8"]) as m:
        n = 0
        for rel in q.tree_files(m.p("int8")):
            n += len(q.read_bytes(os.path.join(m.p("int8"), rel)))
        st = status(m.path)
        views = {v["name"]: v for v in st["views"]}
        assert sorted(views) == ["fp8", "int8"], st["views"]
        assert views["int8"]["bytes_served"] == n, (views, n)
        assert views["fp8"]["bytes_served"] == 0
        assert views["int8"]["spec"] == "int8" and views["fp8"]["spec"] == "fp8"
        assert st["spec"] == "int8,fp8" and st["format"] == "quark,quark", st
        # 14 Linear weights per view in the fitting model (2 layers x 7): by hand
        assert st["tensors_quantized"] == 14, st
        assert st["memory_bytes"] <= st["cache_mem"]
        res = q.quarkfs("warm", m.path)
        assert res.returncode == 0, res
        st = status(m.path)
        # warm queues what no cache holds: the fp8 view's 14 weights (int8's are in memory)
        assert st["warm"]["tensors"] == 14 and st["warm"]["tensors_done"] == 14, st["warm"]
        assert st["tensors_quantized"] == 28, st


@q.test
def broken_shard_in_every_view():
    """The views share one scan: a shard whose header is broken answers EIO in every view,
    the other shard is served in both, and status lists the file once per view."""
    good = fitting()
    src = q.copy_model(good)
    bad = os.path.join(src, "model-00002-of-00002.safetensors")
    with open(bad, "r+b") as f:
        f.write((2 ** 40).to_bytes(8, "little"))      # a header length past the end
    with q.mounted(src, None, extra=["--specs", "int8,fp8"]) as m:
        for view in ("int8", "fp8"):
            try:
                q.read_bytes(os.path.join(m.p(view), "model-00002-of-00002.safetensors"))
            except OSError as exc:
                assert exc.errno == 5, exc                # EIO
            else:
                raise AssertionError("%s: the broken shard was read" % view)
            same = q.export(good, view)      # a view file depends on its source file only
            rel = "model-00001-of-00002.safetensors"
            assert q.read_bytes(os.path.join(m.p(view), rel)) == q.read_bytes(
                os.path.join(same, rel))
        files = sorted(b["file"] for b in status(m.path)["broken_files"])
        assert files == ["fp8/model-00002-of-00002.safetensors",
                         "int8/model-00002-of-00002.safetensors"], files


@q.test
def one_disk_cache():
    """The views write one disk cache, each tensor under its own recipe: after reading both
    views of a --specs mount, single-spec mounts on the same directory quantize nothing and
    serve the same bytes; each view's weights were written once (28 entries for 2 x 14)."""
    src = fitting()
    cache = q.tmpdir("cache")
    with q.mounted(src, None, extra=["--specs", "int8,fp8"], opts=["cache_dir=" + cache]) as m:
        for view in ("int8", "fp8"):
            for rel in q.tree_files(m.p(view)):
                q.read_bytes(os.path.join(m.p(view), rel))
        st = q.status_settled(m.path)     # entries are written in the background
    assert st["tensors_quantized"] == 28 and st["disk_writes"] == 28, st
    for spec in ("int8", "fp8"):
        with q.mounted(src, spec, opts=["cache_dir=" + cache]) as m:
            same_tree(m.path, q.export(src, spec))
            st = status(m.path)
        assert st["tensors_quantized"] == 0 and st["disk_hits"] >= 14, (spec, st)


@q.test
def no_view_files_with_several_views():
    """Complete view files serve one view: a --specs mount with a disk cache writes none and
    serves every open by assembling (status and one log line say why), with the right bytes;
    a single-spec mount on the same cache then writes its view files as usual."""
    src = fitting()
    cache = q.tmpdir("cache")
    with q.mounted(src, None, extra=["--specs", "int8,fp8"], opts=["cache_dir=" + cache]) as m:
        for view in ("int8", "fp8"):
            same_tree(m.p(view), q.export(src, view))
        st = q.status_settled(m.path)
        log = m.log()
    vf = st["view_files"]
    assert vf["present"] == 0 and vf["queued"] == 0, vf
    assert vf["opens_passthrough"] == 0 and vf["opens_channel"] == 0, vf
    assert "several views" in vf["served_by"], vf
    lines = [l for l in log.splitlines() if "view files" in l and "several views" in l]
    assert len(lines) == 1, log
    files = os.path.join(cache, "files")
    assert not os.path.isdir(files) or not [f for f in os.listdir(files)
                                            if f.endswith(".view")], os.listdir(files)
    with q.mounted(src, "int8", opts=["cache_dir=" + cache]) as m:
        for rel in q.tree_files(m.path):
            q.read_bytes(os.path.join(m.path, rel))
        deadline = time.monotonic() + 60
        while status(m.path)["view_files"]["present"] < 2:    # the fitting model's two shards
            assert time.monotonic() < deadline, (status(m.path), m.log())
            time.sleep(0.1)
        same_tree(m.path, q.export(src, "int8"))


@q.test
def o_spelling():
    """-o specs=int8+fp8-block:fp8 is --specs int8,fp8-block:fp8."""
    src = fitting()
    with q.mounted(src, None, opts=["specs=int8+fp8-block:fp8"]) as m:
        assert sorted(os.listdir(m.path)) == ["fp8-block-fp8", "int8"]
        same_tree(m.p("fp8-block-fp8"), q.export(src, "fp8-block", fmt="fp8"))


@q.test
def refusals():
    """A view given twice, an invalid pair, an empty item: exit 2 naming it; --specs on
    export: an option of another command (exit 2)."""
    src = fitting()
    for specs, words in (("int8,int8", "given twice"), ("int8,fp8-block", "fp8-block"),
                         ("int8,,fp8", "an empty view"), ("int8,fp8:awq", "awq")):
        mnt = q.tmpdir("mnt")
        res = q.run([q.QUARKFS, "--specs", specs, src, mnt])
        if res.returncode == 0:
            q.run(["umount", mnt])
        assert res.returncode == 2 and words in res.stderr, (specs, res)
    res = q.quarkfs("export", "--specs", "int8,fp8", src, q.tmppath("out"))
    assert res.returncode == 2 and "--specs" in res.stderr, res


if __name__ == "__main__":
    q.main()
