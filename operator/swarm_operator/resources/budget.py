"""The head's PodDisruptionBudget. Pure.

minAvailable 1 over the head's one pod: a voluntary eviction (the Eviction API: `kubectl drain`, cluster
autoscalers, Karpenter) of a healthy head is refused with 429, while a direct delete (ours: suspend, rollouts)
is not affected. unhealthyPodEvictionPolicy AlwaysAllow: a head that is not ready protects nothing, and must
never block a node upgrade.
"""

from __future__ import annotations

from typing import Any

from swarm_operator.resources import labels
from swarm_operator.spec.types import ClusterSpec


def head_budget_name(cluster: str) -> str:
    return f"{cluster}-head-pdb"


def build_head_budget(cluster: ClusterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": head_budget_name(cluster.name),
            "namespace": cluster.namespace,
            "labels": {**labels.common_labels(cluster.name), labels.NODE_TYPE: labels.HEAD},
            "ownerReferences": [labels.owner_reference(cluster.name, cluster.uid)],
        },
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": labels.head_selector(cluster.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
