"""bench/autosim.py: the simulated cluster's stand-in for Ray's scheduling, its accounting, the lower bound,
the seeded traces, the summaries and target checks, and to_ray (checked field by field and by Ray's own
scheduler)."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.autosim import (
    BOOT_S,
    CPU_16,
    EMPTIES_AFTER_S,
    EPISODE_S,
    FAMILIES,
    GPU_1,
    GPU_4,
    TICK,
    Cluster,
    NodeType,
    OursDriver,
    RayDriver,
    SeedRun,
    SimNode,
    SimResult,
    Stat,
    Trace,
    Work,
    check,
    episode_bound,
    lower_bound,
    make_trace,
    ratio,
    segments,
    simulate,
    summarize,
    to_ray,
)
from swarm_operator.autoscaler.policy import Node, PolicyInput, Settings, WorkerGroup
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

pb: Any = importlib.import_module("ray.core.generated.autoscaler_pb2")
im: Any = importlib.import_module("ray.core.generated.instance_manager_pb2")

CPU = {"CPU": 16.0, "memory": 64e9}
GPU = {"CPU": 16.0, "GPU": 4.0, "memory": 64e9}


def node(name: str, total: dict[str, float], **free: float) -> SimNode:
    room = dict(total)
    room.update(free)
    return SimNode(name, "gpu" if "GPU" in total else "cpu", dict(total), room, 0.0, 0.0)


def task(shape: dict[str, float], arrival: float = 0.0, duration: float = 60.0) -> Work:
    return Work(arrival, (shape,), duration)


def gang(strategy: Strategy, *bundles: dict[str, float], arrival: float = 0.0, duration: float = 60.0) -> Work:
    return Work(arrival, tuple(bundles), duration, strategy)


# ---- placement: the stand-in for Ray's schedulers -------------------------------------------------------------


@pytest.mark.parametrize(("work", "nodes", "expected"), [
    pytest.param(task({"CPU": 4}), [node("g", GPU), node("c", CPU)], ["c"], id="cpu-task-avoids-gpu-node"),
    pytest.param(task({"CPU": 4}), [node("g", GPU), node("c", CPU, CPU=2)], ["g"],
                 id="cpu-task-takes-gpu-node-when-nothing-else-fits"),
    pytest.param(task({"GPU": 1}), [node("c", CPU), node("g", GPU)], ["g"], id="gpu-task-on-gpu-node"),
    pytest.param(task({"CPU": 32}), [node("c", CPU)], None, id="too-big"),
    pytest.param(gang(Strategy.STRICT_PACK, {"CPU": 8}, {"CPU": 8}), [node("a", CPU, CPU=12), node("b", CPU)],
                 ["b", "b"], id="strict-pack-one-node"),
    pytest.param(gang(Strategy.STRICT_PACK, {"CPU": 12}, {"CPU": 12}), [node("a", CPU), node("b", CPU)], None,
                 id="strict-pack-wider-than-a-node"),
    pytest.param(gang(Strategy.STRICT_SPREAD, {"CPU": 1}, {"CPU": 1}), [node("a", CPU)], None,
                 id="strict-spread-needs-two-nodes"),
    pytest.param(gang(Strategy.STRICT_SPREAD, {"GPU": 1}, {"GPU": 1}), [node("a", GPU), node("b", GPU)],
                 ["a", "b"], id="strict-spread-two-nodes"),
    pytest.param(gang(Strategy.SPREAD, {"CPU": 1}, {"CPU": 1}), [node("a", CPU)], ["a", "a"],
                 id="spread-shares-when-it-must"),
    pytest.param(gang(Strategy.PACK, {"CPU": 8}, {"CPU": 8}, {"CPU": 8}), [node("a", CPU), node("b", CPU, CPU=10)],
                 ["a", "a", "b"], id="pack-fills-the-roomiest-node-first"),
    pytest.param(gang(Strategy.PACK, {"CPU": 8}, {"CPU": 8}, {"CPU": 8}), [node("a", CPU)], None,
                 id="pack-all-or-nothing"),
    pytest.param(gang(Strategy.PACK, {"CPU": 2}, {"GPU": 1}), [node("c", CPU), node("g", GPU)], ["g", "g"],
                 id="bundles-ignore-gpus-and-go-gpu-first"),
])
def test_place(work: Work, nodes: list[SimNode], expected: list[str] | None) -> None:
    placed = Cluster.place(work, nodes)
    assert (None if placed is None else [n.name for n in placed]) == expected


def gang_demand(strategy: Strategy, *bundles: Resources, count: int = 1) -> GangDemand:
    return GangDemand(tuple(Bundle(b) for b in bundles), strategy, count)


def one_node_trace(*work: Work, types: tuple[NodeType, NodeType] = (CPU_16, GPU_4)) -> Trace:
    return Trace("t", 1, types, ((0.0, tuple(work)),), EPISODE_S)


def test_work_starts_when_a_node_is_up_and_frees_it_when_done() -> None:
    c = Cluster(one_node_trace(task({"CPU": 16}, duration=20.0)))
    c.launch("cpu", 1, 0.0)
    c.step(0.0)
    assert len(c.pending) == 1  # the pod is not a Ray node yet
    c.step(BOOT_S)
    (n,) = c.nodes.values()
    assert (c.pending, n.work, n.free["CPU"]) == ([], 1, 0.0)
    c.remove_if_idle(n.name, BOOT_S)
    assert n.name in c.nodes  # busy: the drain is refused
    c.step(BOOT_S + 20.0)
    assert (n.work, n.free["CPU"], n.idle_since) == (0, 16.0, BOOT_S + 20.0)
    c.remove_if_idle(n.name, BOOT_S + 20.0)
    assert c.nodes == {}


def test_accounting_per_group_with_prices() -> None:
    trace = one_node_trace(task({"GPU": 1}), task({"CPU": 1}))
    c = Cluster(trace)
    c.launch("cpu", 2, 0.0)
    c.launch("gpu", 1, 0.0)
    c.step(0.0)
    c.account()
    c.account()
    assert c.node_seconds == {"cpu": 4 * TICK, "gpu": 2 * TICK}
    assert c.pending_seconds == 2 * 2 * TICK  # two tasks waited two ticks
    assert trace.price("gpu") == 8 * trace.price("cpu")


def test_a_booting_surplus_pod_can_go_at_once() -> None:
    c = Cluster(one_node_trace())
    c.launch("cpu", 1, 0.0)
    (name,) = c.nodes
    c.remove_if_idle(name, 5.0)
    assert c.nodes == {}
    assert c.launched == 1


# ---- the lower bound -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("work", "types", "expected"), [
    pytest.param([task({"CPU": 1}) for _ in range(33)], (CPU_16, GPU_4), 3, id="cpu-only-rounds-up"),
    pytest.param([task({"CPU": 1}) for _ in range(32)], (CPU_16, GPU_4), 2, id="cpu-only-exact"),
    # 5 GPUs: 2 GPU nodes with 31 CPUs left, so 40 CPUs of CPU work need one CPU node more.
    pytest.param([task({"GPU": 1, "CPU": 0.2}) for _ in range(5)] + [task({"CPU": 1}) for _ in range(40)],
                 (CPU_16, GPU_4), 3, id="cpu-work-fills-gpu-room-first"),
    pytest.param([gang(Strategy.STRICT_SPREAD, *[{"GPU": 1}] * 6)], (CPU_16, GPU_4), 6, id="strict-spread"),
    pytest.param([gang(Strategy.STRICT_SPREAD, *[{"CPU": 1}] * 4)], (CPU_16, GPU_4), 4, id="strict-spread-cpu"),
    pytest.param([task({"GPU": 1, "CPU": 4}) for _ in range(3)], (CPU_16, GPU_1), 3, id="one-gpu-nodes"),
    # Waves: the first wave (ends 30 + 40 = 70 at the earliest) overlaps the second (running from 30 + 30 = 60).
    pytest.param([task({"CPU": 16}, 0.0, 40.0), task({"CPU": 16}, 30.0, 100.0)], (CPU_16, GPU_4), 2,
                 id="waves-that-must-overlap"),
    # The first wave has surely ended (30 + 20 = 50) before the second's latest start (100 + 30).
    pytest.param([task({"CPU": 16}, 0.0, 20.0), task({"CPU": 16}, 100.0, 100.0)], (CPU_16, GPU_4), 1,
                 id="waves-that-need-not-overlap"),
])
def test_lower_bound(work: list[Work], types: tuple[NodeType, NodeType], expected: int) -> None:
    trace = one_node_trace(*work, types=types)
    assert lower_bound(trace) == episode_bound(trace) == expected  # one segment: the old bound


def test_lower_bound_sums_episodes() -> None:
    episode = (task({"CPU": 16}),)
    later = (Work(EPISODE_S, ({"CPU": 16},), 60.0), Work(EPISODE_S, ({"CPU": 16},), 60.0))
    trace = Trace("t", 1, (CPU_16, GPU_4), ((0.0, episode), (EPISODE_S, later)), 2 * EPISODE_S)
    assert lower_bound(trace) == episode_bound(trace) == 3


# A full node's work for 60 s, then another after a pause: the first could run until 0 + 30 + 60 = 90.
@pytest.mark.parametrize(("second", "pieces", "bound"), [
    pytest.param(90.0, 1, 1, id="no-pause"),
    pytest.param(90.0 + EMPTIES_AFTER_S, 1, 1, id="pause-the-cluster-may-outlast"),
    pytest.param(90.0 + EMPTIES_AFTER_S + TICK, 2, 2, id="pause-that-empties-the-cluster"),
])
def test_a_pause_longer_than_the_idle_timeout_allows_starts_a_new_segment(second: float, pieces: int,
                                                                         bound: int) -> None:
    trace = one_node_trace(task({"CPU": 16}, 0.0, 60.0), task({"CPU": 16}, second, 60.0))
    assert EMPTIES_AFTER_S == BOOT_S + 60.0 + 2 * TICK
    assert len(segments(trace)) == pieces
    assert lower_bound(trace) == bound
    assert episode_bound(trace) == 1  # the old bound kept the first wave's node through any pause


def test_a_later_segment_has_no_node_before_its_first_arrival_and_boot() -> None:
    # The later segment's 20 s task still runs when the 40 s one, 10 s behind it, surely has started (at
    # 1040) only because no node is up before its first arrival + BOOT_S: it ends at 1030 + 20 at the earliest.
    late = 1000.0
    trace = one_node_trace(task({"CPU": 16}, 0.0, 10.0), task({"CPU": 16}, late, 20.0),
                           task({"CPU": 16}, late + 10.0, 40.0))
    assert len(segments(trace)) == 2
    assert lower_bound(trace) == 1 + 2


def test_the_benchmark_families_leave_no_pause_inside_an_episode() -> None:
    """Within an episode some work could always be running: the bound is the old one on every family."""
    for family in FAMILIES:
        trace = make_trace(family, 3, 1)
        assert [seg[0].arrival for seg in segments(trace, 0.0)] == [start for start, _ in trace.episodes]
        assert lower_bound(trace) == episode_bound(trace)


@st.composite
def wave_traces(draw: st.DrawFn) -> Trace:
    """A few waves of small work, the pauses between them from none to far longer than the idle timeout."""
    shapes = st.sampled_from([{"CPU": 1.0}, {"CPU": 4.0}, {"CPU": 16.0}, {"GPU": 1.0, "CPU": 2.0}])
    work: list[Work] = []
    t = 0.0
    for _ in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(1, 6))):
            duration = float(draw(st.integers(10, 200)))
            if draw(st.integers(0, 5)) == 0:
                work.append(gang(Strategy.STRICT_SPREAD, {"GPU": 1.0}, {"GPU": 1.0}, arrival=t, duration=duration))
            else:
                work.append(task(draw(shapes), t, duration))
        t += TICK * draw(st.integers(1, 60))
    end = TICK * math.ceil((t + 700.0) / TICK)
    return Trace("waves", 1, (CPU_16, GPU_4), ((0.0, tuple(work)),), end)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wave_traces())
def test_no_policy_here_launches_fewer_than_the_bound(trace: Trace) -> None:
    """Both policies obey the rules the bound assumes (pods up in 30 s, idle nodes removed after 60 s)."""
    bound = lower_bound(trace)
    assert bound >= episode_bound(trace)
    assert simulate(trace, OursDriver()).launched >= bound
    assert simulate(trace, RayDriver()).launched >= bound


# ---- traces ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_traces_are_seeded_and_the_quick_form_is_a_prefix(family: Any) -> None:
    one, three = make_trace(family, 1, 7), make_trace(family, 3, 7)
    assert one.episodes[0] == three.episodes[0]
    assert make_trace(family, 1, 8).episodes != one.episodes
    for start, work in three.episodes:
        assert work and all(start <= w.arrival < start + EPISODE_S / 2 for w in work)


def test_the_gpu_family_prices_gpu_nodes_at_eight_cpu_nodes() -> None:
    family = next(f for f in FAMILIES if f.name == "gpu-train-8x")
    assert family.types == (CPU_16, GPU_1)
    assert GPU_1.price == 8 * CPU_16.price


def test_our_policy_runs_every_piece_of_work_and_launches_at_least_the_bound() -> None:
    trace = make_trace(FAMILIES[0], 1, 1)
    result = simulate(trace, OursDriver())
    work = trace.episodes[0][1]
    assert result.launched >= result.peak_nodes >= lower_bound(trace) > 0
    # Every bundle waits at least until the first nodes are up, and the cluster is empty again at the end.
    assert result.pending_seconds >= BOOT_S * sum(len(w.bundles) for w in work)
    assert result.cost > result.node_seconds  # GPU nodes cost more than one per second


def test_a_node_removed_between_waves_is_launched_again_above_the_peak() -> None:
    trace = one_node_trace(task({"CPU": 16}, 0.0, 60.0), task({"CPU": 16}, 300.0, 60.0))
    result = simulate(trace, OursDriver())
    assert (result.launched, result.peak_nodes) == (2, 1)
    assert lower_bound(trace) == 2


# ---- summaries and targets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "theirs", "expected"), [
    (5.0, 10.0, 0.5), (10.0, 10.0, 1.0), (0.0, 0.0, 1.0), (1.0, 0.0, math.inf), (0.0, 4.0, 0.0),
])
def test_ratio(ours: float, theirs: float, expected: float) -> None:
    assert ratio(ours, theirs) == expected


def result(node_s: float, pending: float, launched: int) -> SimResult:
    return SimResult(node_s, node_s * 2, pending, launched, 0.0, 10)


def runs(*rows: tuple[float, float, int, float, float, int]) -> list[SeedRun]:
    """(ours node-s, ours pending, ours launched, Ray's node-s, Ray's pending, Ray's launched), lower bound 10,
    the bound without the idle timeout 5."""
    return [SeedRun("f", seed, 10, result(*row[:3]), result(*row[3:]), 5) for seed, row in enumerate(rows, 1)]


def test_summary_is_median_and_worst_of_per_seed_ratios() -> None:
    s = summarize(runs((90, 100, 10, 100, 100, 12), (110, 50, 11, 100, 100, 12), (100, 100, 13, 100, 100, 10)),
                  "1-10")
    assert s.node_ratio == Stat(1.0, 1.1)
    assert s.pending_ratio == Stat(1.0, 1.0)
    assert s.cost_ratio == s.node_ratio
    assert s.launched_lb == (Stat(1.1, 1.3), Stat(1.2, 1.2))
    assert s.launched_episode_bound == (Stat(2.2, 2.6), Stat(2.4, 2.4))
    assert s.launched_peak == s.launched_lb
    assert s.node_seconds[0] == Stat(100, 110)


@pytest.mark.parametrize(("rows", "expected"), [
    pytest.param([(100, 100, 10, 100, 100, 10)] * 3, [True, True, True, True], id="all-met-when-equal"),
    pytest.param([(101, 100, 10, 100, 100, 10)] * 3, [False, True, True, True], id="more-node-seconds"),
    pytest.param([(100, 101, 10, 100, 100, 10)] * 3, [True, False, True, True], id="longer-waits"),
    pytest.param([(100, 100, 12, 100, 100, 10)] * 3, [True, True, False, True], id="median-launches-above-1.1"),
    pytest.param([(100, 100, 10, 100, 100, 10)] * 2 + [(100, 100, 13, 100, 100, 10)], [True, True, True, False],
                 id="one-seed-above-1.2"),
])
def test_check(rows: list[tuple[float, float, int, float, float, int]], expected: list[bool]) -> None:
    assert [met for _, met in check(summarize(runs(*rows), "11-30"))] == expected


# ---- to_ray: the same snapshot as Ray's SchedulingRequest ------------------------------------------------------------

GROUPS = (WorkerGroup("cpu", CPU, 0, 10, 3, pending_pods=1), WorkerGroup("gpu", GPU, 1, 4, 0))


def snapshot(**fields: Any) -> PolicyInput:
    nodes = (
        Node("cpu-busy", "cpu", NodeStatus.RUNNING, CPU, {"CPU": 2.0, "memory": 8e9}),
        Node("cpu-idle", "cpu", NodeStatus.IDLE, CPU, CPU, idle_s=12.5),
        Node("cpu-draining", "cpu", NodeStatus.DRAINING, CPU, CPU),
    )
    return PolicyInput(GROUPS, nodes, settings=Settings(idle_timeout_s=90.0), **fields)


def instances(req: Any) -> dict[str, tuple[str, int]]:
    return {i.im_instance.instance_id: (i.im_instance.instance_type, i.im_instance.status)
            for i in req.current_instances}


def test_to_ray_nodes_and_instances() -> None:
    req = to_ray(snapshot(), {"cpu": 2})
    assert {name: (c.min_worker_nodes, c.max_worker_nodes, c.resources) for name, c in req.node_type_configs.items()} \
        == {"cpu": (0, 10, CPU), "gpu": (1, 4, GPU)}
    assert req.idle_timeout_s == 90.0
    # Live nodes run; the draining one is left out; cpu has 2 live of 3 wanted -> 1 coming; 2 queued launches.
    assert instances(req) == {
        "cpu-busy": ("cpu", im.Instance.RAY_RUNNING), "cpu-idle": ("cpu", im.Instance.RAY_RUNNING),
        "cpu-pending-0": ("cpu", im.Instance.ALLOCATED),
        "cpu-queued-1": ("cpu", im.Instance.QUEUED), "cpu-queued-2": ("cpu", im.Instance.QUEUED),
    }
    by_name = {i.im_instance.instance_id: i for i in req.current_instances}
    busy = by_name["cpu-busy"].ray_node
    assert (dict(busy.available_resources), busy.status) == ({"CPU": 2.0, "memory": 8e9}, pb.NodeStatus.RUNNING)
    assert by_name["cpu-idle"].ray_node.idle_duration_ms == 12_500
    assert by_name["cpu-queued-1"].cloud_instance_id is None


def test_to_ray_demand_gangs_and_constraints() -> None:
    selector = (LabelConstraint("zone", LabelOp.NOT_IN, frozenset({"b", "a"})),)
    req = to_ray(snapshot(
        demands=(ResourceDemand({"CPU": 1.0, "GPU": 0.0}, 7), ResourceDemand({"GPU": 1.0}, 2, (selector,))),
        gangs=(gang_demand(Strategy.STRICT_SPREAD, {"GPU": 1.0}, {"GPU": 1.0}, count=2),
               gang_demand(Strategy.STRICT_PACK, *({"CPU": 4.0},) * 3), gang_demand(Strategy.PACK, {"CPU": 1.0})),
        constraints=(ResourceDemand({"CPU": 8.0}, 3),),
    ))
    assert [(dict(r.request.resources_bundle), r.count) for r in req.resource_requests] == [
        ({"CPU": 1.0}, 7), ({"GPU": 1.0}, 2)]  # zero amounts are left out
    (sel,) = req.resource_requests[1].request.label_selectors
    (term,) = sel.label_constraints
    assert (term.label_key, list(term.label_values)) == ("zone", ["a", "b"])
    kinds = []
    for g in req.gang_resource_requests:
        constraints = {kind for r in g.requests for c in r.placement_constraints
                       for kind in ("affinity", "anti_affinity") if c.HasField(kind)}
        labels = {c.anti_affinity.label_name or c.affinity.label_name
                  for r in g.requests for c in r.placement_constraints}
        kinds.append((len(g.requests), constraints, len(labels)))
    # Two STRICT_SPREAD instances, each with its own label; STRICT_PACK as affinity; PACK with none.
    assert kinds == [(2, {"anti_affinity"}, 1), (2, {"anti_affinity"}, 1), (3, {"affinity"}, 1), (1, set(), 0)]
    first, second = (g.requests[0].placement_constraints[0].anti_affinity.label_name
                     for g in req.gang_resource_requests[:2])
    assert first != second
    (constraint,) = req.cluster_resource_constraints
    assert [(dict(r.request.resources_bundle), r.count) for r in constraint.resource_requests] == [({"CPU": 8.0}, 3)]


def ray_launches(inp: PolicyInput, queued: dict[str, int] | None = None) -> dict[str, int]:
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

    reply = ResourceDemandScheduler().schedule(to_ray(inp, queued))
    return {r.instance_type: r.count for r in reply.to_launch}


@pytest.mark.parametrize(("demands", "queued", "expected"), [
    # 18 CPUs free on the live nodes (2 busy + 16 idle): only the gpu group's minimum is launched.
    pytest.param((ResourceDemand({"CPU": 1.0}, 18),), None, {"gpu": 1}, id="fits-live-capacity"),
    # Whole nodes: the idle one, the coming pod, the gpu minimum (Ray puts CPU work there), one new cpu node.
    pytest.param((ResourceDemand({"CPU": 16.0}, 4),), None, {"cpu": 1, "gpu": 1}, id="launches-the-rest"),
    pytest.param((ResourceDemand({"CPU": 16.0}, 5),), {"cpu": 2}, {"gpu": 1}, id="queued-launches-count-as-coming"),
    pytest.param((ResourceDemand({"GPU": 4.0}, 3),), None, {"gpu": 3}, id="gpu-demand-on-gpu-nodes"),
])
def test_rays_scheduler_reads_the_translation(demands: tuple[ResourceDemand, ...], queued: dict[str, int] | None,
                                              expected: dict[str, int]) -> None:
    """Ray's own scheduler on to_ray's output launches what that snapshot needs: the translation carries
    free room, pending pods, queued launches and minReplicas (gpu's 1) as Ray reads them."""
    assert ray_launches(snapshot(demands=demands), queued) == expected


@pytest.mark.parametrize(("conserve", "nodes"), [
    (True, {"cpu": 5, "gpu": 0}),  # the GPU task waits while the CPU group ramps up; CPU work opens no GPU node
    (False, {"cpu": 5, "gpu": 5}),  # the GPU task's node opens at once, and CPU work past the CPU cap opens GPU nodes
])
def test_our_driver_decides_with_its_conserve_gpu_nodes_setting(conserve: bool, nodes: dict[str, int]) -> None:
    """bench/autoscaler.py --conserve-gpu-nodes off replays our policy with the cluster's setting off (Ray's side has
    no such setting): the first decision for 20 full-node CPU tasks and one GPU task."""
    c = Cluster(one_node_trace(*(task({"CPU": 16}) for _ in range(20)), task({"GPU": 1, "CPU": 1})))
    seen: list[bool] = []
    driver = OursDriver(observe=lambda inp, _: seen.append(inp.settings.conserve_gpu_nodes),
                        conserve_gpu_nodes=conserve)
    c.step(0.0)
    driver.act(c, 0.0)
    assert seen == [conserve]
    assert {t.name: c.count(t.name) for t in c.trace.types} == nodes
