"""One autoscaling turn of one cluster: read Ray's state, decide (pure), drain; report what happened.

Called from the controller's turn, so a cluster is never autoscaled and reconciled at the
same time. Reads go through a RayStatePool (a thread and a deadline per read), so a slow or
dead cluster costs only its own turn. Nothing is deleted here: an accepted drain marks the
pod (annotation), and the planner removes the pod once Ray reports the node gone. The controller's
turn writes the report and the new targets to status.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarm_operator import metrics
from swarm_operator.autoscaler import policy, ray_version
from swarm_operator.autoscaler.inputs import demand_summary, policy_input
from swarm_operator.autoscaler.snapshot import ClusterSnapshot, NodeStatus
from swarm_operator.kube import Kube
from swarm_operator.reconcile.observe import PodState
from swarm_operator.reconcile.plan import DrainForRollout
from swarm_operator.resources import labels
from swarm_operator.resources.pods import GCS_PORT
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.status import AutoscalerReport
from swarm_operator.times import timestamp

if TYPE_CHECKING:  # importing ray costs ~40 MiB: only processes that autoscale pay for it
    from swarm_operator.autoscaler import gcs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    targets: dict[str, int]  # per group, to store in status.workerGroups[].desiredReplicas
    report: AutoscalerReport  # for status.autoscaler
    scaled_up: frozenset[str] = frozenset()  # groups whose target grew: their last scale-up is now
    ray_dead: frozenset[str] = frozenset()  # pods whose Ray node is DEAD
    idle: frozenset[str] | None = None
    ray_nodes: frozenset[str] | None = None  # pods whose Ray node is alive (None: Ray's state unknown)
    events: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)  # (type, reason, message)
    patched_pods: tuple[dict[str, Any], ...] = ()  # pods annotated as drained, for the controller's cache
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
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._pool: gcs.RayStatePool[gcs.RayStateClient] | None = None
        self._next_read: dict[str, float] = {}
        self._warned_version: dict[str, tuple[str, ...]] = {}
        self._last_infeasible: dict[str, str] = {}
        self._pending_resources: dict[str, set[str]] = {}  # resources ever reported in the pending gauge

    @property
    def ray(self) -> Any:
        """The Ray client module, imported on first use: importing ray costs ~40 MiB."""
        return importlib.import_module("swarm_operator.autoscaler.gcs")

    @property
    def pool(self) -> gcs.RayStatePool[gcs.RayStateClient]:
        if self._pool is None:
            self._pool = self.ray.RayStatePool(self.ray.new_client)
        return self._pool

    @pool.setter
    def pool(self, pool: gcs.RayStatePool[gcs.RayStateClient]) -> None:
        self._pool = pool

    def forget(self, key: str) -> None:
        if self._pool is not None:
            self._pool.remove_cluster(key)
        self._next_read.pop(key, None)
        self._warned_version.pop(key, None)
        self._last_infeasible.pop(key, None)
        ns, name = key.split("/", 1)
        for resource in self._pending_resources.pop(key, set()):
            with contextlib.suppress(KeyError):
                metrics.AUTOSCALER_PENDING.remove(ns, name, resource)

    def due_in(self, key: str, now: float) -> float:
        return max(0.0, self._next_read.get(key, 0.0) - now)

    async def step(self, key: str, cluster: ClusterSpec, pods: list[PodState], head_ip: str | None,
                   targets: Mapping[str, int], last_scale_ups: Mapping[str, float], now: float,
                   token: str | None = None) -> Outcome | None:
        """None when it is not time yet, or there is no head to ask. `last_scale_ups`: per group, when
        its target last grew (the stabilization window counts from it). `token`: the cluster's Ray token
        (spec.auth), sent with each call to its GCS."""
        if now < self._next_read.get(key, 0.0):
            return None
        self._next_read[key] = now + cluster.autoscaling.interval_seconds
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
        events: list[tuple[str, str, str]] = []
        version = ray_version.check(cluster.ray_version, snap.ray_version, self.ray.OPERATOR_RAY_VERSION)
        if self._warned_version.get(key) != version.warnings:  # each warning once, again when it changes
            self._warned_version[key] = version.warnings
            events += [("Warning", "RayVersionMismatch" if text.startswith("spec.") else "RayVersionUnsupported",
                        text) for text in version.warnings]
        unavailable = unavailable_groups(pods, now, cluster.autoscaling.pending_timeout_seconds)
        inp = policy_input(cluster, snap, pods, targets, last_scale_ups, unavailable, now)
        decision = policy.decide(inp)
        new_targets = dict(decision.targets)
        accepted, refused = await self._drain(key, snap, decision.drains, events)
        for d in refused:  # the node got work: it stays, and so does its place in the target
            new_targets[d.group] = new_targets.get(d.group, 0) + 1
        patched = []
        for d in accepted:
            pod = await asyncio.to_thread(self.kube.annotate_pod, ns, d.node, {labels.DRAINED: timestamp(now)})
            if pod is not None:
                patched.append(pod)

        scaled_up = set()
        for g in cluster.worker_groups:
            before, after = targets.get(g.name, g.initial_replicas()), new_targets.get(g.name, 0)
            if after != before:
                metrics.AUTOSCALER_DECISIONS.labels(ns, name, g.name, "up" if after > before else "down").inc()
            if after > before:
                scaled_up.add(g.name)
        reasons = _reasons(decision, inp, new_targets, refused)
        for text in reasons:
            events.append(("Normal", "Autoscaled", text))
        infeasible = demand_summary(decision.infeasible)
        if infeasible and self._last_infeasible.get(key) != infeasible:
            events.append(("Warning", "InfeasibleDemand", f"fits no worker group, not scaling for it: {infeasible}"))
        self._last_infeasible[key] = infeasible
        pending = pending_by_resource(snap)
        for resource in self._pending_resources.get(key, set()) - pending.keys():
            metrics.AUTOSCALER_PENDING.labels(ns, name, resource).set(0)  # that demand went away
        for resource, amount in pending.items():
            metrics.AUTOSCALER_PENDING.labels(ns, name, resource).set(amount)
        self._pending_resources[key] = self._pending_resources.get(key, set()) | pending.keys()
        report = AutoscalerReport(
            pending_demand=demand_summary([*inp.demands, *inp.constraints]),
            infeasible_demand=infeasible,
            ray_version=snap.ray_version or "",
            ray_version_warning="; ".join(version.warnings),
            decisions=(*reasons, *(f"drained {d.node}: {d.reason}" for d in accepted),
                       *(f"drain of {d.node} refused (it got work)" for d in refused)),
        )
        view = ray_view(snap, pods)
        return Outcome(new_targets, report, frozenset(scaled_up), view.ray_dead, view.idle, view.ray_nodes,
                       tuple(events), tuple(patched), snap)

    async def observe(self, key: str, pods: list[PodState], head_ip: str | None,
                      token: str | None = None) -> RayView | None:
        """Ray's state for a rollout, read-only and with no scaling decision (autoscaling may be off);
        None when there is no head to ask or the read failed. `token`: as for :meth:`step`."""
        if head_ip is None:
            return None
        self.pool.set_cluster(key, f"{head_ip}:{GCS_PORT}", token)
        result = await self.pool.aread(key)
        if result.snapshot is None:
            log.info("reading Ray state of %s for a rollout: %s", key, result.error)
            return None
        return ray_view(result.snapshot, pods)

    async def drain_for_rollout(self, key: str, snap: ClusterSnapshot, drains: Iterable[DrainForRollout],
                                now: float) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
        """Ask Ray to drain busy outdated workers (reason PREEMPTION, with a deadline): it schedules nothing
        more there and its raylet exits once the running tasks finish. Accepted drains are annotated on
        the pod, as the autoscaler's are; the planner deletes the pod once the node is DEAD.
        Returns the patched pods (for the cache) and the events to post."""
        ns, _ = key.split("/", 1)
        client = self.pool.client(key)
        patched: list[dict[str, Any]] = []
        events: list[tuple[str, str, str]] = []
        for d in drains:
            node = snap.node_by_instance(d.name)
            if node is None:
                continue  # it left Ray since the read: the next turn replaces it directly
            deadline_ms = int((now + d.deadline_seconds) * 1000)
            try:
                result = await asyncio.to_thread(client.drain, node.node_id, self.ray.DrainReason.PREEMPTION,
                                                 f"swarm-operator: {d.reason}", deadline_ms, snapshot=snap)
            except self.ray.RayStateError as exc:  # safe to repeat: the next turn asks again
                log.warning("rollout drain of %s in %s failed: %s", d.name, key, exc)
                continue
            if not result.accepted:
                log.info("rollout drain of %s in %s not sent: %s", d.name, key, result.why)
                continue
            pod = await asyncio.to_thread(self.kube.annotate_pod, ns, d.name, {labels.DRAINED: timestamp(now)})
            if pod is not None:
                patched.append(pod)
            events.append(("Normal", "Draining", f"{d.reason}; Ray finishes its running tasks within "
                                                 f"{d.deadline_seconds}s (updateStrategy.drainTimeoutSeconds), "
                                                 "then the pod is replaced"))
        return patched, events

    async def _drain(self, key: str, snap: ClusterSnapshot, drains: Iterable[policy.Drain],
                     events: list[tuple[str, str, str]]) -> tuple[list[policy.Drain], list[policy.Drain]]:
        """Ask Ray to drain each chosen idle node; the raylet re-checks idleness and may refuse."""
        accepted: list[policy.Drain] = []
        refused: list[policy.Drain] = []
        ns, name = key.split("/", 1)
        client = self.pool.client(key)
        for d in drains:
            node = snap.node_by_instance(d.node)
            if node is None:
                refused.append(d)
                continue
            try:
                result = await asyncio.to_thread(client.drain, node.node_id, self.ray.DrainReason.IDLE_TERMINATION,
                                                 f"swarm-operator: {d.reason}", 0, snapshot=snap)
            except self.ray.RayStateError as exc:
                log.warning("drain of %s in %s failed: %s", d.node, key, exc)
                result = self.ray.DrainResult(False, str(exc))
            if result.accepted:
                accepted.append(d)
                metrics.AUTOSCALER_DRAINS.labels(ns, name, "accepted").inc()
            else:
                refused.append(d)
                metrics.AUTOSCALER_DRAINS.labels(ns, name, "refused").inc()
                log.info("drain of %s in %s refused: %s", d.node, key, result.why)
                events.append(("Normal", "DrainRefused", f"{d.node} keeps running: {result.why}"))
        return accepted, refused
