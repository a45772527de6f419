"""Passthrough and metadata of the view: every file that is not a model*.safetensors passes
through byte for byte (subdirectories and symlinks followed), modes lose their write bits,
inode numbers and times are stable, listings equal the source's, config.json keeps the source
text and gains quantization_config, and the index maps exactly the view's tensors.
"""

import json
import os
import random
import stat
import struct
import subprocess

import qfstest as q

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_rich = {}


def rich_source(dir_link=True):
    """A copy of the awkward model plus nested dirs, odd names and modes, and symlinks
    (with dir_link, also a symlink to a sibling directory)."""
    if dir_link in _rich:
        return _rich[dir_link]
    src = q.copy_model(q.gen_model("awkward", "bf16"))
    rng = random.Random(5)
    os.makedirs(os.path.join(src, "sub", "dir", "deeper"))
    with open(os.path.join(src, "sub", "dir", "deep.bin"), "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(300 * 1024 + 17)))
    with open(os.path.join(src, "sub", "dir", "deeper", "x.json"), "w") as f:
        f.write('{"a": 1e-05}\n')
    open(os.path.join(src, "empty.txt"), "w").close()
    with open(os.path.join(src, "run.sh"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(src, "run.sh"), 0o755)
    with open(os.path.join(src, "private.txt"), "w") as f:
        f.write("secret\n")
    os.chmod(os.path.join(src, "private.txt"), 0o600)
    with open(os.path.join(src, "na\u00efve name \u2603.txt"), "w", encoding="utf-8") as f:
        f.write("unicode name\n")
    with open(os.path.join(src, "tokenizer_config.json"), "w") as f:
        f.write('{"model_max_length": 2048, "tokenizer_class": "LlamaTokenizer"}')
    # HF cache style: an absolute symlink and a relative one into blobs/, a symlinked directory
    blob = os.path.join(src, "blobs", "3f2a9c")
    with open(blob, "w") as f:
        f.write('{"bos_token": "<s>", "eos_token": "</s>"}\n')
    os.symlink(blob, os.path.join(src, "special_tokens_map.json"))
    os.symlink(os.path.join("..", "..", "blobs", "3f2a9c"), os.path.join(src, "sub", "dir", "tok.json"))
    if dir_link:
        os.symlink("extra", os.path.join(src, "linked_extra"))
    # a broken symlink cannot be followed: it must not appear in the view
    os.symlink("does-not-exist", os.path.join(src, "dangling.json"))
    # the index gains extra metadata that must be kept
    ipath = os.path.join(src, "model.safetensors.index.json")
    index = json.load(open(ipath))
    index["metadata"]["custom_key"] = "kept"
    with open(ipath, "w") as f:
        json.dump(index, f, indent=2)
    _rich[dir_link] = src
    return src


def source_names(d):
    """Names in a source directory whose symlinks resolve (what the view lists)."""
    return sorted(n for n in os.listdir(d) if os.path.exists(os.path.join(d, n)))


def is_view_model_file(rel):
    return "/" not in rel and rel.startswith("model") and rel.endswith(".safetensors")


def passthrough_files(src):
    return [rel for rel in q.tree_files(src)
            if not is_view_model_file(rel) and rel not in ("config.json", "model.safetensors.index.json")]


# ---------------------------------------------------------------------------------------------

@q.test
def reference_check_of_rich_source():
    """The independent reference agrees with the whole view of the rich source, its symlinked
    sibling directory included."""
    src = rich_source(dir_link=True)
    with q.mounted(src, "int8-channel") as m:
        q.quarkref_check(src, m.path, "int8-channel")


@q.test
def passthrough_bytes():
    src = rich_source()
    with q.mounted(src, "fp8") as m:
        files = passthrough_files(src)
        assert "sub/dir/deep.bin" in files and "special_tokens_map.json" in files
        assert "linked_extra/notes.txt" in files and "sub/dir/tok.json" in files
        for rel in files:
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(src, rel)), rel)
            assert os.path.getsize(m.p(rel)) == os.path.getsize(os.path.join(src, rel)), rel
        assert not os.path.lexists(m.p("dangling.json")), "a dangling symlink shows in the view"


@q.test
def symlinks_show_as_regular_files():
    src = rich_source()
    with q.mounted(src, "int8") as m:
        for rel in ("tokenizer.json", "special_tokens_map.json", "sub/dir/tok.json"):
            assert os.path.islink(os.path.join(src, rel))
            st = os.lstat(m.p(rel))
            assert stat.S_ISREG(st.st_mode), "%s: mode %o is not a regular file" % (rel, st.st_mode)
            assert not os.path.islink(m.p(rel))
            target = os.path.realpath(os.path.join(src, rel))
            assert st.st_size == os.path.getsize(target)
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(target), rel)
        st = os.lstat(m.p("linked_extra"))
        assert stat.S_ISDIR(st.st_mode), "a symlinked directory is not shown as a directory"
        for root, dirs, files in os.walk(m.path):
            for n in dirs + files:
                assert not os.path.islink(os.path.join(root, n)), "symlink in the view: %s" % n
        with os.scandir(m.path) as it:
            for e in it:
                assert not e.is_symlink(), e.name
                assert e.is_dir() == os.path.isdir(os.path.join(src, e.name)), e.name


@q.test
def hf_cache_layout():
    """snapshots/<rev>/* -> ../../blobs/<sha>: every file a symlink, model shards included."""
    orig = q.gen_model("demo", "bf16")
    hub = q.tmpdir("hub")
    blobs = os.path.join(hub, "blobs")
    snap = os.path.join(hub, "snapshots", "0123abcd")
    os.makedirs(blobs)
    os.makedirs(snap)
    for rel in q.tree_files(orig):
        sha = q.sha256(os.path.join(orig, rel))
        with open(os.path.join(blobs, sha), "wb") as f:
            f.write(q.read_bytes(os.path.join(orig, rel)))
        os.symlink(os.path.join("..", "..", "blobs", sha), os.path.join(snap, rel))
    out = q.export(orig, "fp8-channel")
    with q.mounted(snap, "fp8-channel") as m:
        q.quarkref_check(snap, m.path, "fp8-channel")
        q.assert_trees_equal(m.path, out, "mount of the HF-cache snapshot vs export of the plain dir")
        for rel in os.listdir(m.path):
            assert stat.S_ISREG(os.lstat(m.p(rel)).st_mode), rel


@q.test
def modes_without_write_bits():
    src = rich_source()
    with q.mounted(src, "int8") as m:
        checked = 0
        for rel in [""] + q.tree_dirs(src) + q.tree_files(src):
            s = os.stat(os.path.join(src, rel))
            v = os.stat(m.p(rel)) if rel else os.stat(m.path)
            assert stat.S_IFMT(v.st_mode) == stat.S_IFMT(s.st_mode), rel
            want = stat.S_IMODE(s.st_mode) & ~0o222
            assert stat.S_IMODE(v.st_mode) == want, "%s: mode %o, expected %o (source %o)" % (
                rel or "/", stat.S_IMODE(v.st_mode), want, stat.S_IMODE(s.st_mode))
            assert (v.st_uid, v.st_gid) == (s.st_uid, s.st_gid), rel
            checked += 1
        assert stat.S_IMODE(os.stat(m.p("run.sh")).st_mode) == 0o555
        assert stat.S_IMODE(os.stat(m.p("private.txt")).st_mode) == 0o400
        assert checked > 20
        r = subprocess.run([m.p("run.sh")], stdout=subprocess.PIPE, timeout=30)
        assert r.returncode == 0 and r.stdout == b"hi\n", "the executable bit does not work"


@q.test
def stable_inodes_and_times():
    src = rich_source()
    with q.mounted(src, "w8a8-int8") as m:
        rels = [""] + q.tree_dirs(m.path) + q.tree_files(m.path)

        def snap():
            out = {}
            for rel in rels:
                st = os.stat(m.p(rel)) if rel else os.stat(m.path)
                out[rel] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_size,
                            st.st_uid, st.st_gid, st.st_nlink)
            return out
        first = snap()
        inos = [v[0] for v in first.values()]
        assert len(set(inos)) == len(inos), "two paths share an inode number"
        for rel in q.tree_files(m.path):                 # read everything, list everything
            q.read_bytes(m.p(rel))
        for _ in range(3):
            again = snap()
            for rel in rels:
                assert again[rel] == first[rel], "%s: stat changed: %s -> %s" % (
                    rel, first[rel], again[rel])
        # readdir's inode numbers are the stat ones
        for d in [""] + q.tree_dirs(m.path):
            with os.scandir(m.p(d) if d else m.path) as it:
                for e in it:
                    rel = os.path.join(d, e.name) if d else e.name
                    assert e.inode() == first[rel][0], "%s: readdir ino %d, stat ino %d" % (
                        rel, e.inode(), first[rel][0])
        # passthrough files keep the source's modification time
        for rel in passthrough_files(src):
            assert first[rel][1] == os.stat(os.path.join(src, rel)).st_mtime_ns, rel
    # a second mount of the same source gives the same inode numbers to the same paths
    with q.mounted(src, "w8a8-int8") as m2:
        for rel in rels:
            st = os.stat(m2.p(rel)) if rel else os.stat(m2.path)
            assert st.st_ino == first[rel][0], "%s: inode differs between mounts" % rel


@q.test
def listings_equal_source():
    src = rich_source()
    with q.mounted(src, "fp8-channel") as m:
        dirs = [""] + q.tree_dirs(src)
        for d in dirs:
            want = source_names(os.path.join(src, d))
            got = sorted(os.listdir(m.p(d) if d else m.path))
            assert got == want, "%s: listing %s, expected %s" % (d or "/", got, want)
            # `ls -A` (readdir through coreutils) agrees, twice in a row
            for _ in range(2):
                r = subprocess.run(["ls", "-1A", "--quoting-style=literal", m.p(d) if d else m.path],
                                   stdout=subprocess.PIPE, timeout=30, env=dict(os.environ, LC_ALL="C"))
                assert r.returncode == 0
                assert sorted(r.stdout.decode().splitlines()) == want, (d, r.stdout)
        r = subprocess.run(["ls", "-la", m.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        assert r.returncode == 0 and not r.stderr, r
        assert not os.path.exists(m.p("no-such-file"))


def assert_config_view(src_text, view_text, spec):
    src_obj = json.loads(src_text)
    view_obj = json.loads(view_text)
    assert "quantization_config" in view_obj, "no quantization_config"
    qc = view_obj.pop("quantization_config")
    assert view_obj == src_obj, "config.json changed beyond quantization_config"
    assert list(view_obj) == list(src_obj), "key order changed"
    assert qc["quant_method"] == "quark", qc
    assert qc["global_quant_config"]["weight"]["dtype"] == ("fp8_e4m3" if "fp8" in spec else "int8")
    assert "lm_head" in qc["exclude"], qc["exclude"]
    prefix = src_text[:src_text.rfind("}")].rstrip()
    assert view_text.startswith(prefix), "the source text is not kept verbatim"


@q.test
def config_keeps_source_text():
    src = rich_source()
    for spec in ("int8", "fp8-channel"):
        with q.mounted(src, spec) as m:
            assert_config_view(q.read_bytes(os.path.join(src, "config.json")).decode(),
                               q.read_bytes(m.p("config.json")).decode(), spec)


@q.test
def config_keeps_source_text_stories():
    src = q.shared_model("bf16")
    with q.mounted(src, "w8a8-int8") as m:
        src_text = q.read_bytes(os.path.join(src, "config.json")).decode()
        view_text = q.read_bytes(m.p("config.json")).decode()
        assert_config_view(src_text, view_text, "w8a8-int8")
        assert '"rms_norm_eps": 1e-05' in src_text and '"rms_norm_eps": 1e-05' in view_text
        for rel in ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json"):
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(src, rel)), rel)
        assert sorted(os.listdir(m.path)) == sorted(os.listdir(src))


def check_index(src, view):
    """weight_map == the tensors of the view's shards; total_size == their bytes; sorted."""
    text = q.read_bytes(os.path.join(view, "model.safetensors.index.json")).decode()
    pairs = json.loads(text, object_pairs_hook=lambda p: p)
    index = json.loads(text)
    wm_keys = [k for k, _ in dict(pairs)["weight_map"]]
    assert wm_keys == sorted(wm_keys), "weight_map keys are not sorted"
    expected, total = {}, 0
    for f in q.model_files(view):
        header, meta, start = q.st_header(os.path.join(view, f))
        for name, info in header.items():
            assert name not in expected, "%s in two shards" % name
            expected[name] = f
            b, e = info["data_offsets"]
            total += e - b
    assert index["weight_map"] == expected, "weight_map differs from the shards: missing %s, " \
        "extra %s" % (sorted(set(expected) - set(index["weight_map"]))[:5],
                      sorted(set(index["weight_map"]) - set(expected))[:5])
    assert index["metadata"]["total_size"] == total, (index["metadata"], total)
    src_index = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    for k, v in src_index["metadata"].items():
        if k != "total_size":
            assert index["metadata"].get(k) == v, "index metadata %s not kept" % k
    assert set(index) == set(src_index), "top-level keys of the index changed"
    return expected


@q.test
def index_covers_view_tensors():
    src = rich_source()
    for spec in q.SPECS:
        with q.mounted(src, spec) as m:
            wm = check_index(src, m.path)
            kind = "F8_E4M3" if "fp8" in spec else "I8"
            qnames = [n for n in wm if n.endswith(".weight_scale")]
            assert qnames, "%s: nothing quantized" % spec
            # every quantized module has its weight in the same shard as its scale
            for n in qnames:
                w = n[: -len("_scale")]
                assert wm[w] == wm[n], n
                h, _, _ = q.st_header(m.p(wm[w]))
                assert h[w]["dtype"] == kind, (w, h[w]["dtype"])
    assert "custom_key" in json.load(open(os.path.join(src, "model.safetensors.index.json")))["metadata"]


@q.test
def safetensors_layout():
    """View shards: u64 header length, JSON starting with '{', __metadata__ first with
    format pt, padded with spaces to 8, tensors back to back from 0, no holes, exact size."""
    src = rich_source()
    with q.mounted(src, "int8") as m:
        for f in q.model_files(m.path):
            raw = q.read_bytes(m.p(f))
            (n,) = struct.unpack("<Q", raw[:8])
            text = raw[8:8 + n]
            assert text[:1] == b"{" and n % 8 == 0, f
            assert text.rstrip(b" ")[-1:] == b"}" and set(text[len(text.rstrip(b" ")):]) <= {32}
            pairs = json.loads(text, object_pairs_hook=lambda p: p)
            assert pairs[0][0] == "__metadata__", "%s: __metadata__ is not first" % f
            meta = dict(pairs[0][1])
            assert meta.get("format") == "pt", meta
            src_meta = q.st_header(os.path.join(src, f))[1]
            for k, v in (src_meta or {}).items():
                assert meta.get(k) == v, "%s: source metadata %s not kept" % (f, k)
            spans = []
            for name, info in pairs[1:]:
                info = dict(info)
                b, e = info["data_offsets"]
                count = 1
                for d in info["shape"]:
                    count *= d
                assert e - b == count * DTYPE_BYTES[info["dtype"]], (f, name, info)
                spans.append((b, e))
            spans.sort()
            pos = 0
            for b, e in spans:
                assert b == pos, "%s: hole or overlap at %d" % (f, pos)
                pos = e
            assert len(raw) == 8 + n + pos == os.path.getsize(m.p(f)), f


@q.test
def symlink_loop_does_not_hang():
    """A directory symlink pointing at an ancestor: the mount comes up and stays correct."""
    src = q.copy_model(q.gen_model("awkward", "bf16"))
    os.symlink("..", os.path.join(src, "extra", "up"))
    os.symlink(".", os.path.join(src, "self"))
    with q.mounted(src, "int8") as m:
        q.quarkref_check(src, m.path, "int8")
        names = os.listdir(m.path)
        assert "config.json" in names and "extra" in names, names
        q.assert_bytes_equal(q.read_bytes(m.p("extra", "notes.txt")),
                             q.read_bytes(os.path.join(src, "extra", "notes.txt")), "notes.txt")
        depth = 0
        for root, dirs, files in os.walk(m.path, followlinks=True):
            depth = max(depth, root.count(os.sep))
        assert depth - m.path.count(os.sep) < 40, "the view nests without end"


@q.test
def many_files_deep_and_empty_dirs():
    """3000 files with long names in one directory (readdir continues over many replies),
    a 20-level nested directory and an empty one."""
    src = q.copy_model(q.gen_model("awkward", "bf16"))
    many = os.path.join(src, "many")
    os.makedirs(many)
    names = []
    for i in range(3000):
        name = "file-%05d-%s.txt" % (i, "x" * (i % 150))
        names.append(name)
        with open(os.path.join(many, name), "w") as f:
            f.write("%d\n" % i)
    deep = os.path.join(src, *["level%02d" % i for i in range(20)])
    os.makedirs(deep)
    with open(os.path.join(deep, "bottom.txt"), "w") as f:
        f.write("bottom\n")
    os.makedirs(os.path.join(src, "emptydir"))
    with q.mounted(src, "int8") as m:
        for _ in range(2):
            got = os.listdir(m.p("many"))
            assert len(got) == len(set(got)) == 3000, "%d entries (%d unique)" % (len(got), len(set(got)))
            assert sorted(got) == sorted(names)
        with os.scandir(m.p("many")) as it:
            inos = [e.inode() for e in it]
        assert len(set(inos)) == 3000
        for i in random.Random(8).sample(range(3000), 50):
            assert q.read_bytes(m.p("many", names[i])) == b"%d\n" % i
        assert os.listdir(m.p("emptydir")) == []
        assert stat.S_ISDIR(os.stat(m.p("emptydir")).st_mode)
        rel = os.path.relpath(os.path.join(deep, "bottom.txt"), src)
        assert q.read_bytes(m.p(rel)) == b"bottom\n"
        q.quarkref_check(src, m.path, "int8")


@q.test
def without_config_or_model_files():
    """No config.json: the rest of the view is still right. No model files: refused (nothing to
    quantize), and with -o allow_empty all passes through except config.json, which still
    gains its quantization_config."""
    src = q.copy_model(q.gen_model("awkward", "bf16"))
    os.unlink(os.path.join(src, "config.json"))
    with q.mounted(src, "int8") as m:
        assert "config.json" not in os.listdir(m.path)
        q.quarkref_check(src, m.path, "int8")
        log = m.log()
    assert "config.json" in log, "no warning about the missing config.json:\n" + log
    src = q.tmpdir("nomodel")
    orig = q.gen_model("awkward", "bf16")
    for rel in ("config.json", "generation_config.json", "extra/notes.txt"):
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        with open(os.path.join(src, rel), "wb") as f:
            f.write(q.read_bytes(os.path.join(orig, rel)))
    mnt = q.tmpdir("mnt")
    res = q.quarkfs("-o", "cache=off", "--spec", "fp8", src, mnt)
    assert res.returncode == 1 and "nothing to quantize" in res.stderr, res
    assert not q.is_mounted(mnt), res
    os.rmdir(mnt)
    with q.mounted(src, "fp8", opts=["allow_empty"]) as m:
        q.quarkref_check(src, m.path, "fp8")
        assert sorted(os.listdir(m.path)) == sorted(os.listdir(src))


if __name__ == "__main__":
    q.main(skip_exit=False)      # only the stories260K case can skip; the rest stands
