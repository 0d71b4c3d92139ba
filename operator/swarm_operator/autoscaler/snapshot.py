"""What a Ray cluster reports, as plain frozen data: nodes, pending demand, placement groups. Ray-free.

The GCS client (``gcs``) builds a :class:`ClusterSnapshot` from the protobuf reply; the policy reads the
same types (its demand is :class:`ResourceDemand` and :class:`GangDemand`, its node statuses, strategies
and label selectors are these). Nothing here imports ray or grpc, so the policy and its tests load
without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

Resources = Mapping[str, float]

HEAD_RESOURCE = "node:__internal_head__"  # every head node reports it


class NodeStatus(StrEnum):
    """A Ray node's state as the GCS reports it (``autoscaler.NodeStatus``)."""

    RUNNING = "RUNNING"  # has work (or resources in use)
    IDLE = "IDLE"  # nothing in use, for ``idle_duration_ms``
    DRAINING = "DRAINING"  # accepted a drain: neither capacity nor a candidate
    DEAD = "DEAD"
    UNKNOWN = "UNKNOWN"  # UNSPECIFIED on the wire


class Strategy(StrEnum):
    """Placement-group strategies."""

    PACK = "PACK"  # best effort onto few nodes
    STRICT_PACK = "STRICT_PACK"  # all bundles on one node
    SPREAD = "SPREAD"  # best effort onto distinct nodes
    STRICT_SPREAD = "STRICT_SPREAD"  # each bundle on a distinct node


class LabelOp(StrEnum):
    """Ray's label-selector operators (``LABEL_OPERATOR_IN`` / ``LABEL_OPERATOR_NOT_IN``)."""

    IN = "in"
    NOT_IN = "notin"


@dataclass(frozen=True)
class LabelConstraint:
    """One term of a label selector: the node's label ``key`` is (not) one of ``values``. A node without the
    key is outside every value set (Ray's rule)."""

    key: str
    op: LabelOp
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        inside = labels.get(self.key) in self.values
        return inside if self.op is LabelOp.IN else not inside


LabelSelector = tuple[LabelConstraint, ...]  # all terms must hold; () matches every node


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    return all(term.matches(labels) for term in selector)


@dataclass(frozen=True)
class ResourceDemand:
    """``count`` requests of one shape.

    ``label_selectors`` are alternatives in Ray's fallback order (the first that some node can satisfy
    wins); () means any node.
    """

    shape: Resources
    count: int
    label_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True)
class Bundle:
    shape: Resources
    label_selector: LabelSelector = ()


@dataclass(frozen=True)
class GangDemand:
    """``count`` identical pending placement groups: all bundles of one are placed, or none.

    ``fallbacks`` are alternative bundle lists Ray may try after ``bundles`` (none in Ray 2.60, which
    sends one). For a placement group being rescheduled, only its unplaced bundles are listed.
    """

    bundles: tuple[Bundle, ...]
    strategy: Strategy
    count: int = 1
    placement_group_ids: tuple[str, ...] = ()
    fallbacks: tuple[tuple[Bundle, ...], ...] = ()


@dataclass(frozen=True)
class RayNode:
    """One Ray node as the GCS reports it. Dead nodes keep only ids and type (no resources)."""

    node_id: str  # hex, the form DrainNode wants
    instance_id: str  # RAY_CLOUD_INSTANCE_ID: the pod name
    node_type: str  # RAY_NODE_TYPE_NAME: the worker group ("head" for the head)
    status: NodeStatus
    total: Resources  # as reported, including node:<ip> and placement-group resources
    available: Resources
    idle_duration_ms: int
    labels: Mapping[str, str]
    ip: str = ""
    activity: tuple[str, ...] = ()  # Ray's words for why the node is busy (may lag the status)

    @property
    def alive(self) -> bool:
        return self.status in (NodeStatus.RUNNING, NodeStatus.IDLE, NodeStatus.DRAINING)

    @property
    def is_head(self) -> bool:
        return HEAD_RESOURCE in self.total


@dataclass(frozen=True)
class ClusterSnapshot:
    address: str
    session_name: str  # changes when the head (GCS) is replaced without fault tolerance
    state_version: int
    nodes: tuple[RayNode, ...]
    pending: tuple[ResourceDemand, ...]  # tasks and actors, queued or infeasible
    gangs: tuple[GangDemand, ...]  # placement groups waiting for capacity
    constraints: tuple[ResourceDemand, ...]  # request_resources(), GCS and internal-KV forms merged
    pending_in_placement_groups: int = 0  # tasks waiting inside a placement group (need no new node)
    ray_version: str | None = None  # the cluster's, from its metadata; None if it has none
    autoscaler_v2: bool | None = None  # head started with RAY_enable_autoscaler_v2=1
    read_at: float = 0.0  # epoch seconds when the read started
    read_seconds: float = 0.0  # how long the read took, all RPCs included

    def node(self, node_id_hex: str) -> RayNode | None:
        return next((n for n in self.nodes if n.node_id == node_id_hex.lower()), None)

    def node_by_instance(self, instance_id: str) -> RayNode | None:
        """The node of a pod; an alive one wins over dead ones of the same pod name (a restarted head)."""
        matches = [n for n in self.nodes if n.instance_id == instance_id]
        return next((n for n in matches if n.alive), matches[0] if matches else None)

