"""Shared helpers for the operator's unit tests: real manifests, real pods, then status on top.

Pods come from the real builders (build_head_pod / build_worker_pod on a parsed manifest);
tests only set what the kubelet and API server would: phase, Ready, container states,
deletion and creation timestamps.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from swarm_operator.config import OperatorConfig
from swarm_operator.controller import Controller
from swarm_operator.kube import Kube, ObjectRef, Resource
from swarm_operator.reconcile.observe import PodState, observe_pod
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.rules import RAY_CONTAINER
from swarm_operator.spec.types import ClusterSpec

NOW = 1_700_000_000.0  # a whole second, so timestamps round-trip exactly


class FixedClock:
    """Stands in for the controller's `time` module: a fixed wall clock (backoff and timestamps are then exact)."""

    @staticmethod
    def time() -> float:
        return NOW

    @staticmethod
    def monotonic() -> float:
        return 0.0
NAME = "demo"
NAMESPACE = "ns"
UID = "uid-1"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest(spec: dict[str, Any] | None = None, *, name: str = NAME, namespace: str = NAMESPACE,
             uid: str = UID, generation: int = 1, groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A small SwarmCluster object; `spec` keys replace the defaults, `groups` the worker groups."""
    body: dict[str, Any] = {
        "image": "rayproject/ray:2.60.0",
        "head": {"resources": {"cpu": "1", "memory": "2Gi"}},
        "workerGroups": groups if groups is not None else [
            {"name": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 10,
             "resources": {"cpu": "1", "memory": "1Gi"}},
        ],
    }
    body.update(spec or {})
    return {
        "apiVersion": "swarm.io/v1alpha1",
        "kind": "SwarmCluster",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": body,
    }


def group(name: str, replicas: int | None = 2, lo: int = 0, hi: int = 10, gpu: int = 0,
          **extra: Any) -> dict[str, Any]:
    g: dict[str, Any] = {"name": name, "minReplicas": lo, "maxReplicas": hi,
                         "resources": {"cpu": "1", "memory": "1Gi", "gpu": gpu}}
    if replicas is not None:
        g["replicas"] = replicas
    g.update(extra)
    return g


def cluster(spec: dict[str, Any] | None = None, **kwargs: Any) -> ClusterSpec:
    return parse_cluster(manifest(spec, **kwargs))


def with_state(pod: dict[str, Any], *, phase: str = "Running", ready: bool = True, created: float = NOW - 600,
               deleting: bool = False, node: str | None = "node-1",
               terminated: tuple[str, int] | tuple[str, int, str] | None = None,
               reason: str | None = None, message: str | None = None, container: str = RAY_CONTAINER,
               resource_version: str | None = None) -> dict[str, Any]:
    """The pod as the API server would report it after the kubelet has had its say; ``terminated`` is
    the Ray container's (reason, exit code[, message])."""
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    meta["creationTimestamp"] = iso(created)
    if deleting:
        meta["deletionTimestamp"] = iso(NOW - 1)
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    if node:
        pod["spec"]["nodeName"] = node
    status: dict[str, Any] = {"phase": phase,
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    if terminated is not None:
        term: dict[str, Any] = {"reason": terminated[0], "exitCode": terminated[1]}
        if len(terminated) == 3:
            term["message"] = terminated[2]
        status["containerStatuses"] = [{"name": container, "ready": False, "state": {"terminated": term}}]
    elif phase == "Running":
        status["containerStatuses"] = [{"name": container, "ready": ready, "state": {"running": {}}}]
    pod["status"] = status
    return pod


def head_pod(c: ClusterSpec, **state: Any) -> dict[str, Any]:
    return with_state(build_head_pod(c), **state)


def worker_pod(c: ClusterSpec, group_name: str = "cpu", suffix: str = "aaaaa", **state: Any) -> dict[str, Any]:
    g = c.group(group_name)
    assert g is not None, group_name
    return with_state(build_worker_pod(c, g, suffix), **state)


def head(c: ClusterSpec, **state: Any) -> PodState:
    return observe_pod(head_pod(c, **state))


def worker(c: ClusterSpec, group_name: str = "cpu", suffix: str = "aaaaa", **state: Any) -> PodState:
    return observe_pod(worker_pod(c, group_name, suffix, **state))


def workers(c: ClusterSpec, n: int, group_name: str = "cpu", **state: Any) -> list[PodState]:
    """n healthy workers named <cluster>-<group>-w0000 …, created one minute apart (w0000 oldest)."""
    base = state.pop("created", NOW - 3600)
    return [worker(c, group_name, f"w{i:04d}", created=base + 60 * i, **state) for i in range(n)]


# -- a fake API server -----------------------------------------------------------------------------

Key = tuple[str, str]


class FakeKube:
    """An API server of pods, services and SwarmClusters that records each call; it satisfies
    kube.Kube (mypy checks `as_kube`), so the controller's tests use the real contract."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.services_made: dict[str, int] = {}  # by name
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []  # (cluster, type, reason, message)
        self.swarmclusters: dict[Key, dict[str, Any]] = {}  # what the API server stores
        self.secrets: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}  # by name
        self.budgets: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv = 100
        self._lock = threading.Lock()  # the controller calls from worker threads

    def bump(self) -> str:
        """The next resourceVersion, as the API server would give a write."""
        self._rv += 1
        return str(self._rv)

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            self.calls.append(("list_pods", namespace))
            items = [copy.deepcopy(p) for (ns, _), p in self.pods.items() if namespace in (None, ns)]
            return items, str(self._rv)

    def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            self.calls.append(("list_nodes",))
            return [copy.deepcopy(n) for n in self.nodes.values()], str(self._rv)

    def list_services(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(("list_services", namespace))
            return [copy.deepcopy(s) for (ns, _), s in self.services.items() if namespace in (None, ns)]

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = pod["metadata"]["name"]
            self.calls.append(("create_pod", name))
            if (namespace, name) in self.pods:
                return None  # 409
            stored = copy.deepcopy(dict(pod))
            stored["metadata"].update(resourceVersion=self.bump(), creationTimestamp=iso(NOW), uid=f"pod-{name}")
            stored["status"] = {"phase": "Pending"}
            self.pods[(namespace, name)] = stored
            return copy.deepcopy(stored)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("get_pod", name))
            return copy.deepcopy(self.pods.get((namespace, name)))

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("delete_pod", name))
            pod = self.pods.get((namespace, name))
            if pod is None:
                return None  # 404
            pod["metadata"].update(deletionTimestamp=iso(NOW), resourceVersion=self.bump())
            return copy.deepcopy(pod)

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of metadata labels/annotations (all the controller patches)."""
        with self._lock:
            self.calls.append(("patch_pod", name))
            pod = self.pods.get((namespace, name))
            if pod is None:
                return None  # 404
            for key, change in patch["metadata"].items():
                merged = {**pod["metadata"].get(key, {}), **change}
                pod["metadata"][key] = {k: v for k, v in merged.items() if v is not None}
            pod["metadata"]["resourceVersion"] = self.bump()
            return copy.deepcopy(pod)

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = service["metadata"]["name"]
            self.calls.append(("create_service", name))
            if (namespace, name) in self.services:
                return None  # 409
            stored = {**copy.deepcopy(dict(service)), "kind": "Service"}
            # A service made again under the same name is another object: another uid.
            again = self.services_made.get(name, 0)
            self.services_made[name] = again + 1
            stored["metadata"].update(resourceVersion=self.bump(), uid=f"svc-{name}" + (f"-{again}" if again else ""))
            self.services[(namespace, name)] = stored
            return copy.deepcopy(stored)

    def patch_service(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of metadata annotations and spec fields (all the controller patches)."""
        with self._lock:
            self.calls.append(("patch_service", name))
            svc = self.services.get((namespace, name))
            if svc is None:
                return None  # 404
            changed = {**svc["metadata"].get("annotations", {}), **patch.get("metadata", {}).get("annotations", {})}
            svc["metadata"]["annotations"] = {k: v for k, v in changed.items() if v is not None}
            svc["spec"].update(patch.get("spec", {}))
            svc["metadata"]["resourceVersion"] = self.bump()
            return copy.deepcopy(svc)

    def delete_service(self, namespace: str, name: str) -> None:
        with self._lock:
            self.calls.append(("delete_service", name))
            self.services.pop((namespace, name), None)

    def list_budgets(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(("list_budgets", namespace))
            return [copy.deepcopy(b) for (ns, _), b in self.budgets.items() if namespace in (None, ns)]

    def create_budget(self, namespace: str, budget: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = budget["metadata"]["name"]
            self.calls.append(("create_budget", name))
            if (namespace, name) in self.budgets:
                return None  # 409
            stored = copy.deepcopy(dict(budget))
            stored["metadata"].update(resourceVersion=self.bump(), uid=f"pdb-{name}-{self._rv}")
            self.budgets[(namespace, name)] = stored
            return copy.deepcopy(stored)

    def delete_budget(self, namespace: str, name: str) -> None:
        with self._lock:
            self.calls.append(("delete_budget", name))
            self.budgets.pop((namespace, name), None)

    def get_resource(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("get_resource", name))
            return copy.deepcopy(self.swarmclusters.get((namespace, name)))

    def list_resource(self, resource: Resource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            self.calls.append(("list_resource", namespace))
            return [copy.deepcopy(b) for (ns, _), b in self.swarmclusters.items() if namespace in (None, ns)], \
                str(self._rv)

    def patch_status(self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        with self._lock:
            self.calls.append(("patch_status", name))
            if (namespace, name) not in self.swarmclusters:
                return False  # 404
            self.statuses.append((namespace, name, copy.deepcopy(dict(status))))
            return True

    def patch_status_at(self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any],
                        resource_version: str) -> bool:
        return self.patch_status(resource, namespace, name, status)

    def set_finalizers(self, resource: Resource, namespace: str, name: str, finalizers: list[str],
                       resource_version: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("set_finalizers", name))
            stored = self.swarmclusters.get((namespace, name))
            if stored is None:
                return None  # 404
            stored["metadata"].update(finalizers=list(finalizers), resourceVersion=self.bump())
            return copy.deepcopy(stored)

    def create_resource(self, resource: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = body["metadata"]["name"]
            self.calls.append(("create_resource", name))
            if (namespace, name) in self.swarmclusters:
                return None  # 409
            stored = copy.deepcopy(dict(body))
            stored["metadata"].update(namespace=namespace, uid=f"uid-{name}", resourceVersion=self.bump())
            self.swarmclusters[(namespace, name)] = stored
            return copy.deepcopy(stored)

    def delete_resource(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("delete_resource", name))
            return self.swarmclusters.pop((namespace, name), None)

    def patch_resource(self, resource: Resource, namespace: str, name: str,
                       patch: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("patch_resource", name))
            stored = self.swarmclusters.get((namespace, name))
            if stored is None:
                return None  # 404
            stored["spec"] = {**stored.get("spec", {}), **patch.get("spec", {})}
            return copy.deepcopy(stored)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("get_secret", name))
            return copy.deepcopy(self.secrets.get((namespace, name)))

    def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = secret["metadata"]["name"]
            self.calls.append(("create_secret", name))
            if (namespace, name) in self.secrets:
                return None  # 409
            self.secrets[(namespace, name)] = copy.deepcopy(dict(secret))
            return copy.deepcopy(dict(secret))

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("get_job", name))
            return copy.deepcopy(self.jobs.get((namespace, name)))

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = job["metadata"]["name"]
            self.calls.append(("create_job", name))
            if (namespace, name) in self.jobs:
                return None  # 409
            self.jobs[(namespace, name)] = copy.deepcopy(dict(job))
            return copy.deepcopy(dict(job))

    def post_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        with self._lock:
            self.calls.append(("post_event", ref.name))
            self.events.append((ref.name, event_type, str(reason), message))

    def verbs(self) -> Counter[str]:
        """How often each method was called."""
        return Counter(c[0] for c in self.calls)


def as_kube(fake: FakeKube) -> Kube:
    """The fake, typed as what the operator asks for: mypy checks here that FakeKube satisfies kube.Kube."""
    return fake


def serving(kube: FakeKube, body: dict[str, Any] | None = None) -> Controller:
    """A controller serving one SwarmCluster (`manifest()` by default), stored in the fake API server too, which
    a turn reads back before it re-creates children. Call it on the event loop."""
    body = body or manifest()
    c = Controller(as_kube(kube), OperatorConfig())
    kube.swarmclusters[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
    c.on_cluster("ADDED", body)
    return c
