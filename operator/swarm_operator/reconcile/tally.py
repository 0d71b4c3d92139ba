"""Which pods' disruptions count now: every pod that ends by a disruption the operator did not cause, exactly once,
however the operator first sees it. Pure.

It may first see such a pod in three ways: disrupted and not being deleted (the kubelet's eviction, DisruptionTarget,
its node lost: the planner deletes it); disrupted and being deleted at once (the Eviction API writes DisruptionTarget
and deletes the pod in one go, as do the taint manager and the pod garbage collector); or only through the watch's
DELETED event, whose object is the pod's last state, when the pod came and went between two turns. A pod the
operator deleted itself is never counted (the pod garbage collector marks a pod the operator deleted on a lost node
on its way out), nor is one pod counted twice: the uids counted are remembered for as long as their pods can still
be seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from swarm_operator.reconcile.disruption import Cause
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels


@dataclass(frozen=True)
class Disruption:
    """One pod's disruption, counted once: swarm_pod_disruptions_total{group, cause} and a `Disrupted` Event."""

    uid: str
    group: str  # the pod's worker group, or labels.HEAD
    cause: Cause
    message: str  # "worker <pod> of group <group> disrupted (<why>)", "head <pod> disrupted (<why>)"


@dataclass(frozen=True)
class Tally:
    new: tuple[Disruption, ...]  # to count in this turn
    counted: frozenset[str]  # the uids to remember as counted: those whose pods may be seen again


def disruption_message(p: PodState) -> str:
    assert p.disruption is not None
    who = f"head {p.name}" if p.node_type == labels.HEAD else f"worker {p.name} of group {p.group}"
    return f"{who} disrupted ({p.disruption.reason})"


def tally_disruptions(present: Iterable[PodState], vanished: Iterable[PodState], deleted_by_operator: Set[str],
                      counted: Set[str]) -> Tally:
    """`present`: the cluster's pods as the turn sees them; `vanished`: the last states of its pods deleted since the
    last turn (the watch's DELETED events of pods the cache still held); `deleted_by_operator`: the names of the pods
    this operator deleted; `counted`: the uids already counted. A pod being deleted or gone whose name the operator
    deleted is its own doing; a pod not yet being deleted is nobody's deletion yet, whatever its name."""
    present = list(present)
    new: list[Disruption] = []
    seen = set(counted)
    for p, gone in [*((p, False) for p in present), *((p, True) for p in vanished)]:
        if p.disruption is None or p.uid in seen or ((gone or p.deleting) and p.name in deleted_by_operator):
            continue
        seen.add(p.uid)
        group = labels.HEAD if p.node_type == labels.HEAD else p.group or ""
        new.append(Disruption(p.uid, group, p.disruption.cause, disruption_message(p)))
    # A vanished pod is seen for the last time (the cache's tombstones keep it from coming back); a present one may
    # still come back as deleting, then as its DELETED event.
    still_seen = {p.uid for p in present}
    return Tally(tuple(new), frozenset(seen & still_seen))
