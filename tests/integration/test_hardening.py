"""Hardening against a hostile local user or a careless operator: nothing the source or the
cache directory holds can make the daemon hang, serve other bytes than the view's, leak across
users or break out of its directories. Each test is the regression test of one guarantee in
tests/RELIABILITY.md ("Hardening").

Another user is a throw-away uid (ATTACKER) through setpriv; files it creates are removed with
the test's temporary root.
"""

import errno
import fcntl
import json
import os
import stat
import subprocess
import threading
import time

import qfstest as q

ATTACKER = 12345
AS_ATTACKER = ["setpriv", "--reuid=%d" % ATTACKER, "--regid=%d" % ATTACKER, "--clear-groups"]

# A child opens each path `n` times from as many threads and prints {path: [outcome, ...]};
# outcomes are "ok" or an errno name. Run with a timeout: an open that blocks shows as one.
OPENER = r"""
import errno, json, os, sys, threading
n = int(sys.argv[1]); out = {p: [] for p in sys.argv[2:]}; lock = threading.Lock()
def one(p):
    try:
        fd = os.open(p, os.O_RDONLY); os.read(fd, 1); os.close(fd); r = "ok"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    with lock: out[p].append(r)
ts = [threading.Thread(target=one, args=(p,)) for p in sys.argv[2:] for _ in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps(out))
"""


def release_fifo(path):
    """Opens path for writing without blocking, to release readers blocked opening it."""
    for _ in range(64):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return


def demo_copy():
    return q.copy_model(q.gen_model("demo"))


def status_of(mnt, as_user=None):
    cmd = (AS_ATTACKER if as_user else []) + [q.QUARKFS, "status", mnt, "--json"]
    res = q.run(cmd, timeout=30)
    assert res.returncode == 0, res
    return json.loads(res.stdout)


@q.test
def fifo_in_place_of_source_files():
    """A passthrough file replaced by a FIFO after the mount, and an allowed symlink retargeted
    to a FIFO: every open answers EIO at once (none blocks a FUSE worker), other files keep
    answering, the log says why, and the mount unmounts cleanly."""
    src = demo_copy()
    with open(os.path.join(src, "tokenizer.json"), "w") as f:
        f.write('{"tokens": [1, 2, 3]}\n')
    with open(os.path.join(src, "vocab.txt"), "w") as f:
        f.write("a\nb\n")
    os.symlink("vocab.txt", os.path.join(src, "vocab_link.txt"))
    fifos = []
    with q.mounted(src, "int8") as m:
        assert q.read_bytes(m.p("tokenizer.json")) == b'{"tokens": [1, 2, 3]}\n'
        assert q.read_bytes(m.p("vocab_link.txt")) == b"a\nb\n"
        f1, f2 = os.path.join(src, ".fifo1"), os.path.join(src, "fifo2")
        os.mkfifo(f1)
        os.mkfifo(f2)
        os.rename(f1, os.path.join(src, "tokenizer.json"))
        os.remove(os.path.join(src, "vocab_link.txt"))
        os.symlink("fifo2", os.path.join(src, "vocab_link.txt"))
        fifos = [os.path.join(src, "tokenizer.json"), f2]
        paths = [m.p("tokenizer.json"), m.p("vocab_link.txt")]
        stop = threading.Event()

        def releaser():   # so that a failing run ends instead of hanging the suite
            while not stop.wait(25):
                for p in fifos:
                    release_fifo(p)
        t = threading.Thread(target=releaser, daemon=True)
        t.start()
        try:
            t0 = time.monotonic()
            res = q.run([q.PY, "-c", OPENER, "20"] + paths, timeout=120)
            took = time.monotonic() - t0
            st0 = time.monotonic()
            os.stat(m.p("config.json"))
            stat_took = time.monotonic() - st0
        finally:
            stop.set()
            for p in fifos:
                release_fifo(p)
        assert res.returncode == 0, res
        out = json.loads(res.stdout)
        assert took < 10, "40 opens of FIFO-backed view files took %.1f s (blocked)" % took
        assert stat_took < 2, stat_took
        for p in paths:
            assert out[p] == ["EIO"] * 20, (p, out[p])
        assert "not a regular file" in m.log(), m.log()
        assert m.proc.poll() is None, m.log()


if __name__ == "__main__":
    q.main()
