"""The autoscaling policy, rule by rule: one table of snapshots and what decide() must answer for each."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest

from swarm_operator.autoscaler.policy import (
    Decision,
    DemandKind,
    Node,
    PolicyInput,
    Settings,
    Unplaced,
    WorkerGroup,
    decide,
    format_resources,
)
from swarm_operator.autoscaler.policy.types import ACCELERATORS
from swarm_operator.autoscaler.snapshot import (
    Bundle,
    GangDemand,
    LabelConstraint,
    LabelOp,
    NodeStatus,
    ResourceDemand,
    Resources,
    Strategy,
)
from swarm_operator.spec.rules import ACCELERATORS as SPEC_ACCELERATORS

G = 1e9
CPU4 = {"CPU": 4.0, "memory": 16 * G}
CPU32 = {"CPU": 32.0, "memory": 128 * G}
GPU1 = {"CPU": 8.0, "GPU": 1.0, "memory": 32 * G}
GPU4 = {"CPU": 16.0, "GPU": 4.0, "memory": 64 * G}
RUNNING, IDLE, DRAINING, DEAD = NodeStatus.RUNNING, NodeStatus.IDLE, NodeStatus.DRAINING, NodeStatus.DEAD
NOW = 10_000.0


def grp(name: str, res: Resources, *, lo: int = 0, hi: int = 100, replicas: int = 0, pending: int = 0,
        labels: Mapping[str, str] | None = None) -> WorkerGroup:
    return WorkerGroup(name, res, lo, hi, replicas, pending, dict(labels or {}))


def node(name: str, group: str | None, res: Resources, *, status: NodeStatus = IDLE,
         free: Resources | None = None, idle: float = 0.0, age: float = 1000.0,
         labels: Mapping[str, str] | None = None) -> Node:
    if free is None:
        free = res if status is IDLE else {}
    return Node(name, group, status, res, free, idle, age, labels)


def busy(name: str, group: str, res: Resources) -> Node:
    return node(name, group, res, status=RUNNING, free={})


def inp(*groups: WorkerGroup, nodes: tuple[Node, ...] = (), demands: tuple[ResourceDemand, ...] = (),
        gangs: tuple[GangDemand, ...] = (), constraints: tuple[ResourceDemand, ...] = (),
        unavailable: frozenset[str] = frozenset(),
        settings: Settings | None = None, last_up: Mapping[str, float] | None = None) -> PolicyInput:
    return PolicyInput(groups, nodes, demands, gangs, constraints, unavailable,
                       settings or Settings(upscaling_speed=math.inf), NOW, dict(last_up or {}))


def task(shape: Resources, count: int, *selector: LabelConstraint) -> ResourceDemand:
    return ResourceDemand(dict(shape), count, (tuple(selector),) if selector else ())


def gang(strategy: Strategy, *bundles: Resources, count: int = 1) -> GangDemand:
    return GangDemand(tuple(Bundle(dict(b)) for b in bundles), strategy, count)


def zone(op: LabelOp, *values: str) -> LabelConstraint:
    return LabelConstraint("zone", op, frozenset(values))


@dataclass(frozen=True)
class Expect:
    targets: Mapping[str, int]  # groups not listed must keep their current target
    drains: tuple[str, ...] = ()  # in order
    infeasible: tuple[tuple[DemandKind, int], ...] = ()
    waiting: tuple[tuple[DemandKind, int], ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)  # group -> substring of its reason


CASES = [
    # -- pack onto free capacity of running and pending nodes before adding any
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1),
            nodes=(node("c1", "cpu", CPU4, status=RUNNING, free={"CPU": 3.0, "memory": 8 * G}),),
            demands=(task({"CPU": 1}, 3),)),
        Expect({"cpu": 1}), id="free-room-on-a-running-node-absorbs-demand"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=2, pending=2), demands=(task({"CPU": 1}, 8),)),
        Expect({"cpu": 2}), id="pending-pods-count-as-coming-capacity"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=3), nodes=(busy("c1", "cpu", CPU4),), demands=(task({"CPU": 1}, 8),)),
        Expect({"cpu": 3}), id="pods-not-yet-created-for-the-target-count-too"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1),
            nodes=(node("c1", "cpu", CPU4, status=RUNNING, free={"CPU": 2.0, "memory": 8 * G}),),
            demands=(task({"CPU": 1}, 6),)),
        Expect({"cpu": 2}, reasons={"cpu": "cpu 1→2: 4 pending {CPU:1}"}), id="only-the-overflow-opens-nodes"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, idle=900),),
            demands=(task({"CPU": 2}, 2),)),
        Expect({"cpu": 1}), id="an-idle-node-past-timeout-takes-demand-and-stays"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=0), nodes=(node("c1", "cpu", CPU4, status=DRAINING),),
            demands=(task({"CPU": 1}, 1),)),
        Expect({"cpu": 1}), id="a-draining-node-is-not-capacity"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, status=DEAD),),
            demands=(task({"CPU": 4}, 2),)),
        Expect({"cpu": 2}), id="a-dead-node-is-not-capacity-its-replacement-is"),
    pytest.param(
        inp(grp("cpu", CPU4), nodes=(node("head", None, {"CPU": 2.0}, status=RUNNING, free={"CPU": 2.0}),),
            demands=(task({"CPU": 1}, 2),)),
        Expect({"cpu": 0}), id="free-room-on-the-head-counts"),
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"CPU": 0.1}, 20), task({"CPU": 0.2}, 10))),
        Expect({"cpu": 1}), id="fractions-add-up-exactly-fixed-point"),
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"CPU": 1}, 2), task({"CPU": 1}, 2), task({"CPU": 0}, 50))),
        Expect({"cpu": 1}, reasons={"cpu": "cpu 0→1: 4 pending {CPU:1}"}),
        id="identical-demands-merge-and-empty-shapes-never-scale"),
    # -- best-fitting group, bulk fill
    pytest.param(
        inp(grp("small", CPU4), grp("large", CPU32), demands=(task({"CPU": 1}, 3),)),
        Expect({"small": 1, "large": 0}), id="a-little-demand-takes-the-small-group"),
    pytest.param(
        inp(grp("small", CPU4), grp("large", CPU32), demands=(task({"CPU": 1}, 64),)),
        Expect({"small": 0, "large": 2}), id="equal-waste-takes-fewer-larger-nodes"),
    pytest.param(
        inp(grp("small", CPU4), grp("large", CPU32), demands=(task({"CPU": 1, "memory": 24 * G}, 2),)),
        Expect({"small": 0, "large": 1}), id="a-shape-goes-where-it-fits-memory"),
    pytest.param(
        inp(grp("plain", {"CPU": 8.0}), grp("fpga", {"CPU": 8.0, "fpga": 1.0}), demands=(task({"CPU": 8}, 2),)),
        Expect({"plain": 2, "fpga": 0}), id="never-wastes-a-custom-resource-nobody-asked-for"),
    pytest.param(
        inp(grp("plain", {"CPU": 8.0}), grp("fpga", {"CPU": 8.0, "fpga": 1.0}),
            demands=(task({"CPU": 1, "fpga": 1}, 3),)),
        Expect({"plain": 0, "fpga": 3}), id="custom-resource-demand-takes-the-group-that-has-it"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=1000), demands=(task({"CPU": 1}, 1000),)),
        Expect({"cpu": 250}), id="bulk-fill-ceil-count-over-per-node"),
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"CPU": 3}, 1), task({"CPU": 1}, 1))),
        Expect({"cpu": 1}), id="smaller-shapes-fill-the-room-larger-ones-leave"),
    # -- conserve GPU nodes
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1), demands=(task({"CPU": 1}, 8),)),
        Expect({"cpu": 2, "gpu": 0}), id="cpu-demand-starts-cpu-nodes"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1), demands=(task({"CPU": 8}, 1),)),
        Expect({"cpu": 0, "gpu": 1}), id="cpu-demand-no-cpu-group-fits-may-use-gpu"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=1), grp("gpu", GPU1), demands=(task({"CPU": 4}, 3),)),
        Expect({"cpu": 1, "gpu": 0}, waiting=((DemandKind.TASK, 2),), reasons={"cpu": "capped by maxReplicas 1"}),
        id="conserve-cpu-group-at-max-waits-rather-than-start-gpu"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=1), grp("gpu", GPU1), demands=(task({"CPU": 4}, 3),),
            settings=Settings(upscaling_speed=math.inf, conserve_gpu_nodes=False)),
        Expect({"cpu": 1, "gpu": 1}), id="no-conserve-spills-to-gpu-at-max"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1), demands=(task({"GPU": 1}, 3),)),
        Expect({"cpu": 0, "gpu": 3}), id="gpu-demand-starts-gpu-nodes"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1), demands=(task({"CPU": 4}, 40), task({"GPU": 1}, 2)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 5, "gpu": 0}, waiting=((DemandKind.TASK, 2), (DemandKind.TASK, 35)),
               reasons={"cpu": "capped by upscaling speed (5"}),
        id="conserve-gpu-nodes-held-while-the-cpu-group-ramps-up"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1), demands=(task({"CPU": 4}, 40),),
            gangs=(gang(Strategy.STRICT_SPREAD, {"GPU": 1}, {"GPU": 1}),), settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 5, "gpu": 2}, waiting=((DemandKind.TASK, 31),)),
        id="conserve-gpu-gangs-not-held-while-the-cpu-group-ramps-up"),
    pytest.param(  # 4 + 4 nodes: the second gang goes past the cap of 5 (one may), the other 8 wait
        inp(grp("cpu", CPU4), grp("gpu", GPU1),
            gangs=(gang(Strategy.PACK, *[{"CPU": 4}] * 4, count=10),
                   gang(Strategy.STRICT_SPREAD, *[{"GPU": 1, "CPU": 8}] * 2)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 8, "gpu": 0}, waiting=((DemandKind.GANG, 1), (DemandKind.GANG, 8)),
               reasons={"cpu": "capped by upscaling speed (5 new nodes per decision)"}),
        id="conserve-gpu-gangs-held-while-cpu-only-gangs-wait-for-the-ramp"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=2, pending=2),
            gangs=(gang(Strategy.STRICT_SPREAD, *[{"CPU": 4}] * 12),), settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 12}, reasons={"cpu": "cpu 2→12: 1 pending placement group STRICT_SPREAD [12×{CPU:4}]"}),
        id="a-gang-wider-than-the-speed-cap-still-starts"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1),
            gangs=(gang(Strategy.PACK, *[{"CPU": 4}] * 4), gang(Strategy.STRICT_SPREAD, *[{"GPU": 1, "CPU": 8}] * 2)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 4, "gpu": 2}), id="conserve-gpu-gangs-not-held-when-the-cpu-gangs-fit-the-ramp"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1),
            gangs=(gang(Strategy.PACK, *[{"CPU": 4}] * 4, count=10),
                   gang(Strategy.STRICT_SPREAD, *[{"GPU": 1, "CPU": 8}] * 2)),
            constraints=(task({"GPU": 1}, 1),), settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 6, "gpu": 1}, waiting=((DemandKind.GANG, 1), (DemandKind.GANG, 8))),
        id="conserve-gpu-request-resources-never-held"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=20), grp("gpu", GPU1), demands=(task({"CPU": 4}, 20), task({"GPU": 1}, 2)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 20, "gpu": 2}), id="conserve-gpu-nodes-start-once-the-cpu-ramp-is-done"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=5), grp("gpu", GPU1), demands=(task({"CPU": 4}, 40), task({"GPU": 1}, 2)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 5, "gpu": 2}, waiting=((DemandKind.TASK, 31),)),
        id="conserve-gpu-nodes-not-held-when-cpu-is-capped-by-max"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1), demands=(task({"CPU": 4}, 40), task({"GPU": 1}, 2)),
            settings=Settings(upscaling_speed=1.0, conserve_gpu_nodes=False)),
        Expect({"cpu": 5, "gpu": 5}, waiting=((DemandKind.TASK, 25),)), id="no-conserve-no-hold"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("gpu", GPU1, replicas=1),
            nodes=(node("g1", "gpu", GPU1, status=RUNNING, free={"CPU": 6.0, "memory": 16 * G}),),
            demands=(task({"CPU": 1}, 6),)),
        Expect({"cpu": 0, "gpu": 1}), id="free-cpus-on-a-running-gpu-node-are-used-not-started"),
    # -- infeasible demand never scales anything
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"CPU": 64}, 5),)),
        Expect({"cpu": 0}, infeasible=((DemandKind.TASK, 5),)), id="too-large-for-every-group-is-infeasible"),
    pytest.param(
        inp(grp("a", CPU4, labels={"zone": "a"}), demands=(task({"CPU": 1}, 2, zone(LabelOp.IN, "b")),)),
        Expect({"a": 0}, infeasible=((DemandKind.TASK, 2),)), id="selector-matching-no-group-is-infeasible"),
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"TPU": 1}, 7), task({"CPU": 1}, 4))),
        Expect({"cpu": 1}, infeasible=((DemandKind.TASK, 7),)), id="infeasible-next-to-feasible-only-feasible-scales"),
    pytest.param(
        inp(grp("cpu", CPU4),
            nodes=(node("head", None, {"CPU": 1.0, "head": 1.0}, status=RUNNING, free={}),),
            demands=(task({"head": 1}, 1),)),
        Expect({"cpu": 0}, waiting=((DemandKind.TASK, 1),)), id="fits-only-a-busy-head-waits-not-infeasible"),
    pytest.param(
        inp(grp("gpu", GPU4), gangs=(gang(Strategy.PACK, {"GPU": 1}, {"GPU": 8}),)),
        Expect({"gpu": 0}, infeasible=((DemandKind.GANG, 1),)), id="gang-with-one-infeasible-bundle-is-infeasible"),
    pytest.param(
        inp(grp("gpu", GPU4), gangs=(gang(Strategy.STRICT_PACK, *[{"GPU": 1}] * 5),)),
        Expect({"gpu": 0}, infeasible=((DemandKind.GANG, 1),)), id="strict-pack-larger-than-a-node-is-infeasible"),
    pytest.param(
        inp(grp("cpu", CPU4), constraints=(task({"CPU": 64}, 2),)),
        Expect({"cpu": 0}, infeasible=((DemandKind.CONSTRAINT, 2),)), id="infeasible-constraint-is-reported"),
    # -- gangs are atomic, with their strategy
    pytest.param(
        inp(grp("gpu", GPU4), gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 3),)),
        Expect({"gpu": 3}, reasons={"gpu": "1 pending placement group STRICT_SPREAD [3×{GPU:1}]"}),
        id="strict-spread-takes-distinct-nodes"),
    pytest.param(
        inp(grp("gpu", GPU4), gangs=(gang(Strategy.STRICT_PACK, *[{"GPU": 1}] * 4, count=3),)),
        Expect({"gpu": 3}), id="strict-pack-one-node-per-gang-in-bulk"),
    pytest.param(
        inp(grp("cpu", CPU4), gangs=(gang(Strategy.PACK, *[{"CPU": 1}] * 4),)),
        Expect({"cpu": 1}), id="pack-fills-one-node"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=3), nodes=tuple(node(f"c{i}", "cpu", CPU4) for i in range(3)),
            gangs=(gang(Strategy.SPREAD, *[{"CPU": 1}] * 3),)),
        Expect({"cpu": 3}), id="spread-uses-existing-nodes"),
    pytest.param(
        inp(grp("cpu", CPU4), gangs=(gang(Strategy.SPREAD, *[{"CPU": 1}] * 3),)),
        Expect({"cpu": 1}), id="spread-is-best-effort-new-nodes-are-packed"),
    pytest.param(
        inp(grp("gpu", GPU4, hi=3), gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 4),)),
        Expect({"gpu": 0}, waiting=((DemandKind.GANG, 1),)), id="gang-that-cannot-fit-under-max-adds-nothing"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=4), gangs=(gang(Strategy.STRICT_SPREAD, CPU4, CPU4, count=3),)),
        Expect({"cpu": 4}, waiting=((DemandKind.GANG, 1),)), id="identical-gangs-place-until-one-fails"),
    pytest.param(
        inp(grp("gpu", GPU4, replicas=1), nodes=(node("g1", "gpu", GPU4),),
            gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 3),)),
        Expect({"gpu": 3}), id="strict-spread-mixes-existing-and-new-nodes"),
    pytest.param(  # one at a time: 3 fresh nodes hold 4 instances, the 5th needs 3 more (6)
        inp(grp("gpu", GPU4), gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 3, count=5),)),
        Expect({"gpu": 4}, reasons={"gpu": "gpu 0→4: 5 pending placement groups STRICT_SPREAD [3×{GPU:1}]"}),
        id="identical-strict-spreads-share-new-nodes-round-robin"),
    pytest.param(
        inp(grp("gpu", GPU4, hi=3), gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 3, count=5),)),
        Expect({"gpu": 3}, waiting=((DemandKind.GANG, 1),)), id="round-robin-strict-spreads-stop-at-max"),
    pytest.param(  # each instance takes g1 once: 3 nodes, where all-new round robin would open 3
        inp(grp("gpu", GPU4, replicas=1), nodes=(node("g1", "gpu", GPU4),),
            gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 3, count=3),)),
        Expect({"gpu": 3}), id="strict-spreads-reuse-an-existing-node-each"),
    pytest.param(
        inp(grp("gpu", GPU4, hi=2), gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 2}] * 2),),
            demands=(task({"GPU": 1}, 4),)),
        Expect({"gpu": 2}), id="a-placed-gang-leaves-room-that-tasks-then-use"),
    # -- request_resources constraints, against total capacity
    pytest.param(
        inp(grp("cpu", CPU4), constraints=(task({"CPU": 4}, 3),)),
        Expect({"cpu": 3}, reasons={"cpu": "cpu 0→3: request_resources 3×{CPU:4}"}),
        id="constraint-scales-up-without-tasks"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(busy("c1", "cpu", CPU4),), constraints=(task({"CPU": 4}, 1),)),
        Expect({"cpu": 1}), id="constraint-counts-total-not-free-capacity"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=2), nodes=(node("c1", "cpu", CPU4, idle=900), node("c2", "cpu", CPU4, idle=900)),
            constraints=(task({"CPU": 4}, 1),)),
        Expect({"cpu": 1}, drains=("c2",)), id="node-a-constraint-needs-is-not-drained"),
    pytest.param(
        inp(grp("cpu", CPU4), constraints=(task({"CPU": 4}, 2),), demands=(task({"CPU": 1}, 8),)),
        Expect({"cpu": 2}), id="nodes-opened-for-a-constraint-also-serve-demand"),
    # -- min and max
    pytest.param(
        inp(grp("cpu", CPU4, lo=2)),
        Expect({"cpu": 2}, reasons={"cpu": "cpu 0→2: minReplicas 2"}), id="below-min-scales-to-min"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=5), demands=(task({"CPU": 4}, 20),)),
        Expect({"cpu": 5}, waiting=((DemandKind.TASK, 15),), reasons={"cpu": "capped by maxReplicas 5"}),
        id="never-above-max"),
    pytest.param(
        inp(grp("cpu", CPU4, hi=1, replicas=3),
            nodes=(busy("c1", "cpu", CPU4), node("c2", "cpu", CPU4, idle=5), node("c3", "cpu", CPU4, idle=5))),
        Expect({"cpu": 1}, drains=("c2", "c3"), reasons={"cpu": "above maxReplicas 1"}),
        id="max-lowered-drains-idle-nodes-even-before-timeout"),
    pytest.param(
        inp(grp("cpu", CPU4, lo=2, replicas=3), nodes=tuple(node(f"c{i}", "cpu", CPU4, idle=900) for i in range(3))),
        Expect({"cpu": 2}, drains=("c0",)), id="scale-down-stops-at-min"),
    # -- upscaling speed: max(5, ceil(speed × current nodes)) new nodes per decision
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"CPU": 4}, 40),), settings=Settings()),
        Expect({"cpu": 5}, waiting=((DemandKind.TASK, 35),), reasons={"cpu": "capped by upscaling speed (5"}),
        id="speed-from-zero-is-five"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=8), nodes=tuple(busy(f"c{i}", "cpu", CPU4) for i in range(8)),
            demands=(task({"CPU": 4}, 40),), settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 16}, waiting=((DemandKind.TASK, 32),)), id="speed-one-doubles"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=20), nodes=tuple(busy(f"c{i}", "cpu", CPU4) for i in range(15)),
            demands=(task({"CPU": 4}, 40),), settings=Settings(upscaling_speed=0.5)),
        Expect({"cpu": 30}, waiting=((DemandKind.TASK, 25),)), id="speed-counts-pending-pods-as-current"),
    pytest.param(
        inp(grp("cpu", CPU4, lo=7), demands=(task({"CPU": 4}, 20),), settings=Settings()),
        Expect({"cpu": 12}, waiting=((DemandKind.TASK, 8),)), id="min-is-restored-whatever-the-speed"),
    # -- stabilization, idle timeout, which nodes are drained
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, idle=900),), last_up={"cpu": NOW - 10}),
        Expect({"cpu": 1}), id="no-scale-down-within-stabilization-window"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, idle=900),), last_up={"cpu": NOW - 100}),
        Expect({"cpu": 0}, drains=("c1",), reasons={"cpu": "cpu 1→0: 1 idle > 60s"}),
        id="scale-down-after-the-window"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, idle=60),)),
        Expect({"cpu": 1}), id="idle-not-longer-than-timeout-stays"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, status=RUNNING, free=CPU4, idle=900),)),
        Expect({"cpu": 1}), id="a-running-node-is-never-drained"),
    pytest.param(
        inp(grp("cpu", CPU4, lo=1, replicas=3),
            nodes=(node("old", "cpu", CPU4, idle=900, age=9000), node("new", "cpu", CPU4, idle=100, age=200),
                   node("mid", "cpu", CPU4, idle=900, age=3000))),
        Expect({"cpu": 1}, drains=("new", "mid")), id="newest-idle-nodes-drain-first-oldest-stays"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, idle=900, labels={"zone": "a"}),),
            demands=(task({"CPU": 1}, 1, zone(LabelOp.NOT_IN, "a")),)),
        Expect({"cpu": 2}), id="a-group-scaling-up-drains-nothing"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=2), nodes=(node("c1", "cpu", CPU4, status=DRAINING),
                                                 node("c2", "cpu", CPU4, idle=900))),
        Expect({"cpu": 1}, drains=("c2",)), id="draining-nodes-are-not-drained-again"),
    pytest.param(
        inp(grp("cpu", CPU4), nodes=(node("x1", "removed-group", CPU4, idle=9000),)),
        Expect({"cpu": 0}), id="nodes-of-unknown-groups-are-never-drained"),
    # -- groups backed off (pods unschedulable)
    pytest.param(
        inp(grp("small", CPU4), grp("large", CPU32), demands=(task({"CPU": 1}, 3),), unavailable=frozenset({"small"})),
        Expect({"small": 0, "large": 1}), id="unavailable-group-next-best-is-tried"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=3, pending=2), nodes=(busy("c1", "cpu", CPU4),),
            unavailable=frozenset({"cpu"})),
        Expect({"cpu": 1}, reasons={"cpu": "unavailable"}), id="unavailable-group-releases-its-stuck-pods"),
    pytest.param(
        inp(grp("a", CPU4, replicas=2, pending=2), grp("b", CPU4), demands=(task({"CPU": 4}, 2),),
            unavailable=frozenset({"a"})),
        Expect({"a": 0, "b": 2}), id="stuck-pods-are-not-capacity"),
    pytest.param(
        inp(grp("cpu", CPU4), demands=(task({"CPU": 1}, 2),), unavailable=frozenset({"cpu"})),
        Expect({"cpu": 0}, waiting=((DemandKind.TASK, 2),)), id="unavailable-only-group-waits-not-infeasible"),
    # -- label selectors
    pytest.param(
        inp(grp("a", CPU4, labels={"zone": "a"}), grp("b", CPU4, labels={"zone": "b"}),
            demands=(task({"CPU": 1}, 2, zone(LabelOp.IN, "b")),)),
        Expect({"a": 0, "b": 1}), id="selector-in-picks-the-labelled-group"),
    pytest.param(
        inp(grp("a", CPU4, labels={"zone": "a"}), grp("b", CPU32, labels={"zone": "b"}),
            demands=(task({"CPU": 1}, 2, zone(LabelOp.NOT_IN, "a")),)),
        Expect({"a": 0, "b": 1}), id="selector-not-in-excludes-a-group"),
    pytest.param(
        inp(grp("a", CPU4, replicas=1, labels={"zone": "a"}), grp("b", CPU4, labels={"zone": "b"}),
            nodes=(node("a1", "a", CPU4),), demands=(task({"CPU": 1}, 1, zone(LabelOp.IN, "b")),)),
        Expect({"a": 1, "b": 1}), id="selector-skips-free-room-on-other-labels"),
    # -- the reason
    pytest.param(
        inp(grp("gpu", GPU4, replicas=2), nodes=(busy("g1", "gpu", GPU4), busy("g2", "gpu", GPU4)),
            demands=(task({"GPU": 1}, 12),)),
        Expect({"gpu": 5}, reasons={"gpu": "gpu 2→5: 12 pending {GPU:1}"}), id="reason-in-the-event-style"),
]


@pytest.mark.parametrize(("policy_input", "expect"), CASES)
def test_decide(policy_input: PolicyInput, expect: Expect) -> None:
    d = decide(policy_input)
    want = {g.name: g.replicas for g in policy_input.groups} | dict(expect.targets)
    assert dict(d.targets) == want
    assert tuple(x.node for x in d.drains) == expect.drains
    assert tuple((u.kind, u.count) for u in d.infeasible) == expect.infeasible
    assert tuple((u.kind, u.count) for u in d.waiting) == expect.waiting
    for g in policy_input.groups:  # a reason for every changed group, none for the others
        assert (g.name in d.reasons) == (d.targets[g.name] != g.replicas), d.reasons
    for name, text in expect.reasons.items():
        assert text in d.reasons[name], d.reasons[name]


# -- conserveGpuNodes guards every accelerator kind Ray schedules (spec.ACCELERATORS' Ray names), not only GPU

ACCELERATOR_KINDS = ("GPU", "TPU", "neuron_cores", "HPU")
# Every case above about GPU nodes and conserveGpuNodes, asked again with the GPU as another accelerator.
GPU_CASES = [c for c in CASES if "gpu" in str(c.id) or "conserve" in str(c.id)]


def as_kind(r: Resources, kind: str) -> Resources:
    return {kind if k == "GPU" else k: v for k, v in r.items()}


def with_accelerator(case: PolicyInput, kind: str) -> PolicyInput:
    """``case`` with every GPU (groups, nodes, demand) turned into ``kind``."""
    def demands(ds: tuple[ResourceDemand, ...]) -> tuple[ResourceDemand, ...]:
        return tuple(replace(d, shape=as_kind(d.shape, kind)) for d in ds)
    return replace(
        case,
        groups=tuple(replace(g, resources=as_kind(g.resources, kind)) for g in case.groups),
        nodes=tuple(replace(n, total=as_kind(n.total, kind), available=as_kind(n.available, kind))
                    for n in case.nodes),
        demands=demands(case.demands), constraints=demands(case.constraints),
        gangs=tuple(replace(g, bundles=tuple(replace(b, shape=as_kind(b.shape, kind)) for b in g.bundles))
                    for g in case.gangs))


@pytest.mark.parametrize("kind", ACCELERATOR_KINDS[1:])
@pytest.mark.parametrize(("policy_input", "expect"), GPU_CASES)
def test_every_accelerator_is_conserved_as_gpus_are(policy_input: PolicyInput, expect: Expect, kind: str) -> None:
    """TPU, neuron_cores and HPU groups are as scarce as GPU ones: the same snapshots, the same decisions."""
    reasons = {g: text.replace("GPU", kind) for g, text in expect.reasons.items()}
    test_decide(with_accelerator(policy_input, kind), replace(expect, reasons=reasons))


TPU4 = {"CPU": 8.0, "TPU": 4.0, "memory": 32 * G}
NEURON2 = {"CPU": 8.0, "neuron_cores": 2.0, "memory": 32 * G}
HPU8 = {"CPU": 16.0, "HPU": 8.0, "memory": 64 * G}
ACCELERATOR_GROUPS = (grp("gpu", GPU1), grp("tpu", TPU4), grp("neuron", NEURON2), grp("hpu", HPU8))
NO_NEW = {"gpu": 0, "tpu": 0, "neuron": 0, "hpu": 0}


@pytest.mark.parametrize(("policy_input", "expect"), [
    pytest.param(
        inp(grp("cpu", CPU4, hi=1), *ACCELERATOR_GROUPS, demands=(task({"CPU": 4}, 3),)),
        Expect({"cpu": 1} | NO_NEW, waiting=((DemandKind.TASK, 2),), reasons={"cpu": "capped by maxReplicas 1"}),
        id="cpu-demand-at-the-cpu-max-opens-no-accelerator-node-of-any-kind"),
    pytest.param(
        inp(grp("cpu", CPU4), *ACCELERATOR_GROUPS,
            demands=(task({"CPU": 4}, 40), task({"TPU": 1}, 4), task({"neuron_cores": 1}, 2), task({"HPU": 1}, 8)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 5} | NO_NEW, waiting=((DemandKind.TASK, 2), (DemandKind.TASK, 4), (DemandKind.TASK, 8),
                                            (DemandKind.TASK, 35)),
               reasons={"cpu": "capped by upscaling speed (5"}),
        id="accelerator-tasks-of-every-kind-held-while-the-cpu-group-ramps-up"),
    pytest.param(
        inp(grp("cpu", CPU4), grp("tpu", TPU4),
            gangs=(gang(Strategy.PACK, *[{"CPU": 4}] * 4, count=10), gang(Strategy.STRICT_SPREAD, *[{"TPU": 4}] * 2)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 8, "tpu": 0}, waiting=((DemandKind.GANG, 1), (DemandKind.GANG, 8))),
        id="tpu-gangs-held-while-cpu-only-gangs-wait-for-the-ramp"),
    pytest.param(
        inp(grp("cpu", CPU4, replicas=20), *ACCELERATOR_GROUPS,
            demands=(task({"CPU": 4}, 20), task({"TPU": 1}, 4), task({"HPU": 1}, 8)),
            settings=Settings(upscaling_speed=1.0)),
        Expect({"cpu": 20, "tpu": 1, "hpu": 1}), id="accelerator-nodes-start-once-the-cpu-ramp-is-done"),
    pytest.param(
        inp(grp("tpu", TPU4), grp("neuron", NEURON2), demands=(task({"CPU": 4}, 2),)),
        Expect({"tpu": 1, "neuron": 0}), id="no-plain-group-cpu-demand-may-use-an-accelerator-group"),
    pytest.param(  # the task takes the cpu pod coming up, not the idle TPU node, which then idles out
        inp(grp("cpu", CPU4, replicas=1, pending=1), grp("tpu", TPU4, replicas=1),
            nodes=(node("t1", "tpu", TPU4, idle=900),), demands=(task({"CPU": 1}, 1),)),
        Expect({"cpu": 1, "tpu": 0}, drains=("t1",)), id="cpu-demand-fills-coming-cpu-pods-before-an-idle-tpu-node"),
])
def test_accelerator_kinds(policy_input: PolicyInput, expect: Expect) -> None:
    test_decide(policy_input, expect)


def test_a_held_group_names_its_accelerator() -> None:
    d = decide(inp(grp("cpu", CPU4), grp("tpu", TPU4, lo=1), demands=(task({"CPU": 4}, 40), task({"TPU": 1}, 8)),
                   settings=Settings(upscaling_speed=1.0)))
    assert "new TPU nodes held until the CPU groups have ramped up" in d.reasons.get("tpu", ""), d.reasons


def test_reason_starts_with_the_change() -> None:
    # The target's pod not created yet takes one request; two more nodes for the rest.
    d = decide(inp(grp("cpu", CPU4, replicas=1), demands=(task({"CPU": 4}, 3),)))
    assert d.reasons == {"cpu": "cpu 1→3: 2 pending {CPU:4}"}


def test_drain_reason_names_the_idle_time() -> None:
    d = decide(inp(grp("cpu", CPU4, replicas=1), nodes=(node("c1", "cpu", CPU4, idle=300),)))
    assert [(x.node, x.group, x.reason) for x in d.drains] == [("c1", "cpu", "idle 300s > idleTimeout 60s")]


def test_decide_is_pure_and_deterministic() -> None:
    case = inp(grp("cpu", CPU4, replicas=2), grp("gpu", GPU4),
               nodes=(node("c1", "cpu", CPU4, idle=900), busy("c2", "cpu", CPU4)),
               demands=(task({"CPU": 1}, 9), task({"GPU": 1}, 5)),
               gangs=(gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 3, count=2),))
    first: Decision = decide(case)
    assert decide(case) == first


@pytest.mark.parametrize(("shape", "text"), [
    ({"CPU": 1.0, "GPU": 1.0}, "{CPU:1, GPU:1}"),
    ({"memory": 4e9, "CPU": 0.5}, "{CPU:0.5, memory:4G}"),
    ({"CPU": 2.0, "GPU": 0.0}, "{CPU:2}"),
])
def test_format_resources(shape: Resources, text: str) -> None:
    assert format_resources(shape) == text


def test_unplaced_describes_itself() -> None:
    assert Unplaced(DemandKind.TASK, ({"GPU": 1.0},), 3).describe() == "3× {GPU:1}"
    gang_text = Unplaced(DemandKind.GANG, ({"GPU": 1.0},) * 2, 1, Strategy.STRICT_SPREAD).describe()
    assert gang_text == "1× placement group STRICT_SPREAD [2×{GPU:1}]"


def test_the_policy_treats_as_accelerators_every_ray_resource_an_accelerator_kind_maps_to() -> None:
    assert set(ACCELERATORS) == {ray_name for _, ray_name in SPEC_ACCELERATORS.values()} == set(ACCELERATOR_KINDS)
