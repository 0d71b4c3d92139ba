"""Gauges the controller keeps current: clusters by phase, pods by cluster, group and state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from swarm_operator import metrics
from swarm_operator.kit.cache import Key
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels

PHASES = ("Pending", "Running", "Degraded", "Suspended", "Invalid")


def set_cluster_phases(bodies: Iterable[Mapping[str, Any]]) -> None:
    counts = Counter((b.get("status") or {}).get("phase") or "Pending" for b in bodies)
    for phase in PHASES:
        metrics.CLUSTERS.labels(phase).set(counts.get(phase, 0))


def pod_state(p: PodState) -> str:
    return "deleting" if p.deleting else "failed" if p.failure else "ready" if p.ready else p.phase.lower()


def update_pod_gauges(key: Key, pods: Iterable[PodState], series: set[tuple[str, str]]) -> None:
    """swarm_pods of one cluster; `series` (the cluster's memory) holds the (group, state) pairs reported so far:
    one no pod is in any more drops to 0."""
    counts = Counter((p.group or labels.HEAD, pod_state(p)) for p in pods)
    for gs in series - set(counts):
        metrics.PODS.labels(*key, *gs).set(0)
    for gs, n in counts.items():
        metrics.PODS.labels(*key, *gs).set(n)
    series |= set(counts)


def remove_pod_gauges(key: Key, series: set[tuple[str, str]]) -> None:
    """A gone cluster's series go."""
    for group, state in series:
        metrics.PODS.remove(*key, group, state)
