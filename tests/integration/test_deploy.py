#!/usr/bin/env python3
"""Deployment: mount(8) and /etc/fstab through mount.fuse3, the mount options, the log levels
(stderr and syslog), `meson install`, the man page and the deploy examples.

mount(8) runs its helpers with a cleared PATH, and mount.fuse3 runs `quarkfs` through /bin/sh,
whose default PATH is /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin. To test the
build without installing it, this process first enters a private mount namespace and there
bind-mounts a directory holding only a `quarkfs` symlink (to the binary under test) over
/usr/local/sbin: nothing outside this process and its children sees it, and every mount made
here disappears with the namespace. Without that namespace (unshare not permitted), the
mount(8) tests are skipped and the others run.

Every view is compared byte for byte with `quarkfs export --no-cache` of the same options.
Run by hand: /usr/bin/python3 tests/integration/test_deploy.py [name-filter]
"""

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfstest as q  # noqa: E402

HELPER_PATH = "/usr/local/sbin"      # first directory of mount(8)'s helpers' PATH
DEPLOY = os.path.join(q.SOURCE_ROOT, "scripts", "deploy")
MANPAGE = os.path.join(q.SOURCE_ROOT, "fs", "quarkfs.1")
BUILD_DIR = os.path.dirname(q.QUARKFS)


def _enter_namespace():
    """Private mount namespace + the quarkfs symlink over HELPER_PATH; None or why not."""
    CLONE_NEWNS, MS_REC, MS_PRIVATE, MS_BIND = 0x00020000, 0x4000, 1 << 18, 0x1000
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    if libc.unshare(CLONE_NEWNS) != 0:
        return "unshare(CLONE_NEWNS): %s" % os.strerror(ctypes.get_errno())
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return "making / private: %s" % os.strerror(ctypes.get_errno())
    if not os.path.isdir(HELPER_PATH):
        return "%s does not exist" % HELPER_PATH
    bindir = q.tmpdir("helper-path")
    os.symlink(q.QUARKFS, os.path.join(bindir, "quarkfs"))
    if libc.mount(bindir.encode(), HELPER_PATH.encode(), None, MS_BIND, None) != 0:
        return "bind mount on %s: %s" % (HELPER_PATH, os.strerror(ctypes.get_errno()))
    return None


NS_ERROR = _enter_namespace()      # before any thread exists (unshare needs that)


def need_namespace():
    if NS_ERROR:
        raise q.Skip("no private mount namespace for mount(8)'s helper PATH: %s" % NS_ERROR)


def source():
    """A small real model: stories260K-bf16 if present, else a generated one of the same form
    (one model.safetensors, 5 layers, hidden 64, intermediate 172), which the tests below name."""
    try:
        return q.shared_model("bf16")
    except q.Skip:
        return q.gen_model("demo", "bf16", "--shards", "1", "--layers", "5", "--hidden", "64",
                           "--intermediate", "172", "--heads", "8", "--kv-heads", "4")


def mount_entries(mnt):
    """[(mount options, type, source, super options)] of the mounts on mnt, bottom to top."""
    real = os.path.realpath(mnt)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == real:
                fstype, src, sopts = right.split(" ", 2)
                src = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), src)
                out.append((fields[5].split(","), fstype, src, sopts.split(",")))
    return out


def mount_tool(*args):
    """Run mount(8) (never raises)."""
    return q.run(["mount"] + list(args), timeout=60)


@contextlib.contextmanager
def tracked(mnt):
    """Whatever gets mounted on mnt inside the block is unmounted (umount(8) first, so that
    libmount forgets it too) and its quarkfs process is gone afterwards, in every path."""
    m = q.Mount(mnt, None, None, [])
    q._active_mounts.append(m)
    try:
        yield m
    finally:
        m.daemon_pids = q.pids_serving(mnt)
        for _ in range(4):
            if not q.is_mounted(mnt):
                break
            q.run(["umount", mnt], timeout=30)
        m.close()


def assert_readonly_view(mnt):
    """ro, nodev, nosuid in mountinfo and statvfs, and writes refused with EROFS."""
    entries = mount_entries(mnt)
    assert len(entries) == 1, "expected one mount on %s: %s" % (mnt, entries)
    opts, fstype, _, _ = entries[0]
    assert fstype == "fuse.quarkfs", entries
    for o in ("ro", "nodev", "nosuid"):
        assert o in opts, "%s: mount options %s lack %s" % (mnt, opts, o)
    assert os.statvfs(mnt).f_flag & os.ST_RDONLY, "statvfs does not say read-only"
    q.expect_oserror(errno.EROFS, open, os.path.join(mnt, "config.json"), "r+b",
                     what="open config.json for writing")
    q.expect_oserror(errno.EROFS, open, os.path.join(mnt, "new-file"), "wb", what="create")
    q.expect_oserror(errno.EROFS, os.mkdir, os.path.join(mnt, "new-dir"), what="mkdir")
    q.expect_oserror(errno.EROFS, os.unlink, os.path.join(mnt, "config.json"), what="unlink")


def header_dtypes(path):
    header, _, _ = q.st_header(path)
    return {k: v["dtype"] for k, v in header.items()}


# ---------------------------------------------------------------------------------------------
# mount(8), fstab
# ---------------------------------------------------------------------------------------------

@q.test
def mount_t_fuse_quarkfs_every_view_option():
    """mount -t fuse.quarkfs with every view option as -o (and fstab/systemd options that must
    be ignored): the view equals `quarkfs export` of the same options, and is read-only."""
    need_namespace()
    src = source()
    mnt = q.tmpdir("mnt")
    opts = ("spec=int8-channel,format=compressed-tensors,"
            "exclude=model.layers.0.*:model.layers.1.self_attn.*,exclude=model.layers.2.mlp.*,"
            "include=model.layers.*,threads=2,check_finite,cache_mem=64M,cache=off,log=warning,"
            "noatime,nofail,_netdev,x-systemd.automount,x-systemd.requires=foo.service,"
            "comment=quarkfs-test,defaults")
    with tracked(mnt):
        res = mount_tool("-t", "fuse.quarkfs", src, mnt, "-o", opts)
        assert res.returncode == 0, res
        assert_readonly_view(mnt)
        (_, _, msrc, sopts) = mount_entries(mnt)[0]
        assert msrc == src, "the mount's source is %r, expected %r" % (msrc, src)
        assert "default_permissions" in sopts, sopts
        exp = q.export(src, "int8-channel", fmt="compressed-tensors",
                       excludes=["model.layers.0.*", "model.layers.1.self_attn.*",
                                 "model.layers.2.mlp.*"], includes=["model.layers.*"],
                       extra=["--threads", "2", "--check-finite"])
        q.assert_trees_equal(mnt, exp, "mount -t fuse.quarkfs vs export")
        dt = header_dtypes(os.path.join(mnt, "model.safetensors"))
        assert dt["model.layers.0.self_attn.q_proj.weight"] == "BF16", "exclude= had no effect"
        assert dt["model.layers.2.mlp.up_proj.weight"] == "BF16", "2nd exclude= had no effect"
        assert dt.get("model.layers.1.mlp.up_proj.weight_packed") == "I32", \
            "layer 1's mlp is not quantized (pack-quantized): %s" % dt


@q.test
def mount_t_fuse_quarkfs_disk_cache_options():
    """cache_dir= and cache_size= through mount(8): the persistent cache is used and filled."""
    need_namespace()
    src = source()
    mnt, cache = q.tmpdir("mnt"), q.tmpdir("cache")
    with tracked(mnt):
        res = mount_tool("-t", "fuse.quarkfs", src, mnt, "-o",
                         "spec=fp8,cache_dir=%s,cache_size=64M" % cache)
        assert res.returncode == 0, res
        q.assert_trees_equal(mnt, q.export(src, "fp8"), "mount (disk cache) vs export")
        st = q.status_settled(mnt)   # entries are written in the background
        assert st["disk_cache"] is True and st["disk_writes"] > 0, st
    assert any(files for _, _, files in os.walk(cache)), "nothing was written to %s" % cache


@q.test
def mount_rw_gives_a_readonly_view():
    """-o rw,dev,suid,exec and the atime options: still ro,nodev,nosuid; `mount -o remount,rw`
    is refused with a message and changes nothing."""
    need_namespace()
    src = source()
    mnt = q.tmpdir("mnt")
    with tracked(mnt):
        res = mount_tool("-t", "fuse.quarkfs", src, mnt, "-o", "rw,dev,suid,exec,relatime,"
                         "strictatime,lazytime,nodiratime,nonempty,cache=off")
        assert res.returncode == 0, res
        assert_readonly_view(mnt)
        res = mount_tool("-o", "remount,rw", mnt)
        assert res.returncode != 0, "remount,rw succeeded: %r" % res
        assert "remount is not supported" in res.stderr, res
        assert_readonly_view(mnt)        # still one read-only mount


@q.test
def remount_rw_behind_quarkfs_back_still_refuses_writes():
    """`mount -i -o remount,rw` (no helper: straight to the kernel) makes the mount rw; quarkfs
    itself still answers EROFS to every write, and logs one refusal per file."""
    need_namespace()
    src = source()
    with q.mounted(src, "int8") as m:
        res = mount_tool("-i", "-o", "remount,rw", m.path)
        if res.returncode != 0:
            raise q.Skip("the kernel refused remount,rw: %s" % res.stderr.strip())
        assert "rw" in mount_entries(m.path)[0][0]
        for _ in range(2):
            q.expect_oserror(errno.EROFS, open, m.p("config.json"), "r+b", what="open r+")
            q.expect_oserror(errno.EROFS, os.chmod, m.p("config.json"), 0o644, what="chmod")
            q.expect_oserror(errno.EROFS, open, m.p("new-file"), "wb", what="create")
            q.expect_oserror(errno.EROFS, os.mkdir, m.p("new-dir"), what="mkdir")
            q.expect_oserror(errno.EROFS, os.rename, m.p("config.json"), m.p("x.json"),
                             what="rename")
        refused = [l for l in m.log().splitlines() if "refused" in l]
    assert len(refused) == 2, "expected one line per file (config.json, the root):\n%s" % (
        "\n".join(refused))
    assert any("config.json: " in l for l in refused), refused
    assert all("read-only" in l for l in refused), refused


@q.test
def fstab_line_with_mount_T():
    """An fstab line (mountpoint with a space, written \\040) through `mount -T FSTAB MNT`;
    `mount -a -T FSTAB` then skips it (already mounted); mounting it again is refused."""
    need_namespace()
    src = source()
    mnt = os.path.join(q.tmpdir("fstab"), "view dir")
    os.mkdir(mnt)
    fstab = q.tmppath("fstab")
    with open(fstab, "w") as f:
        f.write("# test fstab\n%s %s fuse.quarkfs defaults,spec=fp8-channel,"
                "exclude=model.layers.4.*,cache=off,nofail,_netdev,"
                "x-systemd.requires=foo.service 0 0\n" % (src, mnt.replace(" ", "\\040")))
    with tracked(mnt):
        res = mount_tool("-T", fstab, mnt)
        assert res.returncode == 0, res
        assert_readonly_view(mnt)
        q.assert_trees_equal(mnt, q.export(src, "fp8-channel", excludes=["model.layers.4.*"]),
                             "fstab mount vs export")
        res = mount_tool("-a", "-T", fstab)
        assert res.returncode == 0, res
        assert len(mount_entries(mnt)) == 1, "mount -a mounted it again: %s" % mount_entries(mnt)
        res = mount_tool("-T", fstab, mnt)
        assert res.returncode != 0, res
        assert len(mount_entries(mnt)) == 1, mount_entries(mnt)
        res = q.quarkfs("-o", "cache=off", src, mnt)
        assert res.returncode == 1 and "already a quarkfs mount" in res.stderr, res
        assert len(mount_entries(mnt)) == 1, mount_entries(mnt)


@q.test
def unknown_and_invalid_options_are_clear_errors():
    """An unknown option fails before anything is mounted, with exit 2 and a message naming
    it; so do bad values and remount."""
    src = source()
    cases = [
        (["-o", "no_such_option=1"], "no_such_option"),
        (["-o", "log=loud"], "log=loud"),
        (["-o", "exclude="], "empty glob"),
        (["-o", "exclude=a::b"], "empty glob"),
        (["-o", "threads=0"], "threads=0"),
        (["-o", "spec=nope"], "unknown spec 'nope'"),
        (["-o", "cache=maybe"], "cache=maybe"),
        (["-o", "remount"], "remount is not supported"),
        (["--log", "verbose"], "--log verbose"),
    ]
    for args, words in cases:
        mnt = q.tmpdir("mnt")
        with tracked(mnt):
            res = q.quarkfs(*(["-o", "cache=off"] + args + [src, mnt]))
            assert res.returncode == 2, "%s: exit %d, expected 2: %r" % (args, res.returncode, res)
            assert words in res.stderr, "%s: stderr does not say %r: %r" % (args, words, res)
            assert not q.is_mounted(mnt), args
    if NS_ERROR:
        return
    mnt = q.tmpdir("mnt")
    with tracked(mnt):
        res = mount_tool("-t", "fuse.quarkfs", src, mnt, "-o", "spec=int8,no_such_option=1")
        assert res.returncode != 0, res
        assert "no_such_option" in res.stderr and "unknown" in res.stderr, res
        assert not q.is_mounted(mnt) and not q.pids_serving(mnt), "mounted anyway"


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------

def log_lines(src, level=None, extra=()):
    """Lines a foreground mount of int4-g32 in awq (shape fallbacks, and a warning about
    AutoAWQ kernels) logs while a reader reads everything, at this -o log= level; without the
    timestamp that starts each line of a foreground mount."""
    opts = ["log=" + level] if level else []
    with q.mounted(src, "int4-g32", fmt="awq", opts=opts, extra=list(extra)) as m:
        for rel in q.tree_files(m.path):
            q.read_bytes(m.p(rel))
    lines = m.log().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
    ours = [l for l in lines if "quarkfs: " in l]   # -d adds libfuse's own trace
    assert all(stamp.match(l) for l in ours), \
        "a line without its time:\n%s" % "\n".join(lines)
    return [stamp.sub("", l) for l in lines]


@q.test
def log_levels():
    """-o log=debug logs more than the default (info), log=warning less, log=error nothing here;
    the fallbacks are one info line per reason with a count and the modules, and a debug line
    per tensor naming the file, the tensor and the reason, once."""
    src = source()
    default, debug = log_lines(src), log_lines(src, "debug")
    warning, error = log_lines(src, "warning"), log_lines(src, "error")
    assert len(debug) > len(default) > len(warning) > len(error) == 0, \
        "debug %d, default %d, warning %d, error %d lines:\n%s" % (
            len(debug), len(default), len(warning), len(error), "\n".join(default))
    assert any(l.startswith("quarkfs: serving ") for l in default), default
    assert not any("debug:" in l for l in default), default
    assert any("debug:" in l and "quantized in" in l for l in debug), debug
    assert all(l.startswith("quarkfs: warning: ") for l in warning), warning
    assert any("AutoAWQ" in l for l in warning), warning
    falls = [l for l in default if "stay BF16" in l and "cannot take them" in l]
    # stories260K: gate/up (out=172, int32 packing) and down (in=172, group 32), 5 layers each
    assert len(falls) == 2 and any(l.startswith("quarkfs: 10 weights ") for l in falls) and \
        any(l.startswith("quarkfs: 5 weights ") and "mlp.down_proj" in l for l in falls), falls
    per_tensor = [l for l in debug if "stays BF16" in l and "cannot take it" in l]
    assert len(per_tensor) == 15 and len(set(per_tensor)) == 15, per_tensor
    assert all("model.safetensors: tensor '" in l for l in per_tensor), per_tensor
    # -d (libfuse's request trace) implies log=debug
    d = log_lines(src, extra=["-d"])
    assert any("debug:" in l and "quantized in" in l for l in d), "-d without debug lines"


@q.test
def daemon_logs_to_syslog():
    """In the background, messages go to syslog (facility daemon, tag quarkfs), filtered by
    -o log=: checked with a socket on /dev/log in a further private namespace, whose /dev
    is a tmpfs holding null, zero, urandom and fuse."""
    need_namespace()
    if not shutil.which("unshare"):
        raise q.Skip("no unshare(1)")
    src = source()
    mnt = q.tmpdir("mnt")
    script = textwrap.dedent(r'''
        import json, os, socket, subprocess, sys, threading, time
        sys.path.insert(0, %(here)r)
        import qfstest as q
        for cmd in (["mount", "-t", "tmpfs", "-o", "mode=755", "none", "/dev"],
                    ["mknod", "-m", "666", "/dev/null", "c", "1", "3"],
                    ["mknod", "-m", "666", "/dev/zero", "c", "1", "5"],
                    ["mknod", "-m", "666", "/dev/urandom", "c", "1", "9"],
                    ["mknod", "-m", "666", "/dev/fuse", "c", "10", "229"]):
            subprocess.run(cmd, check=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("/dev/log")
        sock.settimeout(1.0)
        got, stop = [], [False]
        def drain():
            while not stop[0]:
                try:
                    got.append(sock.recv(65536).decode("utf-8", "replace"))
                except socket.timeout:
                    pass
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        out = {}
        for level in ("info", "warning"):
            mnt = %(mnt)r
            args = [q.QUARKFS, "--spec", "uint4-g32", "-o", "cache=off,log=" + level, %(src)r, mnt]
            res = q.run(args)
            pids = q.pids_serving(mnt)
            try:
                assert res.returncode == 0 and q.is_mounted(mnt), res
                q.read_bytes(os.path.join(mnt, "model.safetensors"))
            finally:
                q.unmount(mnt)
                q.wait_gone(pids, 10)
            time.sleep(0.3)
            out[level] = {"stderr": res.stderr, "syslog": got[:]}
            del got[:]
        stop[0] = True
        print(json.dumps(out))
    ''') % {"here": q.HERE, "mnt": mnt, "src": src}
    res = q.run(["unshare", "-m", "--propagation", "private", q.PY, "-c", script], timeout=120)
    assert res.returncode == 0, res
    out = json.loads(res.stdout.strip().splitlines()[-1])
    info, warn = out["info"], out["warning"]
    # before detaching: the model scan's warnings on the starter's stderr
    assert "cannot take them" in info["stderr"], info
    # after: syslog, <30> = daemon.info, tagged quarkfs[PID]
    serving = [m for m in info["syslog"] if "serving " in m]
    assert serving and all(re.match(r"<30>.*quarkfs\[\d+\]: serving ", m) for m in serving), info
    assert "serving " not in info["stderr"], info
    assert not any("serving " in m for m in warn["syslog"]), warn


# ---------------------------------------------------------------------------------------------
# --version, --help, meson install, man page, deploy examples
# ---------------------------------------------------------------------------------------------

def project_version():
    with open(os.path.join(q.SOURCE_ROOT, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


@q.test
def version_and_help():
    """--version names quarkfs's, libfuse's and jansson's versions; --help lists every -o
    option of the view and the exit codes, which README and the man page document too."""
    res = q.quarkfs("--version")
    assert res.returncode == 0, res
    assert re.fullmatch(r"quarkfs %s \(libfuse 3\.\d+\.\d+, jansson 2\.\d+(\.\d+)?\)\n"
                        r"FUSE passthrough: (built in|not built in) \([^\n]*\)\n"
                        % re.escape(project_version()), res.stdout), res
    libfuse = re.search(r"libfuse 3\.(\d+)", res.stdout).group(1)
    assert ("not built in" in res.stdout) == (int(libfuse) < 17), res
    helptext = q.quarkfs("--help").stdout
    with open(MANPAGE) as f:
        man = f.read().replace("\\-", "-")
    with open(os.path.join(q.SOURCE_ROOT, "README.md")) as f:
        readme = f.read()
    for o in ("spec=", "specs=", "format=", "exclude=", "include=", "layer=", "preset=",
              "threads=", "check_finite", "cache_mem=", "cache_dir=", "cache_size=", "cache=",
              "log=", "readahead_kb=", "max_background=", "view_files=", "passthrough=",
              "allow_other"):
        assert "-o " + o in helptext, "--help lacks -o %s" % o
        assert o in man, "the man page lacks %s" % o
        assert o in readme, "README.md lacks %s" % o
    for text, what in ((helptext, "--help"), (man, "man page"), (readme, "README.md")):
        m = re.search(r"exit status", text, re.I)
        assert m, "%s: no exit status section" % what
        part = text[m.start():m.start() + 2500]
        for code in ("0", "1", "2"):
            assert re.search(r"(^|[\s*`|])%s([\s*`|])" % code, part), \
                "%s: exit code %s not documented" % (what, code)


def meson_install():
    dest = q.tmpdir("destdir")
    res = q.run(["meson", "install", "-C", BUILD_DIR, "--destdir", dest, "--no-rebuild"],
                timeout=120)
    assert res.returncode == 0, res
    files = {}
    for d, _, names in os.walk(dest):
        for n in names:
            files[os.path.relpath(os.path.join(d, n), dest)] = os.path.join(d, n)
    return dest, files


@q.test
def meson_install_destdir():
    """`meson install --destdir` installs bin/quarkfs (working), the man page and the deploy
    examples under share/doc/quarkfs/examples."""
    _, files = meson_install()

    def one(suffix):
        hits = [p for rel, p in files.items() if rel.endswith(suffix)]
        assert len(hits) == 1, "%s: %s among %s" % (suffix, hits, sorted(files))
        return hits[0]
    binary = one("/bin/quarkfs")
    assert os.access(binary, os.X_OK)
    res = q.run([binary, "--version"])
    assert res.returncode == 0 and res.stdout == q.quarkfs("--version").stdout, res
    man = one("/share/man/man1/quarkfs.1")
    assert q.read_bytes(man) == q.read_bytes(MANPAGE)
    one("/share/doc/quarkfs/README.md")
    for name in sorted(os.listdir(DEPLOY)):
        got = one("/share/doc/quarkfs/examples/" + name)
        assert q.read_bytes(got) == q.read_bytes(os.path.join(DEPLOY, name)), name
    for name in ("quarkfs@.service", "models-llama3-int8.mount", "Dockerfile", "compose.yaml",
                 "fstab.example", "quarkfs-sidecar.sh"):
        one("/share/doc/quarkfs/examples/" + name)


@q.test
def man_page_renders():
    """man -l renders the page (no groff warnings), with its sections; its version is
    meson.build's."""
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    res = q.run(["man", "-l", MANPAGE], env=env)
    assert res.returncode == 0, res
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "MOUNT(8) AND FSTAB",
                    "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert re.search(r"^%s$" % re.escape(section), res.stdout, re.M), section
    res = q.run(["groff", "-man", "-Tutf8", "-ww", "-z", MANPAGE])
    assert res.returncode == 0 and not res.stderr, res
    with open(MANPAGE) as f:
        th = [l for l in f if l.startswith(".TH ")][0]
    assert '"quarkfs %s"' % project_version() in th, th


@q.test
def deploy_examples_check():
    """What can be checked here of scripts/deploy: shellcheck, systemd-analyze verify of the
    units (with quarkfs and its installed man page visible), the fstab example parsed by
    findmnt --verify, and the Dockerfile's COPY sources exist. The container recipe itself is
    not run (no container engine on this machine)."""
    ran = []
    if shutil.which("shellcheck"):
        scripts = [os.path.join(DEPLOY, n) for n in os.listdir(DEPLOY) if n.endswith(".sh")]
        res = q.run(["shellcheck", "-s", "sh"] + scripts)
        assert res.returncode == 0, res
        ran.append("shellcheck")
    if shutil.which("systemd-analyze") and not NS_ERROR:
        dest, files = meson_install()
        mandir = os.path.dirname(os.path.dirname(
            [p for rel, p in files.items() if rel.endswith("man1/quarkfs.1")][0]))
        units = q.tmpdir("units")
        shutil.copy(os.path.join(DEPLOY, "quarkfs@.service"),
                    os.path.join(units, "quarkfs@llama3-int8.service"))
        shutil.copy(os.path.join(DEPLOY, "models-llama3-int8.mount"), units)
        res = q.run(["systemd-analyze", "verify", os.path.join(units, "quarkfs@llama3-int8.service"),
                     os.path.join(units, "models-llama3-int8.mount")],
                    env=dict(os.environ, MANPATH=mandir + ":", SYSTEMD_LOG_LEVEL="notice"))
        assert res.returncode == 0 and not res.stderr.strip(), res
        ran.append("systemd-analyze")
    res = q.run(["findmnt", "--verify", "--tab-file", os.path.join(DEPLOY, "fstab.example")])
    # the sources do not exist here; only parse errors matter
    assert "0 parse errors" in res.stdout + res.stderr, res
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        for line in f:
            m = re.match(r"COPY (?!--from)(.+) \S+$", line.strip())
            for p in (m.group(1).split() if m else []):
                assert os.path.exists(os.path.join(q.SOURCE_ROOT, p)), "Dockerfile: COPY %s" % p
    if len(ran) < 2:      # optional tools: say so, but do not turn the whole file into SKIP
        print("note: deploy_examples_check ran %s only (shellcheck / systemd-analyze missing, "
              "or no namespace)" % (ran or "the file checks"))


if __name__ == "__main__":
    q.main()
