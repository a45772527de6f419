"""Load: 32 processes read one view at once for a bounded time under a small memory budget.

Each reader process (readers.py load ...) loops until its deadline over the view's
safetensors files, choosing at random between
  * mmap page faults: 64 random pages of a shared mapping of the view file, then
    madvise(MADV_DONTNEED) + posix_fadvise(POSIX_FADV_DONTNEED) so later faults go back to the
    kernel (and, for pages no other process maps, to the daemon);
  * buffered pread of a random range (1 byte .. 3 MiB, often across tensor boundaries);
  * O_DIRECT pread of a random aligned range (every such read reaches the daemon);
and compares every byte with `quarkfs export --no-cache` of the same source (mapped read-only,
so the 32 readers share one copy), itself checked against tests/oracle/quarkref.py.

The mount runs with -o cache_mem=64M while the view's quantized weights are about 1.4 times
that, so tensors are evicted and recomputed all along. The test fails on
  * a wrong byte or a read error in any process;
  * a process that does not finish within its deadline plus GRACE seconds (a deadlock: the
    watchdog kills the daemon and detaches the mount, so blocked readers get ENOTCONN);
  * the daemon's peak resident memory (VmHWM) above the budget plus the one tensor in flight
    (its source bytes and its output), plus the idle daemon's own peak, plus SLACK for the FUSE
    threads' buffers (16 threads x (1 MiB request buffer + up to 1 MiB reply)); the daemon
    runs without meson's MALLOC_PERTURB_ (it makes glibc write freed memory, so the allocator's
    free lists would count as resident);
  * too little load: fewer reads than processes, no eviction.

Knobs (environment): QUARKFS_LOAD_SECONDS (default 30), QUARKFS_LOAD_PROCS (default 32);
the TSan run of scripts/test.sh shortens the time. Under ASan or TSan (the binary links
libasan/libtsan) the memory check is reported but not enforced: their shadow memory and
quarantine are not the daemon's.
"""

import json
import os
import subprocess
import threading
import time

import qfstest as q

SECONDS = float(os.environ.get("QUARKFS_LOAD_SECONDS", "30"))
PROCS = int(os.environ.get("QUARKFS_LOAD_PROCS", "32"))
BUDGET = 64 << 20
GRACE = 60.0                  # seconds a reader may take past its deadline (one slow read;
                              # 3x under a sanitizer, whose quantization is 10-20x slower)
SLACK = 32 << 20              # allocator and FUSE buffers beyond the idle daemon's peak
GEN = ("demo", "bf16", "--hidden", "1024", "--intermediate", "4096", "--layers", "6",
       "--vocab", "4096", "--shards", "3")
SPEC = "int8"
READERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "readers.py")


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------

def sanitized():
    """'asan'/'tsan' if the binary links a sanitizer runtime (its memory is not comparable)."""
    out = q.run(["ldd", q.QUARKFS]).stdout
    return "tsan" if "libtsan" in out else "asan" if "libasan" in out else None


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return {l.split(":")[0]: l.split(":", 1)[1].strip() for l in f}


def kib(v):
    return int(v.split()[0]) * 1024


def largest_tensor(src):
    """Bytes of the largest quantized source tensor (bf16)."""
    best = 0
    for f in q.model_files(src):
        for name, (b, e) in q.tensor_ranges(os.path.join(src, f)).items():
            if name.endswith("_proj.weight"):
                best = max(best, e - b)
    return best


def run_readers(m, export, seconds, procs, seed0, grace=GRACE):
    """Start procs reader processes; a watchdog aborts the mount if one outlives its deadline
    by grace seconds. Returns (list of result dicts, list of problems)."""
    cmd = [q.PY, READERS, "load", m.path, export]
    readers = [subprocess.Popen(cmd + [str(seed0 + i), str(seconds)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for i in range(procs)]
    hung = []

    def watchdog():
        hung.extend(p.pid for p in readers if p.poll() is None)
        if hung:
            q.abort_mounts("load test: %d reader(s) still running %.0f s past their deadline"
                           % (len(hung), grace))
    timer = threading.Timer(seconds + grace, watchdog)
    timer.daemon = True
    timer.start()
    results, problems = [], []
    try:
        for p in readers:
            out, err = p.communicate(timeout=seconds + grace + 60)
            try:
                results.append(json.loads(out.decode().strip().splitlines()[-1]))
            except (ValueError, IndexError):
                problems.append("reader %d: rc %d, no result: %s" % (p.pid, p.returncode,
                                                                    err.decode()[-2000:]))
                continue
            r = results[-1]
            if r["mismatch"] or r["error"]:
                problems.append("reader %d (seed %d): %s" % (p.pid, r["seed"],
                                                              r["mismatch"] or r["error"]))
    finally:
        timer.cancel()
        for p in readers:
            if p.poll() is None:
                p.kill()
                p.wait()
    if hung:
        problems.insert(0, "DEADLOCK: %d reader(s) still running %.0f s after their %g s "
                           "deadline: %s" % (len(hung), grace, seconds, hung))
    return results, problems


@q.test
def load_32_processes_small_budget():
    src = q.gen_model(*GEN)
    export = q.export(src, SPEC)
    q.quarkref_check(src, export, SPEC)
    view_bytes = sum(os.path.getsize(os.path.join(export, f)) for f in q.model_files(export))
    quantized = sum(e - b for f in q.model_files(src)
                    for n, (b, e) in q.tensor_ranges(os.path.join(src, f)).items()
                    if n.endswith("_proj.weight")) // 2
    assert quantized > BUDGET * 1.3, "the view's weights (%d bytes) must not fit the budget" % quantized
    san = sanitized()
    # meson sets MALLOC_PERTURB_, which makes glibc write every freed chunk: the per-thread
    # arenas' free memory then counts as resident, which is not the daemon's doing
    with q.mounted(src, SPEC, opts=["cache_mem=64M"], env=q.PY_ENV) as m:
        pid = m.proc.pid
        idle_hwm = kib(proc_status(pid)["VmHWM"])
        t0 = time.monotonic()
        results, problems = run_readers(m, export, SECONDS, PROCS, 1,
                                        GRACE * 3 if san else GRACE)
        wall = time.monotonic() - t0
        st = proc_status(pid) if q.pid_alive(pid) else None
        alive = m.proc.poll() is None
        status = q.run([q.QUARKFS, "status", "--json", m.path], timeout=30)
        log = m.log()
    assert not problems, "\n".join(problems)
    assert alive, "quarkfs died under load:\n" + log[-3000:]
    assert len(results) == PROCS, results
    counters = json.loads(status.stdout)
    hwm = kib(st["VmHWM"])
    big = largest_tensor(src)
    allowed = BUDGET + big + big // 2 + idle_hwm + SLACK
    reads = sum(r["reads"] for r in results)
    total = sum(r["bytes"] for r in results)
    print("    %d processes, %.0f s (%.1f s wall): %d reads (%d mmap page faults, %d buffered "
          "preads, %d O_DIRECT preads), %d bytes compared, 0 wrong; view %d bytes of safetensors;"
          " daemon VmHWM %.1f MiB (idle %.1f MiB; budget %d MiB, allowed %.1f MiB%s); "
          "tensors quantized %d, evictions %d, memory hits %d" % (
              PROCS, SECONDS, wall, reads, sum(r["faults"] for r in results),
              sum(r["buffered"] for r in results), sum(r["direct"] for r in results), total,
              view_bytes, hwm / 2**20, idle_hwm / 2**20, BUDGET >> 20, allowed / 2**20,
              ", not enforced under " + san if san else "", counters["tensors_quantized"],
              counters["evictions"], counters["memory_hits"]), flush=True)
    assert "Sanitizer" not in log and "runtime error" not in log, log[-5000:]
    assert reads >= PROCS and all(r["reads"] > 0 for r in results), "a reader made no read"
    assert counters["evictions"] > 0, "no eviction: the budget did not bind %r" % counters
    if not san:
        assert hwm <= allowed, "daemon VmHWM %.1f MiB > allowed %.1f MiB" % (hwm / 2**20,
                                                                             allowed / 2**20)


if __name__ == "__main__":
    q.TEST_TIMEOUT = max(q.TEST_TIMEOUT, int(SECONDS + 3 * GRACE + 180))
    q.main()
