"""A queued job's Workload, read and acted on: the I/O side of jobs/kueue.py's decisions, for one turn of a SwarmJob
(jobs/turn.py). Kueue admits; the operator runs the Workload's lifecycle (docs/kueue.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from swarm_operator.jobs.cluster import build_job_cluster
from swarm_operator.jobs.effects import JobEffects
from swarm_operator.jobs.kueue import (
    RESOURCE_FLAVOR,
    WORKLOAD,
    CreateWorkload,
    DeleteWorkload,
    Gate,
    JobSide,
    ReleaseQuota,
    SetFinished,
    SetPodsReady,
    WorkloadAction,
    admission_gate,
    admitted_flavors,
    build_workload,
    pod_sets,
    released_status,
    set_conditions,
    with_flavors,
    workload_name,
    workload_view,
)
from swarm_operator.jobs.machine import FINISHED, ClusterView, Decision, JobState, current_cluster
from swarm_operator.jobs.spec import JobSpec, OwnCluster
from swarm_operator.kube_http import ApiError
from swarm_operator.reasons import EventReason
from swarm_operator.resources.labels import CLUSTER
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.times import timestamp


async def admission(fx: JobEffects, job: JobSpec, queue: str, state: JobState,
                    views: tuple[ClusterView, ...], current: ClusterView | None) -> tuple[
        Gate, dict[str, Any] | None]:
    """Read the job's Workload, decide (jobs/kueue.py), act on it; raises ApiError 404 when Kueue is absent.
    Returns the decision and, while the job may run and its cluster is yet to be made, its clusterSpec with the
    admitted flavors applied."""
    name = workload_name(job)
    cluster = parse_cluster(build_job_cluster(job, max(state.attempt, 1)))
    wanted = pod_sets(cluster)
    body = await fx.call(fx.kube.get_resource, WORKLOAD, job.namespace, name)
    view = workload_view(body, wanted) if body is not None else None
    pods_left = 0
    if view is not None and view.evicted is not None and view.quota_reserved:
        pods_left = await _pods_left(fx, job, state, views)
    side = JobSide(queue=queue, finished=state.deployment if state.deployment in FINISHED else "",
                   message=state.message, running=current is not None and current.head_ip is not None,
                   pods_left=pods_left)
    gate = admission_gate(side, view)
    for action in gate.actions:
        await _act_on_workload(fx, job, queue, cluster, body, action)
    if not gate.may_run or body is None or current is not None or not isinstance(job.cluster, OwnCluster):
        return gate, None
    assigned = admitted_flavors(body)
    flavors = {}
    for flavor in sorted({f for names in assigned.values() for f in names}):
        found = await fx.call(fx.kube.get_resource, RESOURCE_FLAVOR, job.namespace, flavor)
        flavors[flavor] = dict((found or {}).get("spec") or {})
    return gate, with_flavors(job.cluster.spec, assigned, flavors)

async def _pods_left(fx: JobEffects, job: JobSpec, state: JobState, views: tuple[ClusterView, ...]) -> int:
    """The job's clusters and their pods that still exist: its pods go only after its cluster, through the garbage
    collector, so they are listed only once no cluster of the job is left."""
    owned = sum(1 for v in views if v.owned)
    if owned:
        return owned
    pods, _ = await fx.call(fx.kube.list_pods, job.namespace, f"{CLUSTER}={current_cluster(job, state)}")
    return len(pods)

async def _act_on_workload(fx: JobEffects, job: JobSpec, queue: str, cluster: ClusterSpec,
                           body: Mapping[str, Any] | None, action: WorkloadAction) -> None:
    if isinstance(action, CreateWorkload):
        created = await fx.call(fx.kube.create_resource, WORKLOAD, job.namespace,
                                build_workload(job, queue, cluster))
        if created is not None:
            await fx.event(EventReason.CREATED, f"created Workload {workload_name(job)}: {action.reason}")
        return
    if isinstance(action, DeleteWorkload):
        await fx.call(fx.kube.delete_resource, WORKLOAD, job.namespace, workload_name(job))
        await fx.event(EventReason.DELETED, f"Workload {workload_name(job)}: {action.reason}")
        return
    assert body is not None  # the other actions are decided on a Workload that was read
    meta = body.get("metadata") or {}
    conditions = list((body.get("status") or {}).get("conditions") or [])
    now, generation = timestamp(time.time()), int(meta.get("generation") or 0)
    if isinstance(action, ReleaseQuota):
        status = released_status(conditions, action.evict_reason, action.message, now, generation)
        event = (EventReason.UPDATED, f"Workload {meta.get('name')}: its pods are gone, quota released")
    elif isinstance(action, SetPodsReady):
        status = {"conditions": set_conditions(conditions, {"PodsReady": (
            "True" if action.ready else "False", "PodsReady" if action.ready else "WaitForStart", action.message)},
            now, generation)}
        event = None
    else:
        assert isinstance(action, SetFinished)
        status = {"conditions": set_conditions(conditions, {"Finished": ("True", action.reason, action.message)},
                                               now, generation)}
        event = (EventReason.UPDATED, f"Workload {meta.get('name')} finished ({action.reason})")
    try:
        await fx.call(fx.kube.patch_status_at, WORKLOAD, job.namespace, str(meta.get("name")), status,
                      str(meta.get("resourceVersion") or ""))
    except ApiError as exc:
        if exc.status != 409:
            raise
        return  # Kueue wrote it meanwhile: the next turn reads it again
    if event is not None:
        await fx.event(*event)


def held_by_kueue(decision: Decision, gate: Gate) -> Decision:
    """The machine suspended the job for Kueue, not for spec.suspend: status and the Event say why."""
    state = decision.state
    if state.deployment != "Suspended":
        return decision
    events = tuple(replace(e, message=gate.why) if e.reason == EventReason.JOB_SUSPENDED else e
                   for e in decision.events)
    return replace(decision, state=replace(state, message=gate.why), events=events)
