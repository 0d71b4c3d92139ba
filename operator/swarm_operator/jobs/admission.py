"""A queued SwarmJob's admission, for one turn of the job (jobs/turn.py): which jobs are queued, and the Workload's
lifecycle of kueue/ applied to the job's own cluster (docs/kueue.md)."""

from __future__ import annotations

from dataclasses import replace

from swarm_operator.jobs.cluster import build_job_cluster
from swarm_operator.jobs.effects import JobEffects
from swarm_operator.jobs.machine import FINISHED, ClusterView, Decision, JobState, current_cluster
from swarm_operator.jobs.spec import JobSpec, OwnCluster
from swarm_operator.kueue.lifecycle import act_on_workload, flavored_spec, read_workload
from swarm_operator.kueue.workload import (
    Gate,
    Owner,
    OwnerSide,
    admission_gate,
    admitted_counts,
    bounded_by_admission,
    pod_sets,
    with_bounds,
    workload_view,
)
from swarm_operator.reasons import EventReason
from swarm_operator.resources.labels import CLUSTER
from swarm_operator.spec.parse import parse_cluster


def queued(job: JobSpec, queue: str | None) -> bool:
    """Only a job with a cluster of its own is queued: a clusterSelector job runs on a cluster that is not its own,
    whose pods the job neither creates nor may stop (that cluster is queued itself, when labelled)."""
    return queue is not None and isinstance(job.cluster, OwnCluster)


async def admission(fx: JobEffects, owner: Owner, job: JobSpec, queue: str, state: JobState,
                    views: tuple[ClusterView, ...], current: ClusterView | None) -> tuple[Gate, OwnCluster | None]:
    """Read the job's Workload, decide (kueue/workload.py), act on it; raises ApiError 404 when Kueue is absent.
    Returns the decision and, while the job may run and its cluster is yet to be made, its cluster with the
    admitted flavors applied and its autoscaled groups bounded by what was admitted."""
    cluster = parse_cluster(build_job_cluster(job, max(state.attempt, 1)))
    body = await read_workload(fx, owner)
    view = workload_view(body, pod_sets(cluster)) if body is not None else None
    pods_left = 0
    if view is not None and view.evicted is not None and view.quota_reserved:
        pods_left = await _pods_left(fx, job, state, views)
    side = OwnerSide(queue=queue, finished=state.deployment if state.deployment in FINISHED else "",
                     message=state.message, running=current is not None and current.running,
                     pods_left=pods_left)
    gate = admission_gate(side, view)
    for action in gate.actions:
        await act_on_workload(fx, owner, queue, cluster, body, action)
    if not gate.may_run or body is None or current is not None or not isinstance(job.cluster, OwnCluster):
        return gate, None
    flavored = await flavored_spec(fx, body, job.cluster.spec)
    bounded, quota = bounded_by_admission(parse_cluster({**build_job_cluster(job, 1), "spec": flavored}),
                                          admitted_counts(body))
    return gate, OwnCluster(with_bounds(flavored, bounded), quota)


async def _pods_left(fx: JobEffects, job: JobSpec, state: JobState, views: tuple[ClusterView, ...]) -> int:
    """The job's clusters and their pods that still exist: its pods go only after its cluster, through the garbage
    collector, so they are listed only once no cluster of the job is left."""
    owned = sum(1 for v in views if v.owned)
    if owned:
        return owned
    pods, _ = await fx.call(fx.kube.list_pods, job.namespace, f"{CLUSTER}={current_cluster(job, state)}")
    return len(pods)


def held_by_kueue(decision: Decision, gate: Gate) -> Decision:
    """The machine suspended the job for Kueue, not for spec.suspend: status and the Event say why."""
    state = decision.state
    if state.deployment != "Suspended":
        return decision
    events = tuple(replace(e, message=gate.why) if e.reason == EventReason.JOB_SUSPENDED else e
                   for e in decision.events)
    return replace(decision, state=replace(state, message=gate.why), events=events)
