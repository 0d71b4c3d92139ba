"""One autoscaling turn of one cluster: read Ray's state, decide (pure), drain; report what happened.

Called from the controller's turn, so a cluster is never autoscaled and reconciled at the
same time. Reads go through a RayStatePool (a deadline per read), so a slow or dead cluster
costs only its own turn. Nothing is written to Kubernetes here: the drain it sends is a request
to Ray (the raylet re-checks and may refuse, and the answer decides the target), and the pod
annotation that records an accepted drain comes back as a PatchPod, with the Events, for the
turn to carry out. The planner removes the pod once Ray reports the node gone; the turn writes
the report and the new targets to status.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm_operator import metrics
from swarm_operator.autoscaler import confirm, policy, ray_version
from swarm_operator.autoscaler.inputs import demand_summary, policy_input
from swarm_operator.autoscaler.snapshot import ClusterSnapshot, NodeStatus, Resources
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key
from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import DrainWorker, PatchPod
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels
from swarm_operator.resources.pods import GCS_PORT
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.status import AutoscalerReport
from swarm_operator.times import timestamp

if TYPE_CHECKING:  # importing ray costs ~40 MiB: only processes that autoscale pay for it
    from swarm_operator.autoscaler import gcs

log = logging.getLogger(__name__)
Post = tuple[EventReason, str]  # an Event for the turn to post: reason, message


@dataclass
class AutoscalerMemory:
    """What the autoscaler keeps in memory about one cluster (part of the cluster's one record)."""

    next_read: float = 0.0  # epoch seconds: when Ray's state is due to be read again
    warned_version: tuple[str, ...] = ()  # the Ray version warnings last given, each once
    last_infeasible: str = ""  # the infeasible demand last reported
    pending_resources: set[str] = field(default_factory=set)  # resources ever reported in the pending gauge
    last_available: dict[str, Resources] | None = None  # the live nodes' available resources at the last read
    hold: confirm.Hold | None = None  # a scale-up held back for another read (autoscaler.confirm)


def _report(snap: ClusterSnapshot, inp: policy.PolicyInput, decision: policy.Decision,
            version: ray_version.VersionCheck, decisions: tuple[str, ...]) -> AutoscalerReport:
    return AutoscalerReport(
        pending_demand=demand_summary([*inp.demands, *inp.constraints]),
        infeasible_demand=demand_summary(decision.infeasible),
        ray_version=snap.ray_version or "",
        ray_version_warning="; ".join(version.warnings),
        decisions=decisions,
    )


def drained_mark(name: str, now: float, why: str) -> PatchPod:
    """The annotation that says Ray accepted a drain of the pod's node: the planner deletes the pod once the
    node is DEAD, without counting a failure."""
    return PatchPod(name, {"metadata": {"annotations": {labels.DRAINED: timestamp(now)}}}, why)


@dataclass(frozen=True)
class Outcome:
    targets: dict[str, int]  # per group, to store in status.workerGroups[].desiredReplicas
    report: AutoscalerReport  # for status.autoscaler
    scaled_up: frozenset[str] = frozenset()  # groups whose target grew: their last scale-up is now
    ray_dead: frozenset[str] = frozenset()  # pods whose Ray node is DEAD
    idle: frozenset[str] | None = None
    ray_nodes: frozenset[str] | None = None  # pods whose Ray node is alive (None: Ray's state unknown)
    events: tuple[Post, ...] = ()
    marks: tuple[PatchPod, ...] = ()  # drained-at annotations of the drains Ray accepted, for the turn to write
    snapshot: ClusterSnapshot | None = field(default=None, compare=False)  # what it was decided from


@dataclass(frozen=True)
class RayView:
    """What the planner needs from Ray's state (no scaling decision), and the snapshot a drain is sent against."""
    ray_dead: frozenset[str]  # pods whose Ray node is DEAD
    idle: frozenset[str]
    ray_nodes: frozenset[str]  # pods whose Ray node is alive
    snapshot: ClusterSnapshot = field(compare=False)

    @staticmethod
    def of(outcome: Outcome) -> RayView | None:
        if outcome.snapshot is None or outcome.idle is None or outcome.ray_nodes is None:
            return None
        return RayView(outcome.ray_dead, outcome.idle, outcome.ray_nodes, outcome.snapshot)


def ray_view(snap: ClusterSnapshot, pods: Iterable[PodState]) -> RayView:
    idle = frozenset(n.instance_id for n in snap.nodes if n.status == NodeStatus.IDLE)
    alive = frozenset(n.instance_id for n in snap.nodes if n.status != NodeStatus.DEAD)
    return RayView(ray_dead_pods(snap, pods), idle, alive, snap)


def unavailable_groups(pods: Iterable[PodState], now: float, timeout: float) -> frozenset[str]:
    """Groups with a pod the scheduler could not place for ``timeout`` seconds: try other groups."""
    return frozenset(p.group for p in pods if p.group and p.alive and not p.scheduled
                     and p.created and now - p.created > timeout)


def ray_dead_pods(snapshot: ClusterSnapshot, pods: Iterable[PodState]) -> frozenset[str]:
    """Worker pods whose Ray node is DEAD with no live node of the same pod."""
    out = set()
    for p in pods:
        if p.node_type != labels.WORKER or not p.alive:
            continue
        node = snapshot.node_by_instance(p.name)
        if node is not None and node.status == NodeStatus.DEAD:
            out.add(p.name)
    return frozenset(out)


def pending_by_resource(snapshot: ClusterSnapshot) -> dict[str, float]:
    totals: dict[str, float] = {}
    for d in (*snapshot.pending, *snapshot.constraints):
        for k, v in d.shape.items():
            totals[k] = totals.get(k, 0.0) + v * d.count
    for g in snapshot.gangs:
        for b in g.bundles:
            for k, v in b.shape.items():
                totals[k] = totals.get(k, 0.0) + v * g.count
    return totals


def _reasons(decision: policy.Decision, inp: policy.PolicyInput, targets: Mapping[str, int],
             refused: Iterable[policy.Drain]) -> list[str]:
    """The policy's reasons, for the targets groups really got: a refused drain keeps its node's place."""
    kept: dict[str, int] = {}
    for d in refused:
        kept[d.group] = kept.get(d.group, 0) + 1
    before = {g.name: g.replicas for g in inp.groups}
    out = []
    for group in sorted(decision.reasons):
        text = decision.reasons[group]
        if group in kept:
            if targets.get(group) == before.get(group):
                continue  # every node it let go got work: nothing changed
            why = text.split(": ", 1)[1]
            text = f"{group} {before.get(group)}→{targets.get(group)}: {why}; {kept[group]} drain(s) refused"
        out.append(text)
    return out


class Autoscaler:
    def __init__(self, blocking: Blocking) -> None:
        self.blocking = blocking
        self._pool: gcs.RayStatePool[gcs.RayStateClient] | None = None

    @property
    def ray(self) -> Any:
        """The Ray client module, imported on first use: importing ray costs ~40 MiB."""
        return importlib.import_module("swarm_operator.autoscaler.gcs")

    @property
    def pool(self) -> gcs.RayStatePool[gcs.RayStateClient]:
        if self._pool is None:
            self._pool = self.ray.RayStatePool(self.ray.new_client, self.blocking.submit)
        return self._pool

    @pool.setter
    def pool(self, pool: gcs.RayStatePool[gcs.RayStateClient]) -> None:
        self._pool = pool

    def forget(self, key: Key, memory: AutoscalerMemory) -> None:
        """The cluster is gone: its connection, and the gauge series its memory says exist."""
        if self._pool is not None:
            self._pool.remove_cluster(key)
        for resource in memory.pending_resources:
            with contextlib.suppress(KeyError):
                metrics.AUTOSCALER_PENDING.remove(*key, resource)

    @staticmethod
    def due_in(memory: AutoscalerMemory, now: float) -> float:
        return max(0.0, memory.next_read - now)

    async def step(self, key: Key, memory: AutoscalerMemory, cluster: ClusterSpec, pods: list[PodState],
                   head_ip: str | None, targets: Mapping[str, int], last_scale_ups: Mapping[str, float], now: float,
                   token: str | None = None) -> Outcome | None:
        """None when it is not time yet, or there is no head to ask. `last_scale_ups`: per group, when
        its target last grew (the stabilization window counts from it). `token`: the cluster's Ray token
        (spec.auth), sent with each call to its GCS."""
        if now < memory.next_read:
            return None
        memory.next_read = now + cluster.autoscaling.interval_seconds
        if head_ip is None:
            return None
        self.pool.set_cluster(key, f"{head_ip}:{GCS_PORT}", token)
        started = time.monotonic()
        result = await self.pool.aread(key)
        metrics.AUTOSCALER_POLL_SECONDS.observe(time.monotonic() - started)
        ns, name = cluster.namespace, cluster.name
        if result.snapshot is None:
            if result.started:
                metrics.AUTOSCALER_POLL_ERRORS.labels(ns, name).inc()
            # A head that is still starting has no GCS yet: not worth a warning.
            return Outcome(dict(targets), AutoscalerReport(error=f"reading Ray state: {result.error}"))
        snap = result.snapshot
        events: list[Post] = []
        version = ray_version.check(cluster.ray_version, snap.ray_version, self.ray.OPERATOR_RAY_VERSION)
        if memory.warned_version != version.warnings:  # each warning once, again when it changes
            memory.warned_version = version.warnings
            events += [(EventReason.RAY_VERSION_MISMATCH if text.startswith("spec.")
                        else EventReason.RAY_VERSION_UNSUPPORTED, text) for text in version.warnings]
        unavailable = unavailable_groups(pods, now, cluster.autoscaling.pending_timeout_seconds)
        inp = policy_input(cluster, snap, pods, targets, last_scale_ups, unavailable, now)
        decision = policy.decide(inp)
        previous, memory.last_available = memory.last_available, confirm.available_by_node(snap.nodes)
        first = memory.hold is None
        memory.hold = confirm.next_hold(memory.hold, previous, decision.tasks_on_new_nodes,
                                        decision.new_nodes_for_more_than_tasks, snap.nodes, now)
        if memory.hold is not None:
            memory.next_read = now + confirm.SECOND_READ_AFTER_S
            view = ray_view(snap, pods)
            why = ("held for a second read in {after:g}s (Ray may count the tasks the live nodes just took twice)"
                   if first else "still held, read again in {after:g}s ({waited:.1f}s of at most {most:g}s: nodes that "
                   "just joined took as much)").format(
                after=confirm.SECOND_READ_AFTER_S, waited=now - memory.hold.since, most=confirm.MAX_HOLD_S)
            held = tuple(f"{why}: {text}" for text in decision.reasons.values())
            return Outcome(dict(targets), _report(snap, inp, decision, version, held), frozenset(), view.ray_dead,
                           view.idle, view.ray_nodes, tuple(events), (), snap)
        new_targets = dict(decision.targets)
        accepted, refused = await self._drain(key, snap, decision.drains, events)
        for d in refused:  # the node got work: it stays, and so does its place in the target
            new_targets[d.group] = new_targets.get(d.group, 0) + 1
        marks = tuple(drained_mark(d.node, now, d.reason) for d in accepted)

        scaled_up = set()
        for g in cluster.worker_groups:
            before, after = targets.get(g.name, g.initial_replicas()), new_targets.get(g.name, 0)
            if after != before:
                metrics.AUTOSCALER_DECISIONS.labels(ns, name, g.name, "up" if after > before else "down").inc()
            if after > before:
                scaled_up.add(g.name)
        reasons = _reasons(decision, inp, new_targets, refused)
        for text in reasons:
            events.append((EventReason.AUTOSCALED, text))
        infeasible = demand_summary(decision.infeasible)
        if infeasible and memory.last_infeasible != infeasible:
            events.append((EventReason.INFEASIBLE_DEMAND, f"fits no worker group, not scaling for it: {infeasible}"))
        memory.last_infeasible = infeasible
        pending = pending_by_resource(snap)
        for resource in memory.pending_resources - pending.keys():
            metrics.AUTOSCALER_PENDING.labels(ns, name, resource).set(0)  # that demand went away
        for resource, amount in pending.items():
            metrics.AUTOSCALER_PENDING.labels(ns, name, resource).set(amount)
        memory.pending_resources |= pending.keys()
        done = (*reasons, *(f"drained {d.node}: {d.reason}" for d in accepted),
                *(f"drain of {d.node} refused (it got work)" for d in refused))
        report = _report(snap, inp, decision, version, done)
        view = ray_view(snap, pods)
        return Outcome(new_targets, report, frozenset(scaled_up), view.ray_dead, view.idle, view.ray_nodes,
                       tuple(events), marks, snap)

    async def observe(self, key: Key, pods: list[PodState], head_ip: str | None,
                      token: str | None = None) -> RayView | None:
        """Ray's state for a rollout or a scale-down, read-only and with no scaling decision (autoscaling may be off);
        None when there is no head to ask or the read failed. `token`: as for :meth:`step`."""
        if head_ip is None:
            return None
        self.pool.set_cluster(key, f"{head_ip}:{GCS_PORT}", token)
        result = await self.pool.aread(key)
        if result.snapshot is None:
            log.info("reading Ray state of %s/%s to tell busy workers from idle: %s", *key, result.error)
            return None
        return ray_view(result.snapshot, pods)

    async def drain_workers(self, key: Key, snap: ClusterSnapshot, drains: Iterable[DrainWorker],
                            now: float) -> tuple[list[PatchPod], list[Post]]:
        """Ask Ray to drain busy workers that have to go (reason PREEMPTION, with a deadline): it schedules nothing
        more there and its raylet exits once the running tasks finish. Accepted drains are to be annotated
        on the pod, as the autoscaler's are; the planner deletes the pod once the node is DEAD.
        Returns those annotations and the events, for the turn to write."""
        client = self.pool.client(key)
        marks: list[PatchPod] = []
        events: list[Post] = []
        for d in drains:
            node = snap.node_by_instance(d.name)
            if node is None:
                continue  # it left Ray since the read: the next turn deletes it directly
            # An idle node's drain is refused by the raylet if a task started there since the read; the next
            # read shows it busy, and it is drained as such.
            reason, deadline_ms = ((self.ray.DrainReason.IDLE_TERMINATION, 0) if d.idle else
                                   (self.ray.DrainReason.PREEMPTION, int((now + d.deadline_seconds) * 1000)))
            try:
                result = await self.blocking(client.drain, node.node_id, reason, f"swarm-operator: {d.reason}",
                                             deadline_ms, snapshot=snap)
            except self.ray.RayStateError as exc:  # safe to repeat: the next turn asks again
                log.warning("drain of worker %s in %s/%s failed: %s", d.name, *key, exc)
                continue
            if not result.accepted:
                log.info("drain of worker %s in %s/%s not sent: %s", d.name, *key, result.why)
                continue
            marks.append(drained_mark(d.name, now, d.reason))
            events.append((EventReason.DRAINING, f"{d.reason}; Ray drained the idle node, the pod goes once it has "
                                                 "left" if d.idle else
                                                 f"{d.reason}; Ray schedules nothing more there and lets its "
                                                 f"running tasks finish within {d.deadline_seconds}s"))
        return marks, events

    async def _drain(self, key: Key, snap: ClusterSnapshot, drains: Iterable[policy.Drain],
                     events: list[Post]) -> tuple[list[policy.Drain], list[policy.Drain]]:
        """Ask Ray to drain each chosen idle node; the raylet re-checks idleness and may refuse."""
        accepted: list[policy.Drain] = []
        refused: list[policy.Drain] = []
        ns, name = key
        client = self.pool.client(key)
        for d in drains:
            node = snap.node_by_instance(d.node)
            if node is None:
                refused.append(d)
                continue
            try:
                result = await self.blocking(client.drain, node.node_id, self.ray.DrainReason.IDLE_TERMINATION,
                                             f"swarm-operator: {d.reason}", 0, snapshot=snap)
            except self.ray.RayStateError as exc:
                log.warning("drain of %s in %s/%s failed: %s", d.node, *key, exc)
                result = self.ray.DrainResult(False, str(exc))
            if result.accepted:
                accepted.append(d)
                metrics.AUTOSCALER_DRAINS.labels(ns, name, "accepted").inc()
            else:
                refused.append(d)
                metrics.AUTOSCALER_DRAINS.labels(ns, name, "refused").inc()
                log.info("drain of %s in %s/%s refused: %s", d.node, *key, result.why)
                events.append((EventReason.DRAIN_REFUSED, f"{d.node} keeps running: {result.why}"))
        return accepted, refused
