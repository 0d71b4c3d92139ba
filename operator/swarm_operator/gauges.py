"""Gauges the controller keeps current: clusters by phase, pods by cluster, group and state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from swarm_operator import metrics
from swarm_operator.reconcile.cache import Key
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels

PHASES = ("Pending", "Running", "Degraded", "Suspended", "Invalid")


def set_cluster_phases(bodies: Iterable[Mapping[str, Any]]) -> None:
    counts = Counter((b.get("status") or {}).get("phase") or "Pending" for b in bodies)
    for phase in PHASES:
        metrics.CLUSTERS.labels(phase).set(counts.get(phase, 0))


def pod_state(p: PodState) -> str:
    return "deleting" if p.deleting else "failed" if p.failure else "ready" if p.ready else p.phase.lower()


class PodGauges:
    """swarm_pods per cluster; a (group, state) no pod is in any more drops to 0, a gone cluster's go."""

    def __init__(self) -> None:
        self._series: dict[Key, set[tuple[str, str]]] = {}

    def update(self, key: Key, pods: Iterable[PodState]) -> None:
        counts = Counter((p.group or labels.HEAD, pod_state(p)) for p in pods)
        seen = self._series.setdefault(key, set())
        for gs in seen - set(counts):
            metrics.PODS.labels(*key, *gs).set(0)
        for gs, n in counts.items():
            metrics.PODS.labels(*key, *gs).set(n)
        seen |= set(counts)

    def forget(self, key: Key) -> None:
        for group, state in self._series.pop(key, set()):
            metrics.PODS.remove(*key, group, state)
