"""Shared helpers for the operator's unit tests: real manifests, real pods, then status on top.

Pods come from the real builders (build_head_pod / build_worker_pod on a parsed manifest);
tests only set what the kubelet and API server would: phase, Ready, container states,
deletion and creation timestamps.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from swarm_operator.reconcile.observe import PodState, observe_pod
from swarm_operator.resources.overlay import RAY_CONTAINER
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.spec import ClusterSpec, parse_cluster

NOW = 1_700_000_000.0  # a whole second, so timestamps round-trip exactly
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
               deleting: bool = False, node: str | None = "node-1", terminated: tuple[str, int] | None = None,
               reason: str | None = None, message: str | None = None, container: str = RAY_CONTAINER,
               resource_version: str | None = None) -> dict[str, Any]:
    """The pod as the API server would report it after the kubelet has had its say."""
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
        term_reason, code = terminated
        status["containerStatuses"] = [
            {"name": container, "ready": False, "state": {"terminated": {"reason": term_reason, "exitCode": code}}},
        ]
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
