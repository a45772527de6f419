"""Faults: the daemon killed mid-read, the dead mount cleaned up and remounted, source files
deleted or truncated while mounted (also during reads), a full cache directory under
concurrent readers, and SIGTERM/SIGINT/SIGHUP during reads.

Reader processes (readers.py fault ...) read random ranges of one view file in a loop
and compare every byte with `quarkfs export --no-cache` of the same source: "buffered" (pread
after posix_fadvise(DONTNEED), so most reads reach the daemon), "direct" (O_DIRECT: every read
reaches it) or "mmap" (random page faults on a shared mapping, MADV_DONTNEED between rounds).
A reader stops at its first error and prints what happened as JSON; an mmap reader whose fault
fails dies of SIGBUS, which is how the kernel reports an I/O error to a mapping.

What a reader may see when the daemon dies or its source goes away: the right bytes, or an
error (ENOTCONN, ECONNABORTED, EIO; SIGBUS for mmap) -- never wrong or short data.
"""

import contextlib
import errno
import json
import mmap
import os
import shutil
import signal
import subprocess
import threading
import time

import qfstest as q

PAGE = mmap.PAGESIZE
GEN = ("demo", "bf16", "--hidden", "1024", "--intermediate", "2816", "--layers", "2")
SPEC = "int8"
DEAD_ERRORS = {"ENOTCONN", "ECONNABORTED", "EIO", "SIGBUS"}
READERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "readers.py")
MODES = ["buffered", "buffered", "buffered", "direct", "direct", "direct", "mmap", "mmap"]


class Readers:
    """Reader processes on one view file; .finish() -> list of result dicts."""

    def __init__(self, view, expected, modes, seconds, seed0=1):
        cmd = [q.PY, READERS, "fault"]
        self.procs = [subprocess.Popen(cmd + [mode, view, expected, str(seed0 + i), str(seconds)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                      for i, mode in enumerate(modes)]
        self.modes = modes

    def finish(self, timeout):
        results = []
        deadline = time.monotonic() + timeout
        try:
            for p, mode in zip(self.procs, self.modes):
                try:
                    out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    results.append({"mode": mode, "hung": True})
                    continue
                if p.returncode == -signal.SIGBUS:
                    results.append({"mode": mode, "error": "SIGBUS", "mismatch": None})
                    continue
                try:
                    results.append(json.loads(out.decode().strip().splitlines()[-1]))
                except (ValueError, IndexError):
                    results.append({"mode": mode, "crash": "rc %s: %s" % (
                        p.returncode, err.decode()[-1500:])})
        finally:
            self.kill()
        return results

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def assert_no_wrong_bytes(results):
    for r in results:
        assert not r.get("hung"), "a %s reader hangs" % r["mode"]
        assert not r.get("crash"), "a %s reader crashed: %s" % (r["mode"], r["crash"])
        assert not r.get("mismatch"), "a %s reader got wrong bytes: %s" % (r["mode"], r["mismatch"])


_setup = {}


def model():
    """(src, export dir, the largest view file's name) -- the export checked by quarkref."""
    if not _setup:
        src = q.gen_model(*GEN)
        out = q.export(src, SPEC)
        q.quarkref_check(src, out, SPEC)
        big = max(q.model_files(out), key=lambda f: os.path.getsize(os.path.join(out, f)))
        _setup.update(src=src, out=out, big=big)
    return _setup["src"], _setup["out"], _setup["big"]


def stat_errno(path):
    try:
        os.stat(path)
    except OSError as exc:
        return errno.errorcode.get(exc.errno)
    return None


# ---------------------------------------------------------------------------------------------
# the daemon killed mid-read; cleanup and remount
# ---------------------------------------------------------------------------------------------

def killed_mid_read(foreground, cleanup):
    """8 readers (3 buffered, 3 O_DIRECT, 2 mmap) on a mount with a 4 MiB tensor cache (so the
    daemon keeps quantizing); SIGKILL after 2 s. Every reader verified bytes before, then
    ends with an error, never wrong bytes; reads of the dead mount fail with ENOTCONN (or
    ECONNABORTED); `cleanup` (fusermount3 -uz or umount -l, as README says) removes it; a
    remount on the same mountpoint then serves every byte of the export."""
    src, out, big = model()
    m = q.start_mount(src, SPEC, opts=["cache_mem=4M"], foreground=foreground)
    readers = None
    pids = m.daemon_pids if not foreground else [m.proc.pid]
    try:
        assert len(pids) == 1, pids
        readers = Readers(m.p(big), os.path.join(out, big), MODES, 60)
        time.sleep(2.0)
        os.kill(pids[0], signal.SIGKILL)
        results = readers.finish(30)
        assert q.wait_gone(pids, 5) == [], "the daemon survived SIGKILL"
        assert_no_wrong_bytes(results)
        for r in results:
            assert r.get("reads", 1) > 0, "a %s reader read nothing before the kill: %s" % (
                r["mode"], r)
            assert r.get("error") in DEAD_ERRORS, "a %s reader ended with %s, expected an error "\
                "(%s) after the kill" % (r["mode"], r.get("error"), "/".join(sorted(DEAD_ERRORS)))
        seen = sorted({r["error"] for r in results})
        verified = sum(r.get("bytes", 0) for r in results)
        print("    SIGKILL with %d readers in flight: %d bytes verified before, errors seen %s"
              % (len(results), verified, seen), flush=True)
        # the dead mount
        assert q.is_mounted(m.path), "the mount vanished by itself"
        dead = []
        for path in (m.p(big), m.p("config.json")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
                try:
                    os.pread(fd, 4096, 0)
                finally:
                    os.close(fd)
            except OSError as exc:
                dead.append(errno.errorcode.get(exc.errno))
            else:
                dead.append(None)
        assert set(dead) <= {"ENOTCONN", "ECONNABORTED"} and None not in dead, \
            "reads of the dead mount: %s" % dead
        # cleanup, as README says
        res = q.run(cleanup + [m.path], timeout=30)
        assert res.returncode == 0, res
        assert not q.is_mounted(m.path), "still mounted after %s" % " ".join(cleanup)
        assert stat_errno(m.path) is None
    finally:
        if readers:
            readers.kill()
        q._active_mounts.remove(m)          # cleaned up here: the mountpoint is reused below
        for pid in q.pids_serving(m.path) + pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if m.proc is not None:
            m.proc.wait(10)
        if q.is_mounted(m.path):
            q.run(["fusermount3", "-uz", m.path], timeout=30)
    # remount on the same (now plain) directory
    res = q.run([q.QUARKFS, "-o", "cache=off", "--spec", SPEC, src, m.path], timeout=60)
    m2 = q.Mount(m.path, None, None, q.pids_serving(m.path))
    q._active_mounts.append(m2)
    try:
        assert res.returncode == 0 and q.is_mounted(m.path), "remount failed: %r" % res
        for rel in q.tree_files(out):
            assert q.sha256(m2.p(rel)) == q.sha256(os.path.join(out, rel)), rel
    finally:
        m2.close()


q.add_test("sigkill_mid_read_fusermount_uz", lambda: killed_mid_read(True, ["fusermount3", "-uz"]))
q.add_test("sigkill_daemon_mid_read_umount_l", lambda: killed_mid_read(False, ["umount", "-l"]))


# ---------------------------------------------------------------------------------------------
# sources deleted or truncated while mounted
# ---------------------------------------------------------------------------------------------

@q.test
def source_deleted_while_mounted():
    """Deleted after the mount: a quantized shard keeps being served in full from the
    descriptor opened at mount (no error); config.json and the index (built at mount) too; a
    passthrough file is still listed with its size, but opening it fails with ENOENT (it is
    opened by path) and the log names it; a descriptor opened before the deletion keeps
    reading its bytes."""
    src0, out, big = model()
    src = q.copy_model(src0)
    with open(os.path.join(src, "tokenizer.json"), "w") as f:
        f.write(json.dumps({"model": "x" * 5000}) + "\n")
    with open(os.path.join(src, "vocab.txt"), "w") as f:
        f.write("a\nb\n" * 3000)
    tok = q.read_bytes(os.path.join(src, "tokenizer.json"))
    vocab = q.read_bytes(os.path.join(src, "vocab.txt"))
    with q.mounted(src, SPEC, opts=["cache_mem=4M"]) as m:
        held = os.open(m.p("vocab.txt"), os.O_RDONLY | os.O_DIRECT)
        try:
            for rel in q.model_files(src) + ["tokenizer.json", "vocab.txt", "config.json",
                                             "model.safetensors.index.json"]:
                os.remove(os.path.join(src, rel))
            # the shards: every byte, from the descriptors opened at mount
            for rel in q.model_files(out):
                fd = os.open(m.p(rel), os.O_RDONLY | os.O_DIRECT)
                try:
                    got = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
                finally:
                    os.close(fd)
                q.assert_bytes_equal(got, q.read_bytes(os.path.join(out, rel)), rel + " (deleted)")
            for rel in ("config.json", "model.safetensors.index.json"):
                q.assert_bytes_equal(q.read_bytes(m.p(rel)), q.read_bytes(os.path.join(out, rel)), rel)
            # a passthrough file: listed, sized, not openable
            assert "tokenizer.json" in os.listdir(m.path)
            assert os.stat(m.p("tokenizer.json")).st_size == len(tok)
            q.expect_oserror(errno.ENOENT, os.open, m.p("tokenizer.json"), os.O_RDONLY,
                             what="open of a deleted passthrough file")
            # ... unless it was open before
            chunks = []
            while True:
                b = os.read(held, 4096)
                if not b:
                    break
                chunks.append(b)
            q.assert_bytes_equal(b"".join(chunks), vocab, "vocab.txt through a descriptor held")
        finally:
            os.close(held)
        assert m.proc.poll() is None, m.log()
        log = m.log()
    assert any("tokenizer.json" in l and "No such file" in l for l in log.splitlines()), log


@q.test
def source_truncated_during_reads():
    """The largest shard and a passthrough file are truncated to half while 8 readers read
    them: every read returns the right bytes or EIO (never short or wrong data), the log names
    both files, and the other shard is still served in full."""
    src0, out, big = model()
    src = q.copy_model(src0)
    with open(os.path.join(src, "vocab.txt"), "wb") as f:
        f.write(os.urandom(3 << 20))
    exp_vocab = os.path.join(q.tmpdir("vocab"), "vocab.txt")
    shutil.copyfile(os.path.join(src, "vocab.txt"), exp_vocab)
    with q.mounted(src, SPEC, opts=["cache_mem=4M"]) as m:
        shard_readers = Readers(m.p(big), os.path.join(out, big), MODES[:3] + MODES[3:5], 8)
        vocab_readers = Readers(m.p("vocab.txt"), exp_vocab, ["buffered", "direct", "mmap"], 8, 50)
        try:
            time.sleep(1.5)
            for rel in (big, "vocab.txt"):
                p = os.path.join(src, rel)
                os.truncate(p, os.path.getsize(p) // 2)
            results = shard_readers.finish(60) + vocab_readers.finish(60)
        finally:
            shard_readers.kill()
            vocab_readers.kill()
        assert_no_wrong_bytes(results)
        errs = sorted({r.get("error") for r in results if r.get("error")})
        assert set(errs) <= {"EIO", "SIGBUS"}, "unexpected errors %s" % errs
        # after the truncation: a read past the new end of the source fails with EIO; before
        # it, the bytes are still the right ones (a passthrough file's, or a quantized tensor
        # still in the memory cache), or EIO (a quantized tensor to compute: changed file)
        for rel, exp in ((big, os.path.join(out, big)), ("vocab.txt", exp_vocab)):
            try:   # a changed passthrough file is refused at open: the view is a snapshot
                fd = os.open(m.p(rel), os.O_RDONLY | os.O_DIRECT)
            except OSError as exc:
                assert exc.errno == errno.EIO and rel == "vocab.txt", exc
                continue
            try:
                size = os.fstat(fd).st_size
                for off in range(0, size, 1 << 20):
                    try:
                        got = os.pread(fd, 1 << 20, off)
                    except OSError as exc:
                        assert exc.errno == errno.EIO, exc
                        continue
                    with open(exp, "rb") as f:
                        f.seek(off)
                        q.assert_bytes_equal(got, f.read(1 << 20), "%s at %d" % (rel, off))
                q.expect_oserror(errno.EIO, os.pread, fd, 4096, size - 4096,
                                 what="O_DIRECT read of the end of truncated " + rel) \
                    if rel == "vocab.txt" else None
            finally:
                os.close(fd)
        for rel in q.model_files(out):
            if rel != big:
                assert q.sha256(m.p(rel)) == q.sha256(os.path.join(out, rel)), rel
        assert m.proc.poll() is None, m.log()
        log = m.log()
    print("    truncated under %d readers: errors seen %s, %d bytes verified" % (
        len(results), errs, sum(r.get("bytes", 0) for r in results)), flush=True)
    for rel in (big, "vocab.txt"):
        assert any(rel in l and ("shorter" in l or "changed under the mount" in l)
                   for l in log.splitlines()), "the log does not name %s:\n%s" % (rel, log[-3000:])


# ---------------------------------------------------------------------------------------------
# a full cache directory
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(size):
    target = q.tmpdir("tmpfs")
    res = q.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", target], timeout=30)
    assert res.returncode == 0, res
    try:
        yield target
    finally:
        for _ in range(20):
            if not q.is_mounted(target) or q.run(["umount", target], timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        if q.is_mounted(target):
            q.run(["umount", "-l", target], timeout=30)
        with contextlib.suppress(OSError):
            os.rmdir(target)


@q.test
def cache_dir_full_under_concurrent_readers():
    """The disk cache on a 1 MiB tmpfs fills up (ENOSPC) while 8 threads read the whole view
    with O_DIRECT: exactly one warning (naming the directory and the error, saying the memory
    cache goes on), the disk cache is off in `quarkfs status`, every byte is right.
    (test_cache.py's full_cache_dir checks the sequential case and the entries.)"""
    src, out, big = model()
    files = {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}
    with tmpfs("1M") as t:
        cache = os.path.join(t, "cache")
        with q.mounted(src, SPEC, opts=["cache_dir=" + cache]) as m:
            errors = []

            def read_all(i):
                try:
                    for rel in sorted(files, key=lambda r: (r != big, (hash(r) + i) % 7)):
                        fd = os.open(m.p(rel), os.O_RDONLY | os.O_DIRECT)
                        try:
                            got = b"".join(iter(lambda: os.read(fd, 128 << 10), b""))
                        finally:
                            os.close(fd)
                        q.assert_bytes_equal(got, files[rel], "thread %d: %s" % (i, rel))
                except Exception as exc:    # noqa: BLE001 - reported below
                    errors.append(exc)
            threads = [threading.Thread(target=read_all, args=(i,)) for i in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(120)
            assert not any(th.is_alive() for th in threads), "a reader hangs"
            if errors:
                raise errors[0]
            st = json.loads(q.run([q.QUARKFS, "status", "--json", m.path]).stdout)
            log = m.log()
        warnings = [l for l in log.splitlines() if "warning" in l]
    assert len(warnings) == 1, "expected one warning:\n%s" % log
    w = warnings[0]
    assert cache in w and "No space left on device" in w and "in memory only" in w, w
    assert st["disk_cache"] is False, st


# ---------------------------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------------------------

def signal_during_reads(sig, foreground=True):
    """sig to quarkfs while 8 readers read (cache_mem=4M: quantization in flight): the process
    exits 0 within 20 s, the mount is gone, no quarkfs process is left; readers got the
    right bytes or an error."""
    src, out, big = model()
    m = q.start_mount(src, SPEC, opts=["cache_mem=4M"], foreground=foreground)
    readers = None
    try:
        pid = m.proc.pid if foreground else m.daemon_pids[0]
        readers = Readers(m.p(big), os.path.join(out, big), MODES, 60)
        time.sleep(1.5)
        t0 = time.monotonic()
        os.kill(pid, sig)
        if foreground:
            try:
                rc = m.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                raise AssertionError("quarkfs -f still running 20 s after signal %d:\n%s"
                                     % (sig, m.log()[-3000:]))
            assert rc == 0, "quarkfs -f exited with %d after signal %d:\n%s" % (rc, sig, m.log())
        else:
            assert q.wait_gone([pid], 20) == [], "daemon still running 20 s after signal %d" % sig
        took = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while q.is_mounted(m.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not q.is_mounted(m.path), "still mounted after signal %d" % sig
        assert q.pids_serving(m.path) == [], q.pids_serving(m.path)
        results = readers.finish(30)
        assert_no_wrong_bytes(results)
        errs = sorted({r.get("error") for r in results if r.get("error")})
        assert set(errs) <= DEAD_ERRORS | {"ENOENT"}, errs
        print("    signal %d: exit after %.2f s; readers' errors %s" % (sig, took, errs), flush=True)
        if foreground:
            log = m.log()
            assert "Sanitizer" not in log and "runtime error" not in log, log
    finally:
        if readers:
            readers.kill()
        m.close()


q.add_test("sigterm_during_reads", lambda: signal_during_reads(signal.SIGTERM))
q.add_test("sigint_during_reads", lambda: signal_during_reads(signal.SIGINT))
q.add_test("sighup_during_reads", lambda: signal_during_reads(signal.SIGHUP))
q.add_test("sigterm_daemon_during_reads", lambda: signal_during_reads(signal.SIGTERM, False))


if __name__ == "__main__":
    q.main()
