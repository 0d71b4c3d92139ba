"""Taking workers down without losing Ray's work: the order (no Ray work, idle, then busy), busy workers drained by
Ray rather than deleted, drained pods removed once their node dies or the deadline passes, and drains ahead of a
disruption. Used by every path that removes workers: a scale-down, suspend, a removed group, a rollout. Pure."""

from __future__ import annotations

from enum import Enum

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import Action, DeletePod, DrainWorker, Note
from swarm_operator.reconcile.observe import Observed, PodState
from swarm_operator.resources import labels
from swarm_operator.spec.types import ClusterSpec

# While a drained node has not died yet, Ray's state is read again this often (its death is what frees the pod).
DRAIN_POLL_SECONDS = 3.0
# A ready worker to replace or remove waits while Ray's state is unknown (busy or idle cannot be told); retried
# this often.
RAY_STATE_RETRY_SECONDS = 5.0


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


def rollout_order(pods: list[PodState], obs: Observed) -> list[PodState]:
    """Idle workers and ones with no Ray node first (replacing them costs no work), then not ready, then oldest."""
    return sorted(pods, key=lambda p: (ray_work(p, obs) is RayWork.BUSY, p.ready, p.created, p.name))


def take_down(pods: list[PodState], count: int, obs: Observed, why: str, drain_timeout: int,
               ray_nodes_allowed: int | None = None) -> tuple[list[Action], int]:
    """`count` of `pods` removed, the cheapest first: pods that are no Ray node are deleted; Ray nodes are drained,
    never deleted on Ray's word alone: idle ones with IDLE_TERMINATION (the raylet re-checks), busy ones with
    PREEMPTION and `drain_timeout`. At most `ray_nodes_allowed`
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
        elif work is RayWork.IDLE:
            actions.append(DrainWorker(p.name, f"{why} ({p.name} idle in Ray)", drain_timeout, idle=True))
        else:
            state = "not ready" if not p.ready else "not a Ray node"
            actions.append(DeletePod(p.name, f"{why} ({p.name} {state})"))
    return actions, waiting


def drained_deletions(pods: list[PodState], obs: Observed, now: float, drain_timeout: int
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


def waiting_note(who: str, waiting: int) -> Note:
    return (EventReason.SCALE_DOWN_WAITING,
            f"{who}: {waiting} ready worker(s) to remove wait for Ray's state (busy workers are drained, never "
            "deleted; Ray's state is unknown)")


def node_going(p: PodState, cluster: ClusterSpec) -> str | None:
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
    return node_going(p, cluster)


def drains_ahead(cluster: ClusterSpec, obs: Observed, now: float, planned: set[str]) -> list[Action]:
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


def retire(pods: list[PodState], why: str, obs: Observed, now: float, drain_timeout: int,
            through_ray: bool) -> tuple[list[Action], list[float], int]:
    """Every one of `pods` goes (suspend, its group removed), none replaced: ended pods are deleted, drained ones
    once their node dies, the rest taken down as in a scale-down to zero; with no head to drain through
    (`through_ray` false), deleted. Returns the actions, when to look again, and how many wait for Ray's state."""
    actions, _, requeues = drained_deletions(pods, obs, now, drain_timeout)
    rest = [p for p in pods if not p.deleting and not p.drained]
    ended = [p for p in rest if not p.alive or p.name in obs.ray_dead]
    actions += [DeletePod(p.name, why) for p in ended]
    staying = [p for p in rest if p not in ended]
    if not through_ray:
        return actions + [DeletePod(p.name, f"{why} (no head to drain its Ray node through)") for p in staying], \
            requeues, 0
    taken, waiting = take_down(staying, len(staying), obs, why, drain_timeout)
    if waiting:
        requeues.append(RAY_STATE_RETRY_SECONDS)
    return actions + taken, requeues, waiting
