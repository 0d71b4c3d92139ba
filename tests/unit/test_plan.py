"""plan_cluster / desired_replicas: what to create, what to delete, and why."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pytest

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import (
    Action,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeletePod,
    DrainWorker,
    PatchPod,
)
from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff
from swarm_operator.reconcile.disruption import DISRUPTION_TARGET, NodeState
from swarm_operator.reconcile.observe import Observed, PodState, observe_pod
from swarm_operator.reconcile.plan import Plan, desired_replicas, needs_ray_state, plan_cluster
from swarm_operator.reconcile.retire import DRAIN_POLL_SECONDS, RAY_STATE_RETRY_SECONDS
from swarm_operator.reconcile.suspend import JOBS_POLL_SECONDS, HeadJobs, JobsUnreadable
from swarm_operator.resources import labels, revision
from swarm_operator.resources.pods import head_hash
from swarm_operator.spec.types import ClusterSpec
from tests.unit.operator_fixtures import NOW, cluster, group, head, iso, worker, worker_pod, workers

GCS = {"faultTolerance": {"gcs": {"redisAddress": "redis:6379"}}}
AUTO = {"autoscaling": {"enabled": True}}
NO_BACKOFF = {"faultTolerance": {"workerBackoffInitialSeconds": 0}}
HEAD_BUDGET = {"demo-head-pdb": "pdb-uid"}  # the head's PodDisruptionBudget exists (tests/unit/test_budget.py)


def run(c: ClusterSpec, pods: list[PodState], *, service: bool = True, health: Mapping[str, GroupHealth] | None = None,
        targets: Mapping[str, int] | None = None, idle: frozenset[str] | None = None, head_restarts: int = 0,
        ray_nodes: frozenset[str] | None = None, ray_dead: frozenset[str] = frozenset(),
        deleted_by_operator: frozenset[str] = frozenset(), held_by_kueue: str = "",
        head_jobs: HeadJobs | None = (), suspended_since: float = 0.0) -> Plan:
    """The plan for `pods`; a suspended cluster's head runs no Ray job unless `head_jobs` says otherwise."""
    obs = Observed(pods=tuple(pods), service_exists=service, health=dict(health or {}),
                   head_restarts=head_restarts, idle_pods=idle, ray_nodes=ray_nodes, ray_dead=ray_dead,
                   budgets=HEAD_BUDGET, deleted_by_operator=deleted_by_operator, head_jobs=head_jobs,
                   suspended_since=suspended_since)
    return plan_cluster(c, obs, dict(targets or {}), NOW, held_by_kueue)


def describe(a: Action) -> tuple[Any, ...]:
    if isinstance(a, CreateService):
        return ("service",)
    if isinstance(a, CreateHead):
        return ("head",)
    if isinstance(a, CreateWorkers):
        return ("create", a.group, a.count)
    assert isinstance(a, DeletePod)
    return ("replace", a.name, a.failed_group) if a.failed_group else ("delete", a.name)


def summary(p: Plan) -> list[tuple[Any, ...]]:
    return sorted((describe(a) for a in p.actions), key=repr)


def same(p: Plan, expected: list[tuple[Any, ...]]) -> bool:
    """The plan's actions, in any order, are exactly `expected`."""
    return summary(p) == sorted(expected, key=repr)


def w(i: int, group_name: str = "cpu") -> str:
    return f"demo-{group_name}-w{i:04d}"


C = cluster()
C_GCS = cluster(GCS)
C3 = cluster(groups=[group("cpu", 3)])
TWO_GROUPS = cluster(groups=[group("cpu", 2), group("gpu", 1, gpu=1)])
# The same cluster before a change to the worker group's pod template (the head is untouched).
C3_OLD = cluster(groups=[group("cpu", 3, rayStartParams={"object-store-memory": "100000000"})])


def healthy(c: ClusterSpec, n: int = 2) -> list[PodState]:
    return [head(c), *workers(c, n)]


# -- creation: service, head, worker counts -----------------------------------------------------

CREATE_CASES = [
    pytest.param(C, [], False, [("create", "cpu", 2), ("head",), ("service",)], id="new-cluster-everything"),
    pytest.param(C, healthy(C), True, [], id="converged-nothing-to-do"),
    pytest.param(C, healthy(C), False, [("service",)], id="service-missing"),
    # Without GCS fault tolerance, workers of a head that is gone cannot rejoin: recycled, new ones with the head.
    pytest.param(C, workers(C, 2), True, [("head",), ("delete", w(0)), ("delete", w(1)), ("create", "cpu", 2)],
                 id="head-missing"),
    pytest.param(C_GCS, workers(C_GCS, 2), True, [("head",)], id="head-missing-gcs-ft-keeps-workers"),
    pytest.param(C, healthy(C, 1), True, [("create", "cpu", 1)], id="one-worker-missing"),
    pytest.param(C, [head(C), *workers(C, 1), worker(C, suffix="gone1", deleting=True)], True,
                 [("create", "cpu", 1)], id="deleting-worker-does-not-count"),
    pytest.param(C, [head(C), *workers(C, 2, phase="Pending", ready=False, node=None)], True, [],
                 id="pending-workers-count"),
    pytest.param(TWO_GROUPS, [], True, [("create", "cpu", 2), ("create", "gpu", 1), ("head",)], id="two-groups"),
    pytest.param(TWO_GROUPS, [head(TWO_GROUPS), *workers(TWO_GROUPS, 2)], True, [("create", "gpu", 1)],
                 id="only-the-short-group"),
    pytest.param(cluster(groups=[group("cpu", None, lo=3)]), [head(C)], True, [("create", "cpu", 3)],
                 id="no-replicas-means-min"),
    pytest.param(cluster(groups=[group("cpu", 0)]), [head(C)], True, [], id="zero-replicas"),
    pytest.param(cluster(groups=[]), [head(C)], True, [], id="head-only-cluster"),
]


@pytest.mark.parametrize(("c", "pods", "service", "expected"), CREATE_CASES)
def test_creation(c: ClusterSpec, pods: list[PodState], service: bool, expected: list[tuple[Any, ...]]) -> None:
    p = run(c, pods, service=service)
    assert same(p, expected)
    assert p.requeue_after is None


def test_create_reasons_name_the_gap() -> None:
    p = run(C, [head(C), *workers(C, 1)])
    assert p.actions == (CreateWorkers("cpu", 1, "group cpu has 1 of 2 workers"),)


# -- failed workers: replaced, with backoff ------------------------------------------------------

FAILED = {"phase": "Failed", "ready": False, "reason": "Error", "message": "low on memory"}
RECENT_FAILURES = GroupHealth(restarts=3, consecutive_failures=3, last_failure=NOW - 5, backoff_until=NOW - 1)


@pytest.mark.parametrize(
    ("c", "pods", "health", "expected", "requeue", "health_after"),
    [
        pytest.param(C, [head(C), *workers(C, 1), worker(C, suffix="dead1", **FAILED)], None,
                     [("replace", "demo-cpu-dead1", "cpu")], 1.0, GroupHealth(1, 1, NOW, NOW + 1),
                     id="first-failure-deleted-replacement-after-1s"),
        pytest.param(cluster(NO_BACKOFF), [head(C), *workers(C, 1), worker(C, suffix="dead1", **FAILED)], None,
                     [("create", "cpu", 1), ("replace", "demo-cpu-dead1", "cpu")], None,
                     GroupHealth(1, 1, NOW, NOW), id="no-backoff-replaced-at-once"),
        pytest.param(C, [head(C), *workers(C, 1), worker(C, suffix="dead1", ready=False, terminated=("Error", 1))],
                     None, [("replace", "demo-cpu-dead1", "cpu")], 1.0, GroupHealth(1, 1, NOW, NOW + 1),
                     id="ray-container-ended"),
        pytest.param(C, [head(C), *workers(C, 1), worker(C, suffix="done1", phase="Succeeded", ready=False)], None,
                     [("replace", "demo-cpu-done1", "cpu")], 1.0, GroupHealth(1, 1, NOW, NOW + 1),
                     id="drained-node-exited-0"),
        pytest.param(C, [head(C), *workers(C, 1), worker(C, suffix="dead1", deleting=True, **FAILED)],
                     None, [("create", "cpu", 1)], None, GroupHealth(), id="failed-and-deleting-counted-once"),
        pytest.param(C, [head(C), *workers(C, 1), worker(C, suffix="dead1", **FAILED)], {"cpu": RECENT_FAILURES},
                     [("replace", "demo-cpu-dead1", "cpu")], 8.0, GroupHealth(4, 4, NOW, NOW + 8),
                     id="crash-loop-doubles"),
        pytest.param(C, [head(C), *workers(C, 1)], {"cpu": GroupHealth(1, 1, NOW - 2, NOW + 30)}, [], 30.0,
                     GroupHealth(1, 1, NOW - 2, NOW + 30), id="backoff-holds-the-replacement"),
        pytest.param(C, [head(C), *workers(C, 1)], {"cpu": GroupHealth(1, 1, NOW - 2, NOW - 1)},
                     [("create", "cpu", 1)], None, GroupHealth(1, 1, NOW - 2, NOW - 1), id="backoff-expired"),
        pytest.param(C, healthy(C), {"cpu": GroupHealth(4, 4, NOW - 601, NOW - 590)}, [], None,
                     GroupHealth(4, 0, NOW - 601, 0.0), id="healthy-period-settles-the-group"),
        pytest.param(C, [head(C), *workers(C, 2), worker(C, suffix="dead1", **FAILED)], None,
                     [("replace", "demo-cpu-dead1", "cpu")], None, GroupHealth(1, 1, NOW, NOW + 1),
                     id="failed-surplus-not-replaced"),
    ],
)
def test_failed_workers(c: ClusterSpec, pods: list[PodState], health: dict[str, GroupHealth] | None,
                        expected: list[tuple[Any, ...]], requeue: float | None, health_after: GroupHealth) -> None:
    p = run(c, pods, health=health)
    assert same(p, expected)
    assert p.requeue_after == requeue
    assert p.health["cpu"] == health_after


def test_failed_worker_reason_carries_the_pod_failure() -> None:
    p = run(cluster(NO_BACKOFF), [head(C), worker(C, suffix="dead1", **FAILED), *workers(C, 1)])
    delete = next(a for a in p.actions if isinstance(a, DeletePod))
    create = next(a for a in p.actions if isinstance(a, CreateWorkers))
    assert delete.reason == "worker demo-cpu-dead1 of group cpu failed (pod Error: low on memory)"
    assert create.reason == "group cpu has 1 of 2 workers (replacing 1 failed)"


def test_backoff_is_per_group() -> None:
    c = cluster(groups=[group("cpu", 1), group("gpu", 1, gpu=1)])
    p = run(c, [head(c)], health={"cpu": GroupHealth(1, 1, NOW - 1, NOW + 10)})
    assert same(p, [("create", "gpu", 1)])
    assert p.requeue_after == 10.0


# -- the head: failure, deletion in progress, template change ------------------------------------

HEAD_FAILED = {"phase": "Failed", "ready": False, "terminated": ("Error", 1)}


@pytest.mark.parametrize(
    ("c", "pods", "expected", "restarts"),
    [
        pytest.param(C, [head(C, **HEAD_FAILED), *workers(C, 2)],
                     [("delete", "demo-head"), ("delete", w(0)), ("delete", w(1))], 1,
                     id="failed-head-without-gcs-ft-recycles-workers"),
        pytest.param(C_GCS, [head(C_GCS, **HEAD_FAILED), *workers(C_GCS, 2)], [("delete", "demo-head")], 1,
                     id="failed-head-with-gcs-ft-keeps-workers"),
        pytest.param(C, [head(C, **HEAD_FAILED), *workers(C, 1), worker(C, suffix="going", deleting=True)],
                     [("delete", "demo-head"), ("delete", w(0))], 1,
                     id="recycling-skips-workers-already-deleting"),
        pytest.param(C, [head(C, deleting=True), *workers(C, 2)], [("delete", w(0)), ("delete", w(1))], 0,
                     id="head-deleting-blocks-new-head-and-recycles-workers"),
        pytest.param(C_GCS, [head(C_GCS, deleting=True), *workers(C_GCS, 2)], [], 0,
                     id="head-deleting-with-gcs-ft-keeps-workers"),
        pytest.param(C, [head(C, deleting=True, **HEAD_FAILED), *workers(C, 2)], [("delete", w(0)), ("delete", w(1))],
                     0, id="failed-head-already-deleting-not-counted-again"),
        pytest.param(cluster({"head": {"resources": {"cpu": "2", "memory": "2Gi"}}}), [head(C), *workers(C, 2)],
                     [("delete", "demo-head"), ("delete", w(0)), ("delete", w(1))], 0,
                     id="head-template-changed-no-new-head-in-the-same-turn"),
    ],
)
def test_head_replacement(c: ClusterSpec, pods: list[PodState], expected: list[tuple[Any, ...]],
                          restarts: int) -> None:
    p = run(c, pods, head_restarts=0)
    assert same(p, expected)
    assert p.head_restarts == restarts
    # The head's name is fixed: a new one can be created only once the old pod is gone.
    assert not any(isinstance(a, CreateHead) for a in p.actions)
    assert p.requeue_after == 1.0


def test_head_failure_reason_and_restart_count_accumulate() -> None:
    p = run(C_GCS, [head(C_GCS, **HEAD_FAILED), *workers(C_GCS, 2)], head_restarts=4)
    assert p.head_restarts == 5
    assert p.actions == (DeletePod("demo-head", "head demo-head failed (pod Failed: Ray container ended "
                                                "(Error, exit code 1)); replacing it", failed=True),)


C_HASH = head_hash(C)
# The head's template changed since the head that failed: the backoff was for another template.
C_FIXED = cluster({"head": {"resources": {"cpu": "2", "memory": "2Gi"}}})


@pytest.mark.parametrize(
    "c, pods, failures, before, after, creates",
    [
        pytest.param(C, [head(C, **HEAD_FAILED)], 0, None, None, False, id="first-failure-replaced-at-once"),
        pytest.param(C, [head(C, **HEAD_FAILED)], 1, None, HeadBackoff(NOW + 10, C_HASH), False,
                     id="second-in-a-row-waits-10s"),
        pytest.param(C, [head(C, **HEAD_FAILED)], 3, None, HeadBackoff(NOW + 40, C_HASH), False,
                     id="fourth-in-a-row-waits-40s"),
        pytest.param(C, [head(C, **HEAD_FAILED)], 50, None, HeadBackoff(NOW + 300, C_HASH), False,
                     id="capped-at-5-minutes"),
        pytest.param(C, [], 2, HeadBackoff(NOW + 7, C_HASH), HeadBackoff(NOW + 7, C_HASH), False,
                     id="no-head-while-the-backoff-runs"),
        pytest.param(C, [], 2, HeadBackoff(NOW, C_HASH), None, True, id="backoff-over-head-made"),
        pytest.param(C_FIXED, [], 2, HeadBackoff(NOW + 7, C_HASH), HeadBackoff(NOW + 7, C_HASH), True,
                     id="changed-template-starts-at-once"),
        pytest.param(C, [head(C)], 2, HeadBackoff(NOW + 7, C_HASH), None, False, id="ready-head-ends-it"),
    ],
)
def test_a_crash_looping_head_backs_off(c: ClusterSpec, pods: list[PodState], failures: int,
                                       before: HeadBackoff | None, after: HeadBackoff | None, creates: bool) -> None:
    obs = Observed(pods=tuple(pods), service_exists=True, health={}, head_failures=failures, head_backoff=before,
                   budgets=HEAD_BUDGET)
    p = plan_cluster(c, obs, {}, NOW)
    assert p.head_backoff == after
    assert any(isinstance(a, CreateHead) for a in p.actions) == creates
    if before and after and not creates:
        assert p.requeue_after == pytest.approx(after.until - NOW)


def test_suspend_ends_a_heads_backoff() -> None:
    obs = Observed(pods=(), service_exists=True, health={}, head_failures=3,
                   head_backoff=HeadBackoff(NOW + 60, C_HASH), budgets=HEAD_BUDGET)
    assert plan_cluster(cluster({"suspend": True}), obs, {}, NOW).head_backoff is None


def test_a_head_that_could_not_start_is_replaced_with_the_runtimes_words() -> None:
    """The reason becomes the Warning Event "Replacing": container reason, exit code and its message."""
    why = 'unable to start container process: exec: "ray": executable file not found in $PATH'
    p = run(C_GCS, [head(C_GCS, phase="Failed", ready=False, terminated=("StartError", 128, why))])
    assert p.actions == (DeletePod("demo-head", f"head demo-head failed (pod Failed: Ray container ended (StartError, "
                                                f"exit code 128): {why}); replacing it", failed=True),)


def test_recycled_workers_say_why() -> None:
    p = run(C, [head(C, **HEAD_FAILED), *workers(C, 1)])
    reasons = {a.name: a.reason for a in p.actions if isinstance(a, DeletePod)}
    assert reasons[w(0)] == "head replaced without GCS fault tolerance; workers cannot rejoin a new GCS"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, [("delete", "demo-head"), ("delete", w(0)), ("delete", w(1))],
                     id="without-gcs-ft-workers-recycled"),
        pytest.param(GCS, [("delete", "demo-head")], id="with-gcs-ft-workers-kept"),
        pytest.param({"updateStrategy": {"type": "OnDelete"}}, [], id="on-delete-leaves-the-head"),
    ],
)
def test_head_template_change(spec: dict[str, Any], expected: list[tuple[Any, ...]]) -> None:
    old = cluster(spec)
    head_spec = {"resources": {"cpu": "1", "memory": "2Gi"}, "rayStartParams": {"object-store-memory": "200000000"}}
    new = cluster({**spec, "head": head_spec})
    p = run(new, [head(old), *workers(new, 2)])
    assert same(p, expected)
    assert p.head_restarts == 0, "a template change is not a failure"
    heads = [a for a in p.actions if isinstance(a, DeletePod) and a.name == "demo-head"]
    consequence = "; without GCS fault tolerance its 2 worker(s) are replaced too" if not spec else ""
    assert all(a.reason == f"head demo-head: rayStartParams changed; replacing the head{consequence}" for a in heads)


# -- scaling by spec (autoscaling off) ------------------------------------------------------------


def test_scale_up_by_spec() -> None:
    c = cluster(groups=[group("cpu", 5)])
    assert same(run(c, healthy(c, 2)), [("create", "cpu", 3)])


# -- autoscaling on: targets from status, only not-ready excess removed ---------------------------

AUTO_C = cluster({**AUTO}, groups=[group("cpu", 2, lo=1, hi=4)])


@pytest.mark.parametrize(
    ("pods", "targets", "expected"),
    [
        pytest.param(workers(AUTO_C, 2), {"cpu": 3}, [("create", "cpu", 1)], id="status-target-wins-over-spec"),
        pytest.param(workers(AUTO_C, 2), {"cpu": 9}, [("create", "cpu", 2)], id="target-clamped-to-max"),
        pytest.param(workers(AUTO_C, 0), {"cpu": 0}, [("create", "cpu", 1)], id="target-clamped-to-min"),
        pytest.param(workers(AUTO_C, 2), {}, [], id="no-target-yet-spec-replicas"),
        pytest.param(workers(AUTO_C, 3), {"cpu": 1}, [], id="ready-excess-left-to-the-autoscaler-drain"),
        pytest.param([*workers(AUTO_C, 2), worker(AUTO_C, suffix="new01", phase="Pending", ready=False)],
                     {"cpu": 1}, [("delete", "demo-cpu-new01")], id="not-ready-excess-removed"),
        pytest.param([worker(AUTO_C, suffix=f"new0{i}", phase="Pending", ready=False, created=NOW - 100 + i)
                      for i in range(4)],
                     {"cpu": 2}, [("delete", "demo-cpu-new02"), ("delete", "demo-cpu-new03")],
                     id="only-as-many-as-the-excess"),
    ],
)
def test_autoscaling(pods: list[PodState], targets: dict[str, int], expected: list[tuple[Any, ...]]) -> None:
    assert same(run(AUTO_C, [head(AUTO_C), *pods], targets=targets), expected)


# A worker joins Ray, and gets tasks, before its readiness probe first passes.
JOINING = worker(AUTO_C, suffix="join1", ready=False)


@pytest.mark.parametrize(
    ("ray_nodes", "expected"),
    [
        pytest.param(None, [], id="running-not-ready-kept-while-ray-state-unknown"),
        pytest.param(frozenset({"demo-cpu-w0000", "demo-cpu-w0001", "demo-cpu-join1"}), [],
                     id="running-not-ready-ray-node-kept"),
        pytest.param(frozenset({"demo-cpu-w0000", "demo-cpu-w0001"}), [("delete", "demo-cpu-join1")],
                     id="running-not-ready-not-yet-in-ray-removed"),
    ],
)
def test_autoscaling_never_removes_a_ray_node_by_spec(ray_nodes: frozenset[str] | None,
                                                      expected: list[tuple[Any, ...]]) -> None:
    pods = [head(AUTO_C), *workers(AUTO_C, 2), JOINING]
    idle = None if ray_nodes is None else frozenset[str]()  # every Ray node busy
    assert same(run(AUTO_C, pods, targets={"cpu": 2}, ray_nodes=ray_nodes, idle=idle), expected)


def test_spec_replicas_rule_when_autoscaling_off() -> None:
    c = cluster(groups=[group("cpu", 2, lo=1, hi=4)])
    assert same(run(c, [head(c), *workers(c, 2)], targets={"cpu": 4}), [])


@pytest.mark.parametrize(
    ("spec", "groups", "targets", "expected"),
    [
        pytest.param({}, [group("cpu", 2)], {"cpu": 7}, {"cpu": 2}, id="off-spec-wins"),
        pytest.param(AUTO, [group("cpu", 2)], {"cpu": 7}, {"cpu": 7}, id="on-status-wins"),
        pytest.param(AUTO, [group("cpu", 2, lo=1, hi=4)], {"cpu": 9}, {"cpu": 4}, id="on-clamped-max"),
        pytest.param(AUTO, [group("cpu", 2, lo=1, hi=4)], {"cpu": 0}, {"cpu": 1}, id="on-clamped-min"),
        pytest.param(AUTO, [group("cpu", 2)], {}, {"cpu": 2}, id="on-no-target-uses-spec"),
        pytest.param(AUTO, [group("cpu", None, lo=3)], {}, {"cpu": 3}, id="on-no-target-no-replicas-uses-min"),
        pytest.param(AUTO, [group("cpu", 2), group("gpu", 0, gpu=1)], {"gpu": 5, "gone": 3},
                     {"cpu": 2, "gpu": 5}, id="per-group-unknown-targets-ignored"),
        pytest.param({}, [group("cpu", None, lo=2)], {}, {"cpu": 2}, id="off-no-replicas-uses-min"),
    ],
)
def test_desired_replicas(spec: dict[str, Any], groups: list[dict[str, Any]], targets: dict[str, int],
                          expected: dict[str, int]) -> None:
    assert desired_replicas(cluster(spec, groups=groups), targets) == expected


# -- rolling updates of the worker template ------------------------------------------------------


IDLE, BUSY = "idle", "busy"


def ray_of(states: Mapping[str, str] | None) -> dict[str, Any]:
    """Ray's view for `run`: pod -> idle or busy; a pod not named is no Ray node. None: Ray's state unknown."""
    if states is None:
        return {"idle": None, "ray_nodes": None}
    return {"idle": frozenset(n for n, s in states.items() if s == IDLE), "ray_nodes": frozenset(states)}


def all_(state: str, n: int = 3) -> dict[str, str]:
    return {w(i): state for i in range(n)}


def describe_rollout(a: Action) -> tuple[str, str]:
    assert isinstance(a, DeletePod | DrainWorker), a
    if isinstance(a, DrainWorker):
        return ("drain-idle" if a.idle else "drain", a.name)
    return ("delete", a.name)


def rollout(strategy: dict[str, Any], old_pods: list[PodState], new_pods: list[PodState] | None = None,
            ray: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    c = cluster({"updateStrategy": strategy}, groups=[group("cpu", 3)])
    p = run(c, [head(c), *old_pods, *(new_pods or [])], **ray_of(ray))
    assert not any(isinstance(a, CreateWorkers) for a in p.actions)
    return sorted(describe_rollout(a) for a in p.actions if isinstance(a, DeletePod | DrainWorker))


def rollout_drained(suffix: str, c: ClusterSpec = C3_OLD, at: float = NOW - 10, **state: Any) -> PodState:
    """An outdated worker whose Ray node a rollout drained `NOW - at` seconds ago."""
    raw = worker_pod(c, "cpu", suffix, created=NOW - 3600, **state)
    raw["metadata"].setdefault("annotations", {})[labels.DRAINED] = iso(at)
    return observe_pod(raw)


OLD3 = workers(C3_OLD, 3)
STUCK = worker(C3_OLD, suffix="stuck", phase="Pending", ready=False)


@pytest.mark.parametrize(
    ("strategy", "old", "new", "ray", "expected"),
    [
        pytest.param({}, OLD3, [], all_(IDLE), [("drain-idle", w(0))], id="idle-one-at-a-time-oldest-first"),
        pytest.param({"maxUnavailable": 2}, OLD3, [], all_(IDLE), [("drain-idle", w(0)), ("drain-idle", w(1))],
                     id="max-unavailable-2"),
        pytest.param({"maxUnavailable": 5}, OLD3, [], all_(IDLE), [("drain-idle", w(i)) for i in range(3)],
                     id="budget-larger-than-outdated"),
        pytest.param({}, workers(C3_OLD, 2), [worker(C3, suffix="fresh", ready=False)], all_(IDLE, 2), [],
                     id="waits-while-a-new-pod-is-not-ready"),
        pytest.param({}, workers(C3_OLD, 2), [worker(C3, suffix="fresh")], all_(IDLE, 2), [("drain-idle", w(0))],
                     id="continues-once-it-is-ready"),
        pytest.param({}, workers(C3, 3), [], all_(BUSY), [], id="up-to-date-nothing"),
        pytest.param({}, [*workers(C3_OLD, 2), STUCK], [], all_(IDLE, 2), [("delete", STUCK.name)],
                     id="not-ready-outdated-first"),
        pytest.param({}, workers(C3_OLD, 3, phase="Pending", ready=False, node=None), [], None,
                     [("delete", w(i)) for i in range(3)], id="unschedulable-old-template-does-not-block-the-fix"),
        # Busy workers: drained through Ray, never deleted; idle ones go first.
        pytest.param({}, OLD3, [], all_(BUSY), [("drain", w(0))], id="busy-drained-not-deleted"),
        pytest.param({}, OLD3, [], {**all_(BUSY), w(2): IDLE}, [("drain-idle", w(2))], id="idle-before-busy"),
        pytest.param({"maxUnavailable": 2}, OLD3, [], {**all_(BUSY), w(2): IDLE},
                     [("drain-idle", w(2)), ("drain", w(0))], id="idle-then-oldest-busy-drained"),
        pytest.param({"type": "IdleFirst"}, OLD3, [], {**all_(BUSY), w(2): IDLE}, [("drain-idle", w(2))],
                     id="idle-first-same-rules"),
        pytest.param({}, OLD3, [], {w(1): BUSY, w(2): BUSY}, [("delete", w(0))],
                     id="not-a-ray-node-yet-replaced-directly-first"),
        pytest.param({}, [worker(C3_OLD, suffix="w0000", ready=False), *OLD3[1:]], [], all_(BUSY),
                     [("drain", w(0))], id="busy-not-ready-still-drained"),
        # Ray's state unknown: ready workers wait (they may be running tasks); not-ready ones go.
        pytest.param({}, OLD3, [], None, [], id="unknown-ready-workers-wait"),
        pytest.param({"maxUnavailable": 3}, [*workers(C3_OLD, 2), STUCK], [], None, [("delete", STUCK.name)],
                     id="unknown-not-ready-replaced"),
        # A drained worker still running counts against maxUnavailable and is not drained again.
        pytest.param({}, [rollout_drained("w0000"), *OLD3[1:]], [], all_(BUSY), [], id="draining-uses-the-budget"),
        pytest.param({"maxUnavailable": 2}, [rollout_drained("w0000"), *OLD3[1:]], [], all_(BUSY),
                     [("drain", w(1))], id="draining-then-the-next"),
        pytest.param({"type": "OnDelete"}, OLD3, [], all_(IDLE), [], id="on-delete-never-deletes"),
    ],
)
def test_rolling_update(strategy: dict[str, Any], old: list[PodState], new: list[PodState],
                        ray: Mapping[str, str] | None, expected: list[tuple[str, str]]) -> None:
    assert rollout(strategy, old, new, ray) == sorted(expected)


def test_a_busy_worker_is_drained_with_the_deadline_and_a_reason() -> None:
    c = cluster({"updateStrategy": {"drainTimeoutSeconds": 120}}, groups=[group("cpu", 3)])
    p = run(c, [head(c), *OLD3], **ray_of(all_(BUSY)))
    assert p.actions == (DrainWorker(w(0), f"worker {w(0)} of group cpu: rayStartParams changed; rolling update "
                                                "(Rolling); it runs Ray tasks: draining it first", 120),)
    assert p.notes == ()


def test_ready_workers_waiting_for_ray_state_say_so_and_retry() -> None:
    p = run(C3, [head(C3), *OLD3])
    assert p.actions == ()
    assert p.notes == ((EventReason.ROLLOUT_WAITING, "group cpu: 3 ready outdated worker(s) wait for Ray's state "
                        "(busy workers are drained, never deleted; Ray's state is unknown)"),)
    assert p.requeue_after == RAY_STATE_RETRY_SECONDS


@pytest.mark.parametrize(
    ("drained_ago", "timeout", "deleted", "requeue"),
    [
        pytest.param(10, 600, False, DRAIN_POLL_SECONDS, id="within-the-deadline-polls-ray"),
        pytest.param(599, 600, False, 1.0, id="just-before-the-deadline-wakes-at-it"),
        pytest.param(600, 600, True, None, id="at-the-deadline-deleted"),
        pytest.param(30, 20, True, None, id="past-a-short-deadline-deleted"),
    ],
)
def test_a_drain_past_its_deadline_is_ended_by_deleting_the_pod(drained_ago: float, timeout: int, deleted: bool,
                                                                requeue: float | None) -> None:
    c = cluster({"updateStrategy": {"drainTimeoutSeconds": timeout}}, groups=[group("cpu", 3)])
    old = cluster({"updateStrategy": {"drainTimeoutSeconds": timeout}},
                  groups=[group("cpu", 3, rayStartParams={"object-store-memory": "100000000"})])
    pods = [head(c), rollout_drained("w0000", old, at=NOW - drained_ago), *workers(c, 3)[1:]]
    p = run(c, pods, **ray_of(all_(BUSY)))
    if deleted:
        assert same(p, [("delete", w(0)), ("create", "cpu", 1)])
        assert "drainTimeoutSeconds" in next(a.reason for a in p.actions if isinstance(a, DeletePod))
    else:
        assert same(p, [])
    assert p.requeue_after == requeue


@pytest.mark.parametrize(
    ("spec", "pods", "targets", "expected"),
    [
        pytest.param({}, workers(C3, 3), {}, False, id="up-to-date"),
        pytest.param({}, [*workers(C3, 2), worker(C3_OLD, suffix="old")], {}, True, id="one-outdated"),
        pytest.param({}, [*workers(C3, 2), worker(C3_OLD, suffix="old", deleting=True, **FAILED)], {}, False,
                     id="outdated-but-leaving"),
        # A running worker being deleted may be someone else's deletion: its Ray node is drained ahead of it.
        pytest.param({}, [*workers(C3, 2), worker(C3, suffix="gone", deleting=True)], {}, True,
                     id="a-running-worker-deleted"),
        pytest.param({}, [*workers(C3, 2), rollout_drained("old", C3)], {}, True, id="drained-waiting-to-die"),
        pytest.param({"updateStrategy": {"type": "OnDelete"}}, [worker(C3_OLD, suffix="old")], {}, False,
                     id="on-delete-outdated"),
        pytest.param({"updateStrategy": {"type": "OnDelete"}}, [rollout_drained("old", C3)], {}, True,
                     id="on-delete-drained"),
        pytest.param({}, [head(C3_OLD)], {}, False, id="head-only"),
        # Workers to remove: busy ones are drained, idle ones deleted, so Ray must say which is which.
        pytest.param({}, workers(C3, 4), {}, True, id="more-than-replicas"),
        pytest.param({}, [*workers(C3, 3), worker(TWO_GROUPS, "gpu", "g0000")], {}, True, id="a-group-removed"),
        pytest.param({"suspend": True}, [head(C3), *workers(C3, 1)], {}, True, id="suspended-with-workers"),
        pytest.param({"suspend": True}, [head(C3)], {}, False, id="suspended-head-only"),
        pytest.param(AUTO, workers(C3, 3), {"cpu": 2}, True, id="autoscaled-below-the-workers"),
        pytest.param(AUTO, workers(C3, 3), {"cpu": 3}, False, id="autoscaled-at-the-workers"),
        # A disruption to drain ahead of.
        pytest.param({}, [*workers(C3, 2), observe_pod(worker_pod(C3, "cpu", "going"),
                                                       NodeState("node-1", removal="Karpenter is disrupting it"))],
                     {}, True, id="a-node-going"),
        pytest.param({}, [*workers(C3, 2), observe_pod(worker_pod(C3, "cpu", "cordon"),
                                                       NodeState("node-1", cordoned=True))],
                     {}, False, id="a-plain-cordon"),
        pytest.param({"disruption": {"drainOnCordon": True}},
                     [*workers(C3, 2), observe_pod(worker_pod(C3, "cpu", "cordon"),
                                                   NodeState("node-1", cordoned=True))],
                     {}, True, id="a-cordon-with-drain-on-cordon"),
    ],
)
def test_needs_ray_state(spec: dict[str, Any], pods: list[PodState], targets: dict[str, int], expected: bool) -> None:
    c = cluster(spec, groups=[group("cpu", 3)])
    assert needs_ray_state(c, pods, targets) is expected


def test_rollout_waits_for_the_count_first() -> None:
    p = run(C3, [head(C3), *workers(C3_OLD, 2)])
    assert same(p, [("create", "cpu", 1)])


def test_rollout_reason_names_what_changed() -> None:
    p = run(C3, [head(C3), *workers(C3_OLD, 3)], **ray_of(all_(IDLE)))
    (action,) = p.actions
    assert isinstance(action, DrainWorker) and action.idle
    assert worker(C3).template_hash != worker(C3_OLD).template_hash
    assert action.reason == f"worker {w(0)} of group cpu: rayStartParams changed; rolling update (Rolling); idle in Ray"


def test_a_rollout_drain_is_looked_at_again_soon() -> None:
    """Ray's read said idle, but a task may have started since: the raylet then refuses the IDLE_TERMINATION drain,
    nothing is marked, and no pod event follows. The next turn must come anyway, to see the worker busy and replace
    the one that really is idle first (an e2e rollout stalled for its whole 40 s task without it)."""
    drains = run(C3, [head(C3), *workers(C3_OLD, 3)], **ray_of(all_(IDLE)))
    assert any(isinstance(a, DrainWorker) for a in drains.actions) and drains.requeue_after == DRAIN_POLL_SECONDS
    nothing = run(C3, [head(C3), *workers(C3, 3)], **ray_of(all_(IDLE)))
    assert nothing.actions == () and nothing.requeue_after is None


def test_a_pod_without_a_revision_record_is_replaced_saying_so() -> None:
    old = [dataclasses.replace(p, revision=None, template_hash="0123456789") for p in workers(C3, 3)]
    (action, *_) = run(C3, [head(C3), *old], **ray_of(all_(IDLE))).actions
    assert isinstance(action, DrainWorker) and action.idle
    assert "without a revision record, made by an older operator" in action.reason


# -- template metadata: patched in place, never a restart --------------------------------------------

def _with_meta(meta: dict[str, Any], where: str = "cpu") -> ClusterSpec:
    if where == "head":
        return cluster({"head": {"resources": {"cpu": "1", "memory": "2Gi"}, "template": {"metadata": meta}}})
    return cluster(groups=[group("cpu", 2, template={"metadata": meta})])


META_CASES = [
    pytest.param({}, {"labels": {"team": "ml"}}, "cpu", {"labels": {"team": "ml"}}, id="label-added"),
    pytest.param({"annotations": {"a": "1"}}, {"annotations": {"a": "2"}}, "cpu", {"annotations": {"a": "2"}},
                 id="annotation-changed"),
    pytest.param({"labels": {"team": "ml", "tier": "x"}}, {"labels": {"team": "ml"}}, "cpu",
                 {"labels": {"tier": None}}, id="label-removed-because-the-template-set-it"),
    pytest.param({}, {"labels": {"swarm.io/cluster": "evil", "app.kubernetes.io/name": "x", "team": "a"}}, "cpu",
                 {"labels": {"team": "a"}}, id="the-operators-labels-are-never-patched"),
    pytest.param({}, {"annotations": {"prometheus.io/scrape": "true"}}, "head",
                 {"annotations": {"prometheus.io/scrape": "true"}}, id="head-annotation-added"),
]


@pytest.mark.parametrize(("before", "after", "where", "changes"), META_CASES)
def test_template_metadata_is_patched_in_place(before: dict[str, Any], after: dict[str, Any], where: str,
                                               changes: dict[str, Any]) -> None:
    old, new = _with_meta(before, where), _with_meta(after, where)
    pods = [head(old), *workers(old, 2)]
    p = run(new, pods)
    assert not [a for a in p.actions if not isinstance(a, PatchPod)], "no pod is replaced or created"
    patched = {a.name: dict(a.patch["metadata"]) for a in p.actions if isinstance(a, PatchPod)}
    assert set(patched) == ({"demo-head"} if where == "head" else {w(0), w(1)})
    for meta in patched.values():
        record = json.loads(meta["annotations"].pop("swarm.io/template-metadata"))
        assert record == revision.metadata_record({"metadata": after})
        assert {k: v for k, v in meta.items() if v} == changes
    # A pod patched as planned plans nothing more.
    done = [observe_pod(worker_pod(new, "cpu", f"w{i:04d}")) for i in range(2)]
    assert run(new, [head(new), *done]).actions == ()


def test_a_hand_added_label_is_left_alone() -> None:
    new = _with_meta({"labels": {"team": "ml"}})
    pods = [head(new), *workers(new, 2)]
    assert run(new, pods).actions == ()  # the record says the template never set anything else


# -- requeue ------------------------------------------------------------


def test_requeue_is_the_earliest_wait() -> None:
    p = run(C_GCS, [head(C_GCS, deleting=True), *workers(C_GCS, 1)],
            health={"cpu": GroupHealth(1, 1, NOW - 1, NOW + 20)})
    assert p.actions == ()
    assert p.requeue_after == 1.0


def test_plan_keeps_other_groups_health_and_adds_missing() -> None:
    other = GroupHealth(9, 0, NOW - 9999, 0.0)
    p = run(C, healthy(C), health={"old": other})
    assert p.health == {"old": other, "cpu": GroupHealth()}


# -- Ray's view: workers whose Ray node is DEAD, and pods the autoscaler drained ------------------
# (Observed.ray_dead and PodState.drained; a drained pod's end is planned, never a failure.)

RD = cluster(AUTO, groups=[group("cpu", 2, lo=0, hi=4)])
RD_NO_BACKOFF = cluster({**AUTO, **NO_BACKOFF}, groups=[group("cpu", 2, lo=0, hi=4)])
SUCCEEDED = {"phase": "Succeeded", "ready": False, "terminated": ("Completed", 0)}


def drained_worker(c: ClusterSpec, suffix: str, **state: Any) -> PodState:
    """A worker whose Ray node the autoscaler drained: the pod carries swarm.io/drained-at."""
    raw = worker_pod(c, "cpu", suffix, **state)
    raw["metadata"].setdefault("annotations", {})[labels.DRAINED] = iso(NOW - 10)
    return observe_pod(raw)


def run_ray(c: ClusterSpec, pods: list[PodState], ray_dead: set[str], targets: Mapping[str, int]) -> Plan:
    obs = Observed(pods=(head(c), *pods), service_exists=True, health={}, ray_dead=frozenset(ray_dead),
                   budgets=HEAD_BUDGET)
    return plan_cluster(c, obs, dict(targets), NOW)


RAY_CASES = [
    pytest.param(RD, workers(RD, 2), {w(1)}, {"cpu": 2}, [("replace", w(1), "cpu")], 1, 1.0,
                 id="ray-dead-worker-deleted-as-a-failure-then-backoff"),
    pytest.param(RD_NO_BACKOFF, workers(RD, 2), {w(1)}, {"cpu": 2}, [("replace", w(1), "cpu"), ("create", "cpu", 1)],
                 1, None, id="ray-dead-worker-replaced"),
    pytest.param(C, workers(C, 2), {w(1)}, {}, [("replace", w(1), "cpu")], 1, 1.0, id="ray-dead-without-autoscaling"),
    pytest.param(RD, [*workers(RD, 1), worker(RD, suffix="w0001", phase="Failed", ready=False)], {w(1)}, {"cpu": 2},
                 [("replace", w(1), "cpu")], 1, 1.0, id="ray-dead-and-failed-deleted-once"),
    pytest.param(RD, [*workers(RD, 1), worker(RD, suffix="w0001", deleting=True)], {w(1)}, {"cpu": 2},
                 [("create", "cpu", 1)], 0, None, id="ray-dead-already-deleting"),
    pytest.param(RD, workers(RD, 2), {"demo-head"}, {"cpu": 2}, [], 0, None, id="unknown-or-head-name-ignored"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001", **SUCCEEDED)], set(), {"cpu": 1},
                 [("delete", w(1))], 0, None, id="drained-pod-ended-deleted-without-failure"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001")], {w(1)}, {"cpu": 1},
                 [("delete", w(1))], 0, None, id="drained-pod-ray-dead-deleted-without-failure"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001")], set(), {"cpu": 1}, [], 0, DRAIN_POLL_SECONDS,
                 id="drained-pod-still-running-left-alone"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001")], set(), {"cpu": 2}, [], 0, DRAIN_POLL_SECONDS,
                 id="drained-pod-still-running-counts-as-live-no-replacement"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001", **SUCCEEDED)], set(), {"cpu": 2},
                 [("delete", w(1)), ("create", "cpu", 1)], 0, None, id="drained-pod-ended-target-kept-no-backoff"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001", deleting=True)], {w(1)}, {"cpu": 1}, [], 0, None,
                 id="drained-pod-already-deleting"),
    pytest.param(RD, [*workers(RD, 1), drained_worker(RD, "w0001", **SUCCEEDED), worker(RD, suffix="w0002", **FAILED)],
                 set(), {"cpu": 2}, [("delete", w(1)), ("replace", w(2), "cpu")], 1, 1.0,
                 id="drained-and-crashed-only-the-crash-counts"),
]


@pytest.mark.parametrize(("c", "pods", "ray_dead", "targets", "expected", "failures", "requeue"), RAY_CASES)
def test_ray_dead_and_drained(c: ClusterSpec, pods: list[PodState], ray_dead: set[str], targets: dict[str, int],
                              expected: list[tuple[Any, ...]], failures: int, requeue: float | None) -> None:
    p = run_ray(c, pods, ray_dead, targets)
    assert same(p, expected), summary(p)
    assert (p.health["cpu"].consecutive_failures, p.health["cpu"].restarts) == (failures, failures)
    assert p.requeue_after == requeue


def test_ray_dead_and_drained_reasons() -> None:
    pods = [*workers(RD, 1), drained_worker(RD, "w0001"), worker(RD, suffix="w0002")]
    p = run_ray(RD_NO_BACKOFF, pods, {w(1), w(2)}, {"cpu": 3})
    by_name = {a.name: a for a in p.actions if isinstance(a, DeletePod)}
    assert by_name[w(1)] == DeletePod(w(1), f"worker {w(1)} of group cpu: its Ray node was drained; "
                                            "removing the pod")
    assert by_name[w(2)] == DeletePod(w(2), f"worker {w(2)} of group cpu failed (its Ray node died)", "cpu",
                                        failed=True)
    create = next(a for a in p.actions if isinstance(a, CreateWorkers))
    assert create == CreateWorkers("cpu", 2, "group cpu has 1 of 3 workers (replacing 1 failed)")


# -- every scale-down path drains first: replicas or maxReplicas lowered, suspend, a group removed --------------
# Idle workers and ones that are no Ray node go first and are deleted; busy ones are drained by Ray (DrainWorker),
# never deleted; with Ray's state unknown, ready workers wait.

def drained(c: ClusterSpec, suffix: str, group_name: str = "cpu", **state: Any) -> PodState:
    """A worker whose busy Ray node was drained 10 s ago: the pod carries swarm.io/drained-at."""
    raw = worker_pod(c, group_name, suffix, **state)
    raw["metadata"].setdefault("annotations", {})[labels.DRAINED] = iso(NOW - 10)
    return observe_pod(raw)


def removals(p: Plan) -> list[tuple[str, str]]:
    """The plan's deletions and drains (nothing else may be in it)."""
    assert all(isinstance(a, DeletePod | DrainWorker) for a in p.actions), p.actions
    return sorted(describe_rollout(a) for a in p.actions)


PENDING = {"phase": "Pending", "ready": False, "node": None}
W4 = workers(C, 4)
W3 = W4[:3]


@pytest.mark.parametrize(
    ("groups", "pods", "ray", "expected"),
    [
        pytest.param([group("cpu", 2)], W4, all_(IDLE, 4), [("drain-idle", w(2)), ("drain-idle", w(3))],
                     id="idle-newest-first"),
        pytest.param([group("cpu", 2)], [*W3, worker(C, suffix="w0009", created=NOW - 7200, **PENDING)],
                     all_(IDLE), [("drain-idle", w(2)), ("delete", w(9))], id="no-ray-node-first-even-if-oldest"),
        pytest.param([group("cpu", 2)], W4, {w(0): IDLE, w(1): IDLE, w(2): BUSY, w(3): BUSY},
                     [("drain-idle", w(0)), ("drain-idle", w(1))], id="idle-before-busy-even-if-older"),
        pytest.param([group("cpu", 1)], W3, {w(0): BUSY, w(1): IDLE, w(2): BUSY},
                     [("drain-idle", w(1)), ("drain", w(2))], id="busy-drained-never-deleted"),
        pytest.param([group("cpu", 0)], W3, all_(BUSY), [("drain", w(0)), ("drain", w(1)), ("drain", w(2))],
                     id="to-zero-every-busy-worker-drained"),
        pytest.param([group("cpu", 2)], W3, {w(0): BUSY, w(1): BUSY}, [("delete", w(2))],
                     id="ready-but-no-ray-node-deleted"),
        pytest.param([group("cpu", 1, hi=1)], W3, {w(0): IDLE, w(1): BUSY, w(2): BUSY},
                     [("drain-idle", w(0)), ("drain", w(2))], id="replicas-and-max-replicas-lowered"),
        pytest.param([group("cpu", 1)], [drained(C, "w0000", created=NOW - 3600), *W3[1:]], all_(BUSY),
                     [("drain", w(2))], id="a-draining-worker-is-already-leaving"),
        pytest.param([group("cpu", 3)], W3, all_(BUSY), [], id="equal-nothing"),
        # Ray's state unknown: ready workers (and running ones, which may have joined Ray) wait.
        pytest.param([group("cpu", 1)], W3, None, [], id="unknown-ready-workers-wait"),
        pytest.param([group("cpu", 2)], [*W3[:2], worker(C, suffix="pend1", **PENDING)], None,
                     [("delete", "demo-cpu-pend1")], id="unknown-pending-deleted"),
        pytest.param([group("cpu", 2)], [*W3[:2], worker(C, suffix="join1", ready=False)], None, [],
                     id="unknown-running-not-ready-waits"),
    ],
)
def test_scale_down_by_spec_drains_busy_workers(groups: list[dict[str, Any]], pods: list[PodState],
                                                ray: Mapping[str, str] | None, expected: list[tuple[str, str]]) -> None:
    c = cluster(groups=groups)
    p = run(c, [head(c), *pods], **ray_of(ray))
    assert removals(p) == sorted(expected)


def test_scale_down_reasons_and_the_drain_deadline() -> None:
    c = cluster({"updateStrategy": {"drainTimeoutSeconds": 45}}, groups=[group("cpu", 0)])
    pods = [head(c), *workers(c, 2), worker(c, suffix="pend1", **PENDING)]
    p = run(c, pods, **ray_of({w(0): BUSY, w(1): IDLE}))
    assert set(p.actions) == {
        DeletePod("demo-cpu-pend1", "group cpu scaled to 0 (demo-cpu-pend1 not ready)"),
        DrainWorker(w(1), f"group cpu scaled to 0 ({w(1)} idle in Ray)", 45, idle=True),
        DrainWorker(w(0), f"group cpu scaled to 0: worker {w(0)} runs Ray tasks; draining it first", 45),
    }
    assert p.notes == ()


def test_workers_to_remove_wait_for_ray_state_saying_so() -> None:
    c = cluster(groups=[group("cpu", 1)])
    p = run(c, [head(c), *W3])
    assert p.actions == ()
    assert p.notes == ((EventReason.SCALE_DOWN_WAITING, "group cpu: 2 ready worker(s) to remove wait for Ray's "
                        "state (busy workers are drained, never deleted; Ray's state is unknown)"),)
    assert p.requeue_after == RAY_STATE_RETRY_SECONDS


def test_a_drained_worker_goes_once_its_node_died_and_is_not_replaced() -> None:
    c = cluster(groups=[group("cpu", 1)])
    pods = [head(c), drained(c, "w0000"), *workers(c, 2)[1:]]
    p = run(c, pods, ray_dead=frozenset({w(0)}), **ray_of({w(1): BUSY}))
    assert removals(p) == [("delete", w(0))]
    assert p.health["cpu"].consecutive_failures == 0


# With autoscaling on the autoscaler drains idle Ray nodes itself; by the plan go pods that are no Ray node, and
# Ray nodes above a lowered maxReplicas (busy ones, which the autoscaler never drains).
AUTO_MAX1 = [group("cpu", None, lo=0, hi=1)]  # spec.replicas, at most maxReplicas, is not the target


@pytest.mark.parametrize(
    ("groups", "targets", "ray", "expected"),
    [
        pytest.param(AUTO_MAX1, {"cpu": 3}, all_(BUSY), [("drain", w(1)), ("drain", w(2))],
                     id="above-max-busy-drained-newest-first"),
        pytest.param(AUTO_MAX1, {"cpu": 3}, {w(0): IDLE, w(1): BUSY, w(2): BUSY},
                     [("drain-idle", w(0)), ("drain", w(2))], id="above-max-idle-first"),
        pytest.param(AUTO_MAX1, {"cpu": 3}, {w(0): BUSY, w(1): BUSY}, [("delete", w(2)), ("drain", w(1))],
                     id="above-max-no-ray-node-first"),
        pytest.param(AUTO_MAX1, {"cpu": 3}, None, [], id="above-max-unknown-waits"),
        pytest.param([group("cpu", 2, lo=0, hi=4)], {"cpu": 1}, all_(BUSY), [], id="below-max-left-to-the-autoscaler"),
        pytest.param([group("cpu", 2, lo=0, hi=2)], {"cpu": 1}, all_(BUSY), [("drain", w(2))],
                     id="only-the-ray-nodes-above-max"),
    ],
)
def test_autoscaling_max_replicas_lowered_drains_busy_workers(groups: list[dict[str, Any]], targets: dict[str, int],
                                                             ray: Mapping[str, str] | None,
                                                             expected: list[tuple[str, str]]) -> None:
    c = cluster(AUTO, groups=groups)
    p = run(c, [head(c), *W3], targets=targets, **ray_of(ray))
    assert removals(p) == sorted(expected)


def test_above_max_replicas_says_so() -> None:
    c = cluster(AUTO, groups=AUTO_MAX1)
    (drain, *_) = run(c, [head(c), *W3], targets={"cpu": 1}, **ray_of(all_(BUSY))).actions
    assert drain == DrainWorker(w(2), f"group cpu has 3 workers, above maxReplicas 1: worker {w(2)} runs Ray tasks; "
                                      "draining it first", 600)
    waiting = run(c, [head(c), *W3], targets={"cpu": 1})
    assert [reason for reason, _ in waiting.notes] == [EventReason.SCALE_DOWN_WAITING]


SUSPENDED = cluster({"suspend": True})
W2 = workers(SUSPENDED, 2)


@pytest.mark.parametrize(
    ("pods", "ray", "ray_dead", "expected", "requeue"),
    [
        # Idle workers are drained too (the raylet re-checks idleness): the head waits for them to leave.
        # A drain asked is looked at again soon: a refused one (a task started since the read) is chosen anew.
        pytest.param([head(C), *W2], all_(IDLE, 2), set(), [("drain-idle", w(0)), ("drain-idle", w(1))],
                     DRAIN_POLL_SECONDS, id="all-idle-drained-the-head-waits"),
        pytest.param([head(C), *W2], {w(0): BUSY, w(1): IDLE}, set(), [("drain-idle", w(1)), ("drain", w(0))],
                     DRAIN_POLL_SECONDS, id="busy-drained-the-head-waits-for-it"),
        pytest.param([head(C), drained(C, "w0000")], all_(BUSY, 1), set(), [], DRAIN_POLL_SECONDS,
                     id="draining-the-head-still-waits"),
        pytest.param([head(C), drained(C, "w0000")], {}, {w(0)}, [("delete", "demo-head"), ("delete", w(0))], None,
                     id="drained-node-died-then-the-head-goes"),
        pytest.param([head(C), *W2], None, set(), [], RAY_STATE_RETRY_SECONDS, id="unknown-everything-waits"),
        pytest.param([head(C), worker(C, suffix="pend1", **PENDING)], None, set(),
                     [("delete", "demo-head"), ("delete", "demo-cpu-pend1")], None, id="unknown-pending-workers-go"),
        pytest.param([head(C, **HEAD_FAILED), *W2, worker(C, suffix="dead1", **FAILED)], None, set(),
                     [("delete", "demo-head"), ("delete", w(0)), ("delete", w(1)), ("delete", "demo-cpu-dead1")],
                     None, id="no-head-to-drain-through-everything-goes"),
        pytest.param([head(C, deleting=True), *W2], None, set(), [("delete", w(0)), ("delete", w(1))], None,
                     id="head-already-going-workers-deleted"),
        pytest.param([head(C), worker(C, suffix="w0000", deleting=True, **FAILED), *W2[1:]], all_(IDLE, 2), set(),
                     [("drain-idle", w(1))], DRAIN_POLL_SECONDS, id="pods-already-deleting-skipped"),
        pytest.param([], None, set(), [], None, id="nothing-left-nothing-created"),
    ],
)
def test_suspend_drains_workers_and_removes_the_head_last(pods: list[PodState], ray: Mapping[str, str] | None,
                                                          ray_dead: set[str], expected: list[tuple[str, str]],
                                                          requeue: float | None) -> None:
    health = {"cpu": GroupHealth(2, 1, NOW - 5, NOW + 5)}
    p = run(SUSPENDED, pods, service=False, health=health, head_restarts=3, ray_dead=frozenset(ray_dead),
            **ray_of(ray))
    assert removals(p) == sorted(expected)
    assert (p.health, p.head_restarts, p.requeue_after) == (health, 3, requeue)


def test_suspend_reasons() -> None:
    p = run(SUSPENDED, [head(C), *W2], **ray_of({w(0): BUSY, w(1): IDLE}))
    assert set(p.actions) == {DrainWorker(w(1), f"cluster is suspended ({w(1)} idle in Ray)", 600, idle=True),
                              DrainWorker(w(0), f"cluster is suspended: worker {w(0)} runs Ray tasks; draining it "
                                                "first", 600)}
    waiting = run(SUSPENDED, [head(C), *W2])
    assert waiting.notes == ((EventReason.SCALE_DOWN_WAITING, "cluster is suspended (the head goes last): 2 ready "
                              "worker(s) to remove wait for Ray's state (busy workers are drained, never deleted; "
                              "Ray's state is unknown)"),)
    no_head = run(SUSPENDED, [head(C, **HEAD_FAILED), *W2[:1]])
    assert DeletePod(w(0), "cluster is suspended (no head to drain its Ray node through)") in no_head.actions



def test_a_cluster_kueue_evicted_loses_every_pod_at_once() -> None:
    """Kueue's eviction stops the cluster as Kueue stops its own jobs: no drain waits on Ray (whose state may be
    unknown, as here) before the quota can be given back."""
    why = "evicted by Kueue (Preempted): preempted by a higher-priority workload"
    p = run(SUSPENDED, [head(C), *W2, worker(C, suffix="going", deleting=True)], held_by_kueue=why)
    assert sorted(a.name for a in p.actions if isinstance(a, DeletePod)) == sorted(["demo-head", w(0), w(1)])
    assert all(a.reason == why for a in p.actions if isinstance(a, DeletePod)) and not p.notes


# -- a suspended cluster's head stays while a Ray job's driver runs there (reconcile/suspend.py) ----------------

NO_DASHBOARD = cluster({"suspend": True, "head": {"resources": {"cpu": "1", "memory": "2Gi"},
                                                  "rayStartParams": {"include-dashboard": "False"}}})
STAYS_FOR_A = (EventReason.SUSPEND_WAITING, "cluster is suspended: the head stays while Ray job(s) raysubmit_a run, "
                                            f"at most until {iso(NOW + 590)}")
STAYS_UNREADABLE = (EventReason.SUSPEND_WAITING, "cluster is suspended: the head stays while its Jobs API cannot be "
                                                 "read (a Ray job's driver may run there), at most until "
                                                 f"{iso(NOW + 590)}")


@pytest.mark.parametrize(
    ("c", "pods", "kwargs", "head_goes", "reads", "notes", "requeue"),
    [
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": None}, False, True, (), None, id="head-alone-its-jobs-read"),
        pytest.param(SUSPENDED, [head(C), drained(C, "w0000")], {"head_jobs": None, "ray_dead": frozenset({w(0)})},
                     False, True, (), None, id="the-last-worker-leaving-its-jobs-read"),
        pytest.param(SUSPENDED, [head(C), *W2], {"head_jobs": None, **ray_of(all_(IDLE, 2))}, False, False, (),
                     DRAIN_POLL_SECONDS, id="workers-running-nothing-read"),
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": ()}, True, False, (), None, id="no-job-the-head-goes"),
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": ("raysubmit_a",), "suspended_since": NOW - 10}, False,
                     False, (STAYS_FOR_A,), JOBS_POLL_SECONDS, id="a-job-runs-the-head-stays"),
        pytest.param(SUSPENDED, [head(C), drained(C, "w0000")], {"head_jobs": ("raysubmit_a",),
                                                                 "ray_dead": frozenset({w(0)}),
                                                                 "suspended_since": NOW - 10},
                     False, False, (STAYS_FOR_A,), JOBS_POLL_SECONDS, id="the-last-worker-goes-the-head-stays"),
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": ("raysubmit_a",), "suspended_since": NOW - 599.5}, False,
                     False, None, 0.5, id="looked-at-again-at-the-bound"),
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": ("raysubmit_a",), "suspended_since": NOW - 600}, True,
                     False, ((EventReason.SUSPEND_TIMED_OUT,
                              "cluster is suspended: the head goes at the bound (updateStrategy.drainTimeoutSeconds "
                              "600s) while Ray job(s) raysubmit_a still run; their drivers end with it"),),
                     None, id="past-the-bound-the-head-goes-saying-so"),
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": JobsUnreadable("timed out"), "suspended_since": NOW - 10},
                     False, False, (STAYS_UNREADABLE,), JOBS_POLL_SECONDS, id="unreadable-the-head-stays"),
        pytest.param(SUSPENDED, [head(C)], {"head_jobs": JobsUnreadable("timed out"), "suspended_since": NOW - 601},
                     True, False, ((EventReason.SUSPEND_TIMED_OUT,
                                    "cluster is suspended: the head goes at the bound (updateStrategy."
                                    "drainTimeoutSeconds 600s) though its Jobs API could not be read (timed out); a "
                                    "Ray job's driver may have been running there"),),
                     None, id="unreadable-past-the-bound-the-head-goes"),
        pytest.param(NO_DASHBOARD, [head(NO_DASHBOARD)], {"head_jobs": None}, True, False, (), None,
                     id="dashboard-off-no-jobs-api-no-wait"),
        pytest.param(SUSPENDED, [head(C, **PENDING)], {"head_jobs": None}, True, False, (), None,
                     id="a-head-not-running-runs-no-driver"),
        pytest.param(SUSPENDED, [head(C, **HEAD_FAILED)], {"head_jobs": None}, True, False, (), None,
                     id="a-failed-head-goes"),
        pytest.param(SUSPENDED, [head(C), *W2], {"head_jobs": None, "held_by_kueue": "evicted by Kueue (Preempted)"},
                     True, False, (), None, id="stopped-by-kueue-every-pod-at-once-nothing-read"),
    ],
)
def test_a_suspended_head_stays_while_its_ray_jobs_run(c: ClusterSpec, pods: list[PodState], kwargs: dict[str, Any],
                                                       head_goes: bool, reads: bool,
                                                       notes: tuple[tuple[EventReason, str], ...] | None,
                                                       requeue: float | None) -> None:
    p = run(c, pods, **kwargs)
    assert (any(isinstance(a, DeletePod) and a.name == "demo-head" for a in p.actions), p.reads_head_jobs) == (
        head_goes, reads), p
    if notes is not None:
        assert p.notes == notes
    assert p.requeue_after == pytest.approx(requeue) if requeue is not None else p.requeue_after is None
    stays = [note for reason, note in p.notes if reason == EventReason.SUSPEND_WAITING]
    assert p.head_kept == (stays[0].removeprefix("cluster is suspended: ") if stays else "")
    if head_goes and "held_by_kueue" not in kwargs:
        assert {a.reason for a in p.actions if isinstance(a, DeletePod)} == {"cluster is suspended"}


GPU = "demo-gpu-g0000"


@pytest.mark.parametrize(
    ("gpu_worker", "ray", "ray_dead", "expected"),
    [
        pytest.param(worker(TWO_GROUPS, "gpu", "g0000"), {GPU: IDLE}, set(), [("drain-idle", GPU)], id="idle-drained"),
        pytest.param(worker(TWO_GROUPS, "gpu", "g0000"), {GPU: BUSY}, set(), [("drain", GPU)], id="busy-drained"),
        pytest.param(worker(TWO_GROUPS, "gpu", "g0000"), None, set(), [], id="unknown-waits"),
        pytest.param(worker(TWO_GROUPS, "gpu", "g0000", **FAILED), None, set(), [("delete", GPU)],
                     id="failed-deleted-not-replaced"),
        pytest.param(worker(TWO_GROUPS, "gpu", "g0000", deleting=True), None, set(), [], id="already-deleting"),
        pytest.param(drained(TWO_GROUPS, "g0000", "gpu"), {GPU: BUSY}, set(), [], id="draining-waits-for-its-node"),
        pytest.param(drained(TWO_GROUPS, "g0000", "gpu"), {}, {GPU}, [("delete", GPU)], id="drained-node-died"),
    ],
)
def test_a_removed_groups_workers_are_drained_first(gpu_worker: PodState, ray: Mapping[str, str] | None,
                                                    ray_dead: set[str], expected: list[tuple[str, str]]) -> None:
    cpu = {w(0): IDLE, w(1): IDLE} if ray is not None else {}
    view = ray_of(None if ray is None else {**cpu, **ray})
    p = run(C, [*healthy(C), gpu_worker], ray_dead=frozenset(ray_dead), **view)
    assert removals(p) == sorted(expected)
    assert set(p.health) == {"cpu"}


def test_a_removed_groups_reasons() -> None:
    p = run(C, [*healthy(C), worker(TWO_GROUPS, "gpu", "g0000")], **ray_of({GPU: BUSY}))
    assert p.actions == (DrainWorker(GPU, f"group gpu is no longer in the spec: worker {GPU} runs Ray tasks; "
                                          "draining it first", 600),)
    waiting = run(C, [*healthy(C), worker(TWO_GROUPS, "gpu", "g0000")])
    assert [reason for reason, _ in waiting.notes] == [EventReason.SCALE_DOWN_WAITING]
    assert waiting.requeue_after == RAY_STATE_RETRY_SECONDS


# -- drained ahead of a disruption: an eviction, someone else's deletion, DisruptionTarget, the node going -------

REMOVED_NODE = NodeState("node-1", removal="the cluster autoscaler is removing it")
CORDONED_NODE = NodeState("node-1", cordoned=True)
CORDON_DRAINS = cluster({"disruption": {"drainOnCordon": True}})


def noticed(suffix: str, node: NodeState | None = None, *, grace_until: float | None = None, target: str = "",
            drained_mark: bool = False, **state: Any) -> PodState:
    """A worker on `node`; being deleted until `grace_until`, with DisruptionTarget `target`, or marked drained."""
    raw = worker_pod(C, "cpu", suffix, **state)
    if grace_until is not None:
        raw["metadata"]["deletionTimestamp"] = iso(grace_until)
    if target:
        raw["status"]["conditions"].append({"type": DISRUPTION_TARGET, "status": "True", "reason": target})
    if drained_mark:
        raw["metadata"].setdefault("annotations", {})[labels.DRAINED] = iso(NOW - 10)
    return observe_pod(raw, node, NOW)


@pytest.mark.parametrize(
    ("c", "pod", "ray", "ours", "expected"),
    [
        pytest.param(C, noticed("w0001", REMOVED_NODE), {w(1): BUSY}, False,
                     ("its node is going (the cluster autoscaler is removing it)", 600), id="removal-taint-busy"),
        pytest.param(C, noticed("w0001", REMOVED_NODE), {w(1): IDLE}, False,
                     ("its node is going (the cluster autoscaler is removing it)", 600), id="removal-taint-idle-too"),
        pytest.param(C, noticed("w0001", REMOVED_NODE), {}, False, None, id="no-ray-node-nothing-to-drain"),
        pytest.param(C, noticed("w0001", REMOVED_NODE), None, False, None, id="ray-state-unknown"),
        pytest.param(C, noticed("w0001", CORDONED_NODE), {w(1): BUSY}, False, None, id="plain-cordon-off-by-default"),
        pytest.param(CORDON_DRAINS, noticed("w0001", CORDONED_NODE), {w(1): BUSY}, False,
                     ("its node is cordoned (disruption.drainOnCordon)", 600), id="cordon-with-drain-on-cordon"),
        pytest.param(C, noticed("w0001", grace_until=NOW + 25), {w(1): BUSY}, False,
                     ("its pod is being deleted, not by the operator", 25), id="deleted-by-someone-grace-left"),
        pytest.param(C, noticed("w0001", grace_until=NOW + 25), {w(1): BUSY}, True, None, id="deleted-by-the-operator"),
        pytest.param(C, noticed("w0001", grace_until=NOW + 25, target="EvictionByEvictionAPI"), {w(1): BUSY}, False,
                     ("evicted through the Eviction API", 25), id="evicted-grace-left"),
        pytest.param(C, noticed("w0001", grace_until=NOW - 5), {w(1): BUSY}, False,
                     ("its pod is being deleted, not by the operator", 600), id="grace-over-drain-timeout"),
        pytest.param(C, noticed("w0001", REMOVED_NODE, drained_mark=True), {w(1): BUSY}, False, None,
                     id="drained-once"),
        pytest.param(C, noticed("w0001", grace_until=NOW + 25, **FAILED), {w(1): BUSY}, False, None,
                     id="a-failed-pod-has-no-ray-work"),
    ],
)
def test_a_disruption_is_drained_ahead(c: ClusterSpec, pod: PodState, ray: Mapping[str, str] | None, ours: bool,
                                       expected: tuple[str, int] | None) -> None:
    view = ray_of(None if ray is None else {w(0): IDLE, **ray})
    p = run(c, [head(c), *workers(c, 1), pod], deleted_by_operator=frozenset({pod.name} if ours else ()), **view)
    drains = [a for a in p.actions if isinstance(a, DrainWorker)]
    if expected is None:
        assert drains == []
    else:
        why, deadline = expected
        assert drains == [DrainWorker(pod.name, f"worker {pod.name} of group cpu: {why}; draining its Ray node ahead "
                                                "of the disruption", deadline)]


def test_a_drained_worker_whose_node_goes_is_replaced_at_once() -> None:
    going = noticed("w0001", REMOVED_NODE, drained_mark=True)
    p = run(C, [head(C), *workers(C, 1), going], health={"cpu": GroupHealth(1, 1, NOW - 2, NOW + 30)},
            **ray_of({w(0): IDLE, w(1): BUSY}))
    assert same(p, [("create", "cpu", 1)])
    still = run(C, [head(C), *workers(C, 1), noticed("w0001", drained_mark=True)], **ray_of({w(0): IDLE, w(1): BUSY}))
    assert same(still, []), "a worker drained for another reason keeps its place until its node dies"
