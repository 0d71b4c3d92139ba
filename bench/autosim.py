"""The quality half of bench/autoscaler.py: seeded trace families, a discrete-time cluster, the two policies.

A trace is a few episodes 20 minutes apart (every episode's work is done and its nodes drained before the
next one starts). The cluster moves in 5 s ticks: pods take 30 s to become Ray nodes, and a stand-in for
Ray's own schedulers starts whatever fits. Each tick one policy decides: ours (``decide``) or Ray 2.60's v2
scheduler (``ResourceDemandScheduler``) on the same snapshot translated by :func:`to_ray`. Both go through
the same launch pacing, the same idle timeout and the same drain rule (a busy node refuses).

Imported by bench/autoscaler.py and tests/unit/test_bench_autosim.py; only :class:`RayDriver` and
:func:`to_ray` import ray.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from swarm_operator.autoscaler.policy import Decision, Node, PolicyInput, Settings, WorkerGroup, decide
from swarm_operator.autoscaler.snapshot import (
    Bundle,
    GangDemand,
    LabelOp,
    LabelSelector,
    NodeStatus,
    ResourceDemand,
    Resources,
    Strategy,
)

G = 1e9
TICK = 5.0
BOOT_S = 30.0
EPISODE_S = 1200.0
SETTINGS = Settings(upscaling_speed=1.0, idle_timeout_s=60.0, conserve_gpu_nodes=True,
                    scale_down_stabilization_s=30.0)
GPU_PRICE = 8.0  # a GPU node costs 8 CPU nodes per second, in every family


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: Mapping[str, float]
    max_nodes: int
    price: float  # per node-second, a CPU node being 1


# The lower bound below needs a GPU node to have no more of any other resource than a CPU node: then a GPU
# node can stand in for at most one CPU node.
CPU_16 = NodeType("cpu", {"CPU": 16, "memory": 64 * G}, 200, 1.0)
GPU_4 = NodeType("gpu", {"CPU": 16, "GPU": 4, "memory": 64 * G}, 40, GPU_PRICE)
GPU_1 = NodeType("gpu", {"CPU": 8, "GPU": 1, "memory": 32 * G}, 40, GPU_PRICE)


@dataclass
class Work:
    """A task (one bundle, no strategy) or a placement group that runs for ``duration`` once placed."""

    arrival: float
    bundles: tuple[dict[str, float], ...]
    duration: float
    strategy: Strategy | None = None
    end: float | None = None
    placed_on: list[SimNode] = field(default_factory=list)


@dataclass
class SimNode:
    name: str
    group: str
    total: dict[str, float]
    free: dict[str, float]
    launched: float
    ready: float
    work: int = 0
    idle_since: float = 0.0


Episode = Callable[[random.Random, float], list[Work]]  # the work of one episode starting at the given time


def _train_preprocess(rng: random.Random, t: float) -> list[Work]:
    """GPU training placement groups (4 × 1 GPU, spread or packed) and a CPU preprocessing backlog."""
    work = [Work(t, ({"GPU": 1.0, "CPU": 4.0},) * 4, rng.uniform(300, 480), Strategy.STRICT_SPREAD)
            for _ in range(rng.randint(2, 5))]
    work += [Work(t, ({"GPU": 1.0, "CPU": 4.0},) * 4, rng.uniform(300, 480), Strategy.STRICT_PACK)
             for _ in range(rng.randint(1, 3))]
    work += [Work(t, ({"CPU": 1},), rng.uniform(30, 120)) for _ in range(rng.randint(100, 400))]
    return work


def _mixed_shapes(rng: random.Random, t: float) -> list[Work]:
    work: list[Work] = []
    for shape, lo, hi in (({"CPU": 1}, 50, 300), ({"CPU": 2, "memory": 8 * G}, 20, 120),
                          ({"CPU": 4, "memory": 16 * G}, 10, 60), ({"GPU": 1, "CPU": 2}, 4, 30)):
        work += [Work(t, (dict(shape),), rng.uniform(60, 240)) for _ in range(rng.randint(lo, hi))]
    return work


def _placement_groups(rng: random.Random, t: float) -> list[Work]:
    work = [Work(t, ({"CPU": 2.0},) * 8, rng.uniform(120, 300), Strategy.PACK) for _ in range(rng.randint(4, 12))]
    work += [Work(t, ({"CPU": 4.0},) * 4, rng.uniform(120, 300), Strategy.SPREAD) for _ in range(rng.randint(4, 12))]
    work += [Work(t, ({"GPU": 1.0, "CPU": 2.0},) * 3, rng.uniform(120, 300), Strategy.STRICT_SPREAD)
             for _ in range(rng.randint(2, 6))]
    return work


def _bursty_small(rng: random.Random, t: float) -> list[Work]:
    """3–6 waves, 20–90 s apart, of 100–500 small tasks (a quarter CPU to one CPU) that run 40–150 s: the
    nodes of one wave are still busy or just idle when the next one arrives."""
    work: list[Work] = []
    for _ in range(rng.randint(3, 6)):
        shapes = rng.sample([{"CPU": 0.25}, {"CPU": 0.5}, {"CPU": 1.0}, {"CPU": 0.5, "memory": 1 * G}], 2)
        work += [Work(t, (dict(rng.choice(shapes)),), rng.uniform(40, 150)) for _ in range(rng.randint(100, 500))]
        t += TICK * rng.randint(4, 18)
    return work


def _gpu_train_cpu_preprocess(rng: random.Random, t: float) -> list[Work]:
    """CPU preprocessing first; 30–150 s later single-GPU trainers, a few STRICT_SPREAD data-parallel jobs
    and a second, smaller preprocessing wave that feeds them. On 1-GPU nodes worth 8 CPU nodes each."""
    work = [Work(t, ({"CPU": 1.0, "memory": 2 * G},), rng.uniform(30, 150)) for _ in range(rng.randint(150, 500))]
    train = t + TICK * rng.randint(6, 30)
    work += [Work(train, ({"GPU": 1.0, "CPU": 4.0, "memory": 16 * G},), rng.uniform(300, 600))
             for _ in range(rng.randint(2, 12))]
    work += [Work(train, ({"GPU": 1.0, "CPU": 4.0},) * rng.choice((2, 4)), rng.uniform(300, 600),
                  Strategy.STRICT_SPREAD) for _ in range(rng.randint(0, 2))]
    work += [Work(train, ({"CPU": 1.0, "memory": 2 * G},), rng.uniform(30, 120)) for _ in range(rng.randint(50, 200))]
    return work


@dataclass(frozen=True)
class Family:
    name: str
    types: tuple[NodeType, NodeType]  # (CPU nodes, GPU nodes)
    episode: Episode


FAMILIES: tuple[Family, ...] = (
    Family("train+preprocess", (CPU_16, GPU_4), _train_preprocess),
    Family("mixed-shapes", (CPU_16, GPU_4), _mixed_shapes),
    Family("placement-groups", (CPU_16, GPU_4), _placement_groups),
    Family("bursty-small", (CPU_16, GPU_4), _bursty_small),
    Family("gpu-train-8x", (CPU_16, GPU_1), _gpu_train_cpu_preprocess),
)


@dataclass(frozen=True)
class Trace:
    name: str
    seed: int
    types: tuple[NodeType, NodeType]
    episodes: tuple[tuple[float, tuple[Work, ...]], ...]  # (start, its work, arriving at or after start)
    end: float

    def price(self, group: str) -> float:
        return next(t.price for t in self.types if t.name == group)


def make_trace(family: Family, episodes: int, seed: int) -> Trace:
    """``episodes`` episodes of ``family`` 20 min apart. A seed gives the same first episodes whatever
    ``episodes`` is (the quick form runs a prefix of the full one)."""
    rng = random.Random(f"{family.name}/{seed}")
    out = []
    for k in range(episodes):
        start = k * EPISODE_S
        work = family.episode(rng, start)
        assert all(start <= w.arrival < start + EPISODE_S / 2 and w.arrival % TICK == 0 for w in work)
        out.append((start, tuple(sorted(work, key=lambda w: w.arrival))))
    return Trace(family.name, seed, family.types, tuple(out), episodes * EPISODE_S)


def _peak(work: Sequence[Work], first_up: float, types: tuple[NodeType, NodeType]) -> int:
    """The most nodes needed at once by work that is surely running, when no node is up before ``first_up``
    and no work waits longer than a pod takes to start.

    Such a schedule starts each piece of work within ``BOOT_S`` of its arrival, and none before ``first_up``.
    So at ``t`` = an arrival + ``BOOT_S`` everything that arrived by then and would not have ended even if
    started at its earliest is surely running. Per such instant: GPU nodes for the GPU work among it
    (resources, and distinct nodes for a STRICT_SPREAD group), then CPU nodes for the CPU work that does not
    fit the room those GPU nodes leave; the largest of these."""
    cpu_type, gpu_type = types
    cpu_caps, gpu_caps = cpu_type.resources, gpu_type.resources
    peak = 0
    for t in sorted({w.arrival + BOOT_S for w in work}):
        gpu_need: dict[str, float] = {}
        cpu_need: dict[str, float] = {}
        spread_gpu = spread_any = 0
        for w in work:
            if not w.arrival + BOOT_S <= t < max(w.arrival, first_up) + w.duration:
                continue
            is_gpu = any("GPU" in b for b in w.bundles)
            need = gpu_need if is_gpu else cpu_need
            for b in w.bundles:
                for k, v in b.items():
                    need[k] = need.get(k, 0.0) + v
            if w.strategy is Strategy.STRICT_SPREAD:
                spread_any = max(spread_any, len(w.bundles))
                if is_gpu:
                    spread_gpu = max(spread_gpu, len(w.bundles))
        gpu_nodes = max([spread_gpu] + [math.ceil(v / gpu_caps[k] - 1e-9) for k, v in gpu_need.items()])
        cpu_nodes = 0
        for k, v in cpu_need.items():
            room = max(0.0, gpu_nodes * gpu_caps.get(k, 0.0) - gpu_need.get(k, 0.0))
            cpu_nodes = max(cpu_nodes, math.ceil(max(0.0, v - room) / cpu_caps[k] - 1e-9))
        peak = max(peak, gpu_nodes + cpu_nodes, spread_any)
    return peak


def episode_bound(trace: Trace) -> int:
    """The bound before the idle timeout was taken into account: per episode the most nodes needed at once
    (:func:`_peak`, no node up before the episode's start + ``BOOT_S``), summed over episodes. Within an
    episode it counts a node once however long it idles between waves."""
    return sum(_peak(work, start + BOOT_S, trace.types) for start, work in trace.episodes)


# After the last work that could be running, a cluster that launches only for waiting work and removes a node
# once it has been idle longer than the idle timeout is surely empty (above min 0) this much later: a pod
# launched at the end becomes a node BOOT_S later, idles for the timeout, the simulator frees a node at the
# first tick after its work ends and a drain comes at a decision, after that tick's placements (a tick each).
EMPTIES_AFTER_S = BOOT_S + SETTINGS.idle_timeout_s + 2 * TICK


def segments(trace: Trace, empties_after_s: float = EMPTIES_AFTER_S) -> list[list[Work]]:
    """The trace's work cut wherever the next arrival comes more than ``empties_after_s`` after the latest
    moment any earlier work could still be running (it arrives, waits at most ``BOOT_S``, runs its duration)."""
    out: list[list[Work]] = []
    busy_until = -math.inf
    for w in sorted((w for _, work in trace.episodes for w in work), key=lambda w: w.arrival):
        if w.arrival > busy_until + empties_after_s:
            out.append([])
        out[-1].append(w)
        busy_until = max(busy_until, w.arrival + BOOT_S + w.duration)
    return out


def lower_bound(trace: Trace, empties_after_s: float = EMPTIES_AFTER_S) -> int:
    """Nodes launched by any schedule that starts with no worker, launches only while work waits, removes a
    node once it has idled longer than the idle timeout and lets no work wait longer than a pod takes to start
    (bench/README.md has the argument): the sum over :func:`segments` of each one's :func:`_peak`.

    Between two segments nothing runs or waits for longer than ``empties_after_s``, so every node is removed
    and none is launched before the next segment's first arrival: its nodes are new, and none is up before
    that arrival + ``BOOT_S``. A node removed after idling inside a segment while other work runs is not
    counted: some placement keeps every node busy through a lull, and a bound must allow it."""
    return sum(_peak(seg, seg[0].arrival + BOOT_S, trace.types) for seg in segments(trace, empties_after_s))


# ---- the cluster ---------------------------------------------------------------------------------------------


def _fits(free: Mapping[str, float], shape: Mapping[str, float]) -> bool:
    return all(free.get(k, 0.0) >= v - 1e-9 for k, v in shape.items())


def _most_room(nodes: list[SimNode], free: Mapping[str, Mapping[str, float]],
               bundle: Mapping[str, float]) -> SimNode | None:
    """The node Ray's LeastResourceScorer picks for ``bundle``: the highest sum over the resources asked of
    (available - asked) / available, among nodes it fits; the first such node on a tie."""
    best, best_score = None, -1.0
    for n in nodes:
        room = free[n.name]
        if not _fits(room, bundle):
            continue
        score = sum((room.get(k, 0.0) - v) / room[k] for k, v in bundle.items() if room.get(k, 0.0) > 0)
        if best is None or score > best_score:
            best, best_score = n, score
    return best


def _take(free: dict[str, float], shape: Mapping[str, float], sign: float = 1.0) -> None:
    for k, v in shape.items():
        free[k] = free.get(k, 0.0) - sign * v


class Cluster:
    """Nodes, pods coming up, pending work, and a stand-in for Ray's own scheduling of tasks and bundles."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.arrivals: dict[float, list[Work]] = {}
        for _, work in trace.episodes:
            for w in work:
                self.arrivals.setdefault(w.arrival, []).append(w)
        self.nodes: dict[str, SimNode] = {}
        self.pending: list[Work] = []
        self.running: list[Work] = []
        self.serial = 0
        self.launched = 0
        self.node_seconds: dict[str, float] = {t.name: 0.0 for t in trace.types}
        self.pending_seconds = 0.0

    def up(self, now: float) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.ready <= now]

    def booting(self, group: str, now: float) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.group == group and n.ready > now]

    def count(self, group: str) -> int:
        return sum(1 for n in self.nodes.values() if n.group == group)

    def launch(self, group: str, count: int, now: float) -> None:
        res = next(t.resources for t in self.trace.types if t.name == group)
        for _ in range(count):
            self.serial += 1
            name = f"{group}-{self.serial}"
            self.nodes[name] = SimNode(name, group, dict(res), dict(res), now, now + BOOT_S, idle_since=now + BOOT_S)
            self.launched += 1

    def remove_if_idle(self, name: str, now: float) -> None:
        """A drain: the raylet refuses it when the node has work (so does the simulator)."""
        node = self.nodes.get(name)
        if node is not None and (node.ready > now or node.work == 0):
            del self.nodes[name]

    def step(self, now: float) -> None:
        for w in self.arrivals.get(now, ()):
            w = Work(w.arrival, w.bundles, w.duration, w.strategy)  # the trace stays as generated
            self.pending.append(w)
        for w in [w for w in self.running if w.end is not None and w.end <= now]:
            self.running.remove(w)
            for node, bundle in zip(w.placed_on, w.bundles, strict=True):
                _take(node.free, bundle, -1.0)
                node.work -= 1
                if node.work == 0:
                    node.idle_since = now
        nodes = self.up(now)
        still: list[Work] = []
        for w in self.pending:
            placement = self.place(w, nodes)
            if placement is None:
                still.append(w)
                continue
            w.placed_on, w.end = placement, now + w.duration
            for node, bundle in zip(placement, w.bundles, strict=True):
                _take(node.free, bundle)
                node.work += 1
            self.running.append(w)
        self.pending = still

    @staticmethod
    def place(w: Work, nodes: list[SimNode]) -> list[SimNode] | None:
        """Where Ray would run ``w`` now, or None. A task: first fit, CPU-only ones avoiding GPU nodes while
        others fit (the raylet's ``scheduler_avoid_gpu_nodes``). A placement group: as GCS's bundle policies do
        (``bundle_scheduling_policy.cc``): bundles GPU-first, each onto the node with the most room for it
        (Ray's LeastResourceScorer; ties to the older node), GPUs or not; PACK then puts every remaining bundle
        that fits on that node before taking another; SPREAD and STRICT_SPREAD want a node per bundle, SPREAD
        sharing when it must; STRICT_PACK all on one node. All or nothing."""
        if w.strategy is None:
            order = nodes if "GPU" in w.bundles[0] else sorted(nodes, key=lambda n: "GPU" in n.total)
            one = next((n for n in order if _fits(n.free, w.bundles[0])), None)
            return None if one is None else [one]
        if w.strategy is Strategy.STRICT_PACK:
            combined: dict[str, float] = {}
            for b in w.bundles:
                for k, v in b.items():
                    combined[k] = combined.get(k, 0.0) + v
            one = _most_room(nodes, {n.name: n.free for n in nodes}, combined)
            return None if one is None else [one] * len(w.bundles)
        scratch = {n.name: dict(n.free) for n in nodes}
        todo = sorted(range(len(w.bundles)), key=lambda i: tuple(-w.bundles[i].get(k, 0.0)
                                                                  for k in ("GPU", "memory", "CPU")))
        chosen: list[SimNode | None] = [None] * len(w.bundles)
        unused = list(nodes)
        if w.strategy is Strategy.PACK:
            while todo:
                node = _most_room(unused, scratch, w.bundles[todo[0]])
                if node is None:
                    return None
                unused.remove(node)
                left = []
                for i in todo:
                    if _fits(scratch[node.name], w.bundles[i]):
                        _take(scratch[node.name], w.bundles[i])
                        chosen[i] = node
                    else:
                        left.append(i)
                todo = left
        else:
            used: list[SimNode] = []
            for i in todo:
                node = _most_room(unused, scratch, w.bundles[i])
                if node is not None:
                    unused.remove(node)
                    used.append(node)
                elif w.strategy is Strategy.SPREAD:
                    node = _most_room(used, scratch, w.bundles[i])
                if node is None:
                    return None
                _take(scratch[node.name], w.bundles[i])
                chosen[i] = node
        return [n for n in chosen if n is not None]

    def account(self) -> None:
        """One tick of node-seconds (per group: pods count from launch, booting or not) and waiting."""
        for n in self.nodes.values():
            self.node_seconds[n.group] += TICK
        self.pending_seconds += TICK * sum(len(w.bundles) for w in self.pending)

    def snapshot(self, now: float, replicas: Mapping[str, int], last_up: Mapping[str, float]) -> PolicyInput:
        groups = tuple(WorkerGroup(t.name, t.resources, 0, t.max_nodes, replicas.get(t.name, 0),
                                   len(self.booting(t.name, now))) for t in self.trace.types)
        nodes = tuple(Node(n.name, n.group, NodeStatus.IDLE if n.work == 0 else NodeStatus.RUNNING, n.total,
                           dict(n.free), idle_s=now - n.idle_since if n.work == 0 else 0.0,
                           age_s=now - n.launched) for n in self.up(now))
        demand: dict[tuple[tuple[str, float], ...], int] = {}
        gangs: list[GangDemand] = []
        for w in self.pending:
            if w.strategy is None:
                key = tuple(sorted(w.bundles[0].items()))
                demand[key] = demand.get(key, 0) + 1
            else:
                gangs.append(GangDemand(tuple(Bundle(b) for b in w.bundles), w.strategy))
        return PolicyInput(groups, nodes, tuple(ResourceDemand(dict(k), n) for k, n in demand.items()), tuple(gangs),
                           settings=SETTINGS, now=now, last_scale_up=dict(last_up))


def pace(current: int) -> int:
    """New nodes per group per decision, for both policies: Ray v1's ``max(5, ceil(speed × nodes))``."""
    return max(5, math.ceil(SETTINGS.upscaling_speed * current))


# ---- the two policies ----------------------------------------------------------------------------------------


class OursDriver:
    name = "ours"

    def __init__(self, observe: Callable[[PolicyInput, Decision], None] | None = None,
                 conserve_gpu_nodes: bool = True) -> None:
        self.replicas: dict[str, int] = {}
        self.last_up: dict[str, float] = {}
        self.seconds = 0.0
        self.observe = observe  # sees every decision with its input (tests/unit/policy_replay.py records them)
        # The cluster's autoscaling.conserveGpuNodes; Ray's scheduler has no such setting, so it only changes ours.
        self.conserve_gpu_nodes = conserve_gpu_nodes

    def act(self, c: Cluster, now: float) -> None:
        inp = c.snapshot(now, self.replicas, self.last_up)
        if inp.settings.conserve_gpu_nodes != self.conserve_gpu_nodes:
            inp = replace(inp, settings=replace(inp.settings, conserve_gpu_nodes=self.conserve_gpu_nodes))
        t0 = time.perf_counter()
        d = decide(inp)
        self.seconds += time.perf_counter() - t0
        if self.observe is not None:
            self.observe(inp, d)
        for drain in d.drains:
            c.remove_if_idle(drain.node, now)
        for t in c.trace.types:
            target = d.targets[t.name]
            have = c.count(t.name)
            if target > have:
                c.launch(t.name, target - have, now)
            for n in sorted(c.booting(t.name, now), key=lambda n: -n.launched)[:max(0, have - target)]:
                c.remove_if_idle(n.name, now)  # surplus pods that are not Ray nodes yet
            if target > self.replicas.get(t.name, 0):
                self.last_up[t.name] = now
            self.replicas[t.name] = target


class RayDriver:
    name = "ray"

    def __init__(self) -> None:
        from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

        self.scheduler = ResourceDemandScheduler()
        self.queued: dict[str, int] = {}
        self.seconds = 0.0

    def act(self, c: Cluster, now: float) -> None:
        inp = c.snapshot(now, {}, {})
        req = to_ray(inp, self.queued)
        t0 = time.perf_counter()
        reply = self.scheduler.schedule(req)
        self.seconds += time.perf_counter() - t0
        for launch in reply.to_launch:
            self.queued[launch.instance_type] = self.queued.get(launch.instance_type, 0) + launch.count
        for term in reply.to_terminate:
            if "-queued-" in term.instance_id:
                self.queued[term.instance_type] = max(0, self.queued.get(term.instance_type, 0) - 1)
            elif "-pending-" in term.instance_id:  # a pod still coming up: the newest goes
                booting = sorted(c.booting(term.instance_type, now), key=lambda n: -n.launched)
                if booting:
                    c.remove_if_idle(booting[0].name, now)
            else:
                c.remove_if_idle(term.instance_id, now)
        for t in c.trace.types:  # the same pacing our policy applies to itself
            go = min(self.queued.get(t.name, 0), pace(c.count(t.name)))
            if go:
                c.launch(t.name, go, now)
                self.queued[t.name] -= go


def to_ray(inp: PolicyInput, queued: Mapping[str, int] | None = None) -> Any:
    """The same snapshot as Ray's ``SchedulingRequest``: node types from groups, live nodes as RAY_RUNNING
    instances with their GCS state, pending pods as ALLOCATED instances, ``queued`` as QUEUED ones."""
    from ray.autoscaler.v2.instance_manager.config import NodeTypeConfig
    from ray.autoscaler.v2.scheduler import SchedulingRequest
    from ray.autoscaler.v2.schema import AutoscalerInstance
    from ray.core.generated import autoscaler_pb2, common_pb2, instance_manager_pb2

    # The generated protobuf modules carry no type information.
    pb: Any = autoscaler_pb2
    im: Any = instance_manager_pb2
    label_op: Any = common_pb2.LabelSelectorOperator  # type: ignore[attr-defined]

    configs = {g.name: NodeTypeConfig(name=g.name, min_worker_nodes=g.min_replicas, max_worker_nodes=g.max_replicas,
                                      resources=dict(g.resources), labels=dict(g.labels)) for g in inp.groups}
    status = {NodeStatus.RUNNING: pb.NodeStatus.RUNNING, NodeStatus.IDLE: pb.NodeStatus.IDLE,
              NodeStatus.DRAINING: pb.NodeStatus.DRAINING, NodeStatus.DEAD: pb.NodeStatus.DEAD}
    instances = []
    live: dict[str, int] = {}
    for k, n in enumerate(inp.nodes):
        if n.status not in (NodeStatus.RUNNING, NodeStatus.IDLE) or n.group not in configs:
            continue
        live[n.group] = live.get(n.group, 0) + 1
        node_id = f"{k:056x}"
        state = pb.NodeState(node_id=bytes.fromhex(node_id), instance_id=n.name, ray_node_type_name=n.group,
                             total_resources=dict(n.total), available_resources=dict(n.available),
                             status=status[n.status], idle_duration_ms=int(n.idle_s * 1000))
        inst = im.Instance(instance_id=n.name, instance_type=n.group, status=im.Instance.RAY_RUNNING,
                           node_id=node_id, node_kind=im.NodeKind.WORKER)
        instances.append(AutoscalerInstance(im_instance=inst, ray_node=state, cloud_instance_id=n.name))
    for g in inp.groups:
        coming = max(g.pending_pods, g.replicas - live.get(g.name, 0))
        waiting = (queued or {}).get(g.name, 0)
        for k in range(coming + waiting):
            st = im.Instance.ALLOCATED if k < coming else im.Instance.QUEUED
            name = f"{g.name}-pending-{k}" if k < coming else f"{g.name}-queued-{k}"
            inst = im.Instance(instance_id=name, instance_type=g.name, status=st, node_kind=im.NodeKind.WORKER)
            instances.append(AutoscalerInstance(im_instance=inst, cloud_instance_id=name if k < coming else None))

    def request(shape: Resources, selectors: tuple[LabelSelector, ...] = (), constraint: Any = None) -> Any:
        r = pb.ResourceRequest(resources_bundle={k: v for k, v in shape.items() if v > 0})
        for selector in selectors:
            sel = r.label_selectors.add()
            for term in selector:
                op = label_op.LABEL_OPERATOR_IN if term.op is LabelOp.IN else label_op.LABEL_OPERATOR_NOT_IN
                sel.label_constraints.add(label_key=term.key, operator=op, label_values=sorted(term.values))
        if constraint is not None:
            r.placement_constraints.append(constraint)
        return r

    gangs = []
    pg = 0
    for gang in inp.gangs:
        for _ in range(gang.count):
            pg += 1
            label = f"_PG_{pg:x}"  # GCS labels a placement group's (anti-)affinity this way
            constraint = None
            if gang.strategy is Strategy.STRICT_PACK:
                constraint = pb.PlacementConstraint(affinity=pb.AffinityConstraint(label_name=label, label_value=""))
            elif gang.strategy is Strategy.STRICT_SPREAD:
                constraint = pb.PlacementConstraint(
                    anti_affinity=pb.AntiAffinityConstraint(label_name=label, label_value=""))
            gangs.append(pb.GangResourceRequest(requests=[
                request(b.shape, (b.label_selector,) if b.label_selector else (), constraint) for b in gang.bundles]))
    constraints = []
    if inp.constraints:
        constraints.append(pb.ClusterResourceConstraint(resource_requests=[
            pb.ResourceRequestByCount(request=request(c.shape, c.label_selectors), count=c.count)
            for c in inp.constraints]))
    return SchedulingRequest(
        disable_launch_config_check=True, node_type_configs=configs, idle_timeout_s=inp.settings.idle_timeout_s,
        resource_requests=[pb.ResourceRequestByCount(request=request(d.shape, d.label_selectors), count=d.count)
                           for d in inp.demands],
        gang_resource_requests=gangs, cluster_resource_constraints=constraints, current_instances=instances)


# ---- runs and their summary ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimResult:
    node_seconds: float
    cost: float  # node-seconds × price, summed over groups
    pending_seconds: float  # per task or bundle
    launched: int
    decide_seconds: float
    peak_nodes: int  # per episode the most nodes at once (pods coming up included), summed: launches above it
    # replaced a node removed earlier in the episode


def simulate(trace: Trace, driver: OursDriver | RayDriver) -> SimResult:
    c = Cluster(trace)
    peaks = [0] * len(trace.episodes)
    for k in range(int(trace.end / TICK)):
        now = k * TICK
        c.step(now)
        driver.act(c, now)
        c.account()
        episode = min(int(now // EPISODE_S), len(peaks) - 1)
        peaks[episode] = max(peaks[episode], len(c.nodes))
    return SimResult(sum(c.node_seconds.values()), sum(s * trace.price(g) for g, s in c.node_seconds.items()),
                     c.pending_seconds, c.launched, driver.seconds, sum(peaks))


@dataclass(frozen=True)
class SeedRun:
    family: str
    seed: int
    lower_bound: int
    ours: SimResult
    ray: SimResult
    episode_bound: int  # the bound before the idle timeout was taken into account, kept for comparison
    conserve_gpu_nodes: bool = True  # our policy's setting in this run (Ray's side has none)


def run_seed(family: Family, seed: int, episodes: int, conserve_gpu_nodes: bool = True) -> SeedRun:
    trace = make_trace(family, episodes, seed)
    ours = simulate(trace, OursDriver(conserve_gpu_nodes=conserve_gpu_nodes))
    return SeedRun(family.name, seed, lower_bound(trace), ours, simulate(trace, RayDriver()), episode_bound(trace),
                   conserve_gpu_nodes)


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; equal amounts (zero included) are 1, anything over nothing is infinite."""
    if ours == theirs:
        return 1.0
    return ours / theirs if theirs else math.inf


@dataclass(frozen=True)
class Stat:
    median: float
    worst: float  # the highest: for every measure here, lower is better


def stat(values: Iterable[float]) -> Stat:
    v = list(values)
    return Stat(statistics.median(v), max(v))


@dataclass(frozen=True)
class Summary:
    """One family over one split of seeds: ours against Ray per seed (ratios), and launches per lower bound."""

    family: str
    split: str
    seeds: int
    node_seconds: tuple[Stat, Stat]  # ours, Ray
    cost: tuple[Stat, Stat]
    pending: tuple[Stat, Stat]
    node_ratio: Stat  # ours / Ray, per seed
    cost_ratio: Stat
    pending_ratio: Stat
    launched_lb: tuple[Stat, Stat]  # launched / lower bound, ours and Ray
    launched_episode_bound: tuple[Stat, Stat]  # launched / the bound without the idle timeout, ours and Ray
    launched_peak: tuple[Stat, Stat]  # launched / the most nodes at once, ours and Ray: 1 when none is replaced


def summarize(runs: Sequence[SeedRun], split: str) -> Summary:
    def both(get: Callable[[SimResult], float]) -> tuple[Stat, Stat]:
        return stat(get(r.ours) for r in runs), stat(get(r.ray) for r in runs)

    return Summary(
        family=runs[0].family, split=split, seeds=len(runs),
        node_seconds=both(lambda s: s.node_seconds), cost=both(lambda s: s.cost),
        pending=both(lambda s: s.pending_seconds),
        node_ratio=stat(ratio(r.ours.node_seconds, r.ray.node_seconds) for r in runs),
        cost_ratio=stat(ratio(r.ours.cost, r.ray.cost) for r in runs),
        pending_ratio=stat(ratio(r.ours.pending_seconds, r.ray.pending_seconds) for r in runs),
        launched_lb=(stat(r.ours.launched / r.lower_bound for r in runs),
                     stat(r.ray.launched / r.lower_bound for r in runs)),
        launched_episode_bound=(stat(r.ours.launched / r.episode_bound for r in runs),
                                stat(r.ray.launched / r.episode_bound for r in runs)),
        launched_peak=both(lambda s: s.launched / s.peak_nodes),
    )


LAUNCH_MEDIAN_MAX = 1.10
LAUNCH_WORST_MAX = 1.20


def check(s: Summary) -> list[tuple[str, bool]]:
    """The quality targets of issue 14 on one family and split: (what, met)."""
    ours_lb = s.launched_lb[0]
    where = f"{s.family}, seeds {s.split}"
    return [
        (f"{where}: node-seconds <= Ray's at the median (ours/Ray {s.node_ratio.median:.3f})",
         s.node_ratio.median <= 1.0),
        (f"{where}: pending task-seconds <= Ray's at the median (ours/Ray {s.pending_ratio.median:.3f})",
         s.pending_ratio.median <= 1.0),
        (f"{where}: launched/lower bound <= {LAUNCH_MEDIAN_MAX:.2f} at the median ({ours_lb.median:.3f})",
         ours_lb.median <= LAUNCH_MEDIAN_MAX),
        (f"{where}: launched/lower bound <= {LAUNCH_WORST_MAX:.2f} worst case ({ours_lb.worst:.3f})",
         ours_lb.worst <= LAUNCH_WORST_MAX),
    ]
