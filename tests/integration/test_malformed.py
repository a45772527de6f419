"""The malformed-model corpus (tests/integration/malformed.py) through inspect, export and a
mount, one test per case.

For every case:
  * `quarkfs inspect` and `quarkfs export --no-cache`: the exit code the case's verdict asks
    for (README, "Exit status"), a message on stderr that names the damaged file and the
    problem, and a failed export leaves no OUT behind; a successful export holds exactly the
    files of the view;
  * a foreground mount: refused (exit 1, nothing mounted) or mounted with the same message in
    its log; the damaged file answers what its verdict says (EIO, ENOENT, EACCES or its bytes),
    every other file reads byte for byte as `quarkfs export --no-cache` of the intact model
    (itself checked against tests/oracle/quarkref.py once); the daemon is alive afterwards and exits
    0 on unmount.

Unreadable files: root reads every file whatever its mode, so those cases run quarkfs as root
without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (`setpriv --bounding-set=-dac_override,
-dac_read_search`: the mode bits then hold, and mounting still works); inspect and export also
run as uid 65534 (`setpriv --reuid=65534`). A mount as uid 65534 is not possible here: /dev/fuse
is 0600 and libfuse does not fall back to fusermount3 when it cannot open it.

test_errors.py already mounts several damaged headers and compares the healthy files with the
reference; this file is the whole corpus through all three commands.

A check that shows a known, reported bug does not fail the run: the test ends with a
"SKIP ... KNOWN BUG" line after all its other checks passed; QUARKFS_TEST_STRICT=1 makes it fail.
"""

import errno
import json
import os
import shutil

import malformed as mf
import qfstest as q

SPEC = "int8"
STRICT = os.environ.get("QUARKFS_TEST_STRICT") == "1"
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
AS_NOBODY = ["setpriv", "--reuid=%d" % mf.NOBODY, "--regid=%d" % mf.NOBODY, "--clear-groups"]

# Known gaps: cases expected to fail until quarkfs handles them (none: every case passes).
KNOWN_BUGS = {}

_setup = {}


def setup():
    """(intact model, {relpath: bytes} of its --no-cache export, checked by quarkref)."""
    if not _setup:
        base = mf.build_base(os.path.join(q.tmpdir("malformed"), "intact"))
        out = q.export(base, SPEC)
        q.quarkref_check(base, out, SPEC)
        _setup["base"] = base
        _setup["files"] = {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}
        os.chmod(q.TMP, 0o755)        # uid 65534 must reach the case directories
    return _setup["base"], _setup["files"]


def message_lines(text, case, root):
    """Lines of text that name the damaged file (by its full path)."""
    full = os.path.join(root, case.bad)
    return [l for l in text.splitlines() if full in l]


def names_problem(text, case, root):
    """True if a line names the damaged file and (if the case has words) says the problem."""
    lines = message_lines(text, case, root)
    if not case.words:
        return True
    return any(any(w in l.lower() for w in case.words) for l in lines)


class Checker:
    """Collects a known bug's failed check so the rest of the test still runs."""

    def __init__(self, case):
        self.case, self.known = case, []

    def message(self, text, root, what):
        if names_problem(text, self.case, root):
            return
        msg = "%s: no message names %s and the problem (%s):\n%s" % (
            what, self.case.bad, "/".join(self.case.words), text[-3000:])
        if self.case.name in KNOWN_BUGS:
            self.known.append(msg)
        else:
            raise AssertionError(msg)

    def finish(self):
        if not self.known:
            if self.case.name in KNOWN_BUGS:
                raise AssertionError("%s: marked as a known bug but every check passed: remove it "
                                     "from KNOWN_BUGS" % self.case.name)
            return
        if STRICT:
            raise AssertionError("KNOWN BUG: " + "\n".join(self.known))
        raise q.Skip("KNOWN BUG (QUARKFS_TEST_STRICT=1 makes it fail): %s"
                     % KNOWN_BUGS[self.case.name])


def expected_rc(case, command):
    if case.verdict == "refused":
        return 1
    if command == "export":
        return 1 if case.verdict in ("eio", "read-eio", "open-eacces") else 0
    return 0


def wrapper_of(case):
    return NO_DAC if case.user is not None else []


def expected_view(case, d, files):
    """{relpath: bytes} the view must serve intact: every readable regular file of the case
    directory except the damaged one, as the intact model's export has it."""
    out = {}
    for rel in mf.good_parts(case, d):
        if rel in files:
            out[rel] = files[rel]
        else:                           # a file the damage added (e.g. a directory's content)
            out[rel] = q.read_bytes(os.path.join(d, rel))
    if case.verdict == "refused":
        return {}
    if case.name == "fifo_config":       # no config.json: the view has no quantization_config
        out.pop("config.json", None)
    if case.bad in (mf.SHARD_A, mf.SHARD_B) and case.verdict == "eio":
        # the broken shard's entries pass through the index unchanged: check it apart
        out.pop(mf.INDEX, None)
    return out


def check_index(case, d, got, files):
    """The view's index: every entry of a healthy shard as in the intact export; entries of a
    broken shard as in the source."""
    view = json.loads(got)["weight_map"]
    intact = json.loads(files[mf.INDEX])["weight_map"]
    src = json.loads(q.read_bytes(os.path.join(d, mf.INDEX)))["weight_map"]
    for shard in (mf.SHARD_A, mf.SHARD_B):
        g = sorted(k for k, v in view.items() if v == shard)
        if shard == case.bad:
            e = sorted(k for k, v in src.items() if v == shard)
        else:
            e = sorted(k for k, v in intact.items() if v == shard)
        assert g == e, "index entries of %s: %s, expected %s" % (shard, g, e)


def read_errno(path):
    """None if the whole file reads, else the errno of the failing open or read."""
    try:
        with open(path, "rb") as f:
            f.read()
    except OSError as exc:
        return exc.errno
    return None


def run_inspect(case, d, chk):
    res = q.run(wrapper_of(case) + [q.QUARKFS, "inspect", "--spec", SPEC, d], timeout=120)
    assert res.returncode == expected_rc(case, "inspect"), "inspect: %r" % res
    # inspect reads headers only: a NaN, or a passthrough file it cannot open, is not its news
    silent = case.verdict in ("read-eio", "open-eacces")
    if not silent:
        chk.message(res.stderr, d, "inspect")
    if case.verdict == "eio":
        assert "%s: ERROR" % case.bad in res.stdout or case.bad == mf.INDEX, \
            "inspect does not list %s as broken: %r" % (case.bad, res)
    if case.verdict == "read-eio":
        # sizes come from headers: only --error (which quantizes) finds the NaN/Inf
        res = q.run([q.QUARKFS, "inspect", "--error", "--spec", SPEC, d], timeout=120)
        assert res.returncode == 1, "inspect --error: %r" % res
        assert any(os.path.join(d, case.bad) in l and any(w in l.lower() for w in case.words)
                   for l in res.stdout.splitlines()), "inspect --error: %r" % res
    if case.user is not None:
        res = q.run(AS_NOBODY + [q.QUARKFS, "inspect", "--spec", SPEC, d], timeout=120)
        assert res.returncode == expected_rc(case, "inspect"), "inspect as nobody: %r" % res
        if not silent:
            chk.message(res.stderr, d, "inspect as uid %d" % mf.NOBODY)


def run_export(case, d, expect, chk):
    parent = q.tmpdir("exp")
    out = os.path.join(parent, "out")
    res = q.run(wrapper_of(case) + [q.QUARKFS, "export", "--no-cache", "--spec", SPEC, d, out],
                timeout=120)
    assert res.returncode == expected_rc(case, "export"), "export: %r" % res
    chk.message(res.stderr, d, "export")
    if res.returncode != 0:
        assert not os.path.exists(out), "a failed export left %s behind: %s" % (
            out, q.tree_files(out))
    else:
        extra = []
        if case.verdict == "served":
            p = os.path.join(d, case.bad)
            if not os.path.isdir(p):
                extra = [case.bad]
            elif case.user is None:
                extra = [os.path.join(case.bad, n) for n in os.listdir(p)]
        want = sorted(set(expect) | set(extra))
        assert q.tree_files(out) == want, "export holds %s, expected %s" % (q.tree_files(out), want)
        for rel, data in expect.items():
            q.assert_bytes_equal(q.read_bytes(os.path.join(out, rel)), data, "export: " + rel)
    shutil.rmtree(parent)
    if case.user is not None:
        parent = q.tmpdir("exp-nobody")
        os.chown(parent, mf.NOBODY, mf.NOBODY)
        out = os.path.join(parent, "out")
        res = q.run(AS_NOBODY + [q.QUARKFS, "export", "--no-cache", "--spec", SPEC, d, out],
                    timeout=120)
        assert res.returncode == expected_rc(case, "export"), "export as nobody: %r" % res
        chk.message(res.stderr, d, "export as uid %d" % mf.NOBODY)
        shutil.rmtree(parent)


def run_mount(case, d, expect, files, chk):
    if case.verdict == "refused":
        mnt = q.tmpdir("mnt")
        res = q.run(wrapper_of(case) + [q.QUARKFS, "-f", "-o", "cache=off", "--spec", SPEC, d, mnt],
                    timeout=60)
        try:
            assert res.returncode == 1, "mount of a refused source: %r" % res
            chk.message(res.stderr, d, "mount")
        finally:
            if q.is_mounted(mnt):
                q.unmount(mnt)
                raise AssertionError("%s got mounted" % mnt)
            os.rmdir(mnt)
        return
    with q.mounted(d, SPEC, wrapper=wrapper_of(case)) as m:
        bad = m.p(case.bad)
        if case.verdict in ("eio", "read-eio"):
            assert read_errno(bad) == errno.EIO, "%s: expected EIO" % case.bad
            assert read_errno(bad) == errno.EIO, "%s: expected EIO again" % case.bad
        elif case.verdict == "left-out":
            assert not os.path.lexists(bad), "%s is in the view" % case.bad
            assert os.path.basename(case.bad) not in os.listdir(os.path.dirname(bad))
        elif case.verdict == "open-eacces":
            assert read_errno(bad) == errno.EACCES, "%s: expected EACCES" % case.bad
        elif os.path.isdir(os.path.join(d, case.bad)):      # served: a directory
            src_names = [] if case.user is not None else sorted(os.listdir(os.path.join(d, case.bad)))
            assert sorted(os.listdir(bad)) == src_names, os.listdir(bad)
            for n in src_names:
                q.assert_bytes_equal(q.read_bytes(os.path.join(bad, n)),
                                     q.read_bytes(os.path.join(d, case.bad, n)), n)
        elif case.bad != mf.INDEX:                           # served: a file
            q.assert_bytes_equal(q.read_bytes(bad), q.read_bytes(os.path.join(d, case.bad)),
                                 case.bad)
        for rel, data in sorted(expect.items()):
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), data, "view: " + rel)
        if mf.INDEX not in expect and case.bad != mf.INDEX:
            check_index(case, d, q.read_bytes(m.p(mf.INDEX)), files)
        if case.bad == mf.INDEX and case.verdict == "served":
            check_index(case, d, q.read_bytes(m.p(mf.INDEX)), files)
        # the listing: the source's names (a left-out entry excepted)
        names = sorted(n for n in os.listdir(d)
                       if not (case.verdict == "left-out" and n == case.bad))
        assert sorted(os.listdir(m.path)) == names, (os.listdir(m.path), names)
        assert m.proc.poll() is None, "quarkfs died:\n" + m.log()
        log = m.log()
    assert m.exit_code == 0, "quarkfs -f exited with %s after the unmount:\n%s" % (m.exit_code, log)
    chk.message(log, d, "mount")
    assert "Sanitizer" not in log and "runtime error" not in log, log


def run_case(case):
    base, files = setup()
    d = mf.build_case(case, base, os.path.join(q.tmpdir("case"), case.name))
    chk = Checker(case)
    expect = expected_view(case, d, files)
    run_inspect(case, d, chk)
    run_export(case, d, expect, chk)
    run_mount(case, d, expect, files, chk)
    chk.finish()


for _case in mf.CASES:
    q.add_test(_case.name, lambda c=_case: run_case(c))


@q.test
def corpus_covers_every_damage():
    """Every kind of damage named here has a case in malformed.py (so the corpus cannot shrink)."""
    need = ["truncated_data", "header_length_past_eof", "header_over_100mb", "invalid_utf8",
            "invalid_json", "duplicate_key", "overlapping_offsets", "gapped_offsets",
            "shape_size_mismatch", "shape_product_overflow", "unknown_dtype", "nan_weight",
            "inf_weight", "config_not_json", "index_missing_file", "index_missing_tensor",
            "already_quantized", "empty_shard", "empty_passthrough", "dir_named_safetensors",
            "shard_unreadable", "config_unreadable", "passthrough_unreadable"]
    missing = [n for n in need if n not in mf.BY_NAME]
    assert not missing, missing


if __name__ == "__main__":
    q.main()
