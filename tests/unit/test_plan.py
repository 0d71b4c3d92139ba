"""plan_cluster / desired_replicas: what to create, what to delete, and why."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pytest

from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff
from swarm_operator.reconcile.observe import PodState, observe_pod
from swarm_operator.reconcile.plan import (
    DRAIN_POLL_SECONDS,
    RAY_STATE_RETRY_SECONDS,
    Action,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeletePod,
    DrainForRollout,
    Observed,
    PatchPod,
    Plan,
    desired_replicas,
    needs_ray_state,
    plan_cluster,
)
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
        ray_nodes: frozenset[str] | None = None) -> Plan:
    obs = Observed(pods=tuple(pods), service_exists=service, health=dict(health or {}),
                   head_restarts=head_restarts, idle_pods=idle, ray_nodes=ray_nodes, budgets=HEAD_BUDGET)
    return plan_cluster(c, obs, dict(targets or {}), NOW)


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


@pytest.mark.parametrize(
    ("replicas", "pods", "expected"),
    [
        pytest.param(2, workers(C, 4), [w(2), w(3)], id="newest-first"),
        pytest.param(2, [*workers(C, 3), worker(C, suffix="w0009", created=NOW - 7200, ready=False)],
                     [w(2), w(9)], id="not-ready-first-even-if-oldest"),
        pytest.param(1, [worker(C, suffix="w0000", created=NOW - 100, phase="Pending", ready=False),
                         worker(C, suffix="w0001", created=NOW - 50, phase="Pending", ready=False),
                         worker(C, suffix="w0002", created=NOW - 3600)],
                     [w(0), w(1)], id="all-not-ready-before-any-ready"),
        pytest.param(0, workers(C, 3), [w(0), w(1), w(2)], id="to-zero"),
        pytest.param(3, workers(C, 3), [], id="equal"),
    ],
)
def test_scale_down_by_spec(replicas: int, pods: list[PodState], expected: list[str]) -> None:
    c = cluster(groups=[group("cpu", replicas)])
    p = run(c, [head(c), *pods])
    deleted = sorted(a.name for a in p.actions if isinstance(a, DeletePod))
    assert deleted == expected
    assert not any(isinstance(a, CreateWorkers) for a in p.actions)


def test_scale_down_reasons() -> None:
    c = cluster(groups=[group("cpu", 1)])
    p = run(c, [head(c), *workers(c, 2), worker(c, suffix="slow1", ready=False)])
    assert {a.name: a.reason for a in p.actions if isinstance(a, DeletePod)} == {
        "demo-cpu-slow1": "group cpu scaled to 1 (not ready first)",
        w(1): "group cpu scaled to 1 (newest first)",
    }


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
    assert same(run(AUTO_C, pods, targets={"cpu": 2}, ray_nodes=ray_nodes), expected)


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
    assert isinstance(a, DeletePod | DrainForRollout), a
    return ("drain" if isinstance(a, DrainForRollout) else "delete", a.name)


def rollout(strategy: dict[str, Any], old_pods: list[PodState], new_pods: list[PodState] | None = None,
            ray: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    c = cluster({"updateStrategy": strategy}, groups=[group("cpu", 3)])
    p = run(c, [head(c), *old_pods, *(new_pods or [])], **ray_of(ray))
    assert not any(isinstance(a, CreateWorkers) for a in p.actions)
    return sorted(describe_rollout(a) for a in p.actions if isinstance(a, DeletePod | DrainForRollout))


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
        pytest.param({}, OLD3, [], all_(IDLE), [("delete", w(0))], id="idle-one-at-a-time-oldest-first"),
        pytest.param({"maxUnavailable": 2}, OLD3, [], all_(IDLE), [("delete", w(0)), ("delete", w(1))],
                     id="max-unavailable-2"),
        pytest.param({"maxUnavailable": 5}, OLD3, [], all_(IDLE), [("delete", w(i)) for i in range(3)],
                     id="budget-larger-than-outdated"),
        pytest.param({}, workers(C3_OLD, 2), [worker(C3, suffix="fresh", ready=False)], all_(IDLE, 2), [],
                     id="waits-while-a-new-pod-is-not-ready"),
        pytest.param({}, workers(C3_OLD, 2), [worker(C3, suffix="fresh")], all_(IDLE, 2), [("delete", w(0))],
                     id="continues-once-it-is-ready"),
        pytest.param({}, workers(C3, 3), [], all_(BUSY), [], id="up-to-date-nothing"),
        pytest.param({}, [*workers(C3_OLD, 2), STUCK], [], all_(IDLE, 2), [("delete", STUCK.name)],
                     id="not-ready-outdated-first"),
        pytest.param({}, workers(C3_OLD, 3, phase="Pending", ready=False, node=None), [], None,
                     [("delete", w(i)) for i in range(3)], id="unschedulable-old-template-does-not-block-the-fix"),
        # Busy workers: drained through Ray, never deleted; idle ones go first.
        pytest.param({}, OLD3, [], all_(BUSY), [("drain", w(0))], id="busy-drained-not-deleted"),
        pytest.param({}, OLD3, [], {**all_(BUSY), w(2): IDLE}, [("delete", w(2))], id="idle-before-busy"),
        pytest.param({"maxUnavailable": 2}, OLD3, [], {**all_(BUSY), w(2): IDLE},
                     [("delete", w(2)), ("drain", w(0))], id="idle-then-oldest-busy-drained"),
        pytest.param({"type": "IdleFirst"}, OLD3, [], {**all_(BUSY), w(2): IDLE}, [("delete", w(2))],
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
    assert p.actions == (DrainForRollout(w(0), f"worker {w(0)} of group cpu: rayStartParams changed; rolling update "
                                                "(Rolling); it runs Ray tasks: draining it first", 120),)
    assert p.notes == ()


def test_ready_workers_waiting_for_ray_state_say_so_and_retry() -> None:
    p = run(C3, [head(C3), *OLD3])
    assert p.actions == ()
    assert p.notes == ("group cpu: 3 ready outdated worker(s) wait for Ray's state (busy workers are drained, "
                       "never deleted; Ray's state is unknown)",)
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
    ("strategy", "pods", "expected"),
    [
        pytest.param({}, workers(C3, 3), False, id="up-to-date"),
        pytest.param({}, [*workers(C3, 2), worker(C3_OLD, suffix="old")], True, id="one-outdated"),
        pytest.param({}, [*workers(C3, 2), worker(C3_OLD, suffix="old", deleting=True)], False,
                     id="outdated-but-leaving"),
        pytest.param({}, [*workers(C3, 2), rollout_drained("old", C3)], True, id="drained-waiting-to-die"),
        pytest.param({"type": "OnDelete"}, [worker(C3_OLD, suffix="old")], False, id="on-delete-outdated"),
        pytest.param({"type": "OnDelete"}, [rollout_drained("old", C3)], True, id="on-delete-drained"),
        pytest.param({}, [head(C3_OLD)], False, id="head-only"),
    ],
)
def test_needs_ray_state(strategy: dict[str, Any], pods: list[PodState], expected: bool) -> None:
    c = cluster({"updateStrategy": strategy}, groups=[group("cpu", 3)])
    assert needs_ray_state(c, pods) is expected


def test_rollout_waits_for_the_count_first() -> None:
    p = run(C3, [head(C3), *workers(C3_OLD, 2)])
    assert same(p, [("create", "cpu", 1)])


def test_rollout_reason_names_what_changed() -> None:
    p = run(C3, [head(C3), *workers(C3_OLD, 3)], **ray_of(all_(IDLE)))
    (action,) = p.actions
    assert isinstance(action, DeletePod)
    assert worker(C3).template_hash != worker(C3_OLD).template_hash
    assert action.reason == f"worker {w(0)} of group cpu: rayStartParams changed; rolling update (Rolling)"


def test_a_pod_without_a_revision_record_is_replaced_saying_so() -> None:
    old = [dataclasses.replace(p, revision=None, template_hash="0123456789") for p in workers(C3, 3)]
    (action, *_) = run(C3, [head(C3), *old], **ray_of(all_(IDLE))).actions
    assert isinstance(action, DeletePod)
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


# -- suspend, removed groups, requeue ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pods", "service", "expected"),
    [
        pytest.param(healthy(C), True, [("delete", "demo-head"), ("delete", w(0)), ("delete", w(1))],
                     id="deletes-every-pod"),
        pytest.param([head(C, deleting=True), worker(C, suffix="w0000", deleting=True), *workers(C, 2)[1:]],
                     True, [("delete", w(1))], id="skips-pods-already-deleting"),
        pytest.param([], False, [], id="creates-nothing-not-even-the-service"),
        pytest.param([head(C, **HEAD_FAILED), worker(C, suffix="dead1", **FAILED)], True,
                     [("delete", "demo-cpu-dead1"), ("delete", "demo-head")], id="failed-pods-not-replacements"),
    ],
)
def test_suspend(pods: list[PodState], service: bool, expected: list[tuple[Any, ...]]) -> None:
    health = {"cpu": GroupHealth(2, 1, NOW - 5, NOW + 5)}
    p = run(cluster({"suspend": True}), pods, service=service, health=health, head_restarts=3)
    assert same(p, expected)
    assert all(isinstance(a, DeletePod) and a.reason == "cluster is suspended" for a in p.actions)
    assert (p.health, p.head_restarts, p.requeue_after) == (health, 3, None)


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param([*healthy(C), worker(TWO_GROUPS, "gpu", "g0000")], [("delete", "demo-gpu-g0000")],
                     id="removed-group-pods-deleted"),
        pytest.param([*healthy(C), worker(TWO_GROUPS, "gpu", "g0000", deleting=True)], [],
                     id="already-deleting-left-alone"),
        pytest.param([*healthy(C), worker(TWO_GROUPS, "gpu", "g0000", **FAILED)], [("delete", "demo-gpu-g0000")],
                     id="failed-pod-of-removed-group-not-replaced"),
    ],
)
def test_removed_group(pods: list[PodState], expected: list[tuple[Any, ...]]) -> None:
    p = run(C, pods)
    assert same(p, expected)
    for a in p.actions:
        assert isinstance(a, DeletePod) and a.reason == "group gpu is no longer in the spec"
    assert set(p.health) == {"cpu"}


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
                                        failed=True, group="cpu")
    create = next(a for a in p.actions if isinstance(a, CreateWorkers))
    assert create == CreateWorkers("cpu", 2, "group cpu has 1 of 3 workers (replacing 1 failed)")
