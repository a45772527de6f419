"""Reader processes of the load and fault tests (run as a script; imports nothing from
qfstest, so a reader killed by a signal leaves nothing behind).

    python3 readers.py load MNT EXPORT SEED SECONDS
        mmap faults, buffered and O_DIRECT preads at random over every view safetensors file
        of MNT until SECONDS pass, comparing with EXPORT (test_load.py)
    python3 readers.py fault MODE VIEW EXPECTED SEED SECONDS
        MODE buffered|direct|mmap reads of one view file, compared with the file EXPECTED,
        until the first error or SECONDS (test_faults.py)

Each prints one JSON line with its counts and, if any, the first mismatch or error.
"""

import errno
import json
import mmap
import os
import random
import sys
import time

PAGE = mmap.PAGESIZE


def first_diff(a, b):
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def load_reader(mnt, export, seed, seconds):
    rng = random.Random(seed)
    names = sorted(f for f in os.listdir(export) if f.endswith(".safetensors"))
    exp = {}
    for n in names:
        with open(os.path.join(export, n), "rb") as f:
            exp[n] = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    sizes = {n: len(exp[n]) for n in names}
    stats = {"seed": seed, "reads": 0, "bytes": 0, "faults": 0, "direct": 0, "buffered": 0,
             "mismatch": None, "error": None}
    views = {}
    direct = {}
    buf = mmap.mmap(-1, 2 << 20)             # page-aligned buffer for O_DIRECT
    deadline = time.monotonic() + seconds

    def check(n, off, got, what):
        want = exp[n][off:off + len(got)]
        stats["reads"] += 1
        stats["bytes"] += len(got)
        if got != want:
            i = next(k for k in range(len(got)) if got[k] != want[k]) if len(got) == len(want) \
                else min(len(got), len(want))
            stats["mismatch"] = "%s %s at %d (+%d): got %r, expected %r" % (
                what, n, off, i, bytes(got[i:i + 16]), bytes(want[i:i + 16]))
            return False
        return True

    try:
        while time.monotonic() < deadline and stats["mismatch"] is None:
            n = rng.choices(names, weights=[sizes[x] for x in names])[0]
            size = sizes[n]
            op = rng.random()
            if op < 0.4:                     # mmap page faults
                if n not in views:
                    fd = os.open(os.path.join(mnt, n), os.O_RDONLY)
                    views[n] = (fd, mmap.mmap(fd, size, prot=mmap.PROT_READ))
                fd, mm = views[n]
                for _ in range(64):
                    p = rng.randrange((size + PAGE - 1) // PAGE)
                    got = mm[p * PAGE:min(size, (p + 1) * PAGE)]
                    stats["faults"] += 1
                    if not check(n, p * PAGE, got, "mmap"):
                        break
                mm.madvise(mmap.MADV_DONTNEED)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            elif op < 0.7:                   # buffered pread
                off = rng.randrange(size)
                length = rng.choice([1, 7, 4096, 65536, 1 << 20, 2 << 20, rng.randrange(1, 3 << 20)])
                fd = os.open(os.path.join(mnt, n), os.O_RDONLY)
                try:
                    got = os.pread(fd, length, off)
                finally:
                    os.close(fd)
                stats["buffered"] += 1
                if len(got) != min(length, size - off):
                    stats["mismatch"] = "pread %s at %d: %d bytes, expected %d" % (
                        n, off, len(got), min(length, size - off))
                    break
                check(n, off, got, "pread")
            else:                            # O_DIRECT pread
                if n not in direct:
                    direct[n] = os.open(os.path.join(mnt, n), os.O_RDONLY | os.O_DIRECT)
                off = rng.randrange(size // PAGE + 1) * PAGE
                length = rng.randrange(1, 2 << 20) // PAGE * PAGE + PAGE
                mv = memoryview(buf)[:length]
                got_n = os.preadv(direct[n], [mv], off)
                stats["direct"] += 1
                if got_n != min(length, max(0, size - off)):
                    stats["mismatch"] = "O_DIRECT %s at %d: %d bytes, expected %d" % (
                        n, off, got_n, min(length, max(0, size - off)))
                    break
                check(n, off, bytes(mv[:got_n]), "O_DIRECT")
    except OSError as exc:
        stats["error"] = "%s (errno %s)" % (exc, exc.errno)
    for fd, mm in views.values():
        mm.close()
        os.close(fd)
    for fd in direct.values():
        os.close(fd)
    print(json.dumps(stats), flush=True)
    return 0 if stats["mismatch"] is None and stats["error"] is None else 1


def fault_reader(mode, view, expected, seed, seconds):
    rng = random.Random(seed)
    with open(expected, "rb") as f:
        exp = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    size = len(exp)
    r = {"mode": mode, "seed": seed, "reads": 0, "bytes": 0, "error": None, "mismatch": None,
         "last_ok": None}
    flags = os.O_RDONLY | (os.O_DIRECT if mode == "direct" else 0)
    buf = mmap.mmap(-1, 1 << 20)
    deadline = time.monotonic() + seconds
    fd = mm = None

    def check(off, got):
        want = exp[off:off + len(got)]
        if got != want:
            r["mismatch"] = "%s at %d: %d bytes, first difference at +%d" % (
                mode, off, len(got), first_diff(bytes(got), want))
            return False
        r["reads"] += 1
        r["bytes"] += len(got)
        r["last_ok"] = time.time()
        return True

    try:
        fd = os.open(view, flags)
        if mode == "mmap":
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        while time.monotonic() < deadline:
            if mode == "mmap":
                for _ in range(16):
                    p = rng.randrange((size + PAGE - 1) // PAGE)
                    if not check(p * PAGE, mm[p * PAGE:min(size, (p + 1) * PAGE)]):
                        break
                mm.madvise(mmap.MADV_DONTNEED)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                # read a random range to its end as an application would: a short read (the
                # kernel returns what it got before an error) must be followed by more bytes
                # or an error, never by an early end of file
                if mode == "buffered":
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    off = rng.randrange(size)
                    end = min(size, off + rng.randrange(1, 1 << 20))
                else:
                    off = rng.randrange(size // PAGE) * PAGE
                    end = min(size, off + rng.randrange(1, 256) * PAGE)
                pos = off
                while pos < end and not r["mismatch"]:
                    if mode == "buffered":
                        got = os.pread(fd, end - pos, pos)
                    else:
                        mv = memoryview(buf)[:(end - pos + PAGE - 1) // PAGE * PAGE]
                        got = bytes(mv[:os.preadv(fd, [mv], pos)])[:end - pos]
                    if not got:
                        r["mismatch"] = "%s: end of file at %d, the file has %d bytes" % (
                            mode, pos, size)
                    elif len(got) < end - pos:
                        r["short"] = r.get("short", 0) + 1
                    if got and check(pos, got):
                        pos += len(got)
            if r["mismatch"]:
                break
    except OSError as exc:
        r["error"] = errno.errorcode.get(exc.errno, str(exc.errno))
    print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "load":
        sys.exit(load_reader(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
    if len(sys.argv) == 7 and sys.argv[1] == "fault":
        sys.exit(fault_reader(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                              float(sys.argv[6])))
    print(__doc__)
    sys.exit(2)
