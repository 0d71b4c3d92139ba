"""What a plan asks for: each action names the pod or object it acts on and why (the why becomes the Event). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.disruption import Disrupted


@dataclass(frozen=True)
class CreateService:
    reason: str
    head_generation: int = 0  # the head generation it selects (resources/labels.py current_head_selector)


@dataclass(frozen=True)
class CreateHead:
    reason: str
    generation: int = 0  # its name and generation label follow from it (reconcile/head.py)


@dataclass(frozen=True)
class CreateBudget:
    """The head's PodDisruptionBudget (resources/budget.py)."""
    reason: str


@dataclass(frozen=True)
class DeleteBudget:
    name: str
    uid: str
    reason: str


@dataclass(frozen=True)
class CreateWorkers:
    group: str
    count: int
    reason: str


@dataclass(frozen=True)
class DeletePod:
    name: str
    reason: str
    failed_group: str | None = None  # set when the deletion replaces a failed worker
    failed: bool = False  # the pod died (worker or head): reported as a Warning
    # An eviction, a node shutdown or loss ended it: replaced, not a failure; counted and reported once per pod by
    # reconcile/tally.py, not as a deletion.
    disrupted: Disrupted | None = None


@dataclass(frozen=True)
class PatchPod:
    """A change the running pod can take in place (its template's labels and annotations): no restart."""
    name: str
    patch: Mapping[str, Any] = field(compare=False)
    reason: str


@dataclass(frozen=True)
class DrainWorker:
    """A Ray worker that has to go (a rollout, a scale-down, suspend, its group removed): Ray drains it rather than the
    pod being deleted. A busy one with reason PREEMPTION and a deadline, so its running tasks finish; one Ray
    reported idle with IDLE_TERMINATION (`idle`), which the raylet refuses if a task has started there since Ray's
    state was read (that report lags: a pod deleted on its word alone can take a just-started task with it). The
    pod is deleted once Ray reports the node dead, or at the deadline."""
    name: str
    reason: str
    deadline_seconds: int
    idle: bool = False


Action = (CreateService | CreateHead | CreateWorkers | DeletePod | PatchPod | DrainWorker | CreateBudget
          | DeleteBudget)
Note = tuple[EventReason, str]  # something the plan waits for, posted as an Event once while it holds
