"""The Kubernetes manifests of scripts/deploy/ (k8s-*.yaml) against the API's schemas.

kubernetes-validate (PyPI, pinned in tests/loaders/requirements-deploy.txt, installed into
build-venv/ by scripts/install-deps.sh --loaders) checks each resource against the OpenAPI
schemas of Kubernetes 1.37 in strict mode (an unknown or misspelled field is an error). The
manifests cannot be run here (no Kubernetes on this machine): this is what is checked.
A broken copy of each manifest must fail, so the check itself is shown to bite. Beyond the
schema, the test checks what the deployment note relies on: the view's volume is mounted with
Bidirectional propagation in a privileged quarkfs container and HostToContainer, read-only, in
the server; the cache is on a ReadWriteMany claim.

Run: build-venv/bin/python3 tests/loaders/test_manifests.py [filter]
"""

import copy
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import qfstest as q  # noqa: E402

KDIR = os.path.join(REPO, "scripts", "deploy")
K8S_VERSION = "1.37.0"

try:
    import yaml
    import kubernetes_validate as kv
except ImportError as exc:   # reported as a skip by every test
    kv = None
    MISSING = "kubernetes-validate is not installed (%s): bash scripts/install-deps.sh --loaders" % exc


def manifests():
    if kv is None:
        raise q.Skip(MISSING)
    files = sorted(f for f in os.listdir(KDIR) if f.startswith("k8s-") and f.endswith(".yaml"))
    assert len(files) >= 4, files
    out = []
    for f in files:
        with open(os.path.join(KDIR, f)) as fh:
            out += [(f, doc) for doc in yaml.safe_load_all(fh) if doc]
    return out


def validate(doc):
    """None, or the validator's complaint."""
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        return str(exc)
    return None


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


@q.test
def manifests_pass_the_schema():
    for f, doc in manifests():
        err = validate(doc)
        assert err is None, "%s (%s %s): %s" % (f, doc["kind"], doc["metadata"]["name"], err)


@q.test
def broken_manifests_fail_the_schema():
    """A misspelled field and a wrong type in each manifest are caught."""
    for f, doc in manifests():
        bad = copy.deepcopy(doc)
        bad["spec"]["replicaz"] = 1
        assert validate(bad), "%s: a misspelled field passed" % f
        bad = copy.deepcopy(doc)
        bad["metadata"]["name"] = ["not", "a", "string"]
        assert validate(bad), "%s: a list as the name passed" % f


@q.test
def propagation_and_shared_cache():
    docs = manifests()
    pvcs = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert pvcs["quarkfs-cache"]["spec"]["accessModes"] == ["ReadWriteMany"]
    checked = 0
    for f, doc in docs:
        if doc["kind"] not in ("DaemonSet", "Deployment"):
            continue
        spec = pod_spec(doc)
        containers = spec.get("initContainers", []) + spec["containers"]
        for c in containers:
            for vm in c.get("volumeMounts", []):
                prop = vm.get("mountPropagation")
                if prop == "Bidirectional":
                    assert c.get("securityContext", {}).get("privileged"), (f, c["name"])
                    checked += 1
                if prop == "HostToContainer":
                    assert vm.get("readOnly"), (f, c["name"], vm)
                    checked += 1
            for e in c.get("env", []):
                if e["name"] == "QUARKFS_OPTIONS":
                    assert "cache_dir=/var/cache/quarkfs/" in e["value"], (f, e)
                    vols = {v["name"]: v for v in spec["volumes"]}
                    cache = [vm for vm in c["volumeMounts"] if vm["mountPath"] == "/var/cache/quarkfs"]
                    assert cache and vols[cache[0]["name"]]["persistentVolumeClaim"]["claimName"] \
                        == "quarkfs-cache", (f, c["name"])
    assert checked >= 4, checked


if __name__ == "__main__":
    q.main()
