"""Which pods' disruptions count now (reconcile/tally.py): each pod ended by a disruption the operator did not cause,
exactly once, whether it is first seen disrupted, disrupted and being deleted at once, or only gone."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.reconcile.disruption import Cause
from swarm_operator.reconcile.observe import PodState, observe_pod
from swarm_operator.reconcile.tally import Disruption, Tally, tally_disruptions
from tests.unit.operator_fixtures import cluster, head_pod, worker_pod

C = cluster()


def target(reason: str) -> dict[str, Any]:
    return {"type": "DisruptionTarget", "status": "True", "reason": reason}


def pod(suffix: str, *, condition: str | None = None, deleting: bool = False, head: bool = False,
        **state: Any) -> PodState:
    """A worker demo-cpu-<suffix> (or the head) with uid u-<suffix>, maybe with DisruptionTarget `condition`."""
    raw = head_pod(C, deleting=deleting, **state) if head else worker_pod(C, suffix=suffix, deleting=deleting, **state)
    raw["metadata"]["uid"] = f"u-{suffix}"
    if condition is not None:
        raw["status"]["conditions"].append(target(condition))
    return observe_pod(raw)


def worker_evicted(suffix: str) -> Disruption:
    return Disruption(f"u-{suffix}", "cpu", Cause.EVICTED,
                      f"worker demo-cpu-{suffix} of group cpu disrupted (evicted through the Eviction API)")


API = "EvictionByEvictionAPI"
OURS = frozenset({"demo-cpu-ours1"})

CASES = [
    # (present, vanished, counted before) → (counted now, remembered after)
    pytest.param([pod("ev001", condition=API)], [], set(), [worker_evicted("ev001")], {"u-ev001"},
                 id="seen-with-the-condition-before-the-deletion"),
    pytest.param([pod("ev001", condition=API, deleting=True)], [], set(), [worker_evicted("ev001")], {"u-ev001"},
                 id="seen-with-the-condition-and-the-deletion-at-once"),
    pytest.param([], [pod("ev001", condition=API)], set(), [worker_evicted("ev001")], set(),
                 id="seen-only-gone-between-two-turns"),
    pytest.param([], [pod("ev001", condition=API, deleting=True)], set(), [worker_evicted("ev001")], set(),
                 id="gone-with-its-deletion-timestamp"),
    pytest.param([pod("ev001", condition=API, deleting=True)], [], {"u-ev001"}, [], {"u-ev001"},
                 id="counted-then-seen-deleting-is-not-counted-again"),
    pytest.param([], [pod("ev001", condition=API, deleting=True)], {"u-ev001"}, [], set(),
                 id="counted-then-gone-is-not-counted-again-and-forgotten"),
    pytest.param([pod("ours1", condition="DeletionByPodGC", deleting=True)], [], set(), [], set(),
                 id="deleted-by-the-operator-then-marked-by-the-pod-gc"),
    pytest.param([], [pod("ours1", condition="DeletionByPodGC")], set(), [], set(),
                 id="deleted-by-the-operator-and-gone"),
    pytest.param([pod("ours1", condition=API)], [], set(),
                 [Disruption("u-ours1", "cpu", Cause.EVICTED,
                             "worker demo-cpu-ours1 of group cpu disrupted (evicted through the Eviction API)")],
                 {"u-ours1"}, id="a-name-the-operator-deleted-but-a-pod-not-being-deleted-is-no-deletion-of-ours"),
    pytest.param([pod("user1", deleting=True)], [pod("user2")], set(), [], set(),
                 id="deleted-by-someone-without-a-disruption-is-no-disruption"),
    pytest.param([pod("h", head=True, condition=API, deleting=True)], [], set(),
                 [Disruption("u-h", "head", Cause.EVICTED,
                             "head demo-head disrupted (evicted through the Eviction API)")],
                 {"u-h"}, id="the-head-evicted-through-the-api"),
    pytest.param([pod("kub01", phase="Failed", ready=False, reason="Evicted", message="low on memory")], [], set(),
                 [Disruption("u-kub01", "cpu", Cause.EVICTED,
                             "worker demo-cpu-kub01 of group cpu disrupted (evicted by the kubelet: low on memory)")],
                 {"u-kub01"}, id="the-kubelet-eviction"),
    pytest.param([pod("tm001", condition="DeletionByTaintManager", deleting=True)], [], set(),
                 [Disruption("u-tm001", "cpu", Cause.DISRUPTION_TARGET, "worker demo-cpu-tm001 of group cpu disrupted "
                             "(deleted by the taint manager (its node was tainted NoExecute))")],
                 {"u-tm001"}, id="deleted-by-the-taint-manager"),
    pytest.param([pod("ok001")], [], {"u-gone1"}, [], set(),
                 id="a-counted-pod-the-cache-dropped-unseen-is-forgotten"),
]


@pytest.mark.parametrize(("present", "vanished", "counted", "new", "remembered"), CASES)
def test_tally(present: list[PodState], vanished: list[PodState], counted: set[str], new: list[Disruption],
               remembered: set[str]) -> None:
    assert tally_disruptions(present, vanished, OURS, counted) == Tally(tuple(new), frozenset(remembered))


def test_a_pod_counted_once_across_every_sight_of_it() -> None:
    """The Eviction API's victim as a turn may see it in turn: with the condition, deleting, then gone."""
    sights = [([pod("ev001", condition=API)], []), ([pod("ev001", condition=API, deleting=True)], []),
              ([], [pod("ev001", condition=API, deleting=True)])]
    counted: frozenset[str] = frozenset()
    total = []
    for present, vanished in sights:
        tally = tally_disruptions(present, vanished, frozenset(), counted)
        total += tally.new
        counted = tally.counted
    assert total == [worker_evicted("ev001")] and counted == frozenset()
