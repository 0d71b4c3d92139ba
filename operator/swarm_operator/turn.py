"""One turn for one SwarmCluster: read (the cache, what status kept, the Ray token), decide (the autoscaler once
per interval, then the pure planner), act (through the cluster's effects, written through to the cache),
record (status, only when it changed; metrics).

The work queue guarantees that a cluster never has two turns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from swarm_operator import metrics
from swarm_operator.autoscaler.runner import Autoscaler, AutoscalerMemory, Outcome, RayView
from swarm_operator.cluster_effects import NAME_TAKEN_RETRY_SECONDS, ClusterEffects
from swarm_operator.config import OperatorConfig
from swarm_operator.finalizer import delete_with_cleanup, keep_finalizer
from swarm_operator.gauges import remove_pod_gauges, update_pod_gauges
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, WatchCache
from swarm_operator.kit.memory import Memories
from swarm_operator.kube import SWARMCLUSTER, Kube, ObjectRef
from swarm_operator.kube_http import ApiError
from swarm_operator.kueue.cluster import admit_cluster
from swarm_operator.kueue.workload import NO_KUEUE, QUOTA_ANNOTATION, queue_name
from swarm_operator.nodes import NodeCache
from swarm_operator.ray_token import TOKEN_RETRY_SECONDS, TokenMemory, ray_token
from swarm_operator.reasons import EventReason
from swarm_operator.reconcile import deletion
from swarm_operator.reconcile.actions import (
    CreateBudget,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeletePod,
    DrainWorker,
    Note,
)
from swarm_operator.reconcile.observe import Observed, PodState, observe_pod, owned_by
from swarm_operator.reconcile.plan import Plan, desired_replicas, needs_ray_state, plan_cluster
from swarm_operator.reconcile.suspend import HeadJobs, JobsUnreadable
from swarm_operator.reconcile.tally import Disruption, tally_disruptions
from swarm_operator.resources import labels
from swarm_operator.resources.pods import template_overrides
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.status import (
    Persisted,
    autoscaler_status,
    cluster_status,
    differs,
    invalid_status,
    persisted_from_status,
    suspended_since,
)

log = logging.getLogger(__name__)
Gone = Callable[[Key, dict[str, Any] | None], None]  # the cluster is gone (and what is stored under its name)
# Workloads are not watched (yet): a queued cluster reads its Workload again this often.
KUEUE_POLL_SECONDS = 2.0
VANISHED_KEPT = 1000  # pods gone since a cluster's last turn, kept for it; far more than one burst of deletions


@dataclass
class ClusterMemory:
    """Everything kept in memory about one SwarmCluster; none of it is needed after a restart (kit/memory.py)."""

    invalid_warned: tuple[int, str] | None = None  # (generation, message) of the last InvalidSpec Warning
    overrides_seen: int | None = None  # the generation whose template overrides were reported
    taken: set[str] = field(default_factory=set)  # names found held by others, warned about once
    deleted: set[str] = field(default_factory=set)  # pods this operator deleted: no disruption to drain ahead of
    counted: frozenset[str] = frozenset()  # uids of pods whose disruption was counted, while they may be seen again
    # The last states of pods deleted since the last turn (DELETED events), by uid: a pod gone between two turns.
    vanished: dict[str, dict[str, Any]] = field(default_factory=dict)
    noted: tuple[Note, ...] = ()  # the plan's last notes, posted once while they hold
    jobs_unreadable: str = ""  # why a suspended head's Jobs API could not be read, logged once while it holds
    token: TokenMemory = field(default_factory=TokenMemory)
    autoscaler: AutoscalerMemory = field(default_factory=AutoscalerMemory)
    pod_series: set[tuple[str, str]] = field(default_factory=set)  # swarm_pods' (group, state) series


@dataclass(frozen=True)
class Seen:
    """What a turn read: the cluster as served, and what its status kept."""

    cluster: ClusterSpec
    old_status: Mapping[str, Any]
    kept: Persisted
    token: str | None
    now: float
    queued: bool = False  # labelled kueue.x-k8s.io/queue-name: `cluster` is as Kueue lets it run this turn
    held: str = ""  # why Kueue holds it suspended
    quota: str = ""  # what Kueue's admission bounds


@dataclass(frozen=True)
class Decided:
    plan: Plan
    targets: Mapping[str, int]
    scale_ups: Mapping[str, float]
    outcome: Outcome | None  # the autoscaler's, when it ran
    view: RayView | None  # Ray's state, when it was read
    service: Mapping[str, Any] | None  # the head service, when it is this cluster's
    pods: tuple[PodState, ...]  # as the plan saw them


@dataclass(frozen=True)
class Acted:
    taken: list[str] = field(default_factory=list)  # names held by objects not this cluster's: retried soon
    failure: Exception | None = None  # raised once status is written
    gone: bool = False  # the cluster turned out to be deleted


def head_ip(cache: WatchCache, key: Key, cluster: ClusterSpec) -> str | None:
    """The running head pod's IP: where the autoscaler reaches the GCS. Found by label, not by name (each head
    generation has its own name); an old head stuck Terminating is never it."""
    running = [p for p in cache.pods.objects(key) if owned_by(p, cluster.uid)
               and (p.get("metadata") or {}).get("labels", {}).get(labels.NODE_TYPE) == labels.HEAD
               and not (p.get("metadata") or {}).get("deletionTimestamp")
               and (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        return None
    newest = max(running, key=lambda p: labels.head_generation((p.get("metadata") or {}).get("labels") or {}))
    return (newest.get("status") or {}).get("podIP")


class Turns:
    def __init__(self, kube: Kube, blocking: Blocking, config: OperatorConfig, cache: WatchCache, nodes: NodeCache,
                 autoscaler: Autoscaler, gone: Gone, ray_jobs: RayJobsClient) -> None:
        self.kube = kube
        self.blocking = blocking
        self.config = config
        self.cache = cache
        self.nodes = nodes
        self.autoscaler = autoscaler
        self._gone = gone
        self.ray_jobs = ray_jobs
        self.memories: Memories[ClusterMemory] = Memories(ClusterMemory)

    def forget(self, key: Key) -> None:
        memory = self.memories.forget(key)
        if memory is not None:
            self.autoscaler.forget(key, memory.autoscaler)
            remove_pod_gauges(key, memory.pod_series)

    def pod_vanished(self, key: Key, last_state: dict[str, Any]) -> None:
        """A served cluster's pod is gone (its DELETED event; `last_state` slimmed): its next turn may count its
        disruption. At most VANISHED_KEPT are kept while no turn takes them (an invalid spec stops its turns early)."""
        vanished = self.memories[key].vanished
        vanished[(last_state.get("metadata") or {}).get("uid") or ""] = last_state
        while len(vanished) > VANISHED_KEPT:
            del vanished[next(iter(vanished))]

    def _observe(self, pods: Iterable[Mapping[str, Any]], uid: str) -> list[PodState]:
        now, not_ready = time.time(), self.config.node_not_ready_seconds
        return [observe_pod(p, self.nodes.state((p.get("spec") or {}).get("nodeName")), now, not_ready)
                for p in pods if owned_by(p, uid)]

    def _pod_states(self, key: Key, uid: str) -> list[PodState]:
        return self._observe(self.cache.pods.objects(key), uid)

    async def run(self, key: Key) -> float | None:
        """One turn; returns when the cluster wants its next one (seconds), None for the resync."""
        body = self.cache.objects.get(key)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        fx = ClusterEffects(self.kube, self.blocking, self.cache, ObjectRef(SWARMCLUSTER, *key, meta.get("uid", "")))
        if meta.get("deletionTimestamp"):
            if deletion.FINALIZER in (meta.get("finalizers") or []):
                return await delete_with_cleanup(fx, body, self._pod_states(key, fx.ref.uid))
            return None  # deleted: the garbage collector removes the children
        memory = self.memories[key]
        seen = await self._read(fx, memory, body)
        if not isinstance(seen, Seen):
            return seen  # invalid, gone, or waiting for its Ray token
        decided = await self._decide(fx, memory, seen)
        acted = await self._act(fx, memory, seen, decided)
        if acted.gone or not await self._record(fx, memory, seen, decided):
            return None
        if acted.failure is not None:
            raise acted.failure  # with status written; the kit retries the turn with backoff
        return self._next_turn(memory, seen, decided, acted)

    def _next_turn(self, memory: ClusterMemory, seen: Seen, decided: Decided, acted: Acted) -> float | None:
        requeues = [r for r in (decided.plan.requeue_after, NAME_TAKEN_RETRY_SECONDS if acted.taken else None,
                                KUEUE_POLL_SECONDS if seen.queued else None) if r is not None]
        if seen.cluster.autoscaling.enabled and not seen.cluster.suspend:
            requeues.append(max(0.05, self.autoscaler.due_in(memory.autoscaler, time.time())))
        return min(requeues) if requeues else None

    async def _read(self, fx: ClusterEffects, memory: ClusterMemory, body: Mapping[str, Any]) -> Seen | float | None:
        """The spec, what status kept and the Ray token; otherwise when to look again (None: at the resync)."""
        old_status: dict[str, Any] = dict(body.get("status") or {})
        now = time.time()
        try:
            cluster = parse_cluster(body)
        except SpecError as exc:
            await self._report_invalid(fx, memory, body, old_status, str(exc), now)
            return None
        memory.invalid_warned = None
        if memory.overrides_seen != cluster.generation:
            memory.overrides_seen = cluster.generation
            overrides = template_overrides(cluster)
            if overrides:
                await fx.event(EventReason.TEMPLATE_OVERRIDDEN,
                               "the operator's own values are used instead of " + "; ".join(overrides))
        # Before any pod: the finalizer must be on the cluster before its head writes to Redis.
        kept_finalizer = await keep_finalizer(fx, body, cluster.fault_tolerance.gcs is not None)
        if kept_finalizer is not True:
            self._gone(fx.key, kept_finalizer or None)
            return None
        queue, held, quota = queue_name(body), "", ""
        if queue is not None:
            try:
                admission = await admit_cluster(fx, body, cluster, queue, self._pod_states(fx.key, cluster.uid))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                await self._report_invalid(fx, memory, body, old_status, f"the SwarmCluster {NO_KUEUE}", now)
                return None
            cluster, held, quota = admission.cluster, admission.held, admission.quota
        else:  # a queued job's own cluster: the job's admission bounds it
            quota = str(((body.get("metadata") or {}).get("annotations") or {}).get(QUOTA_ANNOTATION) or "")
        token = None
        if cluster.auth is not None:
            token = await ray_token(fx, cluster, memory.token)
            if token is None:
                return TOKEN_RETRY_SECONDS
        return Seen(cluster, old_status, persisted_from_status(old_status), token, now, queue is not None, held, quota)

    async def _decide(self, fx: ClusterEffects, memory: ClusterMemory, seen: Seen) -> Decided:
        """The autoscaler once per interval (its drains go to Ray, whose answers set the targets), then the plan."""
        key, cluster, now = fx.key, seen.cluster, seen.now
        targets, scale_ups = seen.kept.targets, seen.kept.last_scale_ups
        outcome = view = None
        if cluster.autoscaling.enabled and not cluster.suspend:
            outcome = await self.autoscaler.step(key, memory.autoscaler, cluster, self._pod_states(key, cluster.uid),
                                                 head_ip(self.cache, key, cluster), targets, scale_ups, now,
                                                 token=seen.token)
        if outcome is not None:
            if outcome.report.error:
                memory.token.read = None  # a rotated token is read again
            targets = outcome.targets
            scale_ups = {**scale_ups, **dict.fromkeys(outcome.scaled_up, now)}
            await fx.mark_drained(outcome.marks)
            for reason, message in outcome.events:
                await fx.event(reason, message)
            view = RayView.of(outcome)
        pods = self._pod_states(key, cluster.uid)
        vanished = self._observe(memory.vanished.values(), cluster.uid)
        memory.vanished = {}
        tally = tally_disruptions(pods, vanished, memory.deleted, memory.counted)
        memory.counted = tally.counted
        await self._count(fx, tally.new)
        if outcome is None and not seen.held and needs_ray_state(cluster, pods, targets):
            view = await self.autoscaler.observe(key, pods, head_ip(self.cache, key, cluster), seen.token)
            if view is None:
                memory.token.read = None  # a rotated token is read again
        svc = self.cache.services.get(key, labels.head_service_name(cluster.name))
        ours = svc if svc is not None and owned_by(svc, cluster.uid) else None
        budgets = {b["metadata"]["name"]: b["metadata"].get("uid", "") for b in self.cache.budgets.objects(key)
                   if owned_by(b, cluster.uid)}
        observed = Observed(pods=tuple(pods), service_exists=ours is not None, health=seen.kept.health,
                            head_restarts=seen.kept.head_restarts, head_generation=seen.kept.head_generation,
                            head_failures=seen.kept.head_failures,
                            head_backoff=seen.kept.head_backoff, idle_pods=view.idle if view else None,
                            ray_dead=view.ray_dead if view else frozenset(),
                            ray_nodes=view.ray_nodes if view else None, budgets=budgets,
                            deleted_by_operator=frozenset(memory.deleted), vanished=tuple(vanished),
                            suspended_since=suspended_since(seen.old_status, now) if cluster.suspend else 0.0)
        plan = plan_cluster(cluster, observed, targets, now, seen.held)
        if plan.reads_head_jobs:  # suspended, and the head is all that is left: does it still run a Ray job?
            jobs = await self._head_jobs(fx, memory, cluster, seen.token)
            observed = replace(observed, head_jobs=jobs)
            plan = plan_cluster(cluster, observed, targets, now, seen.held)
        if plan.notes != memory.noted:
            memory.noted = plan.notes
            for reason, note in plan.notes:
                await fx.event(reason, note)
        return Decided(plan, targets, scale_ups, outcome, view, ours, observed.pods)

    @staticmethod
    async def _count(fx: ClusterEffects, disruptions: Sequence[Disruption]) -> None:
        """Disruptions counted at once, as they are remembered counted: the metric and one `Disrupted` Event."""
        for disruption in disruptions:
            metrics.POD_DISRUPTIONS.labels(*fx.key, disruption.group, disruption.cause).inc()
        await fx.report_disruptions(disruptions)

    async def _head_jobs(self, fx: ClusterEffects, memory: ClusterMemory, cluster: ClusterSpec,
                         token: str | None) -> HeadJobs:
        """The Ray jobs the head's Jobs API lists as not ended (a short read on the blocking pool)."""
        ip = head_ip(self.cache, fx.key, cluster)
        if ip is None:
            return JobsUnreadable("the head pod has no IP")
        jobs = await fx.call(self.ray_jobs.unended_submissions, ip, token)
        error = jobs.error if isinstance(jobs, JobsUnreadable) else ""
        if error and error != memory.jobs_unreadable:  # the Event leaves the error out, to be posted once
            log.info("SwarmCluster %s/%s is suspended; its head's Jobs API could not be read: %s", *fx.key, error)
        memory.jobs_unreadable = error
        return jobs

    async def _act(self, fx: ClusterEffects, memory: ClusterMemory, seen: Seen, decided: Decided) -> Acted:
        """The plan's actions, its drains of busy workers, the head service's sync."""
        cluster, actions = seen.cluster, decided.plan.actions
        if seen.old_status and any(isinstance(a, (CreateHead, CreateService, CreateWorkers, CreateBudget))
                                   for a in actions):
            # Re-creating children of a cluster served before: make sure it still exists. A watch
            # resumed after an API server restart may never report its deletion, and every child
            # made for it would be garbage-collected and made again.
            stored = await fx.read_back()
            if stored is None or (stored.get("metadata") or {}).get("uid") != cluster.uid:
                self._gone(fx.key, stored)
                return Acted(gone=True)
        refused: Exception | None = None
        taken: list[str] = []
        memory.deleted &= {p.name for p in decided.pods}  # names of pods gone may come back as new pods
        memory.deleted |= {a.name for a in actions if isinstance(a, DeletePod)}
        if actions:
            try:
                taken = await fx.carry_out(cluster, actions, self.config.cluster_domain, memory.taken)
            except Exception as exc:  # status is still written, then the turn fails and backs off
                refused = exc
        drains = [a for a in actions if isinstance(a, DrainWorker)]
        if drains and decided.view is not None:  # the plan drains only what this view showed busy
            marks, events = await self.autoscaler.drain_workers(fx.key, decided.view.snapshot, drains, seen.now)
            await fx.mark_drained(marks)
            for reason, message in events:
                await fx.event(reason, message)
        svc = decided.service
        if refused is None and svc is not None and not svc["metadata"].get("deletionTimestamp"):
            try:
                await fx.sync_service(cluster, svc, decided.plan.head_generation)
            except Exception as exc:
                refused = exc
        return Acted(taken, refused)

    async def _record(self, fx: ClusterEffects, memory: ClusterMemory, seen: Seen, decided: Decided) -> bool:
        """Metrics, and status when it changed; False when the cluster turned out to be gone."""
        key, cluster, plan, kept = fx.key, seen.cluster, decided.plan, seen.kept
        for action in plan.actions:
            if isinstance(action, DeletePod) and action.failed_group:
                metrics.WORKER_REPLACEMENTS.labels(*key, action.failed_group).inc()
        if plan.head_restarts > kept.head_restarts:
            metrics.HEAD_REPLACEMENTS.labels(*key).inc(plan.head_restarts - kept.head_restarts)
        states = self._pod_states(key, cluster.uid)
        update_pod_gauges(key, states, memory.pod_series)
        after = Persisted(plan.health, desired_replicas(cluster, decided.targets), plan.head_restarts,
                          decided.scale_ups, plan.head_backoff, head_generation=plan.head_generation)
        outcome = decided.outcome
        record = autoscaler_status(seen.old_status.get("autoscaler") or {}, outcome.report, seen.now) \
            if outcome else None
        # A failed pod deleted in this turn is gone at once (the API server does not wait for a terminal pod),
        # yet status quotes why it failed (HeadReady's CrashLoop).
        now_named = {state.name for state in states}
        gone = [pod for pod in decided.pods if pod.failure is not None and pod.name not in now_named]
        status = cluster_status(cluster, [*states, *gone], after, seen.old_status, seen.now,
                                head_ip(self.cache, key, cluster), record, seen.held, seen.quota, plan.head_kept)
        if differs(seen.old_status, status) and not await fx.write_status(status):
            self._gone(key, None)  # deleted, though no watch said so
            return False
        return True

    async def _report_invalid(self, fx: ClusterEffects, memory: ClusterMemory, body: Mapping[str, Any],
                              old: dict[str, Any], message: str, now: float) -> None:
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status = invalid_status(message, old, generation, now)
        if differs(old, status):
            await fx.write_status(status)
        if memory.invalid_warned != (generation, message):
            memory.invalid_warned = (generation, message)
            text = message.replace("\n", "; ")
            log.warning("SwarmCluster %s/%s is invalid: %s", *fx.key, text)
            await fx.event(EventReason.INVALID_SPEC, text)
