"""Disruption is not failure: whether a pod's end was caused by the infrastructure under it (an eviction, a node
shutdown, a node lost) or by the pod itself. Pure.

A disrupted pod is replaced at once and does not count toward its group's failure backoff: nine spot nodes
reclaimed at once must not hold their replacements back for minutes. What Kubernetes 1.36 writes, and where:
- the kubelet's node-pressure eviction: phase Failed, status.reason `Evicted`, DisruptionTarget (TerminationByKubelet);
- the kubelet's graceful node shutdown: phase Failed, status.reason `Terminated`, message "Pod was terminated in
  response to imminent node shutdown.", DisruptionTarget (TerminationByKubelet); a pod admitted while the node
  shuts down is rejected with status.reason `NodeShutdown`;
- the Eviction API (`kubectl drain`, cluster autoscalers, Karpenter): DisruptionTarget (EvictionByEvictionAPI),
  then a deletion; the taint manager (DeletionByTaintManager), the pod garbage collector for a pod whose node is
  gone (DeletionByPodGC), the scheduler's preemption (PreemptionByScheduler) likewise;
- a node deleted, or NotReady for longer than `node_not_ready_seconds`: nothing on the pod; only the node says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from swarm_operator.times import parse_time

DEFAULT_NODE_NOT_READY_SECONDS = 60.0  # after the node lifecycle controller's own ~40-50 s grace to notice
NODE_SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
DISRUPTION_TARGET = "DisruptionTarget"
# DisruptionTarget's reasons (Kubernetes 1.36), as a user would read them.
_TARGET_REASONS = {
    "EvictionByEvictionAPI": "evicted through the Eviction API",
    "TerminationByKubelet": "stopped by the kubelet",
    "DeletionByTaintManager": "deleted by the taint manager (its node was tainted NoExecute)",
    "DeletionByPodGC": "deleted by the pod garbage collector (its node is gone)",
    "PreemptionByScheduler": "preempted by the scheduler",
}


class Cause(StrEnum):
    """What disrupted a pod; the `cause` label of swarm_pod_disruptions_total."""

    EVICTED = "evicted"
    NODE_SHUTDOWN = "node-shutdown"
    NODE_DELETED = "node-deleted"
    NODE_NOT_READY = "node-not-ready"
    DISRUPTION_TARGET = "disruption-target"


# Taints that announce a node's removal: its Ray nodes are drained ahead of it (reconcile/retire.py). Each means the
# node is going, not merely that it is unschedulable: a spot pool's permanent taint is not one of them.
REMOVAL_TAINTS = {
    "ToBeDeletedByClusterAutoscaler": "the cluster autoscaler is removing it",
    "karpenter.sh/disrupted": "Karpenter is disrupting it",
    "karpenter.sh/disruption": "Karpenter is disrupting it",  # Karpenter before v1 (value "disrupting")
}


@dataclass(frozen=True)
class NodeState:
    """The facts of a Node the decisions read; the node cache keeps only these."""

    name: str
    exists: bool = True  # False: the operator saw the Node deleted
    ready: bool = True
    ready_since: float = 0.0  # epoch seconds of the Ready condition's last transition; 0 when unknown
    cordoned: bool = False  # spec.unschedulable (kubectl cordon, and the first step of kubectl drain)
    removal: str | None = None  # why the node is going, from a REMOVAL_TAINTS taint; None when none says so

    @classmethod
    def gone(cls, name: str) -> NodeState:
        return cls(name, exists=False, ready=False)


def node_state(node: Mapping[str, Any]) -> NodeState:
    """A Node object → its NodeState. A node that reports no Ready condition yet counts as ready (just registered)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    removal = next((REMOVAL_TAINTS[t.get("key")] for t in spec.get("taints") or [] if t.get("key") in REMOVAL_TAINTS),
                   None)
    cordoned = bool(spec.get("unschedulable"))
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return NodeState(meta.get("name", ""), ready=c.get("status") == "True",
                             ready_since=parse_time(c.get("lastTransitionTime")), cordoned=cordoned, removal=removal)
    return NodeState(meta.get("name", ""), cordoned=cordoned, removal=removal)


@dataclass(frozen=True)
class Healthy:
    recheck_at: float = 0.0  # epoch seconds: its node is NotReady and becomes a disruption then; 0 when not


@dataclass(frozen=True)
class Disrupted:
    cause: Cause
    reason: str


@dataclass(frozen=True)
class Failed:
    reason: str


Verdict = Healthy | Disrupted | Failed


def _disruption_target(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or []
                 if c.get("type") == DISRUPTION_TARGET and c.get("status") == "True"), None)


def _pod_disruption(status: Mapping[str, Any]) -> Disrupted | None:
    """What the pod's own status says disrupted it (the kubelet, the Eviction API, a controller), if anything."""
    reason, message = status.get("reason"), status.get("message") or ""
    if status.get("phase") == "Failed" and reason == "Evicted":
        return Disrupted(Cause.EVICTED, f"evicted by the kubelet: {message}" if message else "evicted by the kubelet")
    if (reason == "Terminated" and message == NODE_SHUTDOWN_MESSAGE) or reason == "NodeShutdown":
        return Disrupted(Cause.NODE_SHUTDOWN, "stopped by its node's graceful shutdown")
    target = _disruption_target(status)
    if target is not None:
        why = target.get("reason") or ""
        cause = Cause.EVICTED if why == "EvictionByEvictionAPI" else Cause.DISRUPTION_TARGET
        return Disrupted(cause, _TARGET_REASONS.get(why, f"condition DisruptionTarget ({why or 'no reason'})"))
    return None


def _node_disruption(node: NodeState, now: float, not_ready_seconds: float) -> Disrupted | Healthy:
    if not node.exists:
        return Disrupted(Cause.NODE_DELETED, f"its node {node.name} was deleted")
    if node.ready:
        return Healthy()
    due = node.ready_since + not_ready_seconds
    if node.ready_since and now < due:
        return Healthy(recheck_at=due)
    return Disrupted(Cause.NODE_NOT_READY, f"its node {node.name} has been NotReady for more than "
                                           f"{not_ready_seconds:g}s")


def node_lost(node: NodeState | None, now: float, not_ready_seconds: float) -> str | None:
    """Why the node is known dead (deleted, or NotReady past the threshold), whatever its pods say of themselves;
    None when it is not, or unknown. A pod stuck Terminating there runs nothing any more (reconcile/head.py)."""
    if node is None:
        return None
    verdict = _node_disruption(node, now, not_ready_seconds)
    return verdict.reason if isinstance(verdict, Disrupted) else None


def classify(pod: Mapping[str, Any], node: NodeState | None, now: float, not_ready_seconds: float,
             failure: str | None) -> Verdict:
    """Disrupted (by what), failed (why: `failure`, what the pod's own status says), or healthy. `node` is the pod's
    node as the operator knows it, None when it does not (not scheduled, or nodes not listed yet)."""
    disrupted = _pod_disruption(pod.get("status") or {})
    if disrupted is not None:
        return disrupted
    if node is not None:
        verdict = _node_disruption(node, now, not_ready_seconds)
        if isinstance(verdict, Disrupted) or failure is None:
            return verdict
    return Failed(failure) if failure is not None else Healthy()
