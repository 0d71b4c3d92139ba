"""Small helpers shared by the integration tests."""

from __future__ import annotations

import copy
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.nodes import KWOK_ANNOTATION, fake_node, remove_node
from swarm_operator.resources import labels
from swarm_operator.times import timestamp

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "swarmcluster.yaml"
CRD_NAME = "swarmclusters.swarm.io"
JOB_CRD_FILE = REPO / "crds" / "swarmjob.yaml"
JOB_CRD_NAME = "swarmjobs.swarm.io"
GROUP, VERSION, PLURAL = "swarm.io", "v1alpha1", "swarmclusters"
JOB_PLURAL = "swarmjobs"

T = TypeVar("T")
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0, every: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except ApiException as exc:
            last = f"{exc.status} {exc.reason}"
        else:
            if value:
                return value
            last = value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def pod(name: str, *, cpu: str = "100m", memory: str = "64Mi", gpus: int = 0,
        owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A minimal pod asking for the given resources (requests = limits)."""
    resources = {"cpu": cpu, "memory": memory}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "main", "image": "busybox",
                                 "resources": {"requests": resources, "limits": resources}}]},
    }


def fake_nodes(core: Any) -> dict[str, dict[str, str]]:
    """Labels of every kwok-managed node, by node name."""
    return {n.metadata.name: dict(n.metadata.labels or {}) for n in core.list_node().items
            if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"}


def _strip_swarm_finalizers(custom: Any, namespace: str) -> None:
    """Drop the finalizers of every SwarmCluster and SwarmJob in ``namespace`` so that nothing waits on an
    operator."""
    for plural in (PLURAL, JOB_PLURAL):
        try:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        for item in items:
            if item["metadata"].get("finalizers"):
                try:
                    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                          item["metadata"]["name"], {"metadata": {"finalizers": None}})
                except ApiException as exc:
                    if exc.status != 404:
                        raise


def delete_namespace(core: Any, custom: Any, namespace: str) -> None:
    """Start deleting ``namespace`` after stripping its SwarmClusters' and SwarmJobs' finalizers; does not wait.

    The namespace controller takes several seconds per namespace (it waits out pod
    grace periods); waiting here would add them to every test. ``await_gone`` waits
    for all of them at once.
    """
    _strip_swarm_finalizers(custom, namespace)
    try:
        core.delete_namespace(namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def await_gone(core: Any, custom: Any, namespaces: list[str], timeout: float = 60) -> list[str]:
    """Wait (bounded) until the namespaces are gone; returns the ones still there, and warns about them."""
    pending = list(namespaces)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for ns in pending:
            try:
                core.read_namespace(ns)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            # An operator still running could have added a finalizer back after the
            # first strip; strip again on every round.
            _strip_swarm_finalizers(custom, ns)
            still.append(ns)
        pending = still
        if pending:
            time.sleep(0.5)
    if pending:
        warnings.warn(f"namespaces still terminating after {timeout:.0f}s: {', '.join(pending)}", stacklevel=2)
    return pending


def create_namespace(core: Any, prefix: str = "swarm-test") -> str:
    """Create a uniquely named namespace and wait until pods can be created in it.

    Pods name the service account "default", which the controller manager creates a
    moment after the namespace; creating a pod before it exists is refused.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"swarm.io/test": "true"}}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


class Namespaces:
    """The namespaces this session created: fresh ones on demand, all awaited at the end."""

    def __init__(self, core: Any, custom: Any) -> None:
        self.core, self.custom = core, custom
        self.created: list[str] = []

    def new(self, prefix: str = "swarm-test") -> str:
        name = create_namespace(self.core, prefix)
        self.created.append(name)
        return name

    def delete(self, name: str) -> None:
        delete_namespace(self.core, self.custom, name)


def manifest(name: str, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SwarmCluster",
        "metadata": {"name": name},
        "spec": {
            "head": {"resources": {"cpu": 1, "memory": "1Gi"}},
            "workerGroups": [{"name": "cpu", "replicas": replicas, "minReplicas": 0, "maxReplicas": 8,
                              "resources": {"cpu": 1, "memory": "1Gi"}}],
        },
    }
    body["spec"].update(spec)
    return body


class Cluster:
    """Small helpers around one namespace's SwarmClusters and pods."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        return result

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, patch)

    def patch_group(self, name: str, **fields: Any) -> None:
        """Change fields of the first worker group. A merge patch replaces a whole list, so send all of it."""
        groups = copy.deepcopy(self.get(name)["spec"]["workerGroups"])
        groups[0].update(fields)
        groups[0] = {k: v for k, v in groups[0].items() if v is not None}
        self.patch(name, {"spec": {"workerGroups": groups}})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def pods(self, cluster: str, *, include_deleting: bool = False) -> list[client.V1Pod]:
        items = self.core.list_namespaced_pod(self.ns, label_selector=f"{labels.CLUSTER}={cluster}").items
        return [p for p in items if include_deleting or p.metadata.deletion_timestamp is None]

    def workers(self, cluster: str) -> list[client.V1Pod]:
        return [p for p in self.pods(cluster) if p.metadata.labels.get(labels.NODE_TYPE) == labels.WORKER]

    def heads(self, cluster: str) -> list[client.V1Pod]:
        return [p for p in self.pods(cluster) if p.metadata.labels.get(labels.NODE_TYPE) == labels.HEAD]

    def running(self, cluster: str) -> list[client.V1Pod]:
        return [p for p in self.pods(cluster) if p.status.phase == "Running"]

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def snapshot(self) -> str:
        """Pods, cluster phases and events of the namespace, for failure reports."""
        lines = [f"--- namespace {self.ns}"]
        for p in self.core.list_namespaced_pod(self.ns).items:
            lines.append(f"pod {p.metadata.name} phase={p.status.phase} node={p.spec.node_name} "
                         f"deleting={p.metadata.deletion_timestamp is not None}")
        for c in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]:
            st = c.get("status") or {}
            lines.append(f"swc {c['metadata']['name']} phase={st.get('phase')} workers={st.get('workers')}")
        for e in self.core.list_namespaced_event(self.ns).items:
            lines.append(f"event {e.involved_object.name} {e.type} {e.reason}: {e.message}")
        return "\n".join(lines)

    def events(self, name: str) -> list[client.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(self.ns).items if e.involved_object.name == name]


class SwarmJobs:
    """Small helpers around one namespace's SwarmJobs (the integration and the e2e tiers use it)."""

    # On kwok's fake nodes no Ray runs: any entrypoint does.
    NEVER_RUN = "python -c 'print(1)'"

    def __init__(self, custom: Any, namespace: str) -> None:
        self.custom = custom
        self.ns = namespace

    def create(self, name: str, entrypoint: str = NEVER_RUN, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmJob", "metadata": {"name": name},
                "spec": {"entrypoint": entrypoint, **spec}}
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, body))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, name, {"spec": spec})

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, JOB_PLURAL, name,
                                                          {"status": status})

    def delete(self, name: str) -> None:
        """Delete the job; one already gone is fine."""
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def ready_status(swc: Cluster, name: str, workers: int) -> Callable[[], bool]:
    def check() -> bool:
        st = swc.status(name)
        return st.get("phase") == "Running" and st.get("workers") == f"{workers}/{workers}"
    return check


POOL = "swarm.io/test-pool"


class Nodes:
    """A test's own fake nodes, labelled POOL=<pool>; deleted (with their pods) at the end."""

    def __init__(self, core: Any, count: int) -> None:
        self.core = core
        self.pool = f"p{uuid.uuid4().hex[:8]}"
        self.names = [f"{self.pool}-{i}" for i in range(count)]
        for name in self.names:
            core.create_node(fake_node(name, "32", "128Gi", labels={POOL: self.pool}))

    def selector(self) -> dict[str, Any]:
        """A pod template overlay that schedules onto these nodes only."""
        return {"spec": {"nodeSelector": {POOL: self.pool}}}

    @staticmethod
    def avoided() -> dict[str, Any]:
        """A pod template overlay that keeps off every test's own nodes (a head that must outlive them)."""
        term = {"matchExpressions": [{"key": POOL, "operator": "DoesNotExist"}]}
        return {"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}}}

    def not_ready(self, name: str) -> None:
        """kwok lets go of the node (it would report it Ready again), then the node says NotReady, as a
        kubelet that lost its runtime does."""
        # The node lifecycle controller's taint for a NotReady node: no new pods go there.
        self.core.patch_node(name, {"metadata": {"annotations": {KWOK_ANNOTATION: None}},
                                    "spec": {"taints": [{"key": "node.kubernetes.io/not-ready",
                                                         "effect": "NoSchedule"}]}})
        now = timestamp(time.time())
        self.core.patch_node_status(name, {"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "container runtime is down",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}})

    def remove(self) -> None:
        for name in self.names:
            remove_node(self.core, name)


def evict(core: Any, namespace: str, name: str) -> int:
    """Ask the Eviction API, as `kubectl drain` does; its HTTP status (201 evicted, 429 refused by a budget)."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    try:
        core.create_namespaced_pod_eviction(name, namespace, body)
    except ApiException as exc:
        return int(exc.status)
    return 201
