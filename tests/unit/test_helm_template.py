"""The Helm chart without an API server: lint, values schema, and `helm template` for the main
value combinations with assertions on the rendered objects.

What needs a real API server (install accepted, RBAC proven with `kubectl auth can-i`, the
operator running as the chart's ServiceAccount) is in tests/integration/test_helm.py.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.versions import helm_binary
from swarm_operator.config import from_args

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "swarm-operator"
RELEASE, NAMESPACE = "so", "ops"
FULLNAME = "so-swarm-operator"  # the release name does not contain the chart's name: "<release>-<chart>"

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> str:
    found = helm_binary()
    if found is None:
        pytest.skip("helm is not built: run `python -m localcluster build` (or put helm on PATH, or set HELM)")
    return found


def run_helm(helm: str, *args: str, values: Obj | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Values go in on stdin as JSON (which is YAML): no files, and no quoting surprises.
    cmd = [helm, *args, "--values", "-"]
    res = subprocess.run(cmd, input=json.dumps(values or {}), capture_output=True, text=True, timeout=60,
                         check=False)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    return res


@functools.cache
def _render(helm: str, values_json: str) -> str:
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    values=json.loads(values_json)).stdout


def render(helm: str, values: Obj | None = None) -> list[Obj]:
    """The rendered objects; each combination is rendered once per session (helm takes ~0.3 s a run)."""
    return [d for d in yaml.safe_load_all(_render(helm, json.dumps(values or {}, sort_keys=True))) if d]


def only(objs: list[Obj], kind: str, name: str | None = None, namespace: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)
             and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, got {len(found)}"
    return found[0]


def kinds(objs: list[Obj]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def container(objs: list[Obj]) -> Obj:
    pod = only(objs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


def rules(role: Obj) -> Iterator[tuple[str, str, str, tuple[str, ...]]]:
    """(apiGroup, resource, verb, resourceNames) for every grant of a (Cluster)Role."""
    for rule in role["rules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield group, resource, verb, tuple(rule.get("resourceNames", ()))


def grants(role: Obj) -> set[tuple[str, str, str]]:
    return {(g, r, v) for g, r, v, _ in rules(role)}


NAMESPACED_GRANTS = {
    ("", "pods", v) for v in ("get", "list", "watch", "create", "delete", "patch")
} | {
    ("", "services", v) for v in ("get", "list", "watch", "create", "patch", "delete")
} | {
    ("", "events", "create"), ("", "events", "patch"),
    ("swarm.io", "swarmclusters", "get"), ("swarm.io", "swarmclusters", "list"), ("swarm.io", "swarmclusters", "watch"),
    ("swarm.io", "swarmclusters", "patch"),  # metadata.finalizers; a finished job's cluster scaled to zero
    ("swarm.io", "swarmclusters", "create"), ("swarm.io", "swarmclusters", "delete"),  # a SwarmJob's own cluster
    ("swarm.io", "swarmclusters/status", "patch"),
    ("swarm.io", "swarmjobs", "get"), ("swarm.io", "swarmjobs", "list"), ("swarm.io", "swarmjobs", "watch"),
    ("swarm.io", "swarmjobs", "patch"), ("swarm.io", "swarmjobs", "delete"),  # the finalizer; the TTL
    ("swarm.io", "swarmjobs/status", "patch"),
    ("", "secrets", "get"), ("", "secrets", "create"),  # a cluster's Ray token, by name
    ("batch", "jobs", "get"), ("batch", "jobs", "create"),  # the Redis key cleanup
    ("kueue.x-k8s.io", "workloads", "get"), ("kueue.x-k8s.io", "workloads", "create"),  # a queued SwarmJob's
    ("kueue.x-k8s.io", "workloads", "delete"), ("kueue.x-k8s.io", "workloads/status", "patch"),
} | {
    ("policy", "poddisruptionbudgets", v) for v in ("get", "list", "watch", "create", "delete")  # the head's
}
CRD_OBSERVATION = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
NAMESPACE_OBSERVATION = {("", "namespaces", v) for v in ("list", "watch")}
NODE_OBSERVATION = {("", "nodes", v) for v in ("get", "list", "watch")} | {  # disrupted pods: node deleted, NotReady
    ("kueue.x-k8s.io", "resourceflavors", "get"),  # an admitted workload's flavors (cluster-scoped)
    ("kueue.x-k8s.io", "workloadpriorityclasses", "get"),  # a queued workload's priority
    ("scheduling.k8s.io", "priorityclasses", "get"),
}


def dockerfile_entrypoint() -> list[str]:
    line = next(x for x in (REPO / "Dockerfile").read_text().splitlines() if x.startswith("ENTRYPOINT"))
    return list(json.loads(line.removeprefix("ENTRYPOINT")))


# -- lint and values schema ------------------------------------------------------------------------

LINT_VALUES: list[Obj] = [
    {},
    {"watchNamespaces": ["team-a", "team-b"]},
    {"replicaCount": 2},
    {"metrics": {"serviceMonitor": {"enabled": True}, "rayPodMonitor": {"enabled": True}}},
]


@pytest.mark.parametrize("values", LINT_VALUES, ids=["default", "namespaced", "ha", "monitors"])
def test_helm_lint_strict(helm: str, values: Obj) -> None:
    res = run_helm(helm, "lint", "--strict", str(CHART), values=values, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


@pytest.mark.parametrize(("values", "complaint"), [
    ({"replicaCount": 0}, "replicaCount"),
    ({"operator": {"logLevel": "LOUD"}}, "logLevel"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
    ({"watchNamespaces": ["a", "a"]}, "watchNamespaces"),
    ({"replicas": 2}, "replicas"),  # a typo of replicaCount must not pass silently
    ({"image": {"digest": "latest"}}, "digest"),
], ids=["zero-replicas", "log-level", "namespace-name", "duplicate-namespace", "unknown-key", "digest"])
def test_values_schema_rejects(helm: str, values: Obj, complaint: str) -> None:
    res = run_helm(helm, "template", RELEASE, str(CHART), values=values, check=False)
    assert res.returncode != 0
    assert complaint in res.stderr


def test_service_monitor_needs_the_metrics_service(helm: str) -> None:
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    res = run_helm(helm, "template", RELEASE, str(CHART), values=values, check=False)
    assert res.returncode != 0
    assert "metrics.service.enabled" in res.stderr


# -- the default: cluster-wide, one replica ---------------------------------------------------------

def test_default_is_cluster_wide_single_replica(helm: str) -> None:
    objs = render(helm)
    assert kinds(objs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    role = only(objs, "ClusterRole", FULLNAME)
    assert grants(role) == NAMESPACED_GRANTS | CRD_OBSERVATION | NODE_OBSERVATION
    binding = only(objs, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]

    deploy = only(objs, "Deployment", FULLNAME, NAMESPACE)
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    c = container(objs)
    assert "--all-namespaces" in c["args"]
    assert not any(a.startswith(("--leader-elect", "--namespace")) for a in c["args"])
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == only(objs, "ServiceAccount")["metadata"]["name"]


def test_container_runs_the_image_entrypoint_as_non_root_on_a_read_only_root(helm: str) -> None:
    objs = render(helm)
    pod = only(objs, "Deployment")["spec"]["template"]["spec"]
    c = container(objs)
    assert c["command"] == dockerfile_entrypoint() == ["swarm-operator", "run"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The chart's UID is the image's (Dockerfile: useradd --uid N).
    uid = re.search(r"useradd [^\n]*--uid (\d+)", (REPO / "Dockerfile").read_text())
    assert uid is not None and pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c["env"]


def test_probes_and_ports(helm: str) -> None:
    c = container(render(helm))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--metrics-port=8080" in c["args"] and "--health-port=8081" in c["args"]


def test_image_defaults_to_app_version_which_is_the_package_version(helm: str) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert container(render(helm))["image"] == f"swarm-operator/swarm-operator:{project['version']}"
    digest = "sha256:" + "a" * 64
    pinned = render(helm, {"image": {"repository": "r.example/so", "tag": "x", "digest": digest}})
    assert container(pinned)["image"] == f"r.example/so@{digest}"


def test_metrics_service_selects_the_operator_pods(helm: str) -> None:
    objs = render(helm)
    svc = only(objs, "Service", f"{FULLNAME}-metrics", NAMESPACE)
    pod_labels = only(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert not [o for o in objs if o["kind"] == "ServiceMonitor"]


# -- namespaced -------------------------------------------------------------------------------------

def test_namespaced_two_namespaces(helm: str) -> None:
    objs = render(helm, {"watchNamespaces": ["team-a", "team-b"]})
    for ns in ("team-a", "team-b"):
        assert grants(only(objs, "Role", FULLNAME, ns)) == NAMESPACED_GRANTS
        binding = only(objs, "RoleBinding", FULLNAME, ns)
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    # Cluster-scoped: only kopf's read-only observation of CRDs and namespace names.
    cluster_roles = [o for o in objs if o["kind"] == "ClusterRole"]
    assert [r["metadata"]["name"] for r in cluster_roles] == [f"{FULLNAME}-observer"]
    assert grants(cluster_roles[0]) == CRD_OBSERVATION | NAMESPACE_OBSERVATION | NODE_OBSERVATION
    assert only(objs, "ClusterRoleBinding")["roleRef"]["name"] == f"{FULLNAME}-observer"
    args = container(objs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args


# -- high availability ------------------------------------------------------------------------------

def test_two_replicas_elect_a_leader(helm: str) -> None:
    objs = render(helm, {"replicaCount": 2})
    deploy = only(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    args = container(objs)["args"]
    assert {"--leader-elect", f"--lease-name={FULLNAME}", f"--lease-namespace={NAMESPACE}"} <= set(args)
    lease_role = only(objs, "Role", f"{FULLNAME}-leader-election", NAMESPACE)
    assert set(rules(lease_role)) == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", (FULLNAME,)),
        ("coordination.k8s.io", "leases", "update", (FULLNAME,)),
    }
    assert only(objs, "RoleBinding", f"{FULLNAME}-leader-election", NAMESPACE)["roleRef"]["name"] == \
        f"{FULLNAME}-leader-election"
    anti = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == \
        "kubernetes.io/hostname"


def test_leader_election_on_request_with_one_replica_and_a_named_lease(helm: str) -> None:
    objs = render(helm, {"leaderElection": {"enabled": True, "leaseName": "my-lease"}})
    assert {"--leader-elect", "--lease-name=my-lease"} <= set(container(objs)["args"])
    assert ("coordination.k8s.io", "leases", "update", ("my-lease",)) in set(
        rules(only(objs, "Role", f"{FULLNAME}-leader-election")))
    assert "affinity" not in only(objs, "Deployment")["spec"]["template"]["spec"]


def test_no_lease_access_without_leader_election(helm: str) -> None:
    for values in ({}, {"watchNamespaces": ["a"]}):
        objs = render(helm, values)
        assert not [g for o in objs if o["kind"] in ("Role", "ClusterRole") for g in grants(o) if g[1] == "leases"]


# -- ServiceMonitor ---------------------------------------------------------------------------------

def test_service_monitor(helm: str) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"}}}
    objs = render(helm, values)
    sm = only(objs, "ServiceMonitor", FULLNAME, NAMESPACE)
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    svc = only(objs, "Service", f"{FULLNAME}-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": True}]
    assert not [o for o in objs if o["kind"] == "PodMonitor"]


@pytest.mark.parametrize(("values", "namespaces"), [
    ({}, {"any": True}),
    ({"watchNamespaces": ["team-a", "team-b"]}, {"matchNames": ["team-a", "team-b"]}),
], ids=["cluster-wide", "namespaced"])
def test_ray_pod_monitor(helm: str, values: Obj, namespaces: Obj) -> None:
    objs = render(helm, {**values, "metrics": {"rayPodMonitor": {"enabled": True}}})
    pm = only(objs, "PodMonitor", f"{FULLNAME}-ray", NAMESPACE)
    assert pm["spec"]["namespaceSelector"] == namespaces
    assert pm["spec"]["selector"] == {"matchExpressions": [{"key": "swarm.io/cluster", "operator": "Exists"}]}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"  # the Ray container's port name (resources/pods.py)
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets["ray_io_cluster"] == ["__meta_kubernetes_pod_label_swarm_io_cluster"]


# -- values reach the pod ---------------------------------------------------------------------------

def test_values_reach_the_pod(helm: str) -> None:
    values = {
        "operator": {"workers": 4, "logLevel": "DEBUG", "resyncSeconds": 30, "extraArgs": ["--relist=1"],
                     "extraEnv": [{"name": "RAY_py_gcs_connect_timeout_s", "value": "5"}]},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "podLabels": {"team": "ml"},
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
    }
    objs = render(helm, values)
    pod = only(objs, "Deployment")["spec"]["template"]
    c = container(objs)
    assert {"--workers=4", "--log-level=DEBUG", "--resync-seconds=30"} <= set(c["args"])
    assert c["args"][-1] == "--relist=1"
    assert {"name": "RAY_py_gcs_connect_timeout_s", "value": "5"} in c["env"]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert pod["metadata"]["labels"]["team"] == "ml"


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["a", "b"]}, {"replicaCount": 3},
                                    {"operator": {"workers": 2, "logLevel": "WARNING"}}],
                         ids=["default", "namespaced", "ha", "flags"])
def test_rendered_command_line_is_accepted_by_the_operator(helm: str, values: Obj) -> None:
    """The chart's flags parse with the operator's own parser into the settings the values meant."""
    c = container(render(helm, values))
    cfg = from_args([*c["command"][1:], *c["args"]], env={"POD_NAMESPACE": NAMESPACE})
    assert cfg.namespaces == tuple(values.get("watchNamespaces", ()))
    assert cfg.leader_elect == (values.get("replicaCount", 1) > 1)
    assert cfg.lease_namespace == NAMESPACE
    assert cfg.workers == values.get("operator", {}).get("workers", 16)
    assert cfg.log_level == values.get("operator", {}).get("logLevel", "INFO")
    assert (cfg.metrics_port, cfg.health_port) == (8080, 8081)


# -- what the RBAC never grants ---------------------------------------------------------------------

@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["a", "b"]}, {"replicaCount": 2}],
                         ids=["cluster-wide", "namespaced", "ha"])
def test_rbac_never_grants_more(helm: str, values: Obj) -> None:
    objs = render(helm, values)
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for group, resource, verb, _ in rules(role):
            assert "*" not in (group, resource, verb), f"wildcard in {role['metadata']['name']}"
            assert resource not in ("configmaps", "serviceaccounts", "roles", "clusterroles",
                                    "rolebindings", "clusterrolebindings"), (role["metadata"]["name"], resource)
            if resource == "nodes":
                assert verb in ("get", "list", "watch"), (role["metadata"]["name"], verb)  # read only
            assert verb not in ("escalate", "bind", "impersonate", "deletecollection")
            if resource == "secrets":
                # By name only (the Ray token Secrets): never a list or watch of every Secret, never a change.
                assert verb in ("get", "create"), (role["metadata"]["name"], verb)
            if resource == "swarmclusters":
                # patch: metadata.finalizers, and the spec only of a SwarmJob's own cluster (DeleteWorkers); create
                # and delete: a SwarmJob's own cluster. Never a whole-object update.
                assert verb in ("get", "list", "watch", "patch", "create", "delete"), (role["metadata"]["name"], verb)


# -- NOTES.txt --------------------------------------------------------------------------------------

def notes(helm: str, values: Obj) -> str:
    out = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                   values=values).stdout
    return out.split("NOTES:", 1)[1]


def test_notes_tell_what_to_do_next(helm: str) -> None:
    text = notes(helm, {})
    assert "every namespace" in text
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in text
    assert "kind: SwarmCluster" in text and "kubectl get swc -w" in text
    assert f"port-forward svc/{FULLNAME}-metrics 8080" in text
    assert "helm show crds" in text  # Helm never upgrades CRDs: the notes say how


def test_notes_namespaced_point_at_a_watched_namespace(helm: str) -> None:
    text = notes(helm, {"watchNamespaces": ["team-a", "team-b"], "replicaCount": 2})
    assert "these namespaces only: team-a, team-b" in text
    assert "kubectl apply -n team-a -f -" in text and "kubectl get swc -n team-a -w" in text
    assert f"Lease {NAMESPACE}/{FULLNAME}" in text
