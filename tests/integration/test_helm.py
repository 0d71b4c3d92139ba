"""The Helm chart against a real API server.

- `helm install` is accepted (cluster-wide; namespaced with leader election) and `helm uninstall`
  removes every object it made, cluster-scoped ones included, and leaves the CRD;
- an RBAC matrix, `kubectl auth can-i --as=system:serviceaccount:…`, proves the ServiceAccount can
  do what the operator needs and nothing more;
- the operator itself runs with the ServiceAccount's token and the chart's own command line, and
  brings a SwarmCluster up without a single RBAC denial (the Deployment's pod is kept Pending by a
  node selector: on kwok's fake nodes it would not run anything, and the test's operator is the real one);
- the SwarmCluster in NOTES.txt and every object of manifests/install.yaml are accepted (server dry-run).

The chart's pods never run here: that needs an image (kind: hack/kind-e2e.sh).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.generate import INSTALL
from localcluster.operator_process import OperatorProcess
from localcluster.versions import helm_binary
from tests.integration.helpers import GROUP, PLURAL, VERSION, Kubectl, Namespaces, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "swarm-operator"
# Keeps the chart's own pod Pending (see the module docstring).
NO_NODE = {"nodeSelector": {"swarm.io/test-no-such-node": "true"}}


@pytest.fixture(scope="module")
def helm(kubeconfig: str) -> Iterator[Any]:
    """Run helm against the test cluster, values as JSON on stdin: ``helm("install", …, values={…})``."""
    binary = helm_binary()
    if binary is None:
        pytest.skip("helm is not built: run `python -m localcluster build` (or put helm on PATH, or set HELM)")

    def run(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        extra = ["--values", "-"] if values is not None else []
        res = subprocess.run([binary, "--kubeconfig", kubeconfig, *args, *extra], input=json.dumps(values or {}),
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res

    yield run


@dataclass
class Release:
    name: str
    namespace: str
    values: dict[str, Any]
    watched: list[str] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-swarm-operator"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


def install(helm: Any, namespace: str, values: dict[str, Any]) -> Release:
    release = Release(f"so-{uuid.uuid4().hex[:6]}", namespace, values, list(values.get("watchNamespaces", [])))
    helm("install", release.name, str(CHART), "--namespace", namespace, values={**NO_NODE, **values})
    return release


@pytest.fixture(scope="module")
def cluster_wide(helm: Any, crd: dict[str, Any], namespaces: Namespaces) -> Iterator[Release]:
    release = install(helm, namespaces.new("swarm-helm"), {})
    yield release
    helm("uninstall", release.name, "--namespace", release.namespace)


@pytest.fixture(scope="module")
def namespaced(helm: Any, crd: dict[str, Any], namespaces: Namespaces) -> Iterator[Release]:
    watched = [namespaces.new("swarm-watched"), namespaces.new("swarm-watched")]
    release = install(helm, namespaces.new("swarm-helm"), {"watchNamespaces": watched, "replicaCount": 2})
    yield release
    helm("uninstall", release.name, "--namespace", release.namespace)


# -- install / uninstall ----------------------------------------------------------------------------

def test_install_accepted_and_uninstall_removes_everything(helm: Any, kubectl: Kubectl, crd: dict[str, Any],
                                                          namespaces: Namespaces) -> None:
    watched = namespaces.new("swarm-watched")
    release = install(helm, namespaces.new("swarm-helm"), {"watchNamespaces": [watched], "replicaCount": 2})
    status = json.loads(helm("status", release.name, "--namespace", release.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    made = {
        ("deployment", release.namespace), ("serviceaccount", release.namespace), ("service", release.namespace),
        ("role", watched), ("rolebinding", watched), ("role", release.namespace), ("rolebinding", release.namespace),
    }
    for kind, ns in made:
        res = kubectl("get", kind, "-n", ns, "-l", f"app.kubernetes.io/instance={release.name}", "-o", "name")
        assert res.returncode == 0 and res.stdout.strip(), f"no {kind} in {ns}: {res.stderr}"
    for kind in ("clusterrole", "clusterrolebinding"):
        assert kubectl("get", kind, f"{release.fullname}-observer").returncode == 0

    helm("uninstall", release.name, "--namespace", release.namespace, "--wait")
    selector = f"app.kubernetes.io/instance={release.name}"
    for kind, ns in made:
        assert kubectl("get", kind, "-n", ns, "-l", selector, "-o", "name").stdout.strip() == ""
    assert kubectl("get", "clusterrole,clusterrolebinding", "-l", selector, "-o", "name").stdout.strip() == ""
    # Helm never deletes what it installed from crds/: the SwarmClusters of every user would go with it.
    assert kubectl("get", "crd", "swarmclusters.swarm.io").returncode == 0


# -- RBAC matrix ------------------------------------------------------------------------------------

def can_i(kubectl: Kubectl, release: Release, verb: str, resource: str, namespace: str | None) -> bool:
    """``namespace``: a namespace, "*" for all of them, None for a cluster-scoped resource.
    ``resource`` may name a subresource after "#" ("pods#exec") or an object after "/" ("leases/x")."""
    args = ["auth", "can-i", verb, f"--as={release.user}", "--as-group=system:authenticated",
            "--as-group=system:serviceaccounts", f"--as-group=system:serviceaccounts:{release.namespace}"]
    resource, _, subresource = resource.partition("#")
    args.append(resource)
    if subresource:
        args.append(f"--subresource={subresource}")
    if namespace == "*":
        args.append("--all-namespaces")
    elif namespace is not None:
        args += ["-n", namespace]
    res = kubectl(*args)
    assert res.returncode in (0, 1) and res.stdout.strip() in ("yes", "no"), res.stdout + res.stderr
    return res.returncode == 0


SWC = f"{PLURAL}.{GROUP}"
SWJ = f"swarmjobs.{GROUP}"
CRDS = "customresourcedefinitions.apiextensions.k8s.io"
LEASES = "leases.coordination.k8s.io"

# What the operator does in a namespace it serves.
NEEDED = [(v, "pods") for v in ("get", "list", "watch", "create", "delete", "patch")] + \
    [(v, "services") for v in ("get", "list", "watch", "create", "patch", "delete")] + \
    [("create", "events"), ("get", SWC), ("list", SWC), ("watch", SWC), ("patch", f"{SWC}#status"),
     ("patch", SWC), ("get", "secrets"), ("create", "secrets"), ("get", "jobs.batch"), ("create", "jobs.batch"),
     ("create", SWC), ("delete", SWC),  # a SwarmJob's own cluster
     ("get", SWJ), ("list", SWJ), ("watch", SWJ), ("patch", SWJ), ("delete", SWJ), ("patch", f"{SWJ}#status")] + \
    [(v, "poddisruptionbudgets.policy") for v in ("get", "list", "watch", "create", "delete")]
# Never, anywhere.
FORBIDDEN = [("list", "secrets"), ("watch", "secrets"), ("update", "secrets"), ("delete", "secrets"),
             ("get", "configmaps"), ("delete", "jobs.batch"),
             ("update", SWC), ("update", f"{SWC}#status"), ("create", SWJ), ("update", SWJ),
             ("update", "services"), ("update", "pods"), ("create", "pods#exec"),
             ("get", "pods#log"), ("delete", "events"), ("create", "deployments.apps"),
             ("create", "serviceaccounts#token"), ("create", "rolebindings.rbac.authorization.k8s.io"),
             ("delete", LEASES), ("update", "poddisruptionbudgets.policy"), ("patch", "poddisruptionbudgets.policy")]
# Nodes are read (a pod's node deleted or NotReady makes its end a disruption), never written.
NODES_READ = [(v, "nodes") for v in ("get", "list", "watch")]
CLUSTER_FORBIDDEN = [("create", "nodes"), ("patch", "nodes"), ("update", "nodes"),
                     ("delete", "nodes"), ("patch", "nodes#status"), ("create", "namespaces"),
                     ("delete", "namespaces"), ("create", CRDS), ("update", CRDS), ("delete", CRDS),
                     ("bind", "clusterroles.rbac.authorization.k8s.io"),
                     ("escalate", "clusterroles.rbac.authorization.k8s.io"), ("*", "*")]


def matrix_failures(kubectl: Kubectl, release: Release,
                    checks: list[tuple[str, str, str | None, bool]]) -> list[str]:
    # A hundred-odd kubectl runs: in parallel, as each mostly waits on the API server.
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda c: can_i(kubectl, release, c[0], c[1], c[2]), checks))
    return [f"{'can' if not expected else 'cannot'} {verb} {resource} in {ns or 'the cluster'}"
            for (verb, resource, ns, expected), answer in zip(checks, answers, strict=True) if answer != expected]


def test_rbac_cluster_wide(kubectl: Kubectl, cluster_wide: Release, namespace: str) -> None:
    r = cluster_wide
    checks: list[tuple[str, str, str | None, bool]] = []
    # A namespace of no importance, and all of them at once (which only a cluster-wide grant answers).
    for ns in (namespace, "*"):
        checks += [(verb, res, ns, True) for verb, res in NEEDED]
        checks += [(verb, res, ns, False) for verb, res in FORBIDDEN]
    checks += [("list", CRDS, None, True), ("watch", CRDS, None, True)] + [(v, r, None, True) for v, r in NODES_READ]
    checks += [(verb, res, None, False) for verb, res in CLUSTER_FORBIDDEN]
    # No leader election with one replica: no Lease access; kopf needs no namespace list when cluster-wide.
    checks += [("create", LEASES, r.namespace, False), ("get", f"{LEASES}/{r.fullname}", r.namespace, False),
               ("list", "namespaces", None, False)]
    assert matrix_failures(kubectl, r, checks) == []


def test_rbac_namespaced_with_leader_election(kubectl: Kubectl, namespaced: Release, namespace: str) -> None:
    r = namespaced
    unwatched = namespace
    checks: list[tuple[str, str, str | None, bool]] = []
    for ns in r.watched:
        checks += [(verb, res, ns, True) for verb, res in NEEDED]
        checks += [(verb, res, ns, False) for verb, res in FORBIDDEN]
    # Nothing outside the watched namespaces: not in an unwatched one, not in its own, not cluster-wide.
    for ns in (unwatched, r.namespace):
        checks += [(verb, res, ns, False) for verb, res in NEEDED]
    checks += [(verb, res, "*", False) for verb, res in NEEDED + FORBIDDEN]
    checks += [("list", CRDS, None, True), ("watch", CRDS, None, True),
               ("list", "namespaces", None, True), ("watch", "namespaces", None, True)]
    checks += [(verb, res, None, True) for verb, res in NODES_READ]
    checks += [(verb, res, None, False) for verb, res in CLUSTER_FORBIDDEN]
    # Its own Lease only: create (RBAC cannot name a create), get and update by name; nothing in other namespaces.
    lease = f"{LEASES}/{r.fullname}"
    checks += [("create", LEASES, r.namespace, True), ("get", lease, r.namespace, True),
               ("update", lease, r.namespace, True), ("get", f"{LEASES}/someone-else", r.namespace, False),
               ("update", f"{LEASES}/someone-else", r.namespace, False), ("list", LEASES, r.namespace, False),
               ("create", LEASES, r.watched[0], False), ("update", lease, r.watched[0], False)]
    assert matrix_failures(kubectl, r, checks) == []


# -- the operator as the ServiceAccount -------------------------------------------------------------

def token_kubeconfig(kubectl: Kubectl, release: Release, path: Path) -> Path:
    """A kubeconfig for the test cluster that authenticates as the release's ServiceAccount."""
    token = kubectl("create", "token", release.fullname, "-n", release.namespace, "--duration=30m")
    assert token.returncode == 0, token.stderr
    view = json.loads(kubectl("config", "view", "--minify", "--flatten", "--raw", "-o", "json").stdout)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "sa", "cluster": view["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token.stdout.strip()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "sa", "user": "sa"}}],
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))
    return path


def chart_args(helm: Any, release: Release) -> list[str]:
    """The operator's command line from the chart's Deployment, less the ports (the test picks free ones)."""
    out = helm("template", release.name, str(CHART), "--namespace", release.namespace, values=release.values).stdout
    deploy = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["swarm-operator", "run"]
    return [a for a in c["args"] if not a.startswith(("--metrics-port", "--health-port"))]


def swarmcluster(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": name},
            "spec": {"head": {"resources": {"cpu": 1, "memory": "1Gi"}},
                     "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2,
                                       "resources": {"cpu": 1, "memory": "1Gi"}}]}}


def rbac_denials(log: str, release: Release) -> list[str]:
    """Lines where the API server refused the ServiceAccount by RBAC (not e.g. a terminating namespace)."""
    return [line for line in log.splitlines() if release.user in line and re.search(r"cannot \w+ resource", line)]


def brought_up(custom_objects: Any, core_v1: Any, namespace: str, name: str) -> bool:
    status = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status", {})
    pods = core_v1.list_namespaced_pod(namespace, label_selector=f"swarm.io/cluster={name}").items
    services = core_v1.list_namespaced_service(namespace, label_selector=f"swarm.io/cluster={name}").items
    events = [e for e in core_v1.list_namespaced_event(namespace).items
              if e.involved_object.name == name and e.source.component == "swarm-operator"]
    return bool(status.get("phase") and len(pods) == 2 and services and events)


def run_operator(kubeconfig: Path, args: list[str], log: Path) -> OperatorProcess:
    op = OperatorProcess(str(kubeconfig), [], log, extra=args)
    op.start()
    return op


def test_operator_runs_as_the_service_account_cluster_wide(
        helm: Any, kubectl: Kubectl, cluster_wide: Release, namespace: str, custom_objects: Any, core_v1: Any,
        tmp_path: Path) -> None:
    r = cluster_wide
    op = run_operator(token_kubeconfig(kubectl, r, tmp_path / "sa.kubeconfig"), chart_args(helm, r),
                      tmp_path / "operator.log")
    try:
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, swarmcluster("rbac"))
        wait_for("head, worker, service, status and an event",
                 lambda: brought_up(custom_objects, core_v1, namespace, "rbac"), timeout=90)
        assert "swarm_api_requests_total" in op.metrics()
    finally:
        op.stop()
    log = op.log_path.read_text()
    assert rbac_denials(log, r) == []
    assert "APIForbiddenError" not in log and "Not enough permissions" not in log


def test_operator_runs_as_the_service_account_namespaced_with_leader_election(
        helm: Any, kubectl: Kubectl, namespaced: Release, namespace: str, custom_objects: Any, core_v1: Any,
        tmp_path: Path) -> None:
    r = namespaced
    unwatched = namespace
    op = run_operator(token_kubeconfig(kubectl, r, tmp_path / "sa.kubeconfig"), chart_args(helm, r),
                      tmp_path / "operator.log")
    try:
        for ns in (*r.watched, unwatched):
            custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, swarmcluster("rbac"))
        for ns in r.watched:
            wait_for(f"the cluster in {ns} brought up", functools.partial(brought_up, custom_objects, core_v1, ns,
                                                                          "rbac"), timeout=90)

        def lease() -> dict[str, Any] | None:
            res = kubectl("get", "lease", r.fullname, "-n", r.namespace, "-o", "json")
            return json.loads(res.stdout)["spec"] if res.returncode == 0 else None

        first = wait_for("the Lease held", lease)
        # Renewals every few seconds prove the update permission, not just the create.
        wait_for("the Lease renewed", lambda: (lease() or first)["renewTime"] != first["renewTime"], timeout=30)
        assert core_v1.list_namespaced_pod(unwatched).items == []
    finally:
        op.stop()
    log = op.log_path.read_text()
    assert rbac_denials(log, r) == []
    # kopf could read what it observes (CRDs, namespaces): no refused request, no "not enough permissions" fallback.
    assert "APIForbiddenError" not in log and "Not enough permissions" not in log


# -- what the docs hand to users --------------------------------------------------------------------

def test_notes_sample_is_a_valid_swarmcluster(helm: Any, kubectl: Kubectl, crd: dict[str, Any],
                                              namespace: str) -> None:
    out = helm("install", "notes", str(CHART), "--namespace", namespace, "--dry-run=client", values={}).stdout
    sample = out.split("cat <<YAML", 1)[1].split("\n", 1)[1].split("     YAML", 1)[0]
    body = yaml.safe_load("\n".join(line.removeprefix("     ") for line in sample.splitlines()))
    assert body["kind"] == "SwarmCluster"
    res = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(body))
    assert res.returncode == 0, res.stderr


def test_install_yaml_is_accepted(kubectl: Kubectl, crd: dict[str, Any], namespace: str) -> None:
    """Every object of manifests/install.yaml, server dry-run, with its namespace moved to a test namespace."""
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d and d["kind"] != "Namespace"]
    text = yaml.safe_dump_all(docs).replace("namespace: swarm-operator", f"namespace: {namespace}")
    res = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=swarm-tests", "--force-conflicts",
                  "-f", "-", input=text)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == len(docs)
