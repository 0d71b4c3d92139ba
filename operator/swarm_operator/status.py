"""SwarmCluster status and conditions from spec + observed pods. Pure.

Condition timestamps move only when a condition's status flips, and the operator writes
status only when this computed dict differs from what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_operator.reasons import ConditionType, JobConditionType
from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff
from swarm_operator.reconcile.failures import NEXT_HEAD, group_last_failure, head_failures
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels
from swarm_operator.resources.pods import CLIENT_PORT, DASHBOARD_PORT, GCS_PORT, head_hash, worker_hash
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.times import deadline_timestamp, parse_time, timestamp


def condition(ctype: ConditionType | JobConditionType, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": ctype.value, "status": "True" if ok else "False", "reason": reason, "message": message}


def merge_conditions(old: list[Mapping[str, Any]], new: list[dict[str, Any]], now: float,
                     generation: int) -> list[dict[str, Any]]:
    """Keep lastTransitionTime of conditions whose status did not change."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"])
        keep = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": prev["lastTransitionTime"] if keep and prev else timestamp(now),
                    "observedGeneration": generation})
    return out


@dataclass(frozen=True)
class Persisted:
    """What the operator must keep across restarts. It lives in status (never only in memory): each
    turn reads it back with `persisted_from_status` and writes it with `persisted_to_status`."""

    health: Mapping[str, GroupHealth] = field(default_factory=dict)  # per worker group: failures, backoff
    targets: Mapping[str, int] = field(default_factory=dict)  # per group: desiredReplicas (the autoscaler's)
    head_restarts: int = 0
    last_scale_ups: Mapping[str, float] = field(default_factory=dict)  # per group, epoch seconds
    head_backoff: HeadBackoff | None = None
    # Read back only: cluster_status writes status.head.consecutiveFailures from the pods (reconcile/failures.py).
    head_failures: int = 0
    head_generation: int = 0  # the current head's generation: its pod's name, the head service's selector


def persisted_from_status(status: Mapping[str, Any]) -> Persisted:
    health: dict[str, GroupHealth] = {}
    targets: dict[str, int] = {}
    for g in status.get("workerGroups") or []:
        name = g.get("name")
        if not isinstance(name, str):
            continue
        health[name] = GroupHealth(
            restarts=int(g.get("restarts") or 0),
            consecutive_failures=int(g.get("consecutiveFailures") or 0),
            last_failure=parse_time(g.get("lastFailureTime")),
            backoff_until=parse_time(g.get("backoffUntil")),
        )
        if isinstance(g.get("desiredReplicas"), int):
            targets[name] = g["desiredReplicas"]
    head = status.get("head") or {}
    scale_ups = (status.get("autoscaler") or {}).get("lastScaleUpTime") or {}
    until = parse_time(head.get("backoffUntil"))
    backoff = HeadBackoff(until, str(head.get("backoffRevision") or "")) if until else None
    return Persisted(health, targets, int(head.get("restarts") or 0),
                     {k: parse_time(v) for k, v in scale_ups.items() if isinstance(v, str)},
                     backoff, int(head.get("consecutiveFailures") or 0), int(head.get("generation") or 0))


def persisted_to_status(kept: Persisted, now: float) -> dict[str, Any]:
    """The status fields that hold `kept`: one entry per group in `kept.targets`, the head's restarts,
    and the autoscaler's last scale-ups (status.autoscaler's other fields are observations)."""
    groups = []
    for name, target in kept.targets.items():
        h = kept.health.get(name, GroupHealth())
        entry: dict[str, Any] = {"name": name, "desiredReplicas": target, "restarts": h.restarts,
                                 "consecutiveFailures": h.consecutive_failures}
        if h.last_failure:
            entry["lastFailureTime"] = timestamp(h.last_failure)
        if h.backoff_until > now:
            entry["backoffUntil"] = deadline_timestamp(h.backoff_until)
        groups.append(entry)
    return {
        "workerGroups": groups,
        "head": {"restarts": kept.head_restarts, "generation": kept.head_generation,
                 **({"backoffUntil": deadline_timestamp(kept.head_backoff.until),
                     "backoffRevision": kept.head_backoff.revision}
                    if kept.head_backoff and kept.head_backoff.until > now else {})},
        "autoscaler": {"lastScaleUpTime": {g: timestamp(t) for g, t in kept.last_scale_ups.items()}},
    }


@dataclass(frozen=True)
class AutoscalerReport:
    """What one autoscaling turn observed and did, for status.autoscaler."""

    error: str = ""  # reading Ray's state failed: all else is unknown
    pending_demand: str = ""
    infeasible_demand: str = ""
    ray_version: str = ""
    ray_version_warning: str = ""  # spec.rayVersion differs, or a Ray the operator's client is not known to read
    decisions: tuple[str, ...] = ()  # scalings and drains, empty when nothing changed


def autoscaler_status(old: Mapping[str, Any], report: AutoscalerReport, now: float) -> dict[str, Any]:
    """status.autoscaler after a turn (without lastScaleUpTime: that is persisted state)."""
    if report.error:
        return {**old, "lastError": report.error}
    record: dict[str, Any] = {
        "pendingDemand": report.pending_demand or "none",
        "infeasibleDemand": report.infeasible_demand or "none",
        "lastError": "",
        "rayVersion": report.ray_version or "unknown",
        "rayVersionWarning": report.ray_version_warning,
    }
    if report.decisions:
        record["lastDecisionTime"] = timestamp(now)
        record["lastDecision"] = "; ".join(report.decisions)
    else:
        record.update({k: old[k] for k in ("lastDecisionTime", "lastDecision") if k in old})
    return record


def _next_head(kept: Persisted, now: float) -> str:
    backoff = kept.head_backoff
    if backoff is None or backoff.until <= now:
        return ""
    # A time, not a countdown: status is written only when it changes.
    return f"{NEXT_HEAD}{timestamp(backoff.until)} (crash-loop backoff; a changed head template starts at once)"


def _suspended_message(pods: list[PodState], held: str, head_kept: str) -> str:
    """Why it is suspended (`held`: Kueue's reason, "" for spec.suspend) and what that still waits for: busy
    workers drain first, then the head goes, once no Ray job runs its driver there (`head_kept`: why it stays)."""
    why = held or "spec.suspend is true"
    workers = [p for p in pods if p.alive and p.node_type == labels.WORKER]
    if not workers:
        return f"{why}; {head_kept}" if head_kept else why
    draining = sum(1 for p in workers if p.drained)
    return f"{why}; {len(workers)} worker(s) still running ({draining} draining in Ray), then the head goes"


def suspended_since(status: Mapping[str, Any], now: float) -> float:
    """When the suspension began: the Suspended condition's last transition to True (`now` when it is not True
    yet: the suspension begins this turn, and this turn's status records it)."""
    for c in status.get("conditions") or []:
        if c.get("type") == ConditionType.SUSPENDED and c.get("status") == "True":
            try:
                return parse_time(c.get("lastTransitionTime")) or now
            except ValueError:
                return now
    return now


def cluster_status(cluster: ClusterSpec, pods: list[PodState], kept: Persisted, old: Mapping[str, Any],
                   now: float, head_ip: str | None, autoscaler: Mapping[str, Any] | None = None,
                   held: str = "", quota: str = "", head_kept: str = "") -> dict[str, Any]:
    """The whole status: `kept` (its targets are the desired replicas of every group) with what the
    pods show; `autoscaler` is this turn's status.autoscaler, None to keep the stored one. A queued cluster's
    `held` is why Kueue holds it suspended ("" while it may run), `quota` what Kueue admitted of its groups;
    `head_kept` why a suspended cluster's head stays for its Ray jobs."""
    desired = kept.targets
    persisted = persisted_to_status(kept, now)
    stored_groups = {e["name"]: e for e in persisted["workerGroups"]}
    old_groups = {e.get("name"): e for e in old.get("workerGroups") or []}
    heads = [p for p in pods if p.node_type == labels.HEAD and p.alive]
    head = max(heads, key=lambda p: p.head_generation) if heads else None
    groups = []
    ready_total = desired_total = gpus = 0
    failing: list[str] = []
    short: list[str] = []  # groups with fewer ready workers than desired
    behind: list[str] = []  # what still runs an earlier revision of the spec
    for g in cluster.worker_groups:
        mine = [p for p in pods if p.node_type == labels.WORKER and p.group == g.name and p.alive]
        ready = sum(1 for p in mine if p.ready)
        want = worker_hash(cluster, g)
        updated = sum(1 for p in mine if p.template_hash == want)
        if updated < len(mine):
            behind.append(f"{g.name}: {len(mine) - updated} of {len(mine)} workers outdated")
        h = kept.health.get(g.name, GroupHealth())
        entry = {**stored_groups[g.name], "currentReplicas": len(mine), "readyReplicas": ready,
                 "updatedReplicas": updated}
        if h.consecutive_failures:
            last = group_last_failure(pods, g.name, old_groups.get(g.name) or {})
            failing.append(f"{g.name}: {h.consecutive_failures} consecutive failures"
                           + (f", the last: {last}" if last else ""))
            if last:
                entry["lastFailure"] = last
        if ready < desired[g.name]:
            short.append(g.name)
        groups.append(entry)
        ready_total += ready
        desired_total += desired[g.name]
        gpus += ready * g.resources.gpu
    head_ready = bool(head and head.ready)
    # Suspending a cluster ends its head's crash loop too: the count starts again on resume.
    failures = head_failures([p for p in pods if p.node_type == labels.HEAD], head_ready or cluster.suspend,
                             kept.head_restarts, old)
    if head is None or head.template_hash != head_hash(cluster):
        behind.insert(0, "head outdated" if head else "no head")
    stale = [p for p in pods if p.alive and p.node_type == labels.WORKER and cluster.group(p.group or "") is None]
    if stale:
        behind.append(f"{len(stale)} worker(s) of removed groups")
    # Per group: surplus ready workers in one group (awaiting scale-down) must not hide an empty one.
    workers_ready = not short
    if cluster.suspend:
        phase = "Suspended"
    elif head_ready and workers_ready:
        phase = "Running"
    elif head_ready and failing:
        phase = "Degraded"
    else:
        phase = "Pending"
    svc = labels.head_service_name(cluster.name)
    host = f"{svc}.{cluster.namespace}.svc"
    conditions = [
        condition(ConditionType.VALID, True, "SpecValid", "spec accepted"),
        condition(ConditionType.HEAD_READY, False, failures.reason, failures.message + _next_head(kept, now))
        if failures.reason else
        condition(ConditionType.HEAD_READY, head_ready, "HeadPodReady" if head_ready else "HeadPodNotReady",
                  f"head pod {head.name} is {'ready' if head_ready else head.phase}" if head else "no head pod"),
        condition(ConditionType.WORKERS_READY, workers_ready, "AllWorkersReady" if workers_ready else "WorkersNotReady",
                  f"{ready_total}/{desired_total} workers ready"
                  + (f"; short: {', '.join(short)}" if short else "")),
        condition(ConditionType.AUTOSCALING, cluster.autoscaling.enabled,
                  "Enabled" if cluster.autoscaling.enabled else "Disabled",
                  "worker groups follow Ray's pending demand" if cluster.autoscaling.enabled
                  else "worker groups follow spec.replicas"),
        condition(ConditionType.SUSPENDED, cluster.suspend,
                  "HeldByKueue" if held else "Suspended" if cluster.suspend else "Active",
                  _suspended_message(pods, held, head_kept) if cluster.suspend else "cluster is active"),
        condition(ConditionType.REPLICA_FAILURE, bool(failing), "WorkersFailing" if failing else "NoFailures",
                  "; ".join(failing) if failing else "no recent worker failures"),
        condition(ConditionType.ROLLOUT_COMPLETE, not behind and not cluster.suspend,
                  "Suspended" if cluster.suspend else "AllPodsUpdated" if not behind
                  else "WaitingForDeletion" if cluster.update_strategy.type == "OnDelete" else "RollingUpdate",
                  (held or "spec.suspend is true") if cluster.suspend else
                  "every pod runs the current spec" if not behind else "; ".join(behind)),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": cluster.generation,
        "workers": f"{ready_total}/{desired_total}",
        "readyWorkers": ready_total,
        "desiredWorkers": desired_total,
        "gpus": gpus,
        "head": {
            "podName": labels.head_pod_name(cluster.name, kept.head_generation),
            "serviceName": svc,
            "ready": head_ready,
            "gcsAddress": f"{host}:{GCS_PORT}",
            "dashboardURL": f"http://{host}:{DASHBOARD_PORT}",
            "clientAddress": f"ray://{host}:{CLIENT_PORT}",
            **persisted["head"],
            "consecutiveFailures": failures.consecutive,
            **({"podIP": head_ip} if head_ip else {}),
        },
        "workerGroups": groups,
        "conditions": merge_conditions(list(old.get("conditions") or []), conditions, now, cluster.generation),
    }
    if autoscaler is not None:
        status["autoscaler"] = {**autoscaler, **persisted["autoscaler"]}
    elif "autoscaler" in old:
        status["autoscaler"] = old["autoscaler"]  # its scale-up times are kept's: only an autoscaling turn moves them
    if quota or (status.get("autoscaler") or {}).get("quota"):
        status["autoscaler"] = {**status.get("autoscaler", {}), "quota": quota}
    return status


def invalid_status(message: str, old: Mapping[str, Any], generation: int, now: float) -> dict[str, Any]:
    """A spec the operator cannot serve: say why, keep everything else as it was."""
    status = {k: v for k, v in old.items() if k not in ("conditions", "phase", "observedGeneration")}
    others = [c for c in old.get("conditions") or [] if c.get("type") != ConditionType.VALID]
    valid = condition(ConditionType.VALID, False, "InvalidSpec", message[:1000])
    status["conditions"] = merge_conditions(list(old.get("conditions") or []), [valid], now, generation) + others
    status["phase"] = "Invalid"
    status["observedGeneration"] = generation
    return status


def differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether writing `wanted` would change anything (ignores fields only others write)."""
    return any(current.get(k) != v for k, v in wanted.items())
