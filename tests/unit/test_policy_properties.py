"""Properties of the autoscaling policy over random snapshots (hypothesis)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_operator.autoscaler.policy import DemandKind, Node, PolicyInput, Settings, WorkerGroup, decide
from swarm_operator.autoscaler.snapshot import Bundle, GangDemand, NodeStatus, ResourceDemand, Resources, Strategy

PROFILE = settings(max_examples=200, deadline=None)


def gang(strategy: Strategy, *bundles: Resources) -> GangDemand:
    return GangDemand(tuple(Bundle(b) for b in bundles), strategy)

G = 1e9

group_resources = st.builds(
    lambda cpu, gpu, mem: {"CPU": cpu, "GPU": gpu, "memory": mem},
    st.sampled_from([2.0, 4.0, 8.0, 16.0]), st.sampled_from([0.0, 0.0, 1.0, 4.0]), st.sampled_from([8 * G, 32 * G]))
shapes = st.builds(
    lambda cpu, gpu, mem: {"CPU": cpu, "GPU": gpu, "memory": mem},
    st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]), st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0]),
    st.sampled_from([0.0, 0.0, 1 * G, 8 * G]))
demands = st.lists(st.builds(ResourceDemand, shapes, st.integers(1, 60)), max_size=5)
gangs = st.lists(st.builds(lambda b, s, c: GangDemand(tuple(Bundle(x) for x in b), s, c),
                           st.lists(shapes, min_size=1, max_size=4), st.sampled_from(list(Strategy)),
                           st.integers(1, 3)),
                 max_size=3)


@st.composite
def groups(draw: st.DrawFn) -> tuple[WorkerGroup, ...]:
    out = []
    for k in range(draw(st.integers(1, 4))):
        lo = draw(st.integers(0, 3))
        hi = draw(st.integers(lo, lo + 8))
        out.append(WorkerGroup(f"g{k}", draw(group_resources), lo, hi, draw(st.integers(0, 12)),
                               draw(st.integers(0, 4))))
    return tuple(out)


@st.composite
def snapshots(draw: st.DrawFn) -> PolicyInput:
    gs = draw(groups())
    nodes = []
    for k in range(draw(st.integers(0, 10))):
        g = draw(st.sampled_from([*gs, None]))
        total = dict(g.resources) if g is not None else {"CPU": 2.0}
        status = draw(st.sampled_from(list(NodeStatus)))
        share = draw(st.sampled_from([0.0, 0.5, 1.0])) if status is NodeStatus.RUNNING else 1.0
        nodes.append(Node(f"n{k}", g.name if g is not None else None, status, total,
                             {r: v * share for r, v in total.items()}, draw(st.floats(0, 300)),
                             draw(st.floats(0, 5000))))
    s = Settings(upscaling_speed=draw(st.sampled_from([0.5, 1.0, math.inf])),
                 idle_timeout_s=draw(st.sampled_from([0.0, 30.0, 120.0])), conserve_gpu_nodes=draw(st.booleans()),
                 scale_down_stabilization_s=draw(st.sampled_from([0.0, 60.0])))
    unavailable = frozenset(draw(st.lists(st.sampled_from([g.name for g in gs]), max_size=2)))
    last_up = {g.name: draw(st.floats(900, 1000)) for g in gs if draw(st.booleans())}
    return PolicyInput(gs, tuple(nodes), tuple(draw(demands)), tuple(draw(gangs)),
                       tuple(draw(st.lists(st.builds(ResourceDemand, shapes, st.integers(1, 4)), max_size=2))),
                       unavailable, s, 1000.0, last_up)


@PROFILE
@given(snapshots())
def test_targets_stay_within_min_and_max(inp: PolicyInput) -> None:
    d = decide(inp)
    assert set(d.targets) == {g.name for g in inp.groups}
    for g in inp.groups:
        assert g.min_replicas <= d.targets[g.name] <= g.max_replicas


@PROFILE
@given(snapshots())
def test_drains_only_idle_nodes_never_below_min(inp: PolicyInput) -> None:
    d = decide(inp)
    by_name = {n.name: n for n in inp.nodes}
    groups_by_name = {g.name: g for g in inp.groups}
    assert len({x.node for x in d.drains}) == len(d.drains)
    for x in d.drains:
        n = by_name[x.node]
        assert n.status is NodeStatus.IDLE and n.group == x.group and x.group in groups_by_name
    for g in inp.groups:
        live = sum(1 for n in inp.nodes if n.group == g.name and n.status in (NodeStatus.RUNNING, NodeStatus.IDLE))
        drained = [x for x in d.drains if x.group == g.name]
        assert live - len(drained) >= min(live, g.min_replicas)
        if live <= g.max_replicas:  # below max, drains are idle-timeout drains only
            assert all(by_name[x.node].idle_s > inp.settings.idle_timeout_s for x in drained)


@PROFILE
@given(snapshots())
def test_gangs_are_all_or_nothing(inp: PolicyInput) -> None:
    """A gang left waiting took nothing: removing the waiting ones changes no target and no drain."""
    def key(strategy: Strategy | None, bundles: tuple[Mapping[str, float], ...]) -> object:
        return strategy, tuple(tuple(sorted(b.items())) for b in bundles)

    d = decide(inp)
    left: dict[object, int] = {}
    for u in d.waiting:
        if u.kind is DemandKind.GANG:
            left[key(u.strategy, u.bundles)] = left.get(key(u.strategy, u.bundles), 0) + u.count
    gangs_placed = []
    for gang in inp.gangs:
        k = key(gang.strategy, tuple(b.shape for b in gang.bundles))
        drop = min(gang.count, left.get(k, 0))
        left[k] = left.get(k, 0) - drop
        gangs_placed.append(replace(gang, count=gang.count - drop))  # count 0 keeps its resource names around
    assert all(v == 0 for v in left.values())
    without = decide(replace(inp, gangs=tuple(gangs_placed)))
    assert without.targets == d.targets
    assert without.drains == d.drains
    assert not [u for u in without.waiting if u.kind is DemandKind.GANG]


@st.composite
def fresh_single_group(draw: st.DrawFn) -> PolicyInput:
    res = draw(group_resources)
    g = WorkerGroup("g", res, 0, 100_000, 0)
    return PolicyInput((g,), (), tuple(draw(demands)), tuple(draw(gangs)),
                       tuple(draw(st.lists(st.builds(ResourceDemand, shapes, st.integers(1, 4)), max_size=2))),
                       settings=Settings(upscaling_speed=math.inf, conserve_gpu_nodes=draw(st.booleans())))


def per_node(cap: Mapping[str, float], shape: Mapping[str, float]) -> int:
    asked = [(k, v) for k, v in shape.items() if v > 0]
    return min((int(cap.get(k, 0.0) // v) for k, v in asked), default=0) if asked else 0


@PROFILE
@given(fresh_single_group())
def test_never_more_nodes_than_a_simple_assignment(inp: PolicyInput) -> None:
    """Bound: every shape first-fit onto fresh nodes of its own (ceil(count / per node)), every gang on nodes of
    its own (one for STRICT_PACK, one per bundle otherwise); demand that fits no node adds nothing."""
    cap = dict(inp.groups[0].resources)
    bound = 0
    for dm in (*inp.demands, *inp.constraints):
        p = per_node(cap, dm.shape)
        bound += -(-dm.count // p) if p else 0
    for gang in inp.gangs:
        bundles = [b.shape for b in gang.bundles]
        if not all(per_node(cap, b) for b in bundles):
            continue
        if gang.strategy is Strategy.STRICT_PACK:
            combined = {k: sum(b.get(k, 0.0) for b in bundles) for k in cap}
            bound += gang.count if per_node(cap, combined) else 0
        else:
            bound += gang.count * len(bundles)
    assert decide(inp).targets["g"] <= bound


def test_a_gang_that_waits_gives_back_the_speed_cap_it_lifted() -> None:
    """Found by test_gangs_are_all_or_nothing: a gang retried past the speed cap and failing again kept the
    lifted budget, so the CPU tasks behind it got one node more than without that gang."""
    cpu = {"CPU": 2.0, "GPU": 0.0, "memory": 8 * G}
    groups = (WorkerGroup("g0", cpu, 0, 6, 0, 0, {}), WorkerGroup("g1", cpu, 0, 0, 0, 0, {}),
              WorkerGroup("g3", {"CPU": 2.0, "GPU": 1.0, "memory": 8 * G}, 0, 0, 0, 0, {}))
    task = {"CPU": 0.5, "GPU": 0.0, "memory": 0.0}
    waiting_gang = gang(Strategy.PACK, {"CPU": 0.5, "GPU": 0.0, "memory": 0.0}, {"CPU": 0.5, "GPU": 1.0, "memory": 0.0})
    base = PolicyInput(groups=groups, nodes=(), demands=(ResourceDemand(task, 17),),
                       gangs=(gang(Strategy.PACK, {"CPU": 2.0, "GPU": 0.0, "memory": 0.0}),),
                       settings=Settings(upscaling_speed=0.5, idle_timeout_s=0.0, scale_down_stabilization_s=0.0),
                       now=1000.0)
    with_waiting = decide(replace(base, gangs=(*base.gangs, waiting_gang)))
    assert [u.kind for u in with_waiting.waiting if u.kind is DemandKind.GANG] == [DemandKind.GANG]
    assert with_waiting.targets == decide(base).targets
