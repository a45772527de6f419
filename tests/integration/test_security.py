"""Security of the view: read-only mount options, other users (allow_other only on request,
then default_permissions, so the source's permission bits hold), nothing outside SRC
reachable (symlink policy, `..`), the Hugging Face cache layout, `-o symlinks=all`, and a
source changed under the mount into a symlink.

Another user is uid/gid 65534 through `setpriv --reuid=65534 --regid=65534 --clear-groups`
running a small Python probe (stat, read or list each path; prints the outcome as JSON). The
run's temporary root is made traversable (0755) for it; every file a test wants private is
created with its own mode.
"""

import errno
import json
import hashlib
import os
import shutil
import stat

import qfstest as q

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
STRICT = os.environ.get("QUARKFS_TEST_STRICT") == "1"

PROBE = r"""
import errno, hashlib, json, os, sys
out = {}
for op, path in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        if op == "stat":
            os.stat(path)
            r = "ok"
        elif op == "read":
            with open(path, "rb") as f:
                r = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        elif op == "list":
            r = sorted(os.listdir(path))
        elif op == "write":
            os.close(os.open(path, os.O_WRONLY))
            r = "ok"
    except OSError as exc:
        r = errno.errorcode.get(exc.errno, str(exc.errno))
    out[op + " " + path] = r
print(json.dumps(out))
"""


def known_bug(msg):
    if STRICT:
        raise AssertionError("KNOWN BUG: " + msg)
    raise q.Skip("KNOWN BUG (QUARKFS_TEST_STRICT=1 makes it fail): " + msg)


def as_nobody(*ops):
    """ops: (op, path) pairs; returns {"op path": outcome} as uid 65534 sees it."""
    os.chmod(q.TMP, 0o755)
    args = [a for pair in ops for a in pair]
    res = q.run(AS_NOBODY + [q.PY, "-c", PROBE] + args, timeout=60)
    assert res.returncode == 0, "probe as uid %d failed: %r" % (NOBODY, res)
    return json.loads(res.stdout)


def sha(path):
    return "sha256:" + q.sha256(path)


def mount_options(mnt):
    """The options of mnt in /proc/mounts (a set), and its filesystem type."""
    real = os.path.realpath(mnt)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mp, fstype, opts = line.split()[:4]
            if mp.encode().decode("unicode_escape") == real:
                return set(opts.split(",")), fstype
    raise AssertionError("%s is not in /proc/mounts" % mnt)


def warnings_naming(log, path):
    return [l for l in log.splitlines() if "warning" in l and path in l]


# ---------------------------------------------------------------------------------------------
# mount options and other users
# ---------------------------------------------------------------------------------------------

@q.test
def mount_is_ro_nosuid_nodev_default_permissions():
    """Every mount is ro, nosuid, nodev with default_permissions, whatever -o says; allow_other
    appears only when asked for."""
    src = q.gen_model("demo", "bf16")
    for opts, other in (((), False), (("rw",), False), (("allow_other",), True),
                        (("rw", "allow_other", "exec"), True)):
        with q.mounted(src, "int8", opts=opts, foreground=False) as m:
            got, fstype = mount_options(m.path)
        assert fstype == "fuse.quarkfs", fstype
        for want in ("ro", "nosuid", "nodev", "default_permissions"):
            assert want in got, "-o %s: %s missing from %s" % (",".join(opts), want, sorted(got))
        assert "rw" not in got, "-o %s: mounted rw: %s" % (",".join(opts), sorted(got))
        assert ("allow_other" in got) == other, "-o %s: %s" % (",".join(opts), sorted(got))


def private_source():
    """A demo model copy with files of every access class (root-owned):
    public.txt 0644, secret.txt 0600, group.txt 0640, private/ 0700 (holding a 0644 file),
    the second shard 0600 (a quantized file), exec.sh 0755."""
    src = q.copy_model(q.gen_model("demo", "bf16"))
    files = {"public.txt": 0o644, "secret.txt": 0o600, "group.txt": 0o640, "exec.sh": 0o755}
    for name, mode in files.items():
        with open(os.path.join(src, name), "w") as f:
            f.write("%s: mode %o\n" % (name, mode))
        os.chmod(os.path.join(src, name), mode)
    os.mkdir(os.path.join(src, "private"))
    with open(os.path.join(src, "private", "inner.txt"), "w") as f:
        f.write("inside a 0700 directory\n")
    os.chmod(os.path.join(src, "private"), 0o700)
    os.chmod(os.path.join(src, q.model_files(src)[1]), 0o600)
    os.chmod(src, 0o755)
    return src


@q.test
def other_user_without_allow_other():
    """Without allow_other another user cannot even stat the mount (EACCES), let alone read a
    0644 file in it; root (the mounter) can."""
    src = private_source()
    with q.mounted(src, "int8") as m:
        got = as_nobody(("stat", m.path), ("list", m.path), ("read", m.p("public.txt")),
                        ("stat", m.p("config.json")))
        assert os.stat(m.path) and q.read_bytes(m.p("public.txt"))
    for k, v in got.items():
        assert v == "EACCES", "uid %d without allow_other: %s -> %s" % (NOBODY, k, v)


@q.test
def allow_other_keeps_source_permissions():
    """-o allow_other: uid 65534 reads 0644 files (same bytes as root sees) and lists the
    view, but gets EACCES for root's 0600 and 0640 files, a 0600 shard, and a 0700
    directory; writes fail (EROFS/EACCES)."""
    src = private_source()
    shard2 = q.model_files(src)[1]
    with q.mounted(src, "int8", opts=["allow_other"]) as m:
        got = as_nobody(("list", m.path), ("read", m.p("public.txt")), ("read", m.p("exec.sh")),
                        ("read", m.p("config.json")), ("read", m.p(q.model_files(src)[0])),
                        ("read", m.p("secret.txt")), ("read", m.p("group.txt")),
                        ("read", m.p(shard2)), ("list", m.p("private")),
                        ("read", m.p("private", "inner.txt")), ("write", m.p("public.txt")))
        expect_ok = {"public.txt": sha(m.p("public.txt")), "exec.sh": sha(m.p("exec.sh")),
                     "config.json": sha(m.p("config.json")),
                     q.model_files(src)[0]: sha(m.p(q.model_files(src)[0]))}
        listing = sorted(os.listdir(m.path))
        modes = {n: stat.S_IMODE(os.stat(m.p(n)).st_mode) for n in ("secret.txt", "group.txt",
                                                                     shard2, "private")}
    assert got["list " + m.path] == listing, got
    for name, digest in expect_ok.items():
        assert got["read " + m.p(name)] == digest, "%s as uid %d: %s" % (
            name, NOBODY, got["read " + m.p(name)])
    for p in ("secret.txt", "group.txt", shard2, "private/inner.txt"):
        assert got["read " + m.p(p)] == "EACCES", "%s as uid %d: %s" % (p, NOBODY,
                                                                        got["read " + m.p(p)])
    assert got["list " + m.p("private")] == "EACCES", got
    assert got["write " + m.p("public.txt")] in ("EROFS", "EACCES"), got
    assert modes == {"secret.txt": 0o400, "group.txt": 0o440, shard2: 0o400, "private": 0o500}, \
        modes


# ---------------------------------------------------------------------------------------------
# nothing outside SRC
# ---------------------------------------------------------------------------------------------

def linked_source():
    """top/src: a demo model plus symlinks of every kind; top/outside/: a directory outside
    SRC; top/secret.txt: a root-only file next to SRC. Returns (top, src)."""
    top = q.tmpdir("links")
    src = os.path.join(top, "src")
    shutil.copytree(q.gen_model("demo", "bf16"), src)
    outside = os.path.join(top, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "o.txt"), "w") as f:
        f.write("outside SRC\n")
    with open(os.path.join(top, "secret.txt"), "w") as f:
        f.write("root-only file next to SRC\n")
    os.chmod(os.path.join(top, "secret.txt"), 0o600)
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "sub", "notes.txt"), "w") as f:
        f.write("inside\n")
    links = {
        # outside: left out
        "passwd": "/etc/passwd",
        "outside_dir": outside,
        "outside_rel": "../outside/o.txt",
        "up": "..",
        "secret": "../secret.txt",
        "chain": "inside_to_outside",                 # -> a link that leaves SRC
        "inside_to_outside": "sub/../../secret.txt",
        "sub/escape": "../../secret.txt",
        # inside: followed
        "inside_rel": "sub/notes.txt",
        "inside_abs": os.path.join(src, "sub", "notes.txt"),
        "inside_dotdot": "sub/../generation_config.json",
        "sub/back": "../generation_config.json",
        "subdir_link": "sub",
    }
    for name, target in links.items():
        os.symlink(target, os.path.join(src, name))
    return top, src


OUTSIDE_LINKS = ["passwd", "outside_dir", "outside_rel", "up", "secret", "chain",
                 "inside_to_outside", "sub/escape"]
INSIDE_LINKS = {"inside_rel": "sub/notes.txt", "inside_abs": "sub/notes.txt",
                "inside_dotdot": "generation_config.json", "sub/back": "generation_config.json"}


@q.test
def symlinks_outside_src_are_left_out():
    """A symlink whose target is outside SRC (absolute, relative with .., to a directory, to
    the parent, through another link) is not in the view and has a warning naming it; a
    symlink resolving inside SRC is followed; no view file holds an outside file's bytes."""
    top, src = linked_source()
    outside_bytes = {q.read_bytes("/etc/passwd"), q.read_bytes(os.path.join(top, "secret.txt")),
                     q.read_bytes(os.path.join(top, "outside", "o.txt"))}
    with q.mounted(src, "int8") as m:
        for rel in OUTSIDE_LINKS:
            assert not os.path.lexists(m.p(rel)), "%s (outside SRC) is in the view" % rel
        for rel, target in INSIDE_LINKS.items():
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(src, target)), rel)
        assert sorted(os.listdir(m.p("subdir_link"))) == sorted(
            n for n in os.listdir(os.path.join(src, "sub")) if n not in ("escape",))
        for rel in q.tree_files(m.path):
            assert q.read_bytes(m.p(rel)) not in outside_bytes, "%s serves an outside file" % rel
        log = m.log()
    for rel in OUTSIDE_LINKS:
        w = warnings_naming(log, os.path.join(src, rel))
        assert w and "outside the source directory" in w[0], "no warning for %s:\n%s" % (rel, log)
    for rel in INSIDE_LINKS:
        assert not warnings_naming(log, os.path.join(src, rel)), log
    # the same policy for export and inspect
    out = q.export(src, "int8")
    assert not any(os.path.lexists(os.path.join(out, rel)) for rel in OUTSIDE_LINKS), \
        q.tree_files(out)
    res = q.quarkfs("inspect", src)
    assert res.returncode == 0 and all(warnings_naming(res.stderr, os.path.join(src, rel))
                                       for rel in OUTSIDE_LINKS), res


@q.test
def symlinks_all_follows_every_symlink():
    """-o symlinks=all and --follow-symlinks show what every symlink points to (/etc/passwd
    included); a link back to an ancestor is still refused as a loop."""
    top, src = linked_source()
    for extra, opts in (((), ["symlinks=all"]), (("--follow-symlinks",), [])):
        with q.mounted(src, "int8", opts=opts, extra=extra) as m:
            q.assert_bytes_equal(q.read_bytes(m.p("passwd")), q.read_bytes("/etc/passwd"), "passwd")
            q.assert_bytes_equal(q.read_bytes(m.p("secret")),
                                 q.read_bytes(os.path.join(top, "secret.txt")), "secret")
            q.assert_bytes_equal(q.read_bytes(m.p("chain")),
                                 q.read_bytes(os.path.join(top, "secret.txt")), "chain")
            assert os.listdir(m.p("outside_dir")) == ["o.txt"]
            assert sorted(os.listdir(m.p("up"))) == ["outside", "secret.txt"], \
                os.listdir(m.p("up"))          # src itself: a loop back to an ancestor
            log = m.log()
        assert "symlink loop" in log and os.path.join(src, "up", "src") in log, log
        assert "outside the source directory" not in log, log


@q.test
def dotdot_cannot_leave_the_view():
    """`..` from the root of the mount is the mountpoint's parent (the VFS's, never SRC's
    parent), `..` from a subdirectory is the root, and no path through the mount reaches a
    file next to SRC."""
    top, src = linked_source()
    with q.mounted(src, "int8") as m:
        root = os.stat(m.path)
        assert root.st_ino == 1, root                       # FUSE_ROOT_ID
        sub_up = os.stat(m.p("sub", ".."))
        assert (sub_up.st_dev, sub_up.st_ino) == (root.st_dev, root.st_ino), "sub/.. is not the root"
        link_up = os.stat(m.p("subdir_link", ".."))
        assert (link_up.st_dev, link_up.st_ino) == (root.st_dev, root.st_ino)
        parent = os.path.dirname(m.path)
        assert os.path.samefile(m.p(".."), parent), "MNT/.. is not the mountpoint's parent"
        assert os.stat(m.p("..")).st_dev != root.st_dev
        for rel in ("../secret.txt", "sub/../../secret.txt", "../src", "../outside",
                    "subdir_link/../../secret.txt", "sub/../../../secret.txt"):
            p = m.p(*rel.split("/"))
            assert not os.path.exists(p) or not os.path.realpath(p).startswith(top), \
                "%s reaches %s" % (rel, os.path.realpath(p))
        assert "secret.txt" not in os.listdir(m.p("..")) and "src" not in os.listdir(m.p(".."))
        # a directory fd inside the mount: openat("..") twice climbs into the host, not SRC
        fd = os.open(m.p("sub"), os.O_RDONLY | os.O_DIRECTORY)
        try:
            up = os.stat("..", dir_fd=fd)
            assert (up.st_dev, up.st_ino) == (root.st_dev, root.st_ino)
            up2 = os.stat("../..", dir_fd=fd)
            assert os.path.samestat(up2, os.stat(parent))
        finally:
            os.close(fd)


@q.test
def hf_cache_links_outside_the_repository():
    """SRC = .../models--org--a/snapshots/REV: links into the repository's blobs/ are followed
    (the view equals the export of a flat copy); a link into another repository's blobs/ or
    out of the cache is left out with a warning, and -o symlinks=all follows it."""
    orig = q.gen_model("demo", "bf16")
    cache = q.tmpdir("hub")
    repo = os.path.join(cache, "models--org--a")
    other = os.path.join(cache, "models--org--b", "blobs")
    snap = os.path.join(repo, "snapshots", "0123abcd")
    for d in (os.path.join(repo, "blobs"), other, snap, os.path.join(repo, "refs")):
        os.makedirs(d)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write("0123abcd")
    for rel in q.tree_files(orig):
        digest = q.sha256(os.path.join(orig, rel))
        with open(os.path.join(repo, "blobs", digest), "wb") as f:
            f.write(q.read_bytes(os.path.join(orig, rel)))
        os.symlink(os.path.join("..", "..", "blobs", digest), os.path.join(snap, rel))
    with open(os.path.join(other, "feedbeef"), "w") as f:
        f.write("another repository's blob\n")
    with open(os.path.join(cache, "outside.txt"), "w") as f:
        f.write("next to the cache\n")
    os.symlink("../../../models--org--b/blobs/feedbeef", os.path.join(snap, "other_repo.json"))
    os.symlink("../../../outside.txt", os.path.join(snap, "out_of_cache.txt"))
    os.symlink("../../refs/main", os.path.join(snap, "ref.txt"))      # inside the repository
    out = q.export(orig, "int8")
    with q.mounted(snap, "int8") as m:
        for rel in q.tree_files(out):
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(out, rel)), rel)
        assert q.read_bytes(m.p("ref.txt")) == b"0123abcd"
        assert not os.path.lexists(m.p("other_repo.json"))
        assert not os.path.lexists(m.p("out_of_cache.txt"))
        assert sorted(os.listdir(m.path)) == sorted(q.tree_files(out) + ["ref.txt"])
        log = m.log()
    for rel in ("other_repo.json", "out_of_cache.txt"):
        w = warnings_naming(log, os.path.join(snap, rel))
        assert w and "outside the source directory" in w[0], log
    with q.mounted(snap, "int8", opts=["symlinks=all"]) as m:
        assert q.read_bytes(m.p("other_repo.json")) == b"another repository's blob\n"
        assert q.read_bytes(m.p("out_of_cache.txt")) == b"next to the cache\n"


# ---------------------------------------------------------------------------------------------
# sources changed into symlinks after the mount
# ---------------------------------------------------------------------------------------------

def read_direct(path):
    """The file's bytes read with O_DIRECT (so the daemon answers), or the errno name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    try:
        return os.pread(fd, 1 << 20, 0)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    finally:
        os.close(fd)


@q.test
def passthrough_replaced_by_outside_symlink():
    """After the mount, a passthrough file (and an allowed symlink) of SRC are replaced by
    symlinks to a root-only file outside SRC: reading them through the view must not return
    that file's bytes (to root, or to uid 65534 with allow_other): an error, or the old bytes."""
    top, src = linked_source()
    secret = os.path.join(top, "secret.txt")
    with open(secret, "w") as f:
        f.write("ROOT ONLY: this must never be served through the view ........\n")
    os.chmod(secret, 0o600)
    with open(os.path.join(src, "tokenizer.json"), "w") as f:
        f.write('{"v": 1}\n')                 # shorter than the secret
    old_tok = q.read_bytes(os.path.join(src, "tokenizer.json"))
    old_in = q.read_bytes(os.path.join(src, "sub", "notes.txt"))
    leaks = []
    with q.mounted(src, "int8", opts=["allow_other"]) as m:
        assert q.read_bytes(m.p("tokenizer.json")) == old_tok
        os.remove(os.path.join(src, "tokenizer.json"))
        os.symlink(secret, os.path.join(src, "tokenizer.json"))
        os.remove(os.path.join(src, "inside_rel"))
        os.symlink("../secret.txt", os.path.join(src, "inside_rel"))
        for rel, old in (("tokenizer.json", old_tok), ("inside_rel", old_in)):
            got = read_direct(m.p(rel))
            if isinstance(got, bytes) and got != old:
                leaks.append("root reads %s: %r" % (rel, got))
            other = as_nobody(("read", m.p(rel)))["read " + m.p(rel)]
            if other.startswith("sha256:") and other != "sha256:" + hashlib.sha256(old).hexdigest():
                leaks.append("uid %d reads %s: the outside file's bytes (%s)" % (NOBODY, rel, other))
        assert m.proc.poll() is None, m.log()
    assert as_nobody(("read", secret))["read " + secret] == "EACCES"
    if leaks:
        known_bug("a passthrough file replaced after the mount by a symlink to a root-only file "
                  "outside SRC is served with that file's bytes (cut to the old size): "
                  + "; ".join(leaks) + " -- core/view.c qfs_view_open() opens the source path "
                  "again at every open and follows symlinks, without checking that it is the "
                  "file scanned at mount (st_dev/st_ino)")


if __name__ == "__main__":
    q.main()
