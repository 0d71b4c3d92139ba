"""Desired vs observed → the actions that close the gap, each with its reason. Pure.

Level-based: the plan is computed from what exists now (pods counted by label and owner),
never from what the operator remembers having done, so a restart at any moment converges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import (
    Action,
    CreateBudget,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeleteBudget,
    DeletePod,
    DrainWorker,
    Note,
    PatchPod,
)
from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff, head_backoff_delay, record_failures, settle
from swarm_operator.reconcile.head import WaitForHead, current_generation, next_head
from swarm_operator.reconcile.observe import Observed, PodState
from swarm_operator.reconcile.retire import (
    DRAIN_POLL_SECONDS,
    RAY_STATE_RETRY_SECONDS,
    RayWork,
    drained_deletions,
    drains_ahead,
    node_going,
    ray_work,
    retire,
    rollout_order,
    take_down,
    waiting_note,
)
from swarm_operator.reconcile.suspend import HeadGoes, HeadStays, head_for_jobs, serves_jobs_api
from swarm_operator.reconcile.tally import disruption_message
from swarm_operator.resources import labels, revision
from swarm_operator.resources.budget import head_budget_name
from swarm_operator.resources.pods import head_hash
from swarm_operator.spec.types import ClusterSpec, WorkerGroupSpec


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    health: Mapping[str, GroupHealth]
    head_restarts: int
    head_backoff: HeadBackoff | None = None
    requeue_after: float | None = None  # seconds; when a backoff expires or a name frees up
    notes: tuple[Note, ...] = field(default_factory=tuple)
    head_generation: int = 0  # the current head generation after this plan (status.head.generation)
    # Suspended, no worker left: read the head's Jobs API (Observed.head_jobs) and plan again.
    reads_head_jobs: bool = False
    head_kept: str = ""  # why a suspended cluster's head stays for its Ray jobs ("" when it does not)


def desired_replicas(cluster: ClusterSpec, status_targets: Mapping[str, int]) -> dict[str, int]:
    """With autoscaling on, the autoscaler's target in status wins over spec.replicas (GitOps-safe)."""
    out: dict[str, int] = {}
    for g in cluster.worker_groups:
        target = g.initial_replicas()
        if cluster.autoscaling.enabled and g.name in status_targets:
            target = status_targets[g.name]
        out[g.name] = max(g.min_replicas, min(g.max_replicas, target))
    return out


def needs_ray_state(cluster: ClusterSpec, pods: list[PodState], targets: Mapping[str, int]) -> bool:
    """Whether workers must be told busy from idle, or drained nodes seen to die, whether or not autoscaling reads
    Ray's state anyway: a drain under way, workers to remove (suspend, a group removed, more than wanted), or a
    rollout (an outdated live worker)."""
    workers = [p for p in pods if p.alive and p.node_type == labels.WORKER]
    if any(p.drained for p in workers):
        return True
    # A disruption to drain ahead of: a worker still running while deleted, disrupted, or its node going.
    if any(p.node_type == labels.WORKER and p.phase == "Running" and not p.drained
           and (p.deleting or p.disruption is not None or node_going(p, cluster)) for p in pods):
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
    drain_actions, drained_gone, requeues = drained_deletions(pods, obs, now, drain_timeout)
    actions: list[Action] = list(drain_actions)
    ended = [p for p in pods if not p.deleting and not p.drained
             and (p.failure is not None or p.disruption is not None or p.name in obs.ray_dead)]
    disrupted = [p for p in ended if p.disruption is not None]
    dead = [p for p in ended if p.disruption is None]
    actions += [DeletePod(p.name, disruption_message(p), disrupted=p.disruption) for p in disrupted]
    for p in dead:
        why = p.failure or "its Ray node died"
        actions.append(DeletePod(p.name, f"worker {p.name} of group {group.name} failed ({why})", group.name,
                                 failed=True))
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
    leaving_node = [p for p in live if p.drained and node_going(p, cluster)]
    # Pods ended by a disruption, ours to delete, already going (the Eviction API deletes) or gone since the last
    # turn (deleted in one go): replaced at once.
    going = [p for p in pods if p.deleting and p.disruption is not None]
    gone = [p for p in obs.vanished if p.node_type == labels.WORKER and p.group == group.name
            and p.disruption is not None and p.name not in obs.deleted_by_operator]
    replace_at_once = len(disrupted) + len(leaving_node) + len(going) + len(gone)
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
        taken, waiting = take_down(staying, len(staying) - desired, obs, why, drain_timeout, ray_nodes_allowed)
        actions += taken
        if waiting:
            notes.append(waiting_note(f"group {group.name}", waiting))
            requeues.append(RAY_STATE_RETRY_SECONDS)
    if missing == 0 and cluster.update_strategy.type != "OnDelete":
        parts = revision.worker_parts(cluster, group)
        want = revision.revision_hash(parts)
        outdated = [p for p in staying if p.template_hash != want]
        # A drained worker still running is on its way out: it counts against maxUnavailable.
        unavailable = desired - sum(1 for p in staying if p.ready)
        budget = cluster.update_strategy.max_unavailable - max(0, unavailable)
        waiting = 0
        for p in rollout_order(outdated, obs):
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
            elif work is RayWork.IDLE:
                actions.append(DrainWorker(p.name, why + "; idle in Ray", drain_timeout, idle=True))
            else:
                actions.append(DeletePod(p.name, why))
        if waiting:
            notes.append((EventReason.ROLLOUT_WAITING,
                          f"group {group.name}: {waiting} ready outdated worker(s) wait for Ray's state "
                          "(busy workers are drained, never deleted; Ray's state is unknown)"))
            requeues.append(RAY_STATE_RETRY_SECONDS)
    return actions, health, requeues, notes


def drain_recheck(actions: list[Action]) -> list[float]:
    """A drain asked of Ray is looked at again soon: an idle worker's (IDLE_TERMINATION) is refused when a task
    has started there since Ray's state was read, and nothing else may bring the next turn; that turn sees the
    worker busy and chooses again (in a rollout: the worker that really is idle first)."""
    return [DRAIN_POLL_SECONDS] if any(isinstance(a, DrainWorker) for a in actions) else []


def _plan_suspend(cluster: ClusterSpec, obs: Observed, actions: list[Action], now: float, stopped_by: str) -> Plan:
    """Workers first, taken down as in a scale-down to zero; the head last, once no worker is left running (a busy
    worker's tasks need their head) and no Ray job submitted through its Jobs API still runs its driver there
    (reconcile/suspend.py). Failure counts stay as they were; a head crash-loop backoff ends (a resumed head starts
    at once). Stopped by Kueue (`stopped_by`: why), every pod is deleted at once, as Kueue stops a job of its own
    kinds: its quota goes to another workload once the pods are gone, not when Ray finds them idle."""
    heads = [p for p in obs.pods if p.node_type == labels.HEAD]
    workers = [p for p in obs.pods if p.node_type == labels.WORKER]
    if stopped_by:
        return Plan((*actions, *(DeletePod(p.name, stopped_by) for p in obs.pods if not p.deleting)),
                    dict(obs.health), obs.head_restarts)
    retired, requeues, waiting = retire(workers, "cluster is suspended", obs, now,
                                         cluster.update_strategy.drain_timeout_seconds,
                                         through_ray=any(p.alive for p in heads))
    actions += retired
    actions += drains_ahead(cluster, obs, now, {a.name for a in retired if isinstance(a, DrainWorker)})
    leaving = {a.name for a in retired if isinstance(a, DeletePod)}
    notes = [waiting_note("cluster is suspended (the head goes last)", waiting)] if waiting else []
    head_kept = ""
    if all(not p.alive or p.name in leaving for p in workers):
        for_jobs = _head_for_jobs(cluster, heads, obs, now)
        if for_jobs is None:
            return Plan(tuple(actions), dict(obs.health), obs.head_restarts, reads_head_jobs=True,
                        head_generation=current_generation(obs.head_generation, heads))
        if isinstance(for_jobs, HeadStays):
            notes.append(for_jobs.note)
            head_kept = for_jobs.why
            requeues.append(for_jobs.recheck)
        else:
            notes += [for_jobs.note] if for_jobs.note else []
            actions += [DeletePod(p.name, "cluster is suspended") for p in heads if not p.deleting]
    requeues += drain_recheck(actions)
    return Plan(tuple(actions), dict(obs.health), obs.head_restarts, requeue_after=min(requeues) if requeues else None,
                notes=tuple(notes), head_generation=current_generation(obs.head_generation, heads),
                head_kept=head_kept)


def _head_for_jobs(cluster: ClusterSpec, heads: list[PodState], obs: Observed, now: float
                   ) -> HeadStays | HeadGoes | None:
    """Whether the head stays for Ray jobs whose driver it may run; None: its Jobs API must be read first. Only a
    running head serving the Jobs API (its dashboard on) can run such a driver."""
    if not serves_jobs_api(cluster) or not any(p.alive and p.phase == "Running" for p in heads):
        return HeadGoes()
    if obs.head_jobs is None:
        return None
    return head_for_jobs(obs.head_jobs, obs.suspended_since or now, now,
                         cluster.update_strategy.drain_timeout_seconds)


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


def plan_cluster(cluster: ClusterSpec, obs: Observed, targets: Mapping[str, int], now: float,
                 held_by_kueue: str = "") -> Plan:
    """Everything to do for one cluster now. `targets` is the per-group target from status; `held_by_kueue` is why
    Kueue holds a queued cluster ("" when it does not; the cluster is then handed over as suspended)."""
    actions: list[Action] = _budget_actions(cluster, obs)
    pods = list(obs.pods)
    head_restarts = obs.head_restarts
    if cluster.suspend:
        return _plan_suspend(cluster, obs, actions, now, held_by_kueue)

    requeues: list[float] = []
    notes: list[Note] = []
    heads = [p for p in pods if p.node_type == labels.HEAD]
    workers = [p for p in pods if p.node_type == labels.WORKER]
    generation = current_generation(obs.head_generation, heads)

    head_dead = [p for p in heads if not p.deleting and p.failure is not None]
    head_disrupted = [p for p in heads if not p.deleting and p.disruption is not None]
    recycle_workers = False
    for p in head_dead:
        actions.append(DeletePod(p.name, f"head {p.name} failed ({p.failure}); replacing it", failed=True))
        head_restarts += 1
    actions += [DeletePod(p.name, f"{disruption_message(p)}; replacing it", disrupted=p.disruption)
                for p in head_disrupted]
    if (head_dead or head_disrupted) and cluster.fault_tolerance.gcs is None:
        recycle_workers = True
    live_heads = [p for p in heads if p.alive]
    head_backoff = _head_backoff(obs, head_dead, live_heads, now)
    requeues += [p.recheck_at - now for p in live_heads if p.recheck_at]
    if live_heads and cluster.update_strategy.type != "OnDelete" and live_heads[0].template_hash != head_hash(cluster):
        change = revision.describe_change(revision.changed_parts(live_heads[0].revision, revision.head_parts(cluster)))
        live_workers = sum(1 for p in workers if p.alive)
        consequence = (f"; without GCS fault tolerance its {live_workers} worker(s) are replaced too"
                       if cluster.fault_tolerance.gcs is None and live_workers else "")
        actions.append(DeletePod(live_heads[0].name, f"head {live_heads[0].name}: {change}; "
                                                     f"replacing the head{consequence}"))
        live_heads = []
        recycle_workers = recycle_workers or cluster.fault_tolerance.gcs is None
    if not live_heads and cluster.fault_tolerance.gcs is None and any(p.alive for p in workers):
        # The head is going or gone (deleted by someone, evicted): its GCS goes with it, and
        # workers cannot rejoin a new one. Replacing them now beats waiting for their raylets to give up.
        recycle_workers = True
    if not live_heads:
        start = next_head(heads, generation, now)  # every head pod left is failed, disrupted or being deleted
        if isinstance(start, WaitForHead):
            requeues.append(1.0)
            if start.overdue:
                notes.append((EventReason.HEAD_WAITING, start.reason))
        elif head_backoff is not None and head_backoff.revision == head_hash(cluster):
            requeues.append(head_backoff.until - now)
        else:
            actions.append(CreateHead(start.reason, start.generation))
            generation = start.generation
    if not obs.service_exists:
        actions.append(CreateService("head service missing", generation))

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
        retired, group_requeues, waiting = retire([p for p in workers if (p.group or "") == name], why, obs, now,
                                                   cluster.update_strategy.drain_timeout_seconds, through_ray=True)
        actions.extend(retired)
        requeues.extend(group_requeues)
        if waiting:
            notes.append(waiting_note(why, waiting))
    for g in cluster.worker_groups:
        group_pods = [p for p in workers if p.group == g.name]
        acts, h, group_requeues, group_notes = _plan_group(cluster, g, group_pods, desired[g.name],
                                                           health.get(g.name, GroupHealth()), now, obs, head_coming)
        actions.extend(acts)
        health[g.name] = h
        requeues.extend(group_requeues)
        notes.extend(group_notes)
    leaving = {a.name for a in actions if isinstance(a, DeletePod)}
    actions.extend(drains_ahead(cluster, obs, now, {a.name for a in actions if isinstance(a, DrainWorker)}))
    actions.extend(_metadata_patches(cluster, pods, leaving))
    requeues += drain_recheck(actions)
    return Plan(tuple(actions), health, head_restarts, head_backoff, min(requeues) if requeues else None,
                tuple(notes), generation)


def _head_backoff(obs: Observed, dead: list[PodState], live: list[PodState], now: float) -> HeadBackoff | None:
    """The crash-loop backoff after this turn: started by a head failed again, ended by a ready head or by time."""
    if dead:
        delay = head_backoff_delay(obs.head_failures + len(dead))
        return HeadBackoff(now + delay, dead[-1].template_hash) if delay else None
    if any(p.ready for p in live) or (obs.head_backoff is not None and obs.head_backoff.until <= now):
        return None
    return obs.head_backoff
