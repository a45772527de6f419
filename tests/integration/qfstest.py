"""Shared helpers of the quarkfs integration tests (real FUSE mounts, Python + numpy).

Environment (set by tests/meson.build; defaults let a test run by hand from the source tree):
  QUARKFS              the quarkfs binary                 (default: SOURCE_ROOT/build/quarkfs)
  QUARKFS_SOURCE_ROOT  the source tree (tests/oracle/, tests/fixtures/ live there)
  QUARKFS_SHARED       the shared directory (models/ lives there; read-only, never written)
  QUARKFS_TEST_KEEP=1  keep the temporary root for debugging (mounts are still unmounted)

What is here:
  * one temporary root per test process (TMP); generated models are cached under it, so a
    model used by several tests is generated once per run;
  * run_quarkfs / export / quarkref_check: the binary and the independent reference;
  * mounted(): a context manager that mounts on a fresh mountpoint and always unmounts
    (fusermount3 -u, then -uz) and never leaves a quarkfs process behind;
  * small assertion helpers and a tiny test runner (last line: "N passed, N failed").

Bit-exactness is only ever judged by tests/oracle/quarkref.py (independent of the C code).
"""

import atexit
import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "pylib"))
import stfile  # noqa: E402  the safetensors container, shared with the tools under tests/
SOURCE_ROOT = os.path.abspath(os.environ.get("QUARKFS_SOURCE_ROOT")
                              or os.path.join(HERE, "..", ".."))
QUARKFS = os.path.abspath(os.environ.get("QUARKFS") or os.path.join(SOURCE_ROOT, "build", "quarkfs"))
SLOWFS = os.path.abspath(os.environ.get("QUARKFS_SLOWFS")
                         or os.path.join(SOURCE_ROOT, "build", "tests", "integration", "slowfs"))
SHARED = os.path.abspath(os.environ.get("QUARKFS_SHARED") or os.path.join(SOURCE_ROOT, "..", "shared"))
SHARED_MODELS = os.path.join(SHARED, "models")
PY = stfile.numpy_python()    # the first python3 on PATH may lack numpy
GENMODEL = os.path.join(SOURCE_ROOT, "tests", "fixtures", "genmodel.py")
QUARKREF = os.path.join(SOURCE_ROOT, "tests", "oracle", "quarkref.py")

SPECS = ["int8", "int8-channel", "w8a8-int8", "fp8", "fp8-channel"]
MOUNT_TIMEOUT = 20.0          # seconds to wait for a foreground mount to appear
EXIT_TIMEOUT = 10.0           # seconds for a daemon to go away after its unmount
CMD_TIMEOUT = 300             # seconds for any helper command
TEST_TIMEOUT = int(os.environ.get("QUARKFS_TEST_TIMEOUT", "120"))   # per test, then abort_mounts

TMP = tempfile.mkdtemp(prefix="quarkfs-it-")
_active_mounts = []           # Mount objects not yet unmounted (cleaned at exit whatever happens)
_model_cache = {}
_counter = [0]


class Skip(Exception):
    """Raised by a test that cannot run here (the runner counts it as skipped)."""


# ---------------------------------------------------------------------------------------------
# Disk-cache entries, read back without quarkfs (test_cache, test_hardening)
# ---------------------------------------------------------------------------------------------

CACHE_HEADER = struct.Struct("<8sII16sQQQQ")   # an entry's header (core/diskcache.c)
CACHE_ENTRY_VERSION = 2


def cache_weight_offset(sl, wl):
    """Where an entry's weight part starts: right after its scales part, or, for a weight of
    1 MiB or more (written with O_DIRECT), at the next multiple of 4 KiB (entry version 2)."""
    end = CACHE_HEADER.size + sl
    return (end + 4095) // 4096 * 4096 if wl >= 1 << 20 else end
_xxh = []


def xxh3_64(data):
    """XXH3-64 (seed 0) of data, by libxxhash (what an entry's checksums are)."""
    if not _xxh:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
        lib.XXH3_64bits.restype = ctypes.c_uint64
        lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        _xxh.append(lib)
    return _xxh[0].XXH3_64bits(data, len(data))


def cache_entries(cache):
    """Sorted paths of the entry files cache/v1/XX/KEY.qfs (regular files, no symlinks)."""
    out = []
    v1 = os.path.join(cache, "v1")
    for sub in sorted(os.listdir(v1)) if os.path.isdir(v1) else ():
        d = os.path.join(v1, sub)
        if os.path.isdir(d) and not os.path.islink(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))
                    if f.endswith(".qfs") and os.path.isfile(os.path.join(d, f))
                    and not os.path.islink(os.path.join(d, f))]
    return out


# ---------------------------------------------------------------------------------------------
# Temporary files and directories
# ---------------------------------------------------------------------------------------------

def tmpdir(prefix="d"):
    """A fresh, empty directory under the run's temporary root."""
    _counter[0] += 1
    path = os.path.join(TMP, "%s-%d" % (prefix, _counter[0]))
    os.makedirs(path)
    return path


def tmppath(prefix="p"):
    """A fresh path (not created) under the run's temporary root."""
    _counter[0] += 1
    return os.path.join(TMP, "%s-%d" % (prefix, _counter[0]))


def shared_model(dtype):
    """Path of stories260K-<dtype> in the shared models dir; raises Skip if it is missing."""
    path = os.path.join(SHARED_MODELS, "stories260K-%s" % dtype)
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise Skip("%s is missing" % path)
    return path


def have_shared_models():
    """True if all three stories260K copies are present."""
    return all(os.path.isfile(os.path.join(SHARED_MODELS, "stories260K-%s" % d, "model.safetensors"))
               for d in ("bf16", "f16", "f32"))


def gen_model(preset="demo", dtype="bf16", *extra):
    """Generate (once per run, cached) a model with tests/fixtures/genmodel.py; returns its path.

    The returned directory is shared by every test of the process: never modify it, use
    copy_model() first.
    """
    key = (preset, dtype) + tuple(str(e) for e in extra)
    if key in _model_cache:
        return _model_cache[key]
    name = "model-%s-%s-%s" % (preset, dtype, hashlib.sha1(repr(key).encode()).hexdigest()[:8])
    out = os.path.join(TMP, "models", name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    res = run([PY, GENMODEL, out, "--preset", preset, "--dtype", dtype] + [str(e) for e in extra],
              env=PY_ENV)
    if res.returncode != 0:
        raise AssertionError("genmodel failed (rc %d):\n%s%s" % (res.returncode, res.stdout, res.stderr))
    _model_cache[key] = out
    return out


def many_tensors_model(n, name_fmt="model.layers.%d.mlp.proj.weight", out=None):
    """One shard of n tiny bf16 weights [2, 8] (each quantized by int8), a config.json and an
    index naming them all: the case of mount-time work per tensor (a header near the format's
    100 MB limit holds about a million such tensors with names of ~20 bytes). Returns (dir,
    shard name, tensor names); out: the directory to write (default: a fresh one)."""
    out = out or tmpdir("many")
    os.makedirs(out, exist_ok=True)
    hdr, off, names = {}, 0, []
    for i in range(n):
        name = name_fmt % i
        hdr[name] = {"dtype": "BF16", "shape": [2, 8], "data_offsets": [off, off + 32]}
        off += 32
        names.append(name)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    shard = "model-00001-of-00001.safetensors"
    with open(os.path.join(out, shard), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.write(b"\x80\x3f" * (off // 2))            # bf16 1.0
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": off}, "weight_map": {k: shard for k in names}}, f)
    return out, shard, names


def copy_model(src):
    """A private, writable copy of a model directory (symlinks copied as symlinks)."""
    dest = tmppath("copy")
    shutil.copytree(src, dest, symlinks=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

class Result:
    """returncode, stdout, stderr of a finished command (text)."""

    def __init__(self, args, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr

    def __repr__(self):
        return "command %s -> rc %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(self.args), self.returncode, self.stdout[-4000:], self.stderr[-4000:])


def run(args, timeout=CMD_TIMEOUT, **kw):
    """Run a command, capture its output as text; never raises on a non-zero exit."""
    args = [str(a) for a in args]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, **kw)
    return Result(args, p.returncode, p.stdout.decode("utf-8", "replace"),
                  p.stderr.decode("utf-8", "replace"))


def quarkfs(*args, timeout=CMD_TIMEOUT):
    """Run the quarkfs binary with these arguments (no mount is tracked: see mounted())."""
    args = list(args)
    if args and args[0] == "export":
        args[1:1] = cache_flags_export(args)
    return run([QUARKFS] + args, timeout=timeout)


def view_flags(spec=None, excludes=(), includes=(), fmt=None):
    """The --spec/--format/--exclude/--include arguments shared by quarkfs and quarkref."""
    out = []
    if spec:
        out += ["--spec", spec]
    if fmt:
        out += ["--format", fmt]
    for g in excludes:
        out += ["--exclude", g]
    for g in includes:
        out += ["--include", g]
    return out


def cache_flags_export(extra):
    """Tests compute every tensor (no persistent cache) unless they ask for one."""
    return [] if any(a.startswith("--cache-dir") or a == "--no-cache" for a in extra) \
        else ["--no-cache"]


def export(src, spec="int8", excludes=(), includes=(), extra=(), fmt=None):
    """quarkfs export into a fresh directory; asserts success; returns the directory."""
    out = tmppath("export")
    res = quarkfs("export", *(view_flags(spec, excludes, includes, fmt) + list(extra) + [src, out]))
    if res.returncode != 0:
        raise AssertionError("quarkfs export failed: %r" % res)
    assert os.path.isdir(out), "export exited 0 but %s does not exist" % out
    return out


# meson sets MALLOC_PERTURB_ (good for quarkfs); in the Python reference it only makes glibc
# fill every large numpy/bytes buffer, which costs ~0.7 s per call: leave it out there.
PY_ENV = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}


def layer_flags(layers):
    """--layer GLOB=SPEC for each (glob, spec), in order (quarkfs and quarkref take the same)."""
    out = []
    for glob, spec in layers:
        out += ["--layer", "%s=%s" % (glob, spec)]
    return out


def quarkref_check(src, view, spec, excludes=(), includes=(), expect_ok=True, fmt=None,
                   layers=()):
    """Run quarkref --check SRC VIEW; asserts its verdict (exit 0 iff identical) is expect_ok."""
    res = run([PY, QUARKREF, "--check"] + view_flags(spec, excludes, includes, fmt)
              + layer_flags(layers) + [src, view], env=PY_ENV)
    if expect_ok and res.returncode != 0:
        raise AssertionError("quarkref --check says the view differs from the reference: %r" % res)
    if not expect_ok and res.returncode != 1:
        raise AssertionError("quarkref --check was expected to find mismatches (rc 1): %r" % res)
    return res


def quarkref_write(src, spec, excludes=(), includes=(), fmt=None, layers=()):
    """The reference's own expected view of SRC written to a fresh directory."""
    out = tmppath("ref")
    res = run([PY, QUARKREF] + view_flags(spec, excludes, includes, fmt) + layer_flags(layers)
              + [src, out], env=PY_ENV)
    if res.returncode != 0:
        raise AssertionError("quarkref (writer) failed: %r" % res)
    return out


# ---------------------------------------------------------------------------------------------
# Mounts
# ---------------------------------------------------------------------------------------------

def is_mounted(path):
    """True if path is a mountpoint (by /proc/self/mountinfo, which never blocks on FUSE)."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == real:
                return True
    return False


def pids_serving(mnt, also=()):
    """PIDs of quarkfs processes whose command line names this (unique) mountpoint (or one
    of the literal arguments in also, e.g. the relative path it was given as)."""
    also = [a.encode() for a in also]
    mnt = os.path.realpath(mnt).encode()
    exe = os.path.realpath(QUARKFS)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
            if os.path.realpath("/proc/%s/exe" % d) != exe:
                continue
            with open("/proc/%s/stat" % d) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(a in also or os.path.realpath(a) == mnt for a in argv if a):
            out.append(int(d))
    return out


def unmount(mnt):
    """Unmount mnt: fusermount3 -u (retried while busy), then -uz; True if it was mounted."""
    if not is_mounted(mnt):
        return False
    for _ in range(20):
        if run(["fusermount3", "-u", mnt], timeout=30).returncode == 0 or not is_mounted(mnt):
            return True
        time.sleep(0.1)
    run(["fusermount3", "-uz", mnt], timeout=30)
    if is_mounted(mnt):
        run(["umount", "-l", mnt], timeout=30)
    return True


class Mount:
    """A live quarkfs mount: .path, .proc (foreground Popen or None), .log() (stderr so far)."""

    def __init__(self, path, proc, log_path, daemon_pids):
        self.path, self.proc, self.log_path, self.daemon_pids = path, proc, log_path, daemon_pids
        self.exit_code = None

    def p(self, *parts):
        """Path of a file in the mount."""
        return os.path.join(self.path, *parts)

    def log(self):
        """What the foreground process wrote to stderr so far ('' for a daemon)."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        """Unmount and make sure the serving process is gone; sets exit_code (foreground)."""
        if self in _active_mounts:
            _active_mounts.remove(self)
        try:
            unmount(self.path)
        finally:
            if self.proc is not None:
                try:
                    self.exit_code = self.proc.wait(timeout=EXIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    held = namespace_holders(self.path)
                    self.proc.kill()
                    self.proc.wait()
                    raise AssertionError("quarkfs -f did not exit within %.0f s of the unmount%s"
                                         % (EXIT_TIMEOUT, held))
            left = wait_gone(self.daemon_pids + pids_serving(self.path), EXIT_TIMEOUT)
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.rmdir(self.path)
            if left:
                raise AssertionError("quarkfs process(es) %s still running %.0f s after the unmount"
                                     " of %s (killed)%s" % (left, EXIT_TIMEOUT, self.path,
                                                           namespace_holders(self.path)))


def namespace_holders(path):
    """'' or a note naming processes of other mount namespaces that still have a copy of the
    mount at path: a namespace made (unshare -m) while the mount existed keeps its superblock,
    so the daemon is never told of the unmount until that namespace goes away."""
    mine = os.readlink("/proc/self/ns/mnt")
    real = os.path.realpath(path)
    seen, out = set(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ns = os.readlink("/proc/%s/ns/mnt" % d)
            if ns == mine or ns in seen:
                continue
            with open("/proc/%s/mountinfo" % d) as f:
                if not any(len(l.split()) > 4 and l.split()[4] == real for l in f):
                    continue
            seen.add(ns)
            with open("/proc/%s/cmdline" % d, "rb") as f:
                out.append("%s (%s)" % (d, f.read().replace(b"\0", b" ").decode(
                    "utf-8", "replace")[:120]))
        except OSError:
            continue
    return ("; the mount is still held by another mount namespace, of process %s" % ", ".join(out)
            if out else "")


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout):
    """Wait until none of pids is alive; returns those still alive after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if pid_alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def start_mount(src, spec="int8", excludes=(), includes=(), opts=(), foreground=True,
                extra=(), fmt=None, wrapper=(), env=None):
    """Mount src on a fresh mountpoint; returns a Mount (call .close(), or use mounted()).

    foreground: `quarkfs -f` in a Popen with stderr captured to a file, waiting for the mount
    to appear (fails early if the process exits); else the daemon mode, which returns after
    the mount exists. wrapper: a command that execs quarkfs (e.g. setpriv ...); env: its
    environment (foreground only).
    """
    mnt = tmpdir("mnt")
    args = [QUARKFS] + view_flags(spec, excludes, includes, fmt)
    if not any(o.startswith("cache_dir=") or o.startswith("cache=") for o in opts):
        opts = list(opts) + ["cache=off"]   # tests compute every tensor unless they ask
    for o in opts:
        args += ["-o", o]
    args += list(extra) + [src, mnt]
    if foreground:
        log_path = mnt + ".stderr"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(list(wrapper) + [QUARKFS, "-f"] + args[1:],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        m = Mount(mnt, proc, log_path, [proc.pid])
        _active_mounts.append(m)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mnt):
            rc = proc.poll()
            if rc is not None:
                m.close()
                raise AssertionError("quarkfs -f exited with %d before mounting:\n%s" % (rc, m.log()))
            if time.monotonic() > deadline:
                m.close()
                raise AssertionError("mount did not appear within %.0f s:\n%s" % (MOUNT_TIMEOUT, m.log()))
            time.sleep(0.01)
        return m
    res = run(list(wrapper) + args, timeout=MOUNT_TIMEOUT * 3)
    m = Mount(mnt, None, None, [])
    _active_mounts.append(m)
    if res.returncode != 0 or not is_mounted(mnt):
        m.close()
        raise AssertionError("daemon mount failed or returned before the mount existed "
                             "(mounted: %s): %r" % (is_mounted(mnt), res))
    m.daemon_pids = pids_serving(mnt)
    return m


@contextlib.contextmanager
def mounted(src, spec="int8", excludes=(), includes=(), opts=(), foreground=True, extra=(),
            fmt=None, wrapper=(), env=None):
    """with mounted(src, ...) as m: ...  -- unmounted (and its process gone) in every path."""
    m = start_mount(src, spec, excludes, includes, opts, foreground, extra, fmt, wrapper, env)
    try:
        yield m
    finally:
        m.close()


@contextlib.contextmanager
def slow_dir(write_delay_ms, fail_match=None, fail_flag=None):
    """with slow_dir(ms) as (d, backing): d a fresh, empty, writable directory each of whose
    write requests takes at least ms milliseconds (tests/integration/slowfs.c, a FUSE mirror of
    the directory backing): a disk too slow or too busy for what is written to it. With
    fail_match and fail_flag: writes to files whose path contains fail_match fail with EIO
    while the file fail_flag exists. Unmounted in every path; backing stays."""
    backing, mnt = tmpdir("slow-backing"), tmpdir("slow")
    log_path = tmppath("slowfs-log")
    opts = "write_delay_ms=%d" % write_delay_ms
    if fail_match:
        opts += ",fail_match=%s,fail_flag=%s" % (fail_match, fail_flag)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([SLOWFS, "-f", "-o", opts, backing, mnt], stdout=log,
                                stderr=subprocess.STDOUT)
    m = Mount(mnt, proc, log_path, [])
    _active_mounts.append(m)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("slowfs did not mount %s: %s" % (mnt, m.log().strip()))
            time.sleep(0.05)
        yield mnt, backing
    finally:
        m.close()


def _cleanup():
    for m in list(_active_mounts):
        with contextlib.suppress(Exception):
            m.close()
    if os.environ.get("QUARKFS_TEST_KEEP"):
        print("kept %s" % TMP)
        return
    # Never delete through a mountpoint: only remove the tree if nothing below is mounted.
    with open("/proc/self/mountinfo") as f:
        busy = [l.split()[4] for l in f if l.split()[4].startswith(TMP)]
    if busy:
        print("warning: still mounted, %s left in place: %s" % (TMP, busy))
        return
    for root, dirs, files in os.walk(TMP):
        for d in dirs:      # copies of read-only trees
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(TMP, ignore_errors=True)


atexit.register(_cleanup)


def abort_mounts(why):
    """Kill the quarkfs processes of every live mount and detach the mounts (-uz): a read
    blocked on a hung daemon then fails with ENOTCONN instead of hanging the test run."""
    for m in list(_active_mounts):
        print("aborting the mount %s: %s" % (m.path, why), flush=True)
        for pid in set(m.daemon_pids + pids_serving(m.path)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            subprocess.run(["fusermount3", "-uz", m.path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)


def _on_signal(signum, frame):
    abort_mounts("signal %d" % signum)
    raise KeyboardInterrupt("signal %d" % signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def read_bytes(path):
    """Whole file content."""
    with open(path, "rb") as f:
        return f.read()


def status_settled(mnt, timeout=90.0):
    """`quarkfs status MNT --json`, parsed, once the mount's disk writer has no entry queued
    or in progress (new entries are written in the background); fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        res = quarkfs("status", mnt, "--json")
        assert res.returncode == 0, "quarkfs status failed: %r" % res
        st = json.loads(res.stdout)
        if st.get("cache_queue", {}).get("queued", 0) == 0:
            return st
        assert time.monotonic() < deadline, "the disk writer still has entries queued: %s" % st
        time.sleep(0.02)


def tree_files(root):
    """Sorted relative paths of every file under root (symlinks followed)."""
    out = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in files:
            if os.path.exists(os.path.join(d, name)):      # skip dangling symlinks
                out.append(os.path.relpath(os.path.join(d, name), root))
    return sorted(out)


def tree_dirs(root):
    """Sorted relative paths of every directory under root (symlinks followed)."""
    out = []
    for d, dirs, _ in os.walk(root, followlinks=True):
        for name in dirs:
            out.append(os.path.relpath(os.path.join(d, name), root))
    return sorted(out)


def sha256(path):
    """Hex digest of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def first_diff(a, b):
    """Index of the first differing byte of two byte strings (or the shorter length)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n
    while hi - lo > 1:                 # binary search on equal prefixes
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def assert_bytes_equal(got, expected, what):
    """Bytes equal, or an AssertionError saying where they first differ."""
    if got != expected:
        i = first_diff(got, expected)
        raise AssertionError("%s: %d bytes, expected %d; first difference at byte %d: got %r, "
                             "expected %r" % (what, len(got), len(expected), i,
                                              got[i:i + 16], expected[i:i + 16]))


def assert_trees_equal(a, b, what="trees"):
    """Same file names (recursively) and the same bytes in every file."""
    fa, fb = tree_files(a), tree_files(b)
    if fa != fb:
        raise AssertionError("%s: different file lists:\n only in %s: %s\n only in %s: %s"
                             % (what, a, sorted(set(fa) - set(fb)), b, sorted(set(fb) - set(fa))))
    assert tree_dirs(a) == tree_dirs(b), "%s: different directories" % what
    for rel in fa:
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        sa, sb = os.stat(pa).st_size, os.stat(pb).st_size
        assert sa == sb, "%s: %s has size %d in %s but %d in %s" % (what, rel, sa, a, sb, b)
        if sha256(pa) != sha256(pb):
            assert_bytes_equal(read_bytes(pa), read_bytes(pb), "%s: %s" % (what, rel))
    return fa


def expect_oserror(err, fn, *args, what=None):
    """fn(*args) must raise OSError with errno err."""
    try:
        fn(*args)
    except OSError as exc:
        if exc.errno != err:
            raise AssertionError("%s: expected %s, got %s (%s)" % (
                what or fn.__name__, errno.errorcode[err], errno.errorcode.get(exc.errno), exc))
        return exc
    raise AssertionError("%s: expected %s, but it succeeded" % (what or fn.__name__,
                                                                errno.errorcode[err]))


# ---------------------------------------------------------------------------------------------
# safetensors headers (parsed here, in Python, independently of quarkfs)
# ---------------------------------------------------------------------------------------------

def st_header(path):
    """(header dict without __metadata__, metadata, data start) of a safetensors file."""
    header, start = stfile.read_header(path)
    meta = header.pop("__metadata__", None)
    return header, meta, start


def st_header_of(data, name="safetensors bytes"):
    """st_header of a safetensors file's bytes (the header alone is enough)."""
    header, start = stfile.parse_header(data, name)
    meta = header.pop("__metadata__", None)
    return header, meta, start


def tensor_ranges(path):
    """{name: (begin, end)} absolute file offsets of each tensor's bytes."""
    header, _, start = st_header(path)
    return {k: (start + v["data_offsets"][0], start + v["data_offsets"][1])
            for k, v in header.items()}


def negate_tensor(path, name):
    """Flip the sign bit of every bf16 element of tensor name in place (same size, new bytes)."""
    b, e = tensor_ranges(path)[name]
    with open(path, "r+b") as f:
        f.seek(b)
        data = bytearray(f.read(e - b))
        for i in range(1, len(data), 2):
            data[i] ^= 0x80
        f.seek(b)
        f.write(data)


def model_files(root):
    """Sorted model*.safetensors names directly in root."""
    return sorted(f for f in os.listdir(root) if f.startswith("model") and f.endswith(".safetensors"))


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

_tests = []


def test(fn_or_name):
    """Decorator registering a test (in definition order); @test or @test("name")."""
    if callable(fn_or_name):
        _tests.append((fn_or_name.__name__, fn_or_name))
        return fn_or_name

    def deco(fn):
        _tests.append((fn_or_name, fn))
        return fn
    return deco


def add_test(name, fn):
    """Register a test under an explicit name (for generated, parametrized tests)."""
    _tests.append((name, fn))


def main(skip_exit=True):
    """Run the registered tests (optionally only those whose name contains an argument).

    Prints one line per test and, last, "N passed, N failed". Exit 1 on any failure; else 77
    (meson's SKIP) if something was skipped and skip_exit, else 0.
    """
    only = sys.argv[1:]
    passed = failed = skipped = 0
    skips = []          # (test, reason), repeated at the end where a reader looks
    t0 = time.monotonic()
    print("quarkfs %s, temporary root %s" % (QUARKFS, TMP), flush=True)
    try:
        for name, fn in _tests:
            if only and not any(o in name for o in only):
                continue
            t = time.monotonic()
            watchdog = threading.Timer(TEST_TIMEOUT, abort_mounts,
                                       ["%s ran past %d s" % (name, TEST_TIMEOUT)])
            watchdog.daemon = True
            watchdog.start()
            try:
                fn()
            except Skip as exc:
                skipped += 1
                skips.append((name, str(exc)))
                print("SKIP %s (%s)" % (name, exc), flush=True)
            except KeyboardInterrupt:
                failed += 1
                print("FAIL %s: interrupted" % name, flush=True)
                raise
            except Exception:           # noqa: BLE001 - report every failure and go on
                failed += 1
                print("FAIL %s (%.2f s)\n%s" % (name, time.monotonic() - t,
                                               traceback.format_exc()), flush=True)
            else:
                passed += 1
                print("ok   %s (%.2f s)" % (name, time.monotonic() - t), flush=True)
            finally:
                watchdog.cancel()
    finally:
        _cleanup_leftover_mounts = list(_active_mounts)
        for m in _cleanup_leftover_mounts:
            failed += 1
            print("FAIL a mount of %s was left open by a test" % m.path, flush=True)
            with contextlib.suppress(Exception):
                m.close()
        if skipped:
            print("%d skipped:" % skipped)
            for name, why in skips:
                print("  SKIP %s: %s" % (name, why))
        print("total %.1f s" % (time.monotonic() - t0))
        print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 77 if skipped and skip_exit else 0)
