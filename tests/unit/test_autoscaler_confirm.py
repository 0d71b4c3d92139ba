"""autoscaler.confirm: which scale-ups wait for a second read, table-driven."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from swarm_operator.autoscaler.confirm import (
    MAX_HOLD_S,
    Hold,
    available_by_node,
    may_be_counted_twice,
    next_hold,
    taken_since,
)
from swarm_operator.autoscaler.policy import PolicyInput, Settings, WorkerGroup, decide
from swarm_operator.autoscaler.snapshot import Bundle, GangDemand, NodeStatus, RayNode, Strategy
from tests.unit.ray_fixtures import demand, node_id, ray_node

CPU8 = {"CPU": 8.0, "memory": 4e9}


def worker(name: str, cpus_free: float, status: NodeStatus = NodeStatus.RUNNING) -> RayNode:
    return ray_node(name, "cpu", status, total=CPU8, available={**CPU8, "CPU": cpus_free, "node:10.1.0.9": 1.0})


def before(*nodes: tuple[str, float]) -> dict[str, Mapping[str, float]]:
    return {node_id(name): {**CPU8, "CPU": free} for name, free in nodes}


@pytest.mark.parametrize(("previous", "now", "taken"), [
    (before(("a", 8)), [worker("a", 7)], {"CPU": 1.0}),  # a known node took one
    (before(("a", 6)), [worker("a", 8)], {}),  # it freed two: nothing taken
    ({}, [worker("a", 5)], {"CPU": 3.0}),  # joined since: all it has taken
    (before(("a", 8), ("b", 8)), [worker("a", 6), worker("b", 7)], {"CPU": 3.0}),
    (before(("a", 8)), [worker("a", 0, NodeStatus.DEAD)], {}),  # dead nodes take nothing
])
def test_taken_since(previous: dict[str, Mapping[str, float]], now: list[RayNode], taken: dict[str, float]) -> None:
    assert taken_since(previous, now) == taken


def test_available_by_node_keeps_the_live_ones() -> None:
    assert available_by_node([worker("a", 3), worker("b", 0, NodeStatus.DEAD)]) == {
        node_id("a"): {**CPU8, "CPU": 3.0, "node:10.1.0.9": 1.0}}


@pytest.mark.parametrize(("tasks", "more", "previous", "held"), [
    ({"CPU": 1.0}, False, before(("a", 8)), True),  # no more than was taken: may be the same task twice
    ({"CPU": 2.0}, False, before(("a", 8)), False),  # more than was taken
    ({"CPU": 1.0, "GPU": 1.0}, False, before(("a", 8)), False),  # a resource nothing took
    ({"CPU": 1.0}, True, before(("a", 8)), False),  # new nodes for more than tasks
    ({}, False, before(("a", 8)), False),  # no task on a new node
    ({"CPU": 1.0}, False, None, False),  # the first read: nothing to compare with
])
def test_may_be_counted_twice(tasks: dict[str, float], more: bool, previous: dict[str, Mapping[str, float]] | None,
                              held: bool) -> None:
    assert may_be_counted_twice(tasks, more, previous, [worker("a", 7)]) is held


NOW = 1_000.0
JOINED = Hold(NOW - 1.5, {})  # held at the previous read; node a joined since the read before that
KNOWN = Hold(NOW - 1.5, before(("a", 8)))  # held at the previous read; node a was there before


@pytest.mark.parametrize(("hold", "previous", "tasks", "after"), [
    (None, before(("a", 8)), {"CPU": 1.0}, Hold(NOW, before(("a", 8)))),  # a first hold, from the previous read
    (None, None, {"CPU": 1.0}, None),  # the first read: nothing to compare with
    (None, before(("a", 8)), {"CPU": 2.0}, None),  # more than was taken
    (JOINED, before(("a", 7)), {"CPU": 1.0}, JOINED),  # a new node's worker may still be starting: held on
    (KNOWN, before(("a", 7)), {"CPU": 1.0}, None),  # an older node's take gets the one second read only
    (Hold(NOW - MAX_HOLD_S, {}), before(("a", 7)), {"CPU": 1.0}, None),  # held long enough: real demand
    (JOINED, before(("a", 7)), {"CPU": 2.0}, None),  # more than the new node took
    (JOINED, before(("a", 7)), {}, None),  # the task went: the decision goes ahead (with no new node)
])
def test_next_hold(hold: Hold | None, previous: dict[str, Mapping[str, float]] | None, tasks: dict[str, float],
                   after: Hold | None) -> None:
    assert next_hold(hold, previous, tasks, False, [worker("a", 7)], NOW) == after


GROUP = WorkerGroup("cpu", CPU8, min_replicas=0, max_replicas=10, replicas=1)


@pytest.mark.parametrize(("kw", "tasks", "more"), [
    ({"demands": (demand(12, CPU=1.0),)}, {"CPU": 4.0}, False),  # 8 on the coming pod, 4 on a new node
    ({"demands": (demand(6, CPU=1.0),)}, {}, False),  # all on the coming pod
    ({"gangs": (GangDemand((Bundle({"CPU": 8.0}),) * 2, Strategy.SPREAD),)}, {}, True),
    ({"groups": (WorkerGroup("cpu", CPU8, 3, 10, 1),)}, {}, True),  # minReplicas
])
def test_the_decision_says_what_new_nodes_are_for(kw: dict[str, Any], tasks: dict[str, float], more: bool) -> None:
    d = decide(PolicyInput(**{"groups": (GROUP,), "settings": Settings(upscaling_speed=float("inf")), **kw}))
    assert (d.tasks_on_new_nodes, d.new_nodes_for_more_than_tasks) == (tasks, more)
