"""Whether a new head may start now, and under which generation (its name and the head service's selector). Pure.

A head pod's name follows its generation (`<cluster>-head`, then `<cluster>-head-<n>`). A new head takes the
current generation's name when every earlier head pod is gone. A head pod stuck Terminating on a lost node holds
its name for as long as nobody force-deletes it; then the new head takes the next generation, a new name, and the
head service selects it alone. That is allowed only under the rule a force-delete follows: the old pod's node is
gone, or NotReady past the disruption threshold (reconcile/disruption.py's `node_lost`). Otherwise the new head
waits, however long: with GCS fault tolerance both heads would serve the same Redis tables, and two GCS servers
on one Redis must never run at once.

The generation is level-based: the newest of what status recorded and what the head pods' labels say, so an
operator stopped between creating a head and writing status never reuses the name of a pod that still exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from swarm_operator.reconcile.observe import PodState


@dataclass(frozen=True)
class StartHead:
    generation: int
    reason: str


@dataclass(frozen=True)
class WaitForHead:
    reason: str
    overdue: bool  # an old head's deletion outlasted its grace period: it may be stuck (worth an Event)


def current_generation(recorded: int, heads: Sequence[PodState]) -> int:
    """The newest head generation: status's, or a head pod's newer one (status not written before a restart)."""
    return max([recorded, *(p.head_generation for p in heads)])


def next_head(remaining: Sequence[PodState], generation: int, now: float) -> StartHead | WaitForHead:
    """`remaining`: the head pods that still exist, none of them alive (failed, disrupted, being deleted; those
    deleted in this turn too); `generation`: the current one (`current_generation`)."""
    if not remaining:
        return StartHead(generation, "head pod missing")
    waited = [p for p in remaining if p.node_lost is None]
    if waited:
        names = ", ".join(p.name for p in waited)
        return WaitForHead(f"the new head waits for {names} to be gone: its node is not known to be dead, and two "
                           "GCS servers must never run at once",
                           overdue=any(p.deleting and 0 < p.deletion_at <= now for p in waited))
    stuck = "; ".join(f"{p.name} ({p.node_lost})" for p in remaining)
    # The current generation's name when no pod holds it (its create was refused, or the operator stopped before
    # making it): a refused create retried every turn must not use up a name each time.
    held = {p.head_generation for p in remaining}
    return StartHead(generation + 1 if generation in held else generation,
                     f"head pod missing; the old one is stuck on a lost node: {stuck}")
