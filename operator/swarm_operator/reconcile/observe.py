"""Pod dicts from the API → the few facts the decisions need. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff
from swarm_operator.reconcile.disruption import (
    DEFAULT_NODE_NOT_READY_SECONDS,
    DISRUPTION_TARGET,
    Disrupted,
    Failed,
    Healthy,
    NodeState,
    classify,
    node_lost,
)
from swarm_operator.reconcile.suspend import HeadJobs
from swarm_operator.resources import labels, revision
from swarm_operator.spec.rules import PREFIX, RAY_CONTAINER
from swarm_operator.times import parse_time


@dataclass(frozen=True)
class PodState:
    name: str
    node_type: str  # labels.HEAD or labels.WORKER
    group: str | None
    phase: str
    ready: bool
    deleting: bool
    template_hash: str
    created: float  # epoch seconds; 0 when unknown
    scheduled: bool
    failure: str | None  # why the pod failed, None while it is alive (or when it was disrupted)
    start_failed: bool = False  # its Ray container never ran its command (StartError and kin)
    drained: bool = False  # its Ray node was drained (autoscaler or rollout): its end is planned, not a failure
    drained_at: float = 0.0  # epoch seconds the drain was accepted; 0 when unknown
    # What the pod recorded it was built from (resources/revision.py); None when it recorded nothing.
    revision: Mapping[str, Any] | None = field(default=None, compare=False)
    template_metadata: Mapping[str, Any] | None = field(default=None, compare=False)
    disruption: Disrupted | None = None  # an eviction, a node shutdown or loss ended it: not a failure
    recheck_at: float = 0.0  # epoch seconds: its node is NotReady, and then counts as a disruption
    deletion_at: float = 0.0  # epoch seconds its deletion's grace period ends (deletionTimestamp); 0 when none
    node_cordoned: bool = False  # its node is cordoned (spec.unschedulable)
    node_removal: str | None = None  # why its node is going (a cluster autoscaler's or Karpenter's taint)
    node_lost: str | None = None  # why its node is known dead (deleted, NotReady past the threshold); None if not
    head_generation: int = 0  # a head pod's generation (labels.HEAD_GENERATION); 0 for workers
    uid: str = ""  # its metadata.uid: a disruption is counted once per pod (reconcile/tally.py)

    @property
    def alive(self) -> bool:
        return not self.deleting and self.failure is None and self.disruption is None


def _annotation_time(text: str | None) -> float:
    """A timestamp someone may have edited by hand: unreadable counts as unknown."""
    try:
        return parse_time(text)
    except ValueError:
        return 0.0


MESSAGE_LIMIT = 200  # characters of a container's own message quoted in events and conditions
# Reasons a kubelet gives a container that never ran its command: the pod's image or command is wrong.
START_FAILURES = frozenset({"StartError", "ContainerCannotRun", "CreateContainerError", "RunContainerError"})


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line of at most ``limit`` characters (runtime messages run long and span lines)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def container_end(term: Mapping[str, Any]) -> str:
    """A terminated container in a few words: reason, exit code and its message (shortened)."""
    text = f"{term.get('reason') or 'Terminated'}, exit code {term.get('exitCode')}"
    message = shorten(str(term.get("message") or ""))
    return f"({text}): {message}" if message else f"({text})"


def _ray_container_end(status: Mapping[str, Any]) -> str | None:
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != RAY_CONTAINER:
            continue
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return f"Ray container ended {container_end(term)}"
    return None


def start_failure(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's Ray container ended without ever running its command (StartError and kin)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == RAY_CONTAINER:
            return ((cs.get("state") or {}).get("terminated") or {}).get("reason") in START_FAILURES
    return False


def failure_reason(pod: Mapping[str, Any]) -> str | None:
    """Why a pod counts as dead: failed, evicted, completed, or its Ray container ended."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase == "Failed":
        reason = status.get("reason") or "Failed"
        message = status.get("message")
        detail = _ray_container_end(status)
        text = f"pod {reason}"
        if message:
            text += f": {message}"
        elif detail:
            text += f": {detail}"
        return text
    if phase == "Succeeded":
        # `ray start --block` exits 0 after its node was drained: the pod is done, not healthy.
        return "pod Succeeded (Ray node exited)"
    return _ray_container_end(status)


def observe_pod(pod: Mapping[str, Any], node: NodeState | None = None, now: float = 0.0,
                not_ready_seconds: float = DEFAULT_NODE_NOT_READY_SECONDS) -> PodState:
    """`node`: the pod's node as the operator knows it (None: unknown); `now` matters only with a node."""
    meta = pod.get("metadata") or {}
    pod_labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    verdict = classify(pod, node, now, not_ready_seconds, failure_reason(pod))
    return PodState(
        name=meta.get("name", ""),
        node_type=pod_labels.get(labels.NODE_TYPE, ""),
        group=pod_labels.get(labels.WORKER_GROUP),
        phase=status.get("phase") or "Pending",
        ready=ready and status.get("phase") == "Running",
        deleting=bool(meta.get("deletionTimestamp")),
        template_hash=pod_labels.get(labels.TEMPLATE_HASH, ""),
        created=parse_time(meta.get("creationTimestamp")),
        scheduled=bool((pod.get("spec") or {}).get("nodeName")),
        failure=verdict.reason if isinstance(verdict, Failed) else None,
        start_failed=isinstance(verdict, Failed) and start_failure(pod),
        drained=labels.DRAINED in annotations,
        drained_at=_annotation_time(annotations.get(labels.DRAINED)),
        revision=revision.read_json_annotation(annotations, revision.REVISION),
        template_metadata=revision.read_json_annotation(annotations, revision.TEMPLATE_METADATA),
        disruption=verdict if isinstance(verdict, Disrupted) else None,
        recheck_at=verdict.recheck_at if isinstance(verdict, Healthy) else 0.0,
        deletion_at=parse_time(meta.get("deletionTimestamp")),
        node_cordoned=bool(node and node.cordoned),
        node_removal=node.removal if node else None,
        node_lost=node_lost(node, now, not_ready_seconds),
        head_generation=labels.head_generation(pod_labels),
        uid=meta.get("uid", ""),
    )


def owned_by(pod: Mapping[str, Any], uid: str) -> bool:
    """Pods of an earlier cluster with the same name carry the same labels; only the owner uid tells them apart."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _slim_terminated(term: Mapping[str, Any]) -> dict[str, Any]:
    slim = {k: term[k] for k in ("exitCode", "reason") if k in term}
    if term.get("message"):
        slim["message"] = shorten(str(term["message"]))  # runtimes' messages can run to kilobytes
    return slim


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields the operator reads (observe_pod, owned_by, status): a cached pod costs
    ~1 KB instead of ~20 KB, which is what keeps the operator small at thousands of pods."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    slim_meta = {k: meta[k] for k in ("name", "namespace", "uid", "labels", "resourceVersion", "creationTimestamp",
                                      "deletionTimestamp") if k in meta}
    slim_meta["ownerReferences"] = [{"uid": r.get("uid")} for r in meta.get("ownerReferences") or []]
    ours = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(PREFIX)}
    if ours:
        slim_meta["annotations"] = ours
    slim_status = {k: status[k] for k in ("phase", "reason", "message", "podIP") if k in status}
    slim_status["conditions"] = [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
                                 for c in status.get("conditions") or []
                                 if c.get("type") in ("Ready", DISRUPTION_TARGET)]
    slim_status["containerStatuses"] = [
        {"name": cs.get("name"), "state": {"terminated": _slim_terminated(cs["state"]["terminated"])}}
        for cs in status.get("containerStatuses") or [] if (cs.get("state") or {}).get("terminated")
    ]
    return {"metadata": slim_meta, "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": slim_status}


@dataclass(frozen=True)
class Observed:
    """What a turn sees of one cluster, for the planner: its pods, and what Ray and status say of them."""

    pods: tuple[PodState, ...]
    service_exists: bool
    health: Mapping[str, GroupHealth]  # per worker group
    head_restarts: int = 0
    head_generation: int = 0  # the current head generation as status recorded it (status.head.generation)
    head_failures: int = 0  # heads failed in a row, never ready between (status.head.consecutiveFailures)
    head_backoff: HeadBackoff | None = None  # a crash-looping head's next attempt waits until then
    # Pods Ray reports idle (None when Ray's state is unknown): a rollout or a scale-down deletes them, first.
    idle_pods: frozenset[str] | None = None
    # Pods whose Ray node the GCS reports DEAD while the pod still runs (`ray start --block` outlives it).
    ray_dead: frozenset[str] = frozenset()
    # Pods the GCS reports as live Ray nodes (None when Ray's state is unknown). A pod joins Ray, and
    # gets tasks, before its readiness probe first passes: "not ready" does not mean "no Ray work".
    ray_nodes: frozenset[str] | None = None
    budgets: Mapping[str, str] = field(default_factory=dict)  # this cluster's PodDisruptionBudgets: name → uid
    # Pods this operator deleted (remembered in memory only): their deletion is no disruption to drain ahead of.
    deleted_by_operator: frozenset[str] = frozenset()
    # The last states of its pods deleted since the last turn (the watch's DELETED events of pods the cache held).
    vanished: tuple[PodState, ...] = ()
    # A suspended cluster: since when (epoch seconds; 0 when it begins this turn), and the Ray jobs its head's Jobs
    # API lists as not ended (None: not read this turn; the plan asks for them once the head is all that is left).
    suspended_since: float = 0.0
    head_jobs: HeadJobs | None = None
