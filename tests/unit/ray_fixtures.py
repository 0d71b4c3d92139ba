"""Ray GCS snapshots for the autoscaler's unit tests, built from the snapshot's own dataclasses.

A node's id is derived from its pod name, so tests can name nodes by pod and still hand DrainNode the
56-hex-digit id the real client insists on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from swarm_operator.autoscaler import gcs
from swarm_operator.autoscaler.gcs import OPERATOR_RAY_VERSION
from swarm_operator.autoscaler.snapshot import (
    HEAD_RESOURCE,
    ClusterSnapshot,
    GangDemand,
    NodeStatus,
    RayNode,
    ResourceDemand,
)

ADDRESS = "10.0.0.1:6379"
HEAD_IP = "10.0.0.1"


def node_id(pod: str) -> str:
    return hashlib.sha224(pod.encode()).hexdigest()  # 28 bytes: a NodeID's size


def ray_node(pod: str, group: str, status: NodeStatus = NodeStatus.RUNNING, *, idle_s: float = 0.0,
             total: Mapping[str, float] | None = None, available: Mapping[str, float] | None = None,
             head: bool = False, ip: str = "10.1.0.9") -> RayNode:
    """A node as the GCS reports it: node:<ip> always, the head marker on the head; dead nodes keep no
    resources. `available` defaults to all of `total` (an idle node)."""
    if status is NodeStatus.DEAD:
        return RayNode(node_id(pod), pod, group, status, {}, {}, 0, {})
    base = dict(total if total is not None else {"CPU": 4.0, "memory": 8e9})
    base[f"node:{ip}"] = 1.0
    if head:
        base[HEAD_RESOURCE] = 1.0
    free = dict(available) if available is not None else dict(base)
    return RayNode(node_id(pod), pod, group, status, base, free, int(idle_s * 1000), {}, ip)


def snapshot(*nodes: RayNode, pending: tuple[ResourceDemand, ...] = (), gangs: tuple[GangDemand, ...] = (),
             constraints: tuple[ResourceDemand, ...] = (), ray_version: str | None = None,
             address: str = ADDRESS) -> ClusterSnapshot:
    return ClusterSnapshot(address=address, session_name="session_1", state_version=1, nodes=tuple(nodes),
                              pending=pending, gangs=gangs, constraints=constraints,
                              ray_version=ray_version or OPERATOR_RAY_VERSION)


def demand(count: int, **shape: float) -> ResourceDemand:
    return ResourceDemand(dict(shape), count)


class FakeRay:
    """What the GCS answers, shared by every client the pool makes; it records reads and drains."""

    def __init__(self) -> None:
        self.snapshot: ClusterSnapshot = snapshot()
        self.error: str | None = None
        self.refuse: dict[str, str] = {}  # pod -> Ray's reason
        self.fail_drain: set[str] = set()  # pods whose drain RPC fails
        self.addresses: list[str] = []
        self.reads = 0
        self.drains: list[tuple[str, gcs.DrainReason, str, int, ClusterSnapshot]] = []

    def factory(self, address: str, token: str | None) -> FakeClient:
        self.addresses.append(address)
        return FakeClient(self)


class FakeClient:
    def __init__(self, ray: FakeRay) -> None:
        self.ray = ray

    def read(self) -> ClusterSnapshot:
        self.ray.reads += 1
        if self.ray.error is not None:
            raise gcs.GcsUnavailable(self.ray.error)
        return self.ray.snapshot

    def drain(self, node_id_hex: str, reason: gcs.DrainReason, message: str, deadline_ms: int, *,
              snapshot: ClusterSnapshot) -> gcs.DrainResult:
        self.ray.drains.append((node_id_hex, reason, message, deadline_ms, snapshot))
        node = snapshot.node(node_id_hex)
        assert node is not None, node_id_hex
        if node.instance_id in self.ray.fail_drain:
            raise gcs.GcsUnavailable("drain timed out")
        why = self.ray.refuse.get(node.instance_id)
        return gcs.DrainResult(why is None, why or "")

    def close(self) -> None:
        pass
