"""Desired vs observed → the actions that close the gap, each with its reason. Pure.

Level-based: the plan is computed from what exists now (pods counted by label and owner),
never from what the operator remembers having done, so a restart at any moment converges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff, head_backoff_delay, record_failures, settle
from swarm_operator.reconcile.disruption import Disrupted
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels, revision
from swarm_operator.resources.budget import head_budget_name
from swarm_operator.resources.pods import head_hash
from swarm_operator.spec.types import ClusterSpec, WorkerGroupSpec


@dataclass(frozen=True)
class CreateService:
    reason: str


@dataclass(frozen=True)
class CreateHead:
    reason: str


@dataclass(frozen=True)
class CreateBudget:
    """The head's PodDisruptionBudget (resources/budget.py)."""
    reason: str


@dataclass(frozen=True)
class DeleteBudget:
    name: str
    uid: str
    reason: str


@dataclass(frozen=True)
class CreateWorkers:
    group: str
    count: int
    reason: str


@dataclass(frozen=True)
class DeletePod:
    name: str
    reason: str
    failed_group: str | None = None  # set when the deletion replaces a failed worker
    failed: bool = False  # the pod died (worker or head): reported as a Warning
    disrupted: Disrupted | None = None  # an eviction, a node shutdown or loss ended it: replaced, not a failure
    group: str = labels.HEAD  # the pod's worker group, or the head (for the disruption metric)


@dataclass(frozen=True)
class PatchPod:
    """A change the running pod can take in place (its template's labels and annotations): no restart."""
    name: str
    patch: Mapping[str, Any] = field(compare=False)
    reason: str


@dataclass(frozen=True)
class DrainForRollout:
    """An outdated worker with Ray work: Ray drains it (reason PREEMPTION, a deadline) rather than the pod being
    deleted, so its running tasks finish. The pod is deleted once Ray reports the node dead, or at the deadline."""
    name: str
    reason: str
    deadline_seconds: int


Action = (CreateService | CreateHead | CreateWorkers | DeletePod | PatchPod | DrainForRollout | CreateBudget
          | DeleteBudget)

# While a drained node has not died yet, Ray's state is read again this often (its death is what frees the pod).
DRAIN_POLL_SECONDS = 3.0
# A ready outdated worker waits while Ray's state is unknown (busy or idle cannot be told); retried this often.
RAY_STATE_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodState, ...]
    service_exists: bool
    health: Mapping[str, GroupHealth]  # per worker group
    head_restarts: int = 0
    head_failures: int = 0  # heads failed in a row, never ready between (status.head.consecutiveFailures)
    head_backoff: HeadBackoff | None = None  # a crash-looping head's next attempt waits until then
    # Pods Ray reports idle (None when Ray's state is unknown); rollouts replace them directly, first.
    idle_pods: frozenset[str] | None = None
    # Pods whose Ray node the GCS reports DEAD while the pod still runs (`ray start --block` outlives it).
    ray_dead: frozenset[str] = frozenset()
    # Pods the GCS reports as live Ray nodes (None when Ray's state is unknown). A pod joins Ray, and
    # gets tasks, before its readiness probe first passes: "not ready" does not mean "no Ray work".
    ray_nodes: frozenset[str] | None = None
    budgets: Mapping[str, str] = field(default_factory=dict)  # this cluster's PodDisruptionBudgets: name → uid


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    health: Mapping[str, GroupHealth]
    head_restarts: int
    head_backoff: HeadBackoff | None = None
    requeue_after: float | None = None  # seconds; when a backoff expires or a name frees up
    notes: tuple[str, ...] = field(default_factory=tuple)


def desired_replicas(cluster: ClusterSpec, status_targets: Mapping[str, int]) -> dict[str, int]:
    """With autoscaling on, the autoscaler's target in status wins over spec.replicas (GitOps-safe)."""
    out: dict[str, int] = {}
    for g in cluster.worker_groups:
        target = g.initial_replicas()
        if cluster.autoscaling.enabled and g.name in status_targets:
            target = status_targets[g.name]
        out[g.name] = max(g.min_replicas, min(g.max_replicas, target))
    return out


def _scale_down_order(pods: list[PodState]) -> list[PodState]:
    """Not-ready pods first (no Ray work on them), then the newest."""
    return sorted(pods, key=lambda p: (p.ready, -p.created, p.name))


def _no_ray_work_yet(p: PodState, ray_nodes: frozenset[str] | None) -> bool:
    """Not ready and not a Ray node; with Ray's state unknown, not even running."""
    if p.ready:
        return False
    return p.name not in ray_nodes if ray_nodes is not None else p.phase != "Running"


def _busy(p: PodState, obs: Observed) -> bool | None:
    """A live Ray node that is not idle; None when Ray's state is unknown."""
    if obs.ray_nodes is None or obs.idle_pods is None:
        return None
    return p.name in obs.ray_nodes and p.name not in obs.idle_pods


def _rollout_order(pods: list[PodState], obs: Observed) -> list[PodState]:
    """Idle workers and ones with no Ray node first (replacing them costs no work), then not ready, then oldest."""
    return sorted(pods, key=lambda p: (bool(_busy(p, obs)), p.ready, p.created, p.name))


def needs_ray_state(cluster: ClusterSpec, pods: list[PodState]) -> bool:
    """A rollout is under way (an outdated or drained live worker): it must tell busy workers from idle ones,
    and see drained nodes die, whether or not autoscaling reads Ray's state anyway."""
    if cluster.update_strategy.type == "OnDelete":
        return any(p.drained for p in pods if p.alive and p.node_type == labels.WORKER)
    wanted = {g.name: revision.revision_hash(revision.worker_parts(cluster, g)) for g in cluster.worker_groups}
    return any(p.drained or (p.group in wanted and p.template_hash != wanted[p.group])
               for p in pods if p.alive and p.node_type == labels.WORKER)


def _plan_group(cluster: ClusterSpec, group: WorkerGroupSpec, pods: list[PodState], desired: int,
                health: GroupHealth, now: float, obs: Observed,
                head_coming: bool) -> tuple[list[Action], GroupHealth, list[float], list[str]]:
    actions: list[Action] = []
    requeues: list[float] = []
    notes: list[str] = []
    drain_timeout = cluster.update_strategy.drain_timeout_seconds
    ended = [p for p in pods if not p.deleting
             and (p.failure is not None or p.disruption is not None or p.name in obs.ray_dead)]
    disrupted = [p for p in ended if not p.drained and p.disruption is not None]
    dead = [p for p in ended if not p.drained and p.disruption is None]
    for p in ended:
        if p.drained:
            actions.append(DeletePod(p.name, f"worker {p.name} of group {group.name}: its Ray node was drained; "
                                             "removing the pod"))
    # Ray lets a drained node's tasks run on past a PREEMPTION deadline: the deadline is ours to keep.
    overdue = [p for p in pods if p.alive and p.drained and p.name not in obs.ray_dead
               and p.drained_at and now - p.drained_at >= drain_timeout]
    for p in overdue:
        actions.append(DeletePod(p.name, f"worker {p.name} of group {group.name}: its Ray node was drained "
                                         f"{drain_timeout}s ago (updateStrategy.drainTimeoutSeconds) and still "
                                         "runs; removing the pod"))
    for p in disrupted:
        assert p.disruption is not None
        actions.append(DeletePod(p.name, f"worker {p.name} of group {group.name} disrupted ({p.disruption.reason})",
                                 disrupted=p.disruption, group=group.name))
    for p in dead:
        why = p.failure or "its Ray node died"
        actions.append(DeletePod(p.name, f"worker {p.name} of group {group.name} failed ({why})", group.name,
                                 failed=True, group=group.name))
    health = record_failures(health, len(dead), now, cluster.fault_tolerance.backoff_initial_seconds,
                             cluster.fault_tolerance.backoff_max_seconds)
    health = settle(health, now, cluster.fault_tolerance.backoff_max_seconds)
    live = [p for p in pods if p.alive and p.name not in obs.ray_dead and p not in overdue]
    requeues += [p.recheck_at - now for p in live if p.recheck_at]
    # Pods ended by a disruption, ours to delete or already going (the Eviction API deletes): replaced at once.
    replace_at_once = len(disrupted) + sum(1 for p in pods if p.deleting and p.disruption is not None)
    draining = [p for p in live if p.drained]
    for p in draining:
        requeues.append(DRAIN_POLL_SECONDS if not p.drained_at
                        else min(DRAIN_POLL_SECONDS, max(0.0, p.drained_at + drain_timeout - now)))
    missing = desired - len(live)
    if missing > 0 and not head_coming:
        pass  # new workers wait for a head (one that exists, or is created in this turn) to join
    elif missing > 0:
        if now < health.backoff_until:
            requeues.append(health.backoff_until - now)
            if replace_at_once:
                actions.append(CreateWorkers(group.name, min(missing, replace_at_once),
                                             f"group {group.name} has {len(live)} of {desired} workers (replacing "
                                             f"{min(missing, replace_at_once)} disrupted at once; the rest wait "
                                             "for the failure backoff)"))
        else:
            why = f"group {group.name} has {len(live)} of {desired} workers"
            replaced = [f"{n} {what}" for n, what in ((len(dead), "failed"), (replace_at_once, "disrupted")) if n]
            if replaced:
                why += f" (replacing {' and '.join(replaced)})"
            actions.append(CreateWorkers(group.name, missing, why))
    elif missing < 0:
        removable = _scale_down_order(live)
        if cluster.autoscaling.enabled:
            # Ray nodes are removed only by the autoscaler's drain; here only pods with no Ray work yet.
            removable = [p for p in removable if _no_ray_work_yet(p, obs.ray_nodes)]
        for p in removable[: -missing]:
            actions.append(DeletePod(p.name, f"group {group.name} scaled to {desired} "
                                             f"({'not ready' if not p.ready else 'newest'} first)"))
    if missing == 0 and cluster.update_strategy.type != "OnDelete":
        parts = revision.worker_parts(cluster, group)
        want = revision.revision_hash(parts)
        outdated = [p for p in live if p.template_hash != want and not p.drained]
        # A drained worker still running is on its way out: it counts against maxUnavailable.
        unavailable = desired - sum(1 for p in live if p.ready and not p.drained)
        budget = cluster.update_strategy.max_unavailable - max(0, unavailable)
        waiting = 0
        for p in _rollout_order(outdated, obs):
            busy = _busy(p, obs)
            if busy is None and p.ready:
                waiting += 1  # it may be running tasks: deleting it could kill them
                continue
            # Replacing a pod that is not ready costs no availability; without this, a template fix for
            # pods that can never become ready (bad image, unschedulable) would wait forever.
            if p.ready:
                if budget <= 0:
                    continue
                budget -= 1
            change = revision.describe_change(revision.changed_parts(p.revision, parts))
            why = f"worker {p.name} of group {group.name}: {change}; rolling update ({cluster.update_strategy.type})"
            if busy:
                actions.append(DrainForRollout(p.name, why + "; it runs Ray tasks: draining it first",
                                               drain_timeout))
            else:
                actions.append(DeletePod(p.name, why))
        if waiting:
            notes.append(f"group {group.name}: {waiting} ready outdated worker(s) wait for Ray's state "
                         "(busy workers are drained, never deleted; Ray's state is unknown)")
            requeues.append(RAY_STATE_RETRY_SECONDS)
    return actions, health, requeues, notes


def _metadata_patches(cluster: ClusterSpec, pods: list[PodState], leaving: set[str]) -> list[PatchPod]:
    """Template labels/annotations brought up to date on running pods, in place (no restart)."""
    patches = []
    for p in pods:
        if not p.alive or p.name in leaving:
            continue
        if p.node_type == labels.HEAD:
            template = cluster.head.template
            ours = {**labels.common_labels(cluster.name), **labels.head_selector(cluster.name)}
        else:
            group = cluster.group(p.group or "")
            if group is None:
                continue
            template = group.template
            ours = {**labels.common_labels(cluster.name), **labels.worker_selector(cluster.name, group.name)}
        patch = revision.metadata_patch(p.template_metadata, template, ours)
        if patch is not None:
            patches.append(PatchPod(p.name, patch, "its template's labels or annotations changed; "
                                                   "patched in place, no restart"))
    return patches


def _budget_actions(cluster: ClusterSpec, obs: Observed) -> list[Action]:
    """The head's PodDisruptionBudget exists exactly while head.podDisruptionBudget.enabled (any other of ours goes)."""
    wanted = head_budget_name(cluster.name) if cluster.head.disruption_budget else None
    actions: list[Action] = [DeleteBudget(name, uid, "head.podDisruptionBudget.enabled is false")
                             for name, uid in obs.budgets.items() if name != wanted]
    if wanted is not None and wanted not in obs.budgets:
        actions.append(CreateBudget("the head's PodDisruptionBudget is missing"))
    return actions


def plan_cluster(cluster: ClusterSpec, obs: Observed, targets: Mapping[str, int], now: float) -> Plan:
    """Everything to do for one cluster now. `targets` is the per-group target from status."""
    actions: list[Action] = _budget_actions(cluster, obs)
    pods = list(obs.pods)
    head_restarts = obs.head_restarts
    if cluster.suspend:
        for p in pods:
            if not p.deleting:
                actions.append(DeletePod(p.name, "cluster is suspended"))
        return Plan(tuple(actions), dict(obs.health), head_restarts)  # a resumed head starts without backoff

    requeues: list[float] = []
    notes: list[str] = []
    heads = [p for p in pods if p.node_type == labels.HEAD]
    workers = [p for p in pods if p.node_type == labels.WORKER]
    if not obs.service_exists:
        actions.append(CreateService("head service missing"))

    head_dead = [p for p in heads if not p.deleting and p.failure is not None]
    head_disrupted = [p for p in heads if not p.deleting and p.disruption is not None]
    recycle_workers = False
    for p in head_dead:
        actions.append(DeletePod(p.name, f"head {p.name} failed ({p.failure}); replacing it", failed=True))
        head_restarts += 1
    for p in head_disrupted:
        assert p.disruption is not None
        actions.append(DeletePod(p.name, f"head {p.name} disrupted ({p.disruption.reason}); replacing it",
                                 disrupted=p.disruption))
    if (head_dead or head_disrupted) and cluster.fault_tolerance.gcs is None:
        recycle_workers = True
    live_heads = [p for p in heads if p.alive]
    head_backoff = _head_backoff(obs, head_dead, live_heads, now)
    requeues += [p.recheck_at - now for p in live_heads if p.recheck_at]
    head_outdated = False
    if live_heads and cluster.update_strategy.type != "OnDelete" and live_heads[0].template_hash != head_hash(cluster):
        change = revision.describe_change(revision.changed_parts(live_heads[0].revision, revision.head_parts(cluster)))
        live_workers = sum(1 for p in workers if p.alive)
        consequence = (f"; without GCS fault tolerance its {live_workers} worker(s) are replaced too"
                       if cluster.fault_tolerance.gcs is None and live_workers else "")
        actions.append(DeletePod(live_heads[0].name, f"head {live_heads[0].name}: {change}; "
                                                     f"replacing the head{consequence}"))
        live_heads = []
        head_outdated = True
        recycle_workers = recycle_workers or cluster.fault_tolerance.gcs is None
    if not live_heads and cluster.fault_tolerance.gcs is None and any(p.alive for p in workers):
        # The head is going or gone (deleted by someone, evicted): its GCS goes with it, and
        # workers cannot rejoin a new one. Replacing them now beats waiting for their raylets to give up.
        recycle_workers = True
    if not live_heads:
        if any(p.deleting for p in heads) or head_dead or head_disrupted or head_outdated:
            requeues.append(1.0)  # the head's fixed name is free only once the old pod is gone
        elif head_backoff is not None and head_backoff.revision == head_hash(cluster):
            requeues.append(head_backoff.until - now)
        else:
            actions.append(CreateHead("head pod missing"))

    if recycle_workers:
        for p in workers:
            if not p.deleting:
                actions.append(DeletePod(p.name, "head replaced without GCS fault tolerance; "
                                                 "workers cannot rejoin a new GCS"))
        workers = []

    head_coming = bool(live_heads) or any(isinstance(a, CreateHead) for a in actions)
    desired = desired_replicas(cluster, targets)
    health = dict(obs.health)
    known = {g.name for g in cluster.worker_groups}
    for p in workers:
        if p.group not in known and not p.deleting:
            actions.append(DeletePod(p.name, f"group {p.group} is no longer in the spec"))
    for g in cluster.worker_groups:
        group_pods = [p for p in workers if p.group == g.name]
        acts, h, group_requeues, group_notes = _plan_group(cluster, g, group_pods, desired[g.name],
                                                           health.get(g.name, GroupHealth()), now, obs, head_coming)
        actions.extend(acts)
        health[g.name] = h
        requeues.extend(group_requeues)
        notes.extend(group_notes)
    leaving = {a.name for a in actions if isinstance(a, DeletePod)}
    actions.extend(_metadata_patches(cluster, pods, leaving))
    return Plan(tuple(actions), health, head_restarts, head_backoff, min(requeues) if requeues else None,
                tuple(notes))


def _head_backoff(obs: Observed, dead: list[PodState], live: list[PodState], now: float) -> HeadBackoff | None:
    """The crash-loop backoff after this turn: started by a head failed again, ended by a ready head or by time."""
    if dead:
        delay = head_backoff_delay(obs.head_failures + len(dead))
        return HeadBackoff(now + delay, dead[-1].template_hash) if delay else None
    if any(p.ready for p in live) or (obs.head_backoff is not None and obs.head_backoff.until <= now):
        return None
    return obs.head_backoff
