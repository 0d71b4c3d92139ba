"""Fake nodes simulated by kwok: built by pure functions, created through the API.

kwok manages only nodes carrying the annotation ``kwok.x-k8s.io/node: fake`` (the
cluster is configured that way so that real "process nodes" can join later without
kwok taking them over); it marks them Ready, keeps their leases fresh and moves the
pods bound to them to Running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_LABEL = "swarm.io/gpu"
POOL_LABEL = "swarm.io/pool"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodePool:
    """``count`` identical fake nodes named ``<prefix>-<i>``."""

    prefix: str
    count: int
    cpu: str
    memory: str
    pods: int = 1000
    gpus: int = 0
    gpu_resource: str = GPU_RESOURCE
    labels: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]


DEFAULT_POOL: tuple[NodePool, ...] = (
    NodePool(prefix="kwok-cpu", count=4, cpu="32", memory="128Gi"),
    NodePool(prefix="kwok-gpu", count=2, cpu="32", memory="256Gi", gpus=8),
)


def fake_node(name: str, cpu: str, memory: str, *, pods: int = 1000, gpus: int = 0,
              gpu_resource: str = GPU_RESOURCE, labels: dict[str, str] | None = None,
              pool: str = "") -> dict[str, Any]:
    """The Node object of one kwok-managed node with the given capacity.

    Status is part of the object on purpose: the API server keeps a Node's status on
    create, and kwok's node-initialize stage copies capacity/allocatable from it.
    """
    # Every kubelet reports ephemeral-storage: pods that request it must be schedulable here too.
    capacity: dict[str, str] = {"cpu": cpu, "memory": memory, "ephemeral-storage": "500Gi", "pods": str(pods)}
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    if pool:
        node_labels[POOL_LABEL] = pool
    if gpus:
        capacity[gpu_resource] = str(gpus)
        node_labels[GPU_LABEL] = "true"
    node_labels.update(labels or {})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            # node.alpha.kubernetes.io/ttl=0 is what a kubelet-less node sets so the
            # controller manager does not wait on a TTL controller update.
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def pool_nodes(pools: tuple[NodePool, ...] | list[NodePool]) -> list[dict[str, Any]]:
    """Node objects of every node in ``pools``."""
    return [
        fake_node(name, p.cpu, p.memory, pods=p.pods, gpus=p.gpus, gpu_resource=p.gpu_resource,
                  labels=p.labels, pool=p.prefix)
        for p in pools
        for name in p.names()
    ]


def create_nodes(api: client.ApiClient, nodes: list[dict[str, Any]]) -> None:
    """Create the nodes; ones that already exist are left as they are (``up`` is idempotent)."""
    core: Any = client.CoreV1Api(api)  # Any: bodies are plain dicts, not the client's models
    for node in nodes:
        try:
            core.create_node(node)
        except ApiException as exc:
            if exc.status != 409:
                raise


def _is_ready(node: Any) -> bool:
    conditions = (node.status.conditions or []) if node.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def wait_nodes_ready(api: client.ApiClient, names: list[str], timeout: float = 60.0) -> None:
    """Block until every named node reports Ready=True; raise TimeoutError naming the laggards."""
    core: Any = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        ready = {n.metadata.name for n in core.list_node().items if _is_ready(n)}
        pending -= ready
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not Ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
        time.sleep(0.5)


def remove_node(core: Any, name: str) -> None:
    """Delete a fake node and, first, its pods at once: no kubelet will ever finish their deletion, and the pod
    garbage collector would leave them ~40 s. Either already gone is fine."""
    for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items:
        try:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise
    try:
        core.delete_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
