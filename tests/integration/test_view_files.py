"""Complete view files: a quantized file written whole into the disk cache (files/) once every
tensor of it was produced, then served from there, by the kernel (FUSE passthrough) when the
build, the kernel and the daemon's privileges allow it, else by pread through the FUSE channel.

Expected bytes come from `quarkfs export --no-cache` of the same source (which never reads view
files) and, for the first test, from tests/oracle/quarkref.py. Which path served an open is read
from `quarkfs status --json` (view_files.opens_passthrough / opens_channel); whether this build
has passthrough is read from `quarkfs --version`. Run with QUARKFS=build-314/quarkfs (a build
against Debian's libfuse 3.14: meson setup build-314 -Dlibfuse=system) for the path without it.

The channel fallback of a build that has passthrough is checked twice: -o passthrough=off, and
a daemon without CAP_SYS_ADMIN (mount.fuse3 -o drop_privileges mounts first and starts quarkfs
with no capabilities on /dev/fd/N). Each test uses a cache directory of its own.
"""

import contextlib
import json
import mmap
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfstest as q  # noqa: E402

WAIT = 60.0   # seconds for the background writer to finish a small model's view files


def built_with_passthrough():
    res = q.run([q.QUARKFS, "--version"])
    assert res.returncode == 0, res
    return "passthrough: built in" in res.stdout


PT_BUILT = built_with_passthrough()
ROOT = os.geteuid() == 0


def expect_passthrough():
    """Passthrough is what a plain mount by this process should get (root has CAP_SYS_ADMIN)."""
    return PT_BUILT and ROOT


def status(m):
    res = q.quarkfs("status", m.path, "--json")
    assert res.returncode == 0, "quarkfs status failed: %r" % res
    return json.loads(res.stdout)


def view_stats(m):
    return status(m)["view_files"]


def wait_written(m, n):
    """Waits until n view files are present and none is being written; returns the stats."""
    deadline = time.monotonic() + WAIT
    while True:
        vf = view_stats(m)
        if vf["present"] >= n and vf["queued"] == 0:
            return vf
        if time.monotonic() > deadline:
            raise AssertionError("view files not written within %.0f s: %s\n%s"
                                 % (WAIT, vf, m.log()))
        time.sleep(0.1)


def model():
    return q.gen_model("demo", "bf16", "--shards", "2")


def cache_opts(cache, *more):
    return ["cache_dir=" + cache] + list(more)


def view_files_on_disk(cache):
    d = os.path.join(cache, "files")
    return sorted(f for f in os.listdir(d) if f.endswith(".view")) if os.path.isdir(d) else []


def materialize(src, cache, spec="int8"):
    """Mounts, reads every model file whole (which asks for its view file), waits for them."""
    with q.mounted(src, spec=spec, opts=cache_opts(cache)) as m:
        files = q.model_files(m.path)
        for f in files:
            q.read_bytes(m.p(f))
        vf = wait_written(m, len(files))
        assert vf["written"] == len(files), vf
    assert len(view_files_on_disk(cache)) == len(files), os.listdir(os.path.join(cache, "files"))
    return files


def check_files(m, exp, files, use_mmap=True):
    for f in files:
        want = q.read_bytes(os.path.join(exp, f))
        q.assert_bytes_equal(q.read_bytes(m.p(f)), want, "read of %s" % f)
        if use_mmap:
            with open(m.p(f), "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mm:
                q.assert_bytes_equal(mm[:], want, "mmap of %s" % f)


def check_served(vf, n_opens, what):
    if expect_passthrough():
        assert vf["served_by"] == "passthrough", "%s: %s" % (what, vf)
        assert vf["opens_passthrough"] >= n_opens and vf["opens_channel"] == 0, \
            "%s: expected %d passthrough opens: %s" % (what, n_opens, vf)
    else:
        assert vf["served_by"].startswith("channel"), "%s: %s" % (what, vf)
        assert vf["opens_channel"] >= n_opens and vf["opens_passthrough"] == 0, \
            "%s: expected %d channel opens of view files: %s" % (what, n_opens, vf)


@q.test
def remount_serves_view_files():
    """A second mount serves the view files: bytes equal export and quarkref, read and mmap."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    files = materialize(src, cache)
    with q.mounted(src, opts=cache_opts(cache)) as m:
        vf = view_stats(m)
        assert vf["present"] == len(files), vf
        check_files(m, exp, files)
        q.quarkref_check(src, m.path, "int8")
        vf = status(m)
        check_served(vf["view_files"], len(files), "remount")
        assert vf["tensors_quantized"] == 0, "a view file was assembled again: %s" % vf
        if expect_passthrough():   # the kernel maps the backing file under the view's name
            with open(m.p(files[0]), "rb") as fh, \
                    mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ):
                with open("/proc/self/maps") as mf:
                    maps = mf.read()
            assert m.p(files[0]) in maps, "the mapping does not show the view's path"


@q.test
def channel_when_passthrough_off():
    """-o passthrough=off: the view files are read by pread through the channel."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    files = materialize(src, cache)
    with q.mounted(src, opts=cache_opts(cache, "passthrough=off")) as m:
        check_files(m, exp, files)
        vf = view_stats(m)
        assert vf["served_by"].startswith("channel"), vf
        assert vf["opens_passthrough"] == 0 and vf["opens_channel"] >= len(files), vf


@contextlib.contextmanager
def mounted_without_caps(src, cache):
    """mount.fuse3 -o drop_privileges: it mounts, then runs quarkfs with no capabilities."""
    if not ROOT:
        raise q.Skip("mount.fuse3 -o drop_privileges needs root")
    if not shutil.which("mount.fuse3"):
        raise q.Skip("no mount.fuse3 (Debian package fuse3)")
    mnt = q.tmpdir("mnt")
    log = mnt + ".log"
    res = q.run(["mount.fuse3", "%s#%s" % (q.QUARKFS, src), mnt, "-o",
                 "drop_privileges,ro,cache_dir=%s,log_file=%s" % (cache, log)])
    m = q.Mount(mnt, None, log, [])
    q._active_mounts.append(m)
    try:
        assert res.returncode == 0 and q.is_mounted(mnt), "mount.fuse3 failed: %r" % res
        m.daemon_pids = q.pids_serving(mnt, also=(src,))
        yield m
    finally:
        m.close()


@q.test
def channel_without_cap_sys_admin():
    """A daemon without CAP_SYS_ADMIN cannot register backing files: channel, right bytes."""
    src, cache = q.copy_model(model()), q.tmpdir("cache")
    exp = q.export(src)
    files = materialize(src, cache)
    with mounted_without_caps(src, cache) as m:
        check_files(m, exp, files)
        vf = view_stats(m)
        assert vf["served_by"].startswith("channel"), vf
        if PT_BUILT:
            assert "CAP_SYS_ADMIN" in vf["served_by"], vf
        assert vf["opens_passthrough"] == 0 and vf["opens_channel"] >= len(files), vf


@q.test
def open_during_channel_open():
    """A file opened (and mapped) before its view file existed keeps its inode on the channel:
    a new open while it lives still reads right (from the view file, by pread); once it is
    closed, the next open gets passthrough."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    with q.mounted(src, opts=cache_opts(cache)) as m:
        f = q.model_files(m.path)[0]
        want = q.read_bytes(os.path.join(exp, f))
        first = open(m.p(f), "rb")
        try:
            mm = mmap.mmap(first.fileno(), 0, prot=mmap.PROT_READ)
            q.assert_bytes_equal(mm[:], want, "mapping made before the view file")
            wait_written(m, 1)
            before = view_stats(m)
            q.assert_bytes_equal(q.read_bytes(m.p(f)), want, "open while a channel open lives")
            q.assert_bytes_equal(mm[:], want, "the early mapping, after the view file")
            vf = view_stats(m)
            assert vf["opens_passthrough"] == before["opens_passthrough"], vf
            assert vf["opens_channel"] == before["opens_channel"] + 1, (before, vf)
            mm.close()
        finally:
            first.close()
        # The kernel releases asynchronously after close(): give the release a moment.
        deadline = time.monotonic() + 5
        while True:
            q.assert_bytes_equal(q.read_bytes(m.p(f)), want, "open after the channel opens")
            vf2 = view_stats(m)
            got_pt = vf2["opens_passthrough"] > vf["opens_passthrough"]
            if got_pt or not expect_passthrough() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if expect_passthrough():
            assert got_pt, "no passthrough open once the channel opens were closed: %s" % vf2
            # ... and while that passthrough open lives, another open follows it.
            with open(m.p(f), "rb") as a, mmap.mmap(a.fileno(), 0, prot=mmap.PROT_READ) as ma:
                q.assert_bytes_equal(q.read_bytes(m.p(f)), want, "open during a passthrough open")
                q.assert_bytes_equal(ma[:], want, "passthrough mapping")


@q.test
def source_changed_in_place():
    """A source rewritten in place (same size) after its view file was written: the next mount
    serves the new source's bytes (the key covers size, mtime and ctime)."""
    src, cache = q.copy_model(model()), q.tmpdir("cache")
    files = materialize(src, cache)
    path = os.path.join(src, files[0])
    ranges = q.tensor_ranges(path)
    name = next(k for k in sorted(ranges) if k.endswith("proj.weight"))
    b, e = ranges[name]
    with open(path, "r+b") as fh:   # bf16 values: swap the halves of the tensor's bytes
        fh.seek(b)
        data = fh.read(e - b)
        half = (len(data) // 4) * 2
        fh.seek(b)
        fh.write(data[half:] + data[:half])
    exp = q.export(src)
    with q.mounted(src, opts=cache_opts(cache)) as m:
        assert view_stats(m)["present"] == len(files) - 1, view_stats(m)
        check_files(m, exp, files)
        q.quarkref_check(src, m.path, "int8")


@q.test
def damaged_view_files_are_not_served():
    """View files truncated, overwritten in place, chowned or replaced by a symlink are never
    served: the bytes come from the engine, the bad file is removed (and written again)."""
    src, cache = q.copy_model(q.gen_model("demo", "bf16", "--shards", "4")), q.tmpdir("cache")
    exp = q.export(src)
    files = materialize(src, cache)
    d = os.path.join(cache, "files")
    views = [os.path.join(d, v) for v in view_files_on_disk(cache)]
    assert len(views) == 4, views
    os.truncate(views[0], os.path.getsize(views[0]) // 2)
    with open(views[1], "r+b") as fh:
        fh.seek(os.path.getsize(views[1]) - 100)
        fh.write(b"\xff" * 16)
    damaged = [views[0], views[1]]
    if ROOT:
        os.chown(views[2], 65534, 65534)
        damaged.append(views[2])
    decoy = os.path.join(q.tmpdir("decoy"), "x")
    shutil.copyfile(views[3], decoy)
    decoy_bytes = q.read_bytes(decoy)
    os.unlink(views[3])
    os.symlink(decoy, views[3])
    damaged.append(views[3])
    with q.mounted(src, opts=cache_opts(cache)) as m:
        check_files(m, exp, files)
        vf = view_stats(m)
        assert vf["rejected"] == len(damaged), vf
        assert os.path.exists(decoy), "the symlink's target was touched"
        wait_written(m, len(files))       # the whole-file reads above asked for new ones
        for v in damaged:
            st = os.lstat(v)
            assert not os.path.islink(v) and st.st_uid == os.geteuid(), "%s: %s" % (v, st)
        assert q.read_bytes(decoy) == decoy_bytes, "the symlink's target was changed"
    with q.mounted(src, opts=cache_opts(cache)) as m:
        assert view_stats(m)["present"] == len(files), view_stats(m)
        check_files(m, exp, files)


@q.test
def two_specs_share_a_cache():
    """Another spec on the same cache directory never gets the first spec's view files."""
    src, cache = model(), q.tmpdir("cache")
    files = materialize(src, cache, spec="int8")
    exp = q.export(src, spec="fp8")
    with q.mounted(src, spec="fp8", opts=cache_opts(cache)) as m:
        assert view_stats(m)["present"] == 0, view_stats(m)
        check_files(m, exp, files)


@q.test
def layer_rules_change_the_view_file():
    """--layer rules that give a view the same header but other bytes (uint4-g128 and int4-g128
    layouts have the same names, dtypes and shapes) never share a view file: the second mount
    serves its own export's bytes."""
    src, cache = model(), q.tmpdir("cache")
    rule = "model.layers.*.mlp.gate_proj=%s"
    with q.mounted(src, "int8", opts=cache_opts(cache), extra=["--layer", rule % "uint4-g128"]) as m:
        files = q.model_files(m.path)
        for f in files:
            q.read_bytes(m.p(f))
        assert wait_written(m, len(files))["written"] == len(files)
    exp = q.export(src, "int8", extra=["--layer", rule % "int4-g128"])
    with q.mounted(src, "int8", opts=cache_opts(cache), extra=["--layer", rule % "int4-g128"]) as m:
        assert view_stats(m)["present"] == 0, view_stats(m)
        check_files(m, exp, files)


@q.test
def warm_writes_view_files():
    """`quarkfs warm` returns once the view files are written; later opens use them."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    with q.mounted(src, opts=cache_opts(cache)) as m:
        res = q.quarkfs("warm", m.path)
        assert res.returncode == 0, res
        files = q.model_files(m.path)
        vf = view_stats(m)
        assert vf["present"] == len(files) and vf["queued"] == 0, vf
        check_files(m, exp, files, use_mmap=False)
        check_served(view_stats(m), len(files), "after warm")


@q.test
def view_files_off():
    """-o view_files=off: no files/ written, every file assembled."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    with q.mounted(src, opts=cache_opts(cache, "view_files=off")) as m:
        files = q.model_files(m.path)
        check_files(m, exp, files, use_mmap=False)
        time.sleep(0.5)
        vf = view_stats(m)
        assert vf["present"] == 0 and vf["written"] == 0, vf
        assert vf["served_by"] == "channel: -o view_files=off", vf
    assert view_files_on_disk(cache) == []


@q.test
def budget_bounds_view_files():
    """A cache budget too small for a view file with the entries: it is not written."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    with q.mounted(src, opts=cache_opts(cache, "cache_size=64K")) as m:
        files = q.model_files(m.path)
        check_files(m, exp, files, use_mmap=False)
        deadline = time.monotonic() + WAIT
        while view_stats(m)["queued"] and time.monotonic() < deadline:
            time.sleep(0.1)
        vf = view_stats(m)
        assert vf["written"] == 0 and vf["skipped"] == len(files), vf
    assert view_files_on_disk(cache) == []


def dir_bytes(cache):
    """(bytes of the files under cache, bytes of its directories): apparent sizes, as du -b."""
    files = dirs = 0
    for root, ds, fs in os.walk(cache):
        dirs += os.lstat(root).st_size
        files += sum(os.lstat(os.path.join(root, f)).st_size for f in fs)
    return files, dirs


@q.test
def one_budget_for_entries_and_view_files():
    """Entries, memos and view files share cache_size under one least-recently-used trim.

    A first mount with room for everything gives the sizes (everything: entries, memos and
    view files of int8). A fresh cache with cache_size = 70% of that (still room for the
    largest view file) is read whole by an int8 mount (entries, then view files), then by an
    int8-channel mount with view_files=off, whose entries come after the last view file. Every
    byte equals export; after each mount `du -sb` of the directory stays within cache_size
    plus the directories' own sizes (not counted: the stated slack). Lock files and recipe
    markers are empty: inodes, not bytes. A last int8 mount still reads every byte right."""
    src = model()
    exp = q.export(src)
    exp_ch = q.export(src, "int8-channel")
    roomy = q.tmpdir("cache")
    files = materialize(src, roomy)
    total, _ = dir_bytes(roomy)
    views = [os.path.getsize(os.path.join(roomy, "files", f)) for f in view_files_on_disk(roomy)]
    budget = int(total * 0.7)
    assert budget * 0.9 > max(views) + 4096, "model too small for the test: %d %s" % (
        total, views)
    cache = q.tmpdir("cache")

    def within(what):
        used, dirs = dir_bytes(cache)
        du = int(q.run(["du", "-sb", cache]).stdout.split()[0])
        print("  %s: cache_size %d, files %d, du -sb %d (directories %d); unbounded int8: %d"
              % (what, budget, used, du, dirs, total))
        assert used <= budget, "%s: %d bytes of files, cache_size %d" % (what, used, budget)
        assert du <= budget + dirs, "%s: du -sb %d > cache_size %d + directories %d" % (
            what, du, budget, dirs)

    with q.mounted(src, opts=cache_opts(cache, "cache_size=%d" % budget)) as m:
        check_files(m, exp, files, use_mmap=False)
        deadline = time.monotonic() + WAIT
        while view_stats(m)["queued"] and time.monotonic() < deadline:
            time.sleep(0.1)
        vf = view_stats(m)
        assert vf["queued"] == 0 and vf["written"] >= 1, vf
    within("int8 with view files")
    assert view_files_on_disk(cache), "no view file left to trim"
    with q.mounted(src, "int8-channel",
                   opts=cache_opts(cache, "cache_size=%d" % budget, "view_files=off")) as m:
        check_files(m, exp_ch, files, use_mmap=False)
    within("int8-channel entries after the view files")
    with q.mounted(src, opts=cache_opts(cache, "cache_size=%d" % budget)) as m:
        check_files(m, exp, files, use_mmap=False)


@contextlib.contextmanager
def read_only_bind(path):
    """A read-only bind mount of path (root: chmod does not stop root)."""
    if not ROOT:
        raise q.Skip("a read-only bind mount needs root")
    ro = q.tmpdir("ro")
    res = q.run(["mount", "--bind", path, ro])
    if res.returncode != 0:
        raise q.Skip("cannot bind-mount here: %s" % res.stderr.strip())
    try:
        res = q.run(["mount", "-o", "remount,bind,ro", ro])
        assert res.returncode == 0, res
        yield ro
    finally:
        q.run(["umount", ro])


@q.test
def read_only_cache():
    """A read-only cache directory holding view files (baked into an image) serves them; one
    holding none costs no warning about view files (the disk cache's own note says read-only)."""
    src, cache = model(), q.tmpdir("cache")
    exp = q.export(src)
    files = materialize(src, cache)
    empty = q.tmpdir("cache")
    os.chmod(empty, 0o700)
    os.makedirs(os.path.join(empty, "v1"), mode=0o700)
    for c, n in ((cache, len(files)), (empty, 0)):
        with read_only_bind(c) as ro, q.mounted(src, opts=cache_opts(ro)) as m:
            check_files(m, exp, files, use_mmap=False)
            vf = view_stats(m)
            assert vf["present"] == n, vf
            if n:
                check_served(vf, n, "read-only cache")
            bad = [l for l in m.log().splitlines()
                   if "warning" in l and ("view file" in l or "/files" in l)]
            assert not bad, m.log()


@q.test
def overlay_cache_falls_back():
    """A cache directory on overlayfs, whose files the kernel refuses as backing files (ELOOP
    at stacking depth 0): the mount knows it from the start and serves the view files through
    the channel, no warning, right bytes."""
    if not expect_passthrough():
        raise q.Skip("needs a passthrough build run as root")
    base = q.tmpdir("ovl")
    dirs = {k: os.path.join(base, k) for k in ("lower", "upper", "work", "merged")}
    for p in dirs.values():
        os.makedirs(p)
    res = q.run(["mount", "-t", "overlay", "overlay", "-o",
                 "lowerdir=%(lower)s,upperdir=%(upper)s,workdir=%(work)s" % dirs, dirs["merged"]])
    if res.returncode != 0:
        raise q.Skip("cannot mount overlayfs here: %s" % res.stderr.strip())
    try:
        os.chmod(dirs["merged"], 0o700)
        cache = os.path.join(dirs["merged"], "cache")
        src = model()
        exp = q.export(src)
        files = materialize(src, cache)
        with q.mounted(src, opts=cache_opts(cache)) as m:
            check_files(m, exp, files)
            vf = view_stats(m)
            assert vf["opens_passthrough"] == 0 and vf["opens_channel"] >= len(files), vf
            assert "overlayfs" in vf["served_by"], vf
            assert not [l for l in m.log().splitlines() if "warning" in l], m.log()
    finally:
        q.run(["umount", dirs["merged"]])


if __name__ == "__main__":
    q.main()
