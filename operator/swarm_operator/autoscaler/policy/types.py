"""The policy's input and output: worker groups, live nodes, settings in; targets, drains, reasons out.

Demand comes in as the snapshot's own types (:class:`ResourceDemand`, :class:`GangDemand`); nodes come in as
:class:`Node`, a Ray node joined with its pod (the GCS's :class:`~swarm_operator.autoscaler.snapshot.RayNode`
does not know the pod's age or which nodes the operator manages).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from swarm_operator.autoscaler.snapshot import (
    GangDemand,
    LabelSelector,
    NodeStatus,
    ResourceDemand,
    Resources,
    Strategy,
)


class DemandKind(StrEnum):
    TASK = "task"  # tasks and actors
    GANG = "gang"  # placement groups
    CONSTRAINT = "constraint"  # ray.autoscaler.sdk.request_resources


@dataclass(frozen=True)
class WorkerGroup:
    """A worker group as the policy sees it.

    ``replicas`` is the current target (``status.workerGroups[].desiredReplicas``). ``pending_pods``
    counts pods created but not yet Ray nodes. Together they say what capacity is coming: pods that exist
    and pods the reconciler is about to create for the current target, ``max(pending_pods, replicas -
    live nodes)``, all with the group's full ``resources``.
    """

    name: str
    resources: Resources  # Ray resources of one node: {"CPU": 8, "GPU": 1, "memory": 3.2e10, "custom": 1}
    min_replicas: int
    max_replicas: int
    replicas: int
    pending_pods: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)  # Ray node labels the group's nodes start with


@dataclass(frozen=True)
class Node:
    """A live Ray node as the policy sees it: the GCS's node joined with its pod.

    ``group`` None (or a name no group has) marks a node the policy never scales: the head, or a node of a
    group removed from the spec. Its free capacity still counts. ``labels`` None means the group's labels;
    per-node unique labels (``ray.io/node-id``) should be left out: they only defeat aggregation.
    """

    name: str  # the pod name (Ray's instance_id, from RAY_CLOUD_INSTANCE_ID)
    group: str | None
    status: NodeStatus
    total: Resources
    available: Resources
    idle_s: float = 0.0
    age_s: float = 0.0  # since the pod was created; newer idle nodes are drained first
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Settings:
    # New nodes per group per decision: at most max(5, ceil(upscaling_speed × its live and coming nodes)),
    # so a group at least doubles per decision at speed 1. math.inf: no limit but maxReplicas.
    upscaling_speed: float = 1.0
    idle_timeout_s: float = 60.0
    conserve_gpu_nodes: bool = True
    scale_down_stabilization_s: float = 30.0


@dataclass(frozen=True)
class PolicyInput:
    groups: tuple[WorkerGroup, ...]
    nodes: tuple[Node, ...] = ()
    demands: tuple[ResourceDemand, ...] = ()  # tasks and actors
    gangs: tuple[GangDemand, ...] = ()
    constraints: tuple[ResourceDemand, ...] = ()  # request_resources bundles, packed against total capacity
    unavailable: frozenset[str] = frozenset()  # groups backed off: their pods stay unschedulable
    settings: Settings = Settings()
    now: float = 0.0  # seconds, same clock as last_scale_up
    last_scale_up: Mapping[str, float] = field(default_factory=dict)  # group -> time of its last scale-up


@dataclass(frozen=True)
class Drain:
    node: str  # pod name
    group: str
    reason: str


@dataclass(frozen=True)
class Unplaced:
    """Demand left over: infeasible (fits no group) or waiting (max, upscaling speed or backoff)."""

    kind: DemandKind
    bundles: tuple[Resources, ...]  # one bundle for tasks and constraints
    count: int
    strategy: Strategy | None = None
    selector: LabelSelector = ()

    def describe(self) -> str:
        if self.kind is DemandKind.GANG:
            return f"{self.count}× placement group {self.strategy} {format_bundles(self.bundles)}"
        what = "request_resources " if self.kind is DemandKind.CONSTRAINT else ""
        return f"{self.count}× {what}{format_resources(self.bundles[0])}"


@dataclass(frozen=True)
class Decision:
    """``targets`` has every group, clamped to [min, max]. Lowering a target below the group's live plus
    pending pods means: the listed ``drains`` (each an idle Ray node, drained with IDLE_TERMINATION, its pod
    deleted once DEAD), then pods that are not Ray nodes yet. The policy never asks to remove a busy node."""

    targets: Mapping[str, int]
    drains: tuple[Drain, ...]
    infeasible: tuple[Unplaced, ...]
    waiting: tuple[Unplaced, ...]
    reasons: Mapping[str, str]  # changed groups only: "gpu 2→5: 12 pending {GPU:1}"
    # What the new nodes are for, for a caller that double-checks a small scale-up: the pending tasks placed on them
    # (their resources summed), and whether minReplicas, request_resources or placement groups opened any.
    tasks_on_new_nodes: Resources = field(default_factory=dict)
    new_nodes_for_more_than_tasks: bool = False


def format_resources(shape: Resources) -> str:
    """{CPU:1, GPU:1, memory:4G}: sorted, integers without decimals, large amounts with SI suffixes."""
    return "{" + ", ".join(f"{k}:{_format_amount(v)}" for k, v in sorted(shape.items()) if v > 0) + "}"


def _format_amount(v: float) -> str:
    for suffix, unit in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if v >= unit:
            return f"{v / unit:.3g}{suffix}"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def format_bundles(bundles: Iterable[Resources]) -> str:
    counts: dict[str, int] = {}
    for b in bundles:
        text = format_resources(b)
        counts[text] = counts.get(text, 0) + 1
    return "[" + ", ".join(f"{n}×{text}" if n > 1 else text for text, n in counts.items()) + "]"


# The Ray resources accelerators are scheduled as (the Ray names of spec.rules.ACCELERATORS): all scarce and dear, so
# conserveGpuNodes keeps other work off every kind of them, not only off GPUs.
ACCELERATORS = ("GPU", "TPU", "neuron_cores", "HPU")


def accelerators_in(resources: Resources) -> list[str]:
    return [name for name in ACCELERATORS if resources.get(name, 0) > 0]
