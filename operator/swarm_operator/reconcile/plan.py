"""Desired vs observed → the actions that close the gap, each with its reason. Pure.

Level-based: the plan is computed from what exists now (pods counted by label and owner),
never from what the operator remembers having done, so a restart at any moment converges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from swarm_operator.reasons import EventReason
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
class DrainWorker:
    """A worker with Ray work that has to go (a rollout, a scale-down, suspend, its group removed): Ray drains it
    (reason PREEMPTION, a deadline) rather than the pod being deleted, so its running tasks finish. The pod is
    deleted once Ray reports the node dead, or at the deadline."""
    name: str
    reason: str
    deadline_seconds: int


Action = (CreateService | CreateHead | CreateWorkers | DeletePod | PatchPod | DrainWorker | CreateBudget
          | DeleteBudget)
Note = tuple[EventReason, str]  # something the plan waits for, posted as an Event once while it holds

# While a drained node has not died yet, Ray's state is read again this often (its death is what frees the pod).
DRAIN_POLL_SECONDS = 3.0
# A ready worker to replace or remove waits while Ray's state is unknown (busy or idle cannot be told); retried
# this often.
RAY_STATE_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodState, ...]
    service_exists: bool
    health: Mapping[str, GroupHealth]  # per worker group
    head_restarts: int = 0
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


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    health: Mapping[str, GroupHealth]
    head_restarts: int
    head_backoff: HeadBackoff | None = None
    requeue_after: float | None = None  # seconds; when a backoff expires or a name frees up
    notes: tuple[Note, ...] = field(default_factory=tuple)


def desired_replicas(cluster: ClusterSpec, status_targets: Mapping[str, int]) -> dict[str, int]:
    """With autoscaling on, the autoscaler's target in status wins over spec.replicas (GitOps-safe)."""
    out: dict[str, int] = {}
    for g in cluster.worker_groups:
        target = g.initial_replicas()
        if cluster.autoscaling.enabled and g.name in status_targets:
            target = status_targets[g.name]
        out[g.name] = max(g.min_replicas, min(g.max_replicas, target))
    return out


class RayWork(Enum):
    """What a worker is doing in Ray, in the order workers are taken down: the cheapest to lose first."""

    NONE = 0  # not a Ray node (yet): nothing to lose
    IDLE = 1  # a Ray node Ray reports idle
    BUSY = 2  # a live Ray node that is not idle: drained, never deleted
    UNKNOWN = 3  # Ray's state is unknown and the pod may be a Ray node: busy cannot be told from idle


def ray_work(p: PodState, obs: Observed) -> RayWork:
    if obs.ray_nodes is None or obs.idle_pods is None:
        # A pod joins Ray, and gets tasks, before its readiness probe first passes: only one not running is safe.
        return RayWork.NONE if not p.ready and p.phase != "Running" else RayWork.UNKNOWN
    if p.name not in obs.ray_nodes:
        return RayWork.NONE
    return RayWork.IDLE if p.name in obs.idle_pods else RayWork.BUSY


def _removal_order(pods: list[PodState], obs: Observed) -> list[PodState]:
    """No Ray work first, then idle, then busy; within each, not ready first, then the newest."""
    return sorted(pods, key=lambda p: (ray_work(p, obs).value, p.ready, -p.created, p.name))


def _rollout_order(pods: list[PodState], obs: Observed) -> list[PodState]:
    """Idle workers and ones with no Ray node first (replacing them costs no work), then not ready, then oldest."""
    return sorted(pods, key=lambda p: (ray_work(p, obs) is RayWork.BUSY, p.ready, p.created, p.name))


def _take_down(pods: list[PodState], count: int, obs: Observed, why: str, drain_timeout: int,
               ray_nodes_allowed: int | None = None) -> tuple[list[Action], int]:
    """`count` of `pods` removed, the cheapest first: pods that are no Ray node, and idle Ray nodes, are deleted;
    busy Ray nodes are drained by Ray (PREEMPTION, `drain_timeout`), never deleted. At most `ray_nodes_allowed`
    Ray nodes are taken (None: any). Returns the actions and how many ready workers must wait instead, because
    Ray's state is unknown."""
    actions: list[Action] = []
    waiting = 0
    for p in _removal_order(pods, obs):
        if len(actions) + waiting >= count:
            break
        work = ray_work(p, obs)
        if work is not RayWork.NONE:
            if ray_nodes_allowed == 0:
                break  # the order puts every Ray node after the rest
            if ray_nodes_allowed is not None:
                ray_nodes_allowed -= 1
        if work is RayWork.UNKNOWN:
            waiting += 1  # it may be running tasks: deleting it could kill them
        elif work is RayWork.BUSY:
            actions.append(DrainWorker(p.name, f"{why}: worker {p.name} runs Ray tasks; draining it first",
                                       drain_timeout))
        else:
            state = "idle in Ray" if work is RayWork.IDLE else "not ready" if not p.ready else "not a Ray node"
            actions.append(DeletePod(p.name, f"{why} ({p.name} {state})"))
    return actions, waiting


def _drains(pods: list[PodState], obs: Observed, now: float, drain_timeout: int
            ) -> tuple[list[Action], set[str], list[float]]:
    """Workers whose Ray node was drained (the autoscaler's, or a busy worker's that had to go): each pod is
    deleted once its node or the pod ended, or at the deadline, and polled until then. Returns the deletions, the
    pods they remove, and when to look again."""
    actions: list[Action] = []
    removed: set[str] = set()
    requeues: list[float] = []
    for p in pods:
        if p.deleting or not p.drained:
            continue
        if p.failure is not None or p.disruption is not None or p.name in obs.ray_dead:
            actions.append(DeletePod(p.name, f"worker {p.name} of group {p.group}: its Ray node was drained; "
                                             "removing the pod"))
        elif p.drained_at and now - p.drained_at >= drain_timeout:
            # Ray lets a drained node's tasks run on past a PREEMPTION deadline: the deadline is ours to keep.
            actions.append(DeletePod(p.name, f"worker {p.name} of group {p.group}: its Ray node was drained "
                                             f"{drain_timeout}s ago (updateStrategy.drainTimeoutSeconds) and "
                                             "still runs; removing the pod"))
        else:
            requeues.append(DRAIN_POLL_SECONDS if not p.drained_at
                            else min(DRAIN_POLL_SECONDS, max(0.0, p.drained_at + drain_timeout - now)))
            continue
        removed.add(p.name)
    return actions, removed, requeues


def _waiting_note(who: str, waiting: int) -> Note:
    return (EventReason.SCALE_DOWN_WAITING,
            f"{who}: {waiting} ready worker(s) to remove wait for Ray's state (busy workers are drained, never "
            "deleted; Ray's state is unknown)")


def _node_going(p: PodState, cluster: ClusterSpec) -> str | None:
    """Why the worker's node is about to go (a removal taint; a cordon only with disruption.drainOnCordon)."""
    if p.node_removal:
        return f"its node is going ({p.node_removal})"
    if p.node_cordoned and cluster.disruption.drain_on_cordon:
        return "its node is cordoned (disruption.drainOnCordon)"
    return None


def _disruption_notice(p: PodState, cluster: ClusterSpec, obs: Observed) -> str | None:
    """Why a running worker's Ray node is about to be lost to a disruption, None when it is not: an eviction or a
    deletion the operator did not cause (its grace period runs), DisruptionTarget, its node going."""
    if p.node_type != labels.WORKER or p.phase != "Running" or p.failure is not None:
        return None
    if p.deleting:
        if p.name in obs.deleted_by_operator:
            return None
        return p.disruption.reason if p.disruption else "its pod is being deleted, not by the operator"
    if p.disruption is not None:
        return p.disruption.reason
    return _node_going(p, cluster)


def _drains_ahead(cluster: ClusterSpec, obs: Observed, now: float, planned: set[str]) -> list[Action]:
    """Ray drains the node of every worker about to be disrupted (reason PREEMPTION), so it schedules nothing more
    there and lets running tasks finish: the deadline is what is left of the pod's grace period, else
    updateStrategy.drainTimeoutSeconds. Only live Ray nodes (Ray's state known), each once (the drained mark)."""
    if obs.ray_nodes is None:
        return []
    drains: list[Action] = []
    for p in obs.pods:
        if p.drained or p.name in planned or p.name not in obs.ray_nodes:
            continue
        notice = _disruption_notice(p, cluster, obs)
        if notice is None:
            continue
        left = int(p.deletion_at - now) if p.deletion_at > now else cluster.update_strategy.drain_timeout_seconds
        drains.append(DrainWorker(p.name, f"worker {p.name} of group {p.group}: {notice}; draining its Ray node "
                                          "ahead of the disruption", max(1, left)))
    return drains


def needs_ray_state(cluster: ClusterSpec, pods: list[PodState], targets: Mapping[str, int]) -> bool:
    """Whether workers must be told busy from idle, or drained nodes seen to die, whether or not autoscaling reads
    Ray's state anyway: a drain under way, workers to remove (suspend, a group removed, more than wanted), or a
    rollout (an outdated live worker)."""
    workers = [p for p in pods if p.alive and p.node_type == labels.WORKER]
    if any(p.drained for p in workers):
        return True
    # A disruption to drain ahead of: a worker still running while deleted, disrupted, or its node going.
    if any(p.node_type == labels.WORKER and p.phase == "Running" and not p.drained
           and (p.deleting or p.disruption is not None or _node_going(p, cluster)) for p in pods):
        return True
    if cluster.suspend:
        return bool(workers)
    desired = desired_replicas(cluster, targets)
    if any(p.group not in desired or sum(1 for q in workers if q.group == p.group) > desired[p.group]
           for p in workers):
        return True
    if cluster.update_strategy.type == "OnDelete":
        return False
    wanted = {g.name: revision.revision_hash(revision.worker_parts(cluster, g)) for g in cluster.worker_groups}
    return any(p.template_hash != wanted[p.group] for p in workers if p.group in wanted)


def _plan_group(cluster: ClusterSpec, group: WorkerGroupSpec, pods: list[PodState], desired: int,
                health: GroupHealth, now: float, obs: Observed,
                head_coming: bool) -> tuple[list[Action], GroupHealth, list[float], list[Note]]:
    notes: list[Note] = []
    drain_timeout = cluster.update_strategy.drain_timeout_seconds
    drain_actions, drained_gone, requeues = _drains(pods, obs, now, drain_timeout)
    actions: list[Action] = list(drain_actions)
    ended = [p for p in pods if not p.deleting and not p.drained
             and (p.failure is not None or p.disruption is not None or p.name in obs.ray_dead)]
    disrupted = [p for p in ended if p.disruption is not None]
    dead = [p for p in ended if p.disruption is None]
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
    # A drained worker still running is live: it keeps its place until its node dies (the rollout's replacement
    # waits for it), yet it is on its way out (a scale-down does not take another for it).
    live = [p for p in pods if p.alive and p.name not in obs.ray_dead and p.name not in drained_gone]
    staying = [p for p in live if not p.drained]
    requeues += [p.recheck_at - now for p in live if p.recheck_at]
    # A drained worker whose node is going (a removal taint, a cordon) gives up its place at once: its
    # replacement starts elsewhere while Ray lets its tasks finish.
    leaving_node = [p for p in live if p.drained and _node_going(p, cluster)]
    # Pods ended by a disruption, ours to delete or already going (the Eviction API deletes): replaced at once.
    replace_at_once = (len(disrupted) + len(leaving_node)
                       + sum(1 for p in pods if p.deleting and p.disruption is not None))
    live = [p for p in live if p not in leaving_node]
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
    elif len(staying) > desired:
        why, ray_nodes_allowed = f"group {group.name} scaled to {desired}", None
        if cluster.autoscaling.enabled:
            # The autoscaler removes Ray nodes by its own drains of idle ones; here only pods that are no Ray node
            # yet, and the Ray nodes above a lowered maxReplicas (busy ones, which it never drains).
            ray_nodes_allowed = max(0, len(staying) - group.max_replicas)
            if ray_nodes_allowed:
                why = f"group {group.name} has {len(staying)} workers, above maxReplicas {group.max_replicas}"
        taken, waiting = _take_down(staying, len(staying) - desired, obs, why, drain_timeout, ray_nodes_allowed)
        actions += taken
        if waiting:
            notes.append(_waiting_note(f"group {group.name}", waiting))
            requeues.append(RAY_STATE_RETRY_SECONDS)
    if missing == 0 and cluster.update_strategy.type != "OnDelete":
        parts = revision.worker_parts(cluster, group)
        want = revision.revision_hash(parts)
        outdated = [p for p in staying if p.template_hash != want]
        # A drained worker still running is on its way out: it counts against maxUnavailable.
        unavailable = desired - sum(1 for p in staying if p.ready)
        budget = cluster.update_strategy.max_unavailable - max(0, unavailable)
        waiting = 0
        for p in _rollout_order(outdated, obs):
            work = ray_work(p, obs)
            if work is RayWork.UNKNOWN and p.ready:
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
            if work is RayWork.BUSY:
                actions.append(DrainWorker(p.name, why + "; it runs Ray tasks: draining it first", drain_timeout))
            else:
                actions.append(DeletePod(p.name, why))
        if waiting:
            notes.append((EventReason.ROLLOUT_WAITING,
                          f"group {group.name}: {waiting} ready outdated worker(s) wait for Ray's state "
                          "(busy workers are drained, never deleted; Ray's state is unknown)"))
            requeues.append(RAY_STATE_RETRY_SECONDS)
    return actions, health, requeues, notes


def _retire(pods: list[PodState], why: str, obs: Observed, now: float, drain_timeout: int,
            through_ray: bool) -> tuple[list[Action], list[float], int]:
    """Every one of `pods` goes (suspend, its group removed), none replaced: ended pods are deleted, drained ones
    once their node dies, the rest taken down as in a scale-down to zero; with no head to drain through
    (`through_ray` false), deleted. Returns the actions, when to look again, and how many wait for Ray's state."""
    actions, _, requeues = _drains(pods, obs, now, drain_timeout)
    rest = [p for p in pods if not p.deleting and not p.drained]
    ended = [p for p in rest if not p.alive or p.name in obs.ray_dead]
    actions += [DeletePod(p.name, why) for p in ended]
    staying = [p for p in rest if p not in ended]
    if not through_ray:
        return actions + [DeletePod(p.name, f"{why} (no head to drain its Ray node through)") for p in staying], \
            requeues, 0
    taken, waiting = _take_down(staying, len(staying), obs, why, drain_timeout)
    if waiting:
        requeues.append(RAY_STATE_RETRY_SECONDS)
    return actions + taken, requeues, waiting


def _plan_suspend(cluster: ClusterSpec, obs: Observed, actions: list[Action], now: float) -> Plan:
    """Workers first, taken down as in a scale-down to zero; the head last, once no worker is left running:
    a busy worker's tasks need their head. Failure counts stay as they were; a head crash-loop backoff ends (a
    resumed head starts at once)."""
    heads = [p for p in obs.pods if p.node_type == labels.HEAD]
    workers = [p for p in obs.pods if p.node_type == labels.WORKER]
    retired, requeues, waiting = _retire(workers, "cluster is suspended", obs, now,
                                         cluster.update_strategy.drain_timeout_seconds,
                                         through_ray=any(p.alive for p in heads))
    actions += retired
    actions += _drains_ahead(cluster, obs, now, {a.name for a in retired if isinstance(a, DrainWorker)})
    leaving = {a.name for a in retired if isinstance(a, DeletePod)}
    if all(not p.alive or p.name in leaving for p in workers):
        actions += [DeletePod(p.name, "cluster is suspended") for p in heads if not p.deleting]
    notes = (_waiting_note("cluster is suspended (the head goes last)", waiting),) if waiting else ()
    return Plan(tuple(actions), dict(obs.health), obs.head_restarts, requeue_after=min(requeues) if requeues else None,
                notes=notes)


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
        return _plan_suspend(cluster, obs, actions, now)

    requeues: list[float] = []
    notes: list[Note] = []
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
    for name in sorted({p.group or "" for p in workers} - known):
        why = f"group {name} is no longer in the spec"
        retired, group_requeues, waiting = _retire([p for p in workers if (p.group or "") == name], why, obs, now,
                                                   cluster.update_strategy.drain_timeout_seconds, through_ray=True)
        actions.extend(retired)
        requeues.extend(group_requeues)
        if waiting:
            notes.append(_waiting_note(why, waiting))
    for g in cluster.worker_groups:
        group_pods = [p for p in workers if p.group == g.name]
        acts, h, group_requeues, group_notes = _plan_group(cluster, g, group_pods, desired[g.name],
                                                           health.get(g.name, GroupHealth()), now, obs, head_coming)
        actions.extend(acts)
        health[g.name] = h
        requeues.extend(group_requeues)
        notes.extend(group_notes)
    leaving = {a.name for a in actions if isinstance(a, DeletePod)}
    actions.extend(_drains_ahead(cluster, obs, now, {a.name for a in actions if isinstance(a, DrainWorker)}))
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
