"""One turn of one SwarmJob on the controller kit: read (the job, its clusters from SwarmCluster's cache, the Ray
job from the Jobs API) → decide (jobs/machine.py) → act (through JobEffects) → record (status, Events).

The work queue guarantees that a job never has two turns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import urllib3

from swarm_operator.config import DEFAULT_CLUSTER_DOMAIN
from swarm_operator.finalizer import keep_finalizer
from swarm_operator.jobs.actions import (
    Action,
    CreateCluster,
    CreateSubmitter,
    DeleteCluster,
    DeleteJob,
    ScaleWorkersToZero,
    StopRayJob,
    Submit,
)
from swarm_operator.jobs.admission import admission, held_by_kueue, queued
from swarm_operator.jobs.cluster import JOB_KIND, build_job_cluster, node_shapes, workers_to_zero
from swarm_operator.jobs.effects import JobEffects
from swarm_operator.jobs.machine import (
    FINISHED,
    ClusterView,
    JobState,
    Observed,
    RayView,
    current_cluster,
    decide,
    deleting,
    holds_finalizer,
    job_id,
)
from swarm_operator.jobs.names import JOB_LABEL, submitter_pod_name
from swarm_operator.jobs.rayapi import JobsApiError, RayJobsClient, submission_body
from swarm_operator.jobs.spec import JobSpec, SharedCluster, parse_job
from swarm_operator.jobs.status import cluster_view, invalid_job_status, job_status, state_from_status
from swarm_operator.jobs.submitter import build_submitter_pod
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, ObjectStore, WatchCache
from swarm_operator.kit.memory import Memories
from swarm_operator.kube import SWARMCLUSTER, SWARMJOB, Kube, ObjectRef
from swarm_operator.kube_http import ApiError
from swarm_operator.kueue.workload import NO_KUEUE, Gate, owner_of, queue_name
from swarm_operator.reasons import EventReason
from swarm_operator.resources.token import token_of
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.status import differs
from swarm_operator.times import parse_time

log = logging.getLogger(__name__)
STOP_FINALIZER = "swarm.io/stop-ray-job"  # on a job until it finishes: its Ray job is stopped first
DELETING_POLL_SECONDS = 1.0
# Workloads are not watched (yet): a queued job that waits on Kueue reads its Workload again this often.
KUEUE_POLL_SECONDS = 2.0
Gone = Callable[[Key, dict[str, Any] | None], None]


@dataclass
class JobMemory:
    """Everything kept in memory about one SwarmJob; none of it is needed after a restart."""

    invalid_warned: tuple[int, str] | None = None  # (generation, message) of the last InvalidSpec Warning
    token: tuple[tuple[str, str, str], str] | None = None  # the cluster's Ray token by (Secret, key, cluster uid)


class JobTurns:
    """The kit's Reconciler for SwarmJobs. `clusters` is SwarmCluster's object store (read only)."""

    def __init__(self, kube: Kube, blocking: Blocking, cache: WatchCache, clusters: ObjectStore,
                 ray: RayJobsClient, gone: Gone, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self.kube = kube
        self.cluster_domain = cluster_domain
        self.blocking = blocking
        self.cache = cache
        self.clusters = clusters
        self.ray = ray
        self._gone = gone
        self.memories: Memories[JobMemory] = Memories(JobMemory)

    def forget(self, key: Key) -> None:
        self.memories.forget(key)

    async def run(self, key: Key) -> float | None:
        body = self.cache.objects.get(key)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        fx = JobEffects(self.kube, self.blocking, self.cache, ObjectRef(SWARMJOB, *key, meta.get("uid", "")), self.ray)
        memory = self.memories[key]
        old_status: dict[str, Any] = dict(body.get("status") or {})
        now = time.time()
        try:
            job = parse_job(body)
        except SpecError as exc:
            await self._report_invalid(fx, memory, meta, old_status, str(exc))
            if meta.get("deletionTimestamp"):
                await keep_finalizer(fx, body, False, STOP_FINALIZER)
            return None
        memory.invalid_warned = None
        state = state_from_status(old_status)
        if meta.get("deletionTimestamp"):
            return await self._deleting(fx, memory, body, job, state, now)
        kept = await keep_finalizer(fx, body, holds_finalizer(state), STOP_FINALIZER)
        if kept is not True:
            self._gone(key, kept or None)
            return None
        name = current_cluster(job, state)
        views = self._cluster_views(job, name)
        current_body = self.clusters.get((job.namespace, name))
        if current_body is None and state.attempt and state.deployment not in FINISHED:
            # Just after a restart the jobs' watch can run ahead of SwarmCluster's listing: a cluster missing
            # from the cache is asked of the API server before the attempt is judged lost.
            current_body = await fx.call(fx.kube.get_resource, SWARMCLUSTER, job.namespace, name)
            if current_body is not None:
                views = (*views, cluster_view(current_body, job.uid))
        spec = _parsed_cluster(current_body)
        if spec is not None:
            views = tuple(replace(v, node_shapes=node_shapes(spec)) if v.name == name else v for v in views)
        current = next((v for v in views if v.name == name), None)
        queue = queue_name(body)
        gate: Gate | None = None
        if queued(job, queue) and queue is not None:
            try:
                owner = owner_of(JOB_KIND, body)
                gate, admitted_cluster = await admission(fx, owner, job, queue, state, views, current)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                await self._report_invalid(fx, memory, meta, old_status, f"the SwarmJob {NO_KUEUE}")
                return None
            if not gate.may_run:
                job = replace(job, suspend=True)
            elif admitted_cluster is not None:
                job = replace(job, cluster=admitted_cluster)
        token = await self._token(fx, memory, spec)
        ray: RayView = None
        submitter = None
        active = state.attempt and state.deployment not in FINISHED
        if current is not None and current.head_ip and active:
            ray = await fx.observe(current.head_ip, job_id(job, state), token)
        if job.submission_mode == "SubmitterPod" and state.attempt:
            pod = await fx.call(fx.kube.get_pod, job.namespace, submitter_pod_name(job.name, state.attempt))
            submitter = str((pod.get("status") or {}).get("phase") or "Pending") if pod is not None else None
        decision = decide(job, state, Observed(views, ray, submitter), now)
        if gate is not None and not gate.may_run:
            decision = held_by_kueue(decision, gate)
        for action in decision.actions:
            await self._act(fx, job, action, token, spec)
        status = job_status(job, decision.state, old_status, now)
        if differs(old_status, status) and not await fx.write_status(status):
            self._gone(key, None)
            return None
        for event in decision.events:
            await fx.event(event.reason, event.message)
        # A job that just finished comes back once more to set its Workload's Finished (the Workload's state is read
        # at the start of a turn, the job's end decided after it).
        if gate is not None and (gate.actions or decision.state.deployment not in FINISHED
                                 or state.deployment not in FINISHED):
            return min(decision.requeue_after or KUEUE_POLL_SECONDS, KUEUE_POLL_SECONDS)
        return decision.requeue_after

    def _cluster_views(self, job: JobSpec, current: str) -> tuple[ClusterView, ...]:
        """The SwarmCluster the current attempt runs on (whoever holds the name), and the job's own others."""
        if isinstance(job.cluster, SharedCluster):
            body = self.clusters.get((job.namespace, current))
            return (cluster_view(body, job.uid),) if body is not None else ()
        mine = []
        for body in self.clusters.bodies():
            meta = body.get("metadata") or {}
            if meta.get("namespace") == job.namespace and (
                    meta.get("name") == current or (meta.get("labels") or {}).get(JOB_LABEL) == job.name):
                mine.append(cluster_view(body, job.uid))
        return tuple(mine)


    async def _token(self, fx: JobEffects, memory: JobMemory, cluster: ClusterSpec | None) -> str | None:
        """The Ray token of a token-auth cluster (its Secret is made by the cluster's own turn); None otherwise."""
        auth = cluster.auth if cluster is not None else None
        if cluster is None or auth is None:
            return None
        which = (auth.secret_name, auth.secret_key, cluster.uid)
        if memory.token is not None and memory.token[0] == which:
            return memory.token[1]
        secret = await fx.call(fx.kube.get_secret, cluster.namespace, auth.secret_name)
        token = token_of(secret, auth.secret_key) if secret is not None else None
        memory.token = (which, token) if token else None
        return token

    async def _act(self, fx: JobEffects, job: JobSpec, action: Action, token: str | None,
                   cluster: ClusterSpec | None) -> None:
        if isinstance(action, CreateCluster):
            if await fx.create_cluster(build_job_cluster(job, action.attempt)) is not None:
                await fx.event(EventReason.CREATED, f"created SwarmCluster {action.name} for attempt {action.attempt}")
        elif isinstance(action, DeleteCluster):
            await fx.delete_cluster(action.name)
            await fx.event(EventReason.DELETED, f"SwarmCluster {action.name}: {action.reason}")
        elif isinstance(action, ScaleWorkersToZero):
            body = self.clusters.get((job.namespace, action.name)) or {}
            await fx.patch_cluster(action.name, workers_to_zero(body))
            await fx.event(EventReason.UPDATED, f"SwarmCluster {action.name} scaled to no workers: {action.reason}")
        elif isinstance(action, Submit):
            try:
                posted = await fx.submit(action.head_ip, submission_body(job, action.job_id), token)
            except JobsApiError as exc:
                await fx.event(EventReason.SUBMIT_FAILED, f"Ray job {action.job_id}: {exc}")
                raise
            if posted:
                await fx.event(EventReason.JOB_SUBMITTED, f"Ray job {action.job_id} submitted")
        elif isinstance(action, CreateSubmitter):
            if cluster is None:
                return  # the machine asks only once the cluster is up; its spec is read next turn
            pod = build_submitter_pod(job, action.attempt, action.job_id, cluster, self.cluster_domain)
            if await fx.create_pod(pod) is not None:
                await fx.event(EventReason.CREATED, f"created submitter pod {action.name}")
        elif isinstance(action, StopRayJob):
            try:
                await fx.stop(action.head_ip, action.job_id, token)
            except (JobsApiError, urllib3.exceptions.HTTPError) as exc:
                # Best effort: what follows (the cluster's deletion, a bounded wait) must not hang on it.
                await fx.event(EventReason.STOP_FAILED, f"Ray job {action.job_id} ({action.reason}): {exc}")
                return
            await fx.event(EventReason.RAY_JOB_STOPPED, f"Ray job {action.job_id}: {action.reason}")
        elif isinstance(action, DeleteJob):
            await fx.event(EventReason.DELETED, f"deleting the SwarmJob: {action.reason}")
            await fx.delete_self()

    async def _deleting(self, fx: JobEffects, memory: JobMemory, body: Mapping[str, Any], job: JobSpec,
                        state: JobState, now: float) -> float | None:
        """A deleted job that carries the finalizer (it was not finished): its Ray job is stopped (a bounded wait),
        then its own clusters are deleted, then the finalizer goes."""
        meta = body.get("metadata") or {}
        if STOP_FINALIZER not in (meta.get("finalizers") or []):
            return None  # its own clusters go with it through the garbage collector
        name = current_cluster(job, state)
        views = self._cluster_views(job, name)
        cluster = next((v for v in views if v.name == name), None)
        token = await self._token(fx, memory, _parsed_cluster(
            self.clusters.get((job.namespace, name)) if cluster is not None else None))
        ray: RayView = None
        if cluster is not None and cluster.head_ip and state.attempt:
            ray = await fx.observe(cluster.head_ip, job_id(job, state), token)
        actions, may_go = deleting(job, state, views, ray, now - parse_time(meta.get("deletionTimestamp")))
        for action in actions:
            await self._act(fx, job, action, token, None)
        if may_go:
            await keep_finalizer(fx, body, False, STOP_FINALIZER)
            return None
        return DELETING_POLL_SECONDS

    async def _report_invalid(self, fx: JobEffects, memory: JobMemory, meta: Mapping[str, Any],
                              old: Mapping[str, Any], message: str) -> None:
        generation = int(meta.get("generation") or 0)
        status = invalid_job_status(message, old, generation, time.time())
        if differs(old, status):
            await fx.write_status(status)
        if memory.invalid_warned != (generation, message):
            memory.invalid_warned = (generation, message)
            log.warning("SwarmJob %s/%s is invalid: %s", *fx.key, message.replace("\n", "; "))
            await fx.event(EventReason.INVALID_SPEC, message.replace("\n", "; "))


def _parsed_cluster(body: Mapping[str, Any] | None) -> ClusterSpec | None:
    """The current attempt's SwarmCluster as its own turn reads it (its token, its head service, its image)."""
    try:
        return parse_cluster(body) if body is not None else None
    except SpecError:
        return None
