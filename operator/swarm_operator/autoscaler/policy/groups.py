"""One worker group during a decision: its counts and budget, the groups a shape may open nodes in, and why
each grows or cannot. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from swarm_operator.autoscaler.policy.packing import Vector
from swarm_operator.autoscaler.policy.types import DemandKind, Settings, WorkerGroup, accelerators_in


@dataclass(eq=False, slots=True)
class GroupPlan:
    """One worker group during a decision: what it has, what it may still open, and why it grows or cannot."""

    index: int  # its place in the spec: its slot in the pools, and the last tie-break between groups
    spec: WorkerGroup
    node_resources: Vector  # one node's, in fixed point
    label_set: int
    has_accelerators: bool
    scarce_resources: frozenset[int]  # resources its nodes have besides the common ones (GPUs, custom)
    unavailable: bool  # backed off: its pods stay unschedulable
    held: bool  # an accelerator group whose new nodes wait until the CPU groups have ramped up (see decide)
    live: int = 0  # RUNNING or IDLE Ray nodes
    coming: int = 0  # pods that exist or are about to, not Ray nodes yet
    minimum_new: int = 0  # new nodes for minReplicas
    speed_cap: int = 0  # new nodes per decision
    budget: int = 0  # new nodes it may still open in this decision
    new: int = 0  # new nodes opened so far
    speed_capped: bool = False  # some demand waited for the upscaling speed
    idle_drains: int = 0  # idle nodes drained for the idle timeout
    above_max_drains: int = 0  # idle nodes drained because the group is above maxReplicas
    lifted: bool = False  # one gang instance has already gone past the speed cap
    growth: dict[tuple[DemandKind, str], int] = field(default_factory=dict)  # why it grows: requests per demand
    limits: dict[str, None] = field(default_factory=dict)  # why it could not grow more, in the order noted

    @property
    def name(self) -> str:
        return self.spec.name

    def set_budget(self, settings: Settings) -> None:
        """The coming pods, the nodes owed to minReplicas and what is left under maxReplicas and the speed cap."""
        if self.unavailable:
            return
        group = self.spec
        room = max(0, group.max_replicas - self.live)
        self.coming = min(room, max(0, group.pending_pods, group.replicas - self.live))
        current = self.live + self.coming
        self.minimum_new = self.new = max(0, group.min_replicas - current)
        # Ray v1's rule: at most max(5, speed × current) nodes launching per group at once.
        self.speed_cap = (max(5, math.ceil(settings.upscaling_speed * current))
                          if math.isfinite(settings.upscaling_speed) else group.max_replicas)
        self.budget = max(0, min(group.max_replicas - current - self.minimum_new, self.speed_cap))

    def note_limit(self) -> None:
        """Demand that fits this group waits: say why (held, maxReplicas or the upscaling speed)."""
        if self.unavailable:
            return
        if self.held:
            kinds = "/".join(accelerators_in(self.spec.resources))
            self.limits[f"new {kinds} nodes held until the CPU groups have ramped up"] = None
        elif self.live + self.coming + self.new >= self.spec.max_replicas:
            self.limits[f"capped by maxReplicas {self.spec.max_replicas}"] = None
        else:
            self.limits[f"capped by upscaling speed ({self.speed_cap} new nodes per decision)"] = None
            self.speed_capped = True

    def count_growth(self, kind: DemandKind, text: str, requests: int) -> None:
        self.growth[(kind, text)] = self.growth.get((kind, text), 0) + requests

    def room_under_max(self) -> int:
        return self.spec.max_replicas - self.live - self.coming - self.new


# A group a fresh node of which fits a shape: (the group, requests of the shape on one fresh node, scarce resources
# of the node the shape does not ask for: wasted). A plain tuple: a decision makes one per group and shape.
Candidate = tuple[GroupPlan, int, int]


class Opening(NamedTuple):
    group: GroupPlan
    requests: int  # placed on the nodes opened


def count_growth(openings: Iterable[Opening], kind: DemandKind, text: str) -> None:
    for opening in openings:
        opening.group.count_growth(kind, text, opening.requests)


def requests_placed(openings: Iterable[Opening]) -> int:
    return sum(opening.requests for opening in openings)
