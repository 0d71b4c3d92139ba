"""A head that can be replaced while the old one is stuck: the gate (reconcile/head.py), its place in the plan, the
generation's name, label and service selector."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import CreateHead, CreateService
from swarm_operator.reconcile.disruption import NodeState
from swarm_operator.reconcile.head import StartHead, WaitForHead, current_generation, next_head
from swarm_operator.reconcile.observe import Observed, PodState, observe_pod
from swarm_operator.reconcile.plan import plan_cluster
from swarm_operator.reconcile.service import service_change
from swarm_operator.resources import labels
from swarm_operator.resources.pods import build_head_pod
from swarm_operator.resources.service import build_head_service
from tests.unit.operator_fixtures import NOW, cluster, with_state, workers

C = cluster()
GCS = cluster({"faultTolerance": {"gcs": {"redisAddress": "redis:6379"}}})
NOT_READY_SECONDS = 60.0
NODE_GONE = NodeState.gone("n1")
NOT_READY_LONG = NodeState("n1", ready=False, ready_since=NOW - 61)
NOT_READY_SHORT = NodeState("n1", ready=False, ready_since=NOW - 20)
READY = NodeState("n1")


def old_head(node: NodeState | None, *, generation: int = 0, deleting: bool = True, **state: Any) -> PodState:
    """A head pod of `generation` on node n1 (as the operator knows it: None, unknown), by default Terminating."""
    pod = with_state(build_head_pod(C, generation), node="n1", deleting=deleting, **state)
    return observe_pod(pod, node, NOW, NOT_READY_SECONDS)


@pytest.mark.parametrize(("remaining", "generation", "expected"), [
    pytest.param([], 0, StartHead(0, "head pod missing"), id="none-left-the-usual-name"),
    pytest.param([], 3, StartHead(3, "head pod missing"), id="none-left-the-current-generation-s-name"),
    pytest.param([old_head(NODE_GONE)], 0,
                 StartHead(1, "head pod missing; the old one is stuck on a lost node: demo-head (its node n1 was "
                              "deleted)"), id="stuck-on-a-deleted-node-new-name"),
    pytest.param([old_head(NOT_READY_LONG)], 0,
                 StartHead(1, "head pod missing; the old one is stuck on a lost node: demo-head (its node n1 has been "
                              "NotReady for more than 60s)"), id="stuck-on-a-node-notready-past-the-threshold"),
    pytest.param([old_head(NODE_GONE, generation=2)], 2, StartHead(3, "head pod missing; the old one is stuck on a "
                                                                      "lost node: demo-head-2 (its node n1 was "
                                                                      "deleted)"), id="generation-2-stuck-3-next"),
    pytest.param([old_head(NODE_GONE)], 1, StartHead(1, "head pod missing; the old one is stuck on a lost node: "
                                                        "demo-head (its node n1 was deleted)"),
                 id="generation-1-s-create-refused-its-name-is-still-free"),
    pytest.param([old_head(NOT_READY_SHORT)], 0,
                 WaitForHead("the new head waits for demo-head to be gone: its node is not known to be dead, and two "
                             "GCS servers must never run at once", overdue=True), id="notready-shorter-waits"),
    pytest.param([old_head(READY)], 0,
                 WaitForHead("the new head waits for demo-head to be gone: its node is not known to be dead, and two "
                             "GCS servers must never run at once", overdue=True), id="node-ready-waits"),
    pytest.param([old_head(None)], 0,
                 WaitForHead("the new head waits for demo-head to be gone: its node is not known to be dead, and two "
                             "GCS servers must never run at once", overdue=True), id="node-unknown-waits"),
    pytest.param([old_head(READY, deleting=False, phase="Failed", ready=False)], 0,
                 WaitForHead("the new head waits for demo-head to be gone: its node is not known to be dead, and two "
                             "GCS servers must never run at once", overdue=False),
                 id="failed-not-yet-deleted-waits-not-overdue"),
    pytest.param([old_head(NODE_GONE), old_head(READY, generation=1)], 1,
                 WaitForHead("the new head waits for demo-head-1 to be gone: its node is not known to be dead, and "
                             "two GCS servers must never run at once", overdue=True),
                 id="one-lost-one-not-waits-for-that-one"),
])
def test_next_head(remaining: list[PodState], generation: int, expected: StartHead | WaitForHead) -> None:
    assert next_head(remaining, generation, NOW) == expected


def test_the_deletion_is_overdue_only_past_its_grace_period() -> None:
    pod = with_state(build_head_pod(C), node="n1", deleting=True)
    pod["metadata"]["deletionTimestamp"] = "2023-11-14T22:13:50Z"  # NOW + 30: the grace period still runs
    waiting = next_head([observe_pod(pod, READY, NOW, NOT_READY_SECONDS)], 0, NOW)
    assert isinstance(waiting, WaitForHead) and not waiting.overdue


@pytest.mark.parametrize(("recorded", "generations", "expected"), [
    pytest.param(0, [], 0, id="nothing-yet"),
    pytest.param(2, [], 2, id="status-only"),
    pytest.param(1, [0, 2], 2, id="a-pod-newer-than-status-written-before-a-restart"),
    pytest.param(3, [1], 3, id="status-newer-than-the-pods-left"),
])
def test_current_generation(recorded: int, generations: list[int], expected: int) -> None:
    pods = [old_head(READY, generation=g) for g in generations]
    assert current_generation(recorded, pods) == expected


@pytest.mark.parametrize(("generation", "name", "selector"), [
    pytest.param(0, "demo-head", {labels.CLUSTER: "demo", labels.NODE_TYPE: "head"}, id="generation-0"),
    pytest.param(7, "demo-head-7", {labels.CLUSTER: "demo", labels.NODE_TYPE: "head", labels.HEAD_GENERATION: "7"},
                 id="generation-7"),
])
def test_a_generation_s_name_label_and_service_selector(generation: int, name: str, selector: dict[str, str]) -> None:
    pod = build_head_pod(C, generation)
    assert pod["metadata"]["name"] == name
    assert pod["metadata"]["labels"][labels.HEAD_GENERATION] == str(generation)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["RAY_CLOUD_INSTANCE_ID"] == name, "Ray reports the head under its pod's name"
    assert build_head_service(C, generation)["spec"]["selector"] == selector
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items()), "the service selects its own head"


@pytest.mark.parametrize(("labels_", "expected"), [
    pytest.param({}, 0, id="made-before-the-label"),
    pytest.param({labels.HEAD_GENERATION: "12"}, 12, id="labelled"),
    pytest.param({labels.HEAD_GENERATION: "x"}, 0, id="edited-by-hand"),
])
def test_head_generation_label(labels_: dict[str, str], expected: int) -> None:
    assert labels.head_generation(labels_) == expected


@pytest.mark.parametrize(("live", "desired", "patch"), [
    pytest.param(0, 1, {labels.HEAD_GENERATION: "1"}, id="0-to-1-adds-the-label"),
    pytest.param(1, 2, {labels.HEAD_GENERATION: "2"}, id="1-to-2"),
    pytest.param(3, 0, {labels.HEAD_GENERATION: None}, id="back-to-0-removes-it"),
    pytest.param(2, 2, None, id="unchanged"),
])
def test_the_service_follows_the_generation_in_place(live: int, desired: int,
                                                     patch: dict[str, str | None] | None) -> None:
    change = service_change(build_head_service(C, desired), build_head_service(C, live))
    if patch is None:
        assert change is None
        return
    assert change is not None and not change.recreate
    assert change.patch == {"spec": {"selector": patch}}


def plan_with(heads: list[PodState], c: Any = C, generation: int = 0) -> Any:
    obs = Observed(pods=(*heads, *workers(c, 2)), service_exists=True, health={}, head_generation=generation,
                   budgets={"demo-head-pdb": "u"})
    return plan_cluster(c, obs, {}, NOW)


@pytest.mark.parametrize(("heads", "created", "generation"), [
    pytest.param([old_head(NODE_GONE)], CreateHead("head pod missing; the old one is stuck on a lost node: demo-head "
                                                   "(its node n1 was deleted)", 1), 1, id="node-gone-new-head"),
    pytest.param([old_head(NOT_READY_SHORT)], None, 0, id="notready-shorter-than-threshold-waits"),
    pytest.param([old_head(READY)], None, 0, id="node-ready-waits"),
    pytest.param([old_head(NODE_GONE), old_head(READY, generation=1, deleting=False)], None, 1,
                 id="the-new-head-runs-nothing-more"),
])
def test_the_plan_starts_a_new_head_beside_a_stuck_one_only_on_a_lost_node(
        heads: list[PodState], created: CreateHead | None, generation: int) -> None:
    for c in (C, GCS):
        plan = plan_with(heads, c)
        assert [a for a in plan.actions if isinstance(a, CreateHead)] == ([created] if created else [])
        assert plan.head_generation == generation
        if created is None and not any(p.alive for p in heads):
            assert plan.requeue_after == 1.0
            assert plan.notes == ((EventReason.HEAD_WAITING, "the new head waits for demo-head to be gone: its node is "
                                   "not known to be dead, and two GCS servers must never run at once"),)


def test_a_missing_service_selects_the_generation_the_turn_creates() -> None:
    obs = Observed(pods=(old_head(NODE_GONE, generation=4),), service_exists=False, health={}, head_generation=4)
    plan = plan_cluster(C, obs, {}, NOW)
    assert CreateHead("head pod missing; the old one is stuck on a lost node: demo-head-4 (its node n1 was deleted)",
                      5) in plan.actions
    assert CreateService("head service missing", 5) in plan.actions


def test_a_head_that_left_reuses_its_generation_s_name() -> None:
    plan = plan_with([], generation=2)
    assert [a for a in plan.actions if isinstance(a, CreateHead)] == [CreateHead("head pod missing", 2)]
    assert plan.head_generation == 2


def test_a_running_head_of_a_later_generation_than_status_is_kept() -> None:
    """The operator stopped after creating generation 1's head, before writing status: no third head."""
    running = observe_pod(with_state(build_head_pod(C, 1), node="n2"), READY, NOW, NOT_READY_SECONDS)
    plan = plan_with([old_head(NODE_GONE), running], generation=0)
    assert not [a for a in plan.actions if isinstance(a, CreateHead)]
    assert plan.head_generation == 1



def test_a_refused_create_retried_keeps_its_generation_s_name() -> None:
    """Status says generation 1 (the turn that decided it wrote it), yet the API server refused its head: the next
    turn tries demo-head-1 again, it does not move on to demo-head-2."""
    plan = plan_with([old_head(NODE_GONE)], generation=1)
    assert [(a.generation, a.reason) for a in plan.actions if isinstance(a, CreateHead)] == [
        (1, "head pod missing; the old one is stuck on a lost node: demo-head (its node n1 was deleted)")]
    assert plan.head_generation == 1
