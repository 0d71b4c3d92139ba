"""A SwarmJob's status ↔ the machine's JobState, and the observed SwarmCluster as the machine sees it. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm_operator.jobs.machine import ClusterView, JobState, current_cluster, job_id
from swarm_operator.jobs.spec import JobSpec
from swarm_operator.reasons import ConditionType, JobConditionType
from swarm_operator.status import condition, merge_conditions
from swarm_operator.times import parse_time, timestamp

MAX_MESSAGE_BYTES = 4096
VALID = ConditionType.VALID
LOG_TAIL_LINES = 20
HEAD_SERVES = ("Running", "Degraded", "Pending")  # the cluster phases in which a Ready head is used
TIMES = {"startTime": "start_time", "endTime": "end_time", "attemptStartTime": "attempt_start",
         "unreadableSince": "unreadable_since", "infeasibleSince": "infeasible_since"}


def log_tail(logs: str, lines: int = LOG_TAIL_LINES, limit: int = MAX_MESSAGE_BYTES // 2) -> str:
    """The driver log's last lines, at most `limit` bytes of them (cut at a line start when it can be)."""
    tail = "\n".join(logs.rstrip().splitlines()[-lines:])
    data = tail.encode()
    if len(data) <= limit:
        return tail
    cut = data[-limit:].decode(errors="ignore")
    return cut[cut.find("\n") + 1:] if "\n" in cut else cut


def bounded(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """A status message of at most `limit` bytes; a long one keeps its start (the reason) and its end (the log)."""
    data = message.encode()
    if len(data) <= limit:
        return message
    half = (limit - 5) // 2
    return data[:half].decode(errors="ignore") + "\n...\n" + data[-half:].decode(errors="ignore")


def state_from_status(status: Mapping[str, Any]) -> JobState:
    times = {field: parse_time(status.get(key)) for key, field in TIMES.items()}
    return JobState(
        deployment=str(status.get("jobDeploymentStatus") or ""),
        attempt=int(status.get("attempt") or 0),
        failed_attempts=int(status.get("failedAttempts") or 0),
        job_status=str(status.get("jobStatus") or ""),
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        dashboard_url=str(status.get("dashboardURL") or ""),
        **times,
    )


def job_status(job: JobSpec, state: JobState, old: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The whole status for `state`; condition times move only when a condition flips."""
    status: dict[str, Any] = {
        "jobDeploymentStatus": state.deployment,
        "attempt": state.attempt,
        "failedAttempts": state.failed_attempts,
        "reason": state.reason,
        "message": bounded(state.message),
        "observedGeneration": job.generation,
    }
    if state.attempt:
        status["jobId"] = job_id(job, state)
        status["clusterName"] = current_cluster(job, state)
    if state.job_status:
        status["jobStatus"] = state.job_status
    if state.dashboard_url:
        status["dashboardURL"] = state.dashboard_url
    for key, field in TIMES.items():
        value = getattr(state, field)
        status[key] = timestamp(value) if value else None  # None removes it (merge patch)
    conditions = [_condition(ctype, state) for ctype in JobConditionType]
    status["conditions"] = merge_conditions(list(old.get("conditions") or []), conditions, now, job.generation)
    return status


def _condition(ctype: JobConditionType, state: JobState) -> dict[str, Any]:
    """True while the deployment status of the same name holds, with its reason and message."""
    holds = state.deployment == ctype
    return condition(ctype, holds, state.reason if holds else f"Not{ctype}", state.message[:1000] if holds else "")


def invalid_job_status(message: str, old: Mapping[str, Any], generation: int, now: float) -> dict[str, Any]:
    """A job the operator cannot serve: say why, also as condition Valid=False (as a SwarmCluster does); nothing is
    created. The condition goes with the next valid status, which writes the conditions list whole."""
    valid = condition(VALID, False, "InvalidSpec", message[:1000])
    others = [c for c in old.get("conditions") or [] if c.get("type") != VALID]
    return {**old, "jobDeploymentStatus": "Invalid", "reason": "InvalidSpec", "message": bounded(message),
            "observedGeneration": generation,
            "conditions": others + merge_conditions(list(old.get("conditions") or []), [valid], now, generation)}


def cluster_view(body: Mapping[str, Any], job_uid: str) -> ClusterView:
    """A SwarmCluster object → what the job's decisions read of it."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    head = status.get("head") or {}
    groups = (body.get("spec") or {}).get("workerGroups") or []
    owned = any(ref.get("uid") == job_uid for ref in meta.get("ownerReferences") or [])
    # Its head Ready is enough to submit to and to follow a job on: workers still starting (Pending), or failing
    # (Degraded), do not stop Ray's Jobs API. A suspended or invalid cluster's head is not used.
    running = status.get("phase") in HEAD_SERVES and bool(head.get("ready"))
    return ClusterView(
        name=str(meta.get("name") or ""),
        owned=owned,
        deleting=bool(meta.get("deletionTimestamp")),
        head_ip=head.get("podIP") if running and head.get("podIP") else None,
        phase=str(status.get("phase") or ""),
        dashboard_url=str(head.get("dashboardURL") or ""),
        workers_zero=all(int(g.get("maxReplicas", 1)) == 0 and int(g.get("replicas", 0)) == 0 for g in groups),
        infeasible_demand=_reported(str((status.get("autoscaler") or {}).get("infeasibleDemand") or "")),
    )


def _reported(demand: str) -> str:
    """status.autoscaler.infeasibleDemand as the machine reads it: "" for none."""
    return "" if demand == "none" else demand
