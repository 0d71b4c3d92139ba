"""Autoscaler policy vs Ray's own v2 scheduler: decision time on growing inputs, and quality on seeded traces.

    .venv/bin/python bench/autoscaler.py            # full run: 30 seeds per family (bounded: Ray gets --ray-budget s)
    .venv/bin/python bench/autoscaler.py --quick    # CI (make bench): small Ray sizes, seeds 1-10, one episode each

Decision time is the operator's whole turn of pure work: the GCS reply's bytes parsed, turned into a snapshot
(``gcs.snapshot_from_state``), then into the policy's input (``inputs.policy_input``), then ``decide``.
Ray's side gets the same case as its ``SchedulingRequest`` (``autosim.to_ray``) and runs in a forked child
that is killed once it exceeds its budget; a size it does not finish is reported as such, never extrapolated.

Quality: bench/autosim.py replays seeded traces of five families in a discrete-time cluster, once driven by
our policy and once by Ray's scheduler. The policy may be tuned on seeds 1-10 only; seeds 11-30 are held out
and reported apart. Every target is printed as met or NOT met, and the exit status is 1 when any is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.autosim import FAMILIES, Family, SeedRun, Summary, check, run_seed, summarize, to_ray
from swarm_operator.autoscaler.gcs import snapshot_from_state
from swarm_operator.autoscaler.inputs import policy_input
from swarm_operator.autoscaler.policy import Decision, Node, PolicyInput, Settings, WorkerGroup, decide
from swarm_operator.autoscaler.snapshot import (
    HEAD_RESOURCE,
    Bundle,
    ClusterSnapshot,
    GangDemand,
    NodeStatus,
    ResourceDemand,
    Strategy,
)
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels
from swarm_operator.resources.pods import GCS_PORT, ray_shape
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.types import ClusterSpec

G = 1e9

# ---- decision-time cases -----------------------------------------------------------------------------------

GROUPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("cpu-4", {"CPU": 4, "memory": 16 * G}),
    ("cpu-8", {"CPU": 8, "memory": 32 * G}),
    ("cpu-16", {"CPU": 16, "memory": 64 * G}),
    ("cpu-32", {"CPU": 32, "memory": 128 * G}),
    ("cpu-64", {"CPU": 64, "memory": 256 * G}),
    ("highmem-16", {"CPU": 16, "memory": 256 * G, "highmem": 1}),
    ("gpu-1", {"CPU": 8, "GPU": 1, "memory": 64 * G}),
    ("gpu-2", {"CPU": 16, "GPU": 2, "memory": 128 * G}),
    ("gpu-4", {"CPU": 32, "GPU": 4, "memory": 256 * G}),
    ("gpu-8", {"CPU": 64, "GPU": 8, "memory": 512 * G}),
)


@dataclass(frozen=True)
class Size:
    shapes: int
    tasks: int
    nodes: int

    def label(self) -> str:
        return f"{self.tasks:,} tasks / {self.shapes} shapes / {self.nodes:,} nodes"


def random_shape(rng: random.Random) -> dict[str, float]:
    """One of ~600 distinct shapes: mostly CPU, a fifth with GPUs, a few on the high-memory group."""
    roll = rng.random()
    if roll < 0.2:
        shape = {"GPU": float(rng.choice((1, 1, 2, 4))), "CPU": float(rng.choice((1, 2, 3, 4, 6, 8)))}
    elif roll < 0.25:
        shape = {"CPU": float(rng.choice((1, 2, 4))), "highmem": 0.25}
    else:
        shape = {"CPU": rng.choice((0.5, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0))}
    if rng.random() < 0.6:
        shape["memory"] = rng.choice((0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24)) * G
    return shape


def split_count(rng: random.Random, total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` with a heavy tail (a few shapes dominate, as in real backlogs)."""
    weights = [rng.paretovariate(1.2) for _ in range(parts)]
    scale = (total - parts) / sum(weights)
    counts = [1 + int(w * scale) for w in weights]
    counts[0] += total - sum(counts)
    return counts


def fill_node(rng: random.Random, total: Mapping[str, float], shapes: list[dict[str, float]]) -> dict[str, float]:
    """A busy node's free resources: run random pending shapes on it until it is fuller than a random level."""
    free = dict(total)
    target = rng.uniform(0.6, 1.0)
    for _ in range(64):
        shape = rng.choice(shapes)
        if all(free.get(k, 0.0) >= v for k, v in shape.items()):
            for k, v in shape.items():
                free[k] -= v
        if 1 - free.get("CPU", 0.0) / total["CPU"] >= target:
            break
    return free


def make_case(size: Size, seed: int = 7) -> PolicyInput:
    """10 groups, ``size.nodes`` Ray nodes (two thirds busy with fragmented free room, one third idle),
    a few pods pending per group, ``size.shapes`` distinct task shapes totalling ``size.tasks``, a few
    placement groups and one request_resources constraint."""
    rng = random.Random(seed)
    shapes: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}
    while len(shapes) < size.shapes:
        s = random_shape(rng)
        shapes[tuple(sorted(s.items()))] = s
    shape_list = list(shapes.values())
    counts = split_count(rng, size.tasks, size.shapes)
    demands = tuple(ResourceDemand(s, n) for s, n in zip(shape_list, counts, strict=True))
    nodes: list[Node] = []
    live = [0] * len(GROUPS)
    for k in range(size.nodes):
        gi = k % len(GROUPS)
        name, res = GROUPS[gi]
        live[gi] += 1
        fits = [s for s in shape_list if all(res.get(r, 0.0) >= v for r, v in s.items())]
        if rng.random() < 2 / 3 and fits:
            nodes.append(Node(f"{name}-{k}", name, NodeStatus.RUNNING, res, fill_node(rng, res, fits),
                                 age_s=rng.uniform(60, 7200)))
        else:
            nodes.append(Node(f"{name}-{k}", name, NodeStatus.IDLE, res, res, idle_s=rng.uniform(0, 600),
                                 age_s=rng.uniform(60, 7200)))
    pending = [rng.randint(0, 3) if size.nodes else 0 for _ in GROUPS]
    groups = tuple(WorkerGroup(name, res, 0, 5000, live[gi] + pending[gi], pending[gi])
                   for gi, (name, res) in enumerate(GROUPS))
    scale = max(1, size.shapes // 10)
    gangs = (
        GangDemand((Bundle({"GPU": 1.0, "CPU": 4.0}),) * 4, Strategy.STRICT_SPREAD, scale),
        GangDemand((Bundle({"GPU": 1, "CPU": 2}),) * 2, Strategy.STRICT_PACK, scale),
        GangDemand((Bundle({"CPU": 2}),) * 8, Strategy.PACK, scale),
        GangDemand((Bundle({"CPU": 4}),) * 3, Strategy.SPREAD, scale),
    )
    # No upscaling-speed limit: the timing compares the work of placing everything (Ray's scheduler has no
    # speed limit of its own; its instance manager paces launches afterwards).
    settings = Settings(upscaling_speed=math.inf, idle_timeout_s=60.0)
    return PolicyInput(groups, tuple(nodes), demands, gangs, (ResourceDemand({"CPU": 8}, 10),), settings=settings)


def _ray_child(conn: Connection, inp: PolicyInput) -> None:
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

    req = to_ray(inp)
    conn.send("start")
    t0 = time.process_time()
    reply = ResourceDemandScheduler().schedule(req)
    elapsed = time.process_time() - t0
    conn.send((elapsed, {r.instance_type: r.count for r in reply.to_launch}))


def time_ray(inp: PolicyInput, budget: float) -> tuple[float, dict[str, int]] | None:
    """Ray's ``schedule()`` time on ``inp`` in a forked child, or None when it exceeds ``budget`` seconds."""
    parent, child = mp.get_context("fork").Pipe(duplex=False)
    proc = mp.get_context("fork").Process(target=_ray_child, args=(child, inp), daemon=True)
    proc.start()
    try:
        if not parent.poll(300) or parent.recv() != "start":
            raise RuntimeError("Ray's side failed before scheduling")
        if not parent.poll(budget):
            return None
        elapsed, launched = parent.recv()
        return float(elapsed), dict(launched)
    finally:
        proc.kill()
        proc.join()


# ---- the whole turn: GCS reply -> snapshot -> policy input -> decision ---------------------------------------

NOW = 1_700_000_000.0


def cluster_manifest(groups: Sequence[WorkerGroup]) -> dict[str, Any]:
    """A SwarmCluster whose worker groups advertise the case's group resources (plus the object store Ray adds)."""
    worker_groups = []
    for g in groups:
        extra = {k: v for k, v in g.resources.items() if k not in ("CPU", "GPU", "memory")}
        worker_groups.append({
            "name": g.name, "minReplicas": g.min_replicas, "maxReplicas": g.max_replicas, "replicas": g.replicas,
            "resources": {"cpu": f"{g.resources['CPU']:g}", "memory": f"{g.resources['memory'] / G:g}G",
                          "gpu": int(g.resources.get("GPU", 0))},
            **({"rayResources": extra} if extra else {}),
        })
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster",
            "metadata": {"name": "bench", "namespace": "bench", "uid": "bench", "generation": 1},
            "spec": {"head": {"resources": {"cpu": "4", "memory": "16G"}}, "workerGroups": worker_groups,
                     "autoscaling": {"enabled": True, "idleTimeoutSeconds": 60}}}


@dataclass(frozen=True)
class Turn:
    """One autoscaler turn's inputs as the operator holds them: the GCS reply's bytes, the spec, the pods."""

    spec: ClusterSpec
    reply: bytes
    pods: tuple[PodState, ...]
    targets: Mapping[str, int]


def _pod(name: str, group: str | None, age_s: float, running: bool = True) -> PodState:
    return PodState(name=name, node_type=labels.WORKER if group else labels.HEAD, group=group,
                    phase="Running" if running else "Pending", ready=running, deleting=False, template_hash="",
                    created=NOW - age_s, scheduled=running, failure=None)


def make_turn(case: PolicyInput) -> Turn:
    """``case`` as the GCS would report it (Ray 2.60's ``GetClusterResourceStateReply``: every node with its
    node:<ip> resource and object store, demand by shape, each placement group on its own, the
    request_resources constraint) plus a pod per node and per pending pod."""
    from ray.core.generated import autoscaler_pb2

    pb: Any = autoscaler_pb2  # the generated module carries no type information
    spec = parse_cluster(cluster_manifest(case.groups))
    shapes = {g.name: ray_shape(g.resources, g.ray_start_params, g.ray_resources) for g in spec.worker_groups}
    state = pb.ClusterResourceState(cluster_session_name="session_bench", cluster_resource_state_version=1)
    status = {NodeStatus.RUNNING: pb.NodeStatus.RUNNING, NodeStatus.IDLE: pb.NodeStatus.IDLE}
    head = {"CPU": 4.0, "memory": 16 * G, "node:10.0.0.1": 1.0, HEAD_RESOURCE: 1.0}
    state.node_states.add(node_id=hashlib.sha224(b"bench-head").digest(), instance_id="bench-head",
                          ray_node_type_name="headgroup", status=pb.NodeStatus.RUNNING, total_resources=head,
                          available_resources=head, node_ip_address="10.0.0.1")
    pods = [_pod("bench-head", None, 7200)]
    for k, n in enumerate(case.nodes):
        assert n.group is not None
        ip = f"10.{1 + k // 250}.{k % 250}.1"
        total = {**shapes[n.group], f"node:{ip}": 1.0}
        used = {r: n.total[r] - n.available.get(r, 0.0) for r in n.total}
        node_id = hashlib.sha224(n.name.encode()).digest()
        busy = n.status is NodeStatus.RUNNING
        state.node_states.add(node_id=node_id, instance_id=n.name, ray_node_type_name=n.group,
                              status=status[n.status], total_resources=total,
                              available_resources={r: v - used.get(r, 0.0) for r, v in total.items()},
                              idle_duration_ms=int(n.idle_s * 1000), node_ip_address=ip,
                              labels={"ray.io/node-id": node_id.hex()},
                              node_activity=["Resource: CPU currently in use."] if busy else [])
        pods.append(_pod(n.name, n.group, n.age_s))
    for g in case.groups:
        pods += [_pod(f"{g.name}-pending-{i}", g.name, 10, running=False) for i in range(g.pending_pods)]
    for d in case.demands:
        state.pending_resource_requests.add(request=pb.ResourceRequest(resources_bundle=dict(d.shape)),
                                            count=d.count)
    serial = 0
    for gang in case.gangs:
        for _ in range(gang.count):
            serial += 1
            label = f"_PG_{serial:x}"
            constraints = []
            if gang.strategy is Strategy.STRICT_PACK:
                constraints.append(pb.PlacementConstraint(
                    affinity=pb.AffinityConstraint(label_name=label, label_value="")))
            elif gang.strategy is Strategy.STRICT_SPREAD:
                constraints.append(pb.PlacementConstraint(
                    anti_affinity=pb.AntiAffinityConstraint(label_name=label, label_value="")))
            bundles = [pb.ResourceRequest(resources_bundle=dict(b.shape), placement_constraints=constraints)
                       for b in gang.bundles]
            g = state.pending_gang_resource_requests.add(details=f"{serial:036x}:{gang.strategy}|PENDING")
            g.requests.extend(bundles)
            g.bundle_selectors.add(resource_requests=bundles)
    state.cluster_resource_constraints.add(resource_requests=[
        pb.ResourceRequestByCount(request=pb.ResourceRequest(resources_bundle=dict(c.shape)), count=c.count)
        for c in case.constraints])
    reply = pb.GetClusterResourceStateReply(cluster_resource_state=state).SerializeToString()
    return Turn(spec, reply, tuple(pods), {g.name: g.replicas for g in case.groups})


@dataclass(frozen=True)
class TurnTimes:
    """CPU seconds, p50 over repeats: the whole turn (p50 and p95) and its three parts (p50 each)."""

    p50: float
    p95: float
    read: float  # the reply's bytes parsed and turned into a ClusterSnapshot
    translate: float  # snapshot + spec + pods -> PolicyInput
    decide: float


def turn_snapshot(turn: Turn) -> ClusterSnapshot:
    """The reply's bytes as RayStateClient.read turns them into a snapshot."""
    from ray.core.generated import autoscaler_pb2

    reply_type: Any = autoscaler_pb2.GetClusterResourceStateReply  # type: ignore[attr-defined]
    return snapshot_from_state(reply_type.FromString(turn.reply).cluster_resource_state, address=f"10.0.0.1:{GCS_PORT}")


def turn_input(turn: Turn, snap: ClusterSnapshot) -> PolicyInput:
    """The policy's input as the runner builds it. As in make_case, no upscaling-speed limit (the spec's is
    finite), so every size places all its demand."""
    inp = policy_input(turn.spec, snap, turn.pods, turn.targets, {}, frozenset(), NOW)
    return replace(inp, settings=replace(inp.settings, upscaling_speed=math.inf))


def run_turn(turn: Turn) -> tuple[Decision, list[float]]:
    """One turn; returns the decision and the CPU seconds each part took."""
    t0 = time.process_time()
    snap = turn_snapshot(turn)
    t1 = time.process_time()
    inp = turn_input(turn, snap)
    t2 = time.process_time()
    decision = decide(inp)
    t3 = time.process_time()
    return decision, [t1 - t0, t2 - t1, t3 - t2]


def time_turn(turn: Turn, repeats: int) -> tuple[TurnTimes, Decision]:
    decision, _ = run_turn(turn)  # warm: first calls fill caches the operator's later turns also find filled
    parts = []
    for _ in range(repeats):
        decision, took = run_turn(turn)
        parts.append(took)
    totals = sorted(sum(p) for p in parts)
    return TurnTimes(statistics.median(totals), totals[max(0, math.ceil(0.95 * len(totals)) - 1)],
                     *(statistics.median(p[i] for p in parts) for i in range(3))), decision


# ---- report ------------------------------------------------------------------------------------------------


def added(inp: PolicyInput, new_nodes: Mapping[str, int]) -> str:
    """CPUs/GPUs the new nodes bring: comparable across policies that pick different node sizes."""
    res = {g.name: g.resources for g in inp.groups}
    cpu = sum(res[g].get("CPU", 0.0) * n for g, n in new_nodes.items())
    gpu = sum(res[g].get("GPU", 0.0) * n for g, n in new_nodes.items())
    return f"{cpu:,.0f}/{gpu:,.0f}"


def fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.1f} s"


def print_decision_time(quick: bool, budget: float) -> tuple[float, tuple[Size, float] | None]:
    """The decision-time table; returns the whole turn's p50 at the largest size and Ray/ours where both
    finished at the largest size Ray finished."""
    full = [Size(10, 1_000, 100), Size(50, 5_000, 250), Size(100, 20_000, 500), Size(200, 100_000, 1_000)]
    sizes = [Size(s.shapes, s.tasks, 0) for s in full] + full
    ray_sizes = set(sizes)
    if quick:  # ours on every size; Ray only where it takes seconds
        ray_sizes = {Size(10, 1_000, 0), Size(50, 5_000, 0), Size(10, 1_000, 100)}

    print("Decision CPU time (the machine is shared: CPU time, not wall clock). Ours: the whole turn (GCS reply")
    print("bytes -> snapshot -> policy input -> decide()), p50 / p95 of repeats and each part's p50. Ray: one")
    print("ResourceDemandScheduler.schedule() of Ray 2.60's v2 autoscaler on the same case; 10 groups, placement")
    print(f"groups of every strategy and a request_resources constraint; Ray gets {budget:.0f} s per size\n")
    header = (f"{'input':<41} {'turn p50':>9} {'turn p95':>9} {'read':>8} {'translate':>9} {'decide':>8} "
              f"{'Ray':>23} {'Ray/ours':>9} {'CPU/GPU added: ours | Ray':>26}")
    print(header)
    print("-" * len(header))
    largest_p50 = 0.0
    best_ratio: tuple[Size, float] | None = None
    for size in sizes:
        case = make_case(size)
        times, decision = time_turn(make_turn(case), 5 if size.tasks >= 100_000 else 11)
        ours_new = added(case, {g.name: max(0, decision.targets[g.name] - g.replicas) for g in case.groups})
        if size == sizes[-1]:
            largest_p50 = times.p50
        ray_text, ratio_text, launched_text = "not run (--quick)", "", f"{ours_new} | -"
        if size in ray_sizes:
            got = time_ray(case, budget)
            if got is None:
                ray_text = f"did not finish in {budget:.0f} s"
            else:
                ray_s, ray_new = got
                ratio = ray_s / times.p50
                ray_text, ratio_text = fmt_s(ray_s), f"{ratio:,.0f}×"
                launched_text = f"{ours_new} | {added(case, ray_new)}"
                if best_ratio is None or (size.tasks, size.nodes) >= (best_ratio[0].tasks, best_ratio[0].nodes):
                    best_ratio = (size, ratio)
        print(f"{size.label():<41} {fmt_s(times.p50):>9} {fmt_s(times.p95):>9} {fmt_s(times.read):>8} "
              f"{fmt_s(times.translate):>9} {fmt_s(times.decide):>8} {ray_text:>23} {ratio_text:>9} "
              f"{launched_text:>26}", flush=True)
    return largest_p50, best_ratio


TUNING = range(1, 11)  # the seeds the policy may be tuned on
HELD_OUT = range(11, 31)


def _run_seed(job: tuple[Family, int, int, bool]) -> SeedRun:
    return run_seed(*job)


def run_quality(seeds: Sequence[int], episodes: int, jobs: int, families: Sequence[Family] = FAMILIES,
                conserve_gpu_nodes: bool = True) -> list[SeedRun]:
    work = [(f, seed, episodes, conserve_gpu_nodes) for f in families for seed in seeds]
    if jobs <= 1:
        return [_run_seed(w) for w in work]
    with mp.get_context("fork").Pool(jobs) as pool:
        return pool.map(_run_seed, work, chunksize=1)


def splits(runs: Sequence[SeedRun]) -> list[Summary]:
    out = []
    for family in FAMILIES:
        for split, seeds in (("1-10", TUNING), ("11-30", HELD_OUT)):
            chosen = [r for r in runs if r.family == family.name and r.seed in seeds]
            if chosen:
                out.append(summarize(chosen, split))
    return out


def _pair(ours: float, ray: float) -> str:
    return f"{ours:,.0f} / {ray:,.0f}"


def _ratio(median: float, worst: float) -> str:
    return f"{median:.3f} [{worst:.3f}]"


def quality_rows(summaries: Sequence[Summary]) -> list[list[str]]:
    """One row per family and split: medians of ours / Ray's, the per-seed ratio's median [worst]; launched /
    lower bound, then / the bound without the idle timeout, as median [worst] for ours and Ray's; the worst
    launched / most nodes at once of ours / Ray's."""
    rows = []
    for s in summaries:
        rows.append([
            s.family, f"{s.split} ({s.seeds})",
            _pair(s.node_seconds[0].median, s.node_seconds[1].median), _ratio(s.node_ratio.median, s.node_ratio.worst),
            _pair(s.cost[0].median, s.cost[1].median), _ratio(s.cost_ratio.median, s.cost_ratio.worst),
            _pair(s.pending[0].median, s.pending[1].median),
            _ratio(s.pending_ratio.median, s.pending_ratio.worst),
            _ratio(s.launched_lb[0].median, s.launched_lb[0].worst),
            _ratio(s.launched_lb[1].median, s.launched_lb[1].worst),
            _ratio(s.launched_episode_bound[0].median, s.launched_episode_bound[0].worst),
            _ratio(s.launched_episode_bound[1].median, s.launched_episode_bound[1].worst),
            f"{s.launched_peak[0].worst:.3f} / {s.launched_peak[1].worst:.3f}",
        ])
    return rows


QUALITY_HEADER = ["family", "seeds (n)", "node-s ours / Ray", "ours/Ray med [worst]", "cost ours / Ray",
                  "ours/Ray med [worst]", "task-s pending ours / Ray", "ours/Ray med [worst]",
                  "launched/LB ours", "launched/LB Ray", "launched/old LB ours", "launched/old LB Ray",
                  "launched/peak worst ours / Ray"]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    align = ["---" if i < 2 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Ray on small sizes only; seeds 1-10, one episode (CI)")
    ap.add_argument("--ray-budget", type=float, default=None, help="seconds Ray's scheduler gets per size")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 1..N per family (default 30; 10 with --quick)")
    ap.add_argument("--episodes", type=int, default=None, help="episodes per trace (default 3; 1 with --quick)")
    ap.add_argument("--jobs", type=int, default=2, help="processes replaying traces (default 2)")
    ap.add_argument("--markdown", action="store_true", help="also print the quality tables as Markdown")
    ap.add_argument("--save", type=Path, help="write every seed's figures to this JSON file")
    ap.add_argument("--skip-timing", action="store_true", help="quality only")
    ap.add_argument("--family", action="append", choices=[f.name for f in FAMILIES],
                    help="replay only this family (repeatable; default every family)")
    ap.add_argument("--conserve-gpu-nodes", choices=("on", "off"), default="on",
                    help="our policy's autoscaling.conserveGpuNodes in the replays (default on, as in a SwarmCluster;"
                         " Ray's side has no such setting)")
    args = ap.parse_args(argv)
    families = [f for f in FAMILIES if args.family is None or f.name in args.family]
    conserve = args.conserve_gpu_nodes == "on"
    budget = args.ray_budget if args.ray_budget is not None else (20.0 if args.quick else 120.0)
    seeds = range(1, 1 + (args.seeds or (10 if args.quick else 30)))
    episodes = args.episodes or (1 if args.quick else 3)

    targets: list[tuple[str, bool]] = []
    if not args.skip_timing:
        largest_p50, best_ratio = print_decision_time(args.quick, budget)
        targets.append((f"p50 of the whole turn < 50 ms at 100,000 tasks / 200 shapes / 1,000 nodes: "
                        f"{fmt_s(largest_p50)}", largest_p50 < 0.05))
        if best_ratio is None:
            targets.append(("≥ 100× faster than Ray at the largest size both finish: Ray finished none", False))
        else:
            size, ratio = best_ratio
            targets.append((f"≥ 100× faster than Ray at the largest size both finish ({size.label()}): "
                            f"{ratio:,.0f}×", ratio >= 100))

    print(f"\nQuality: {len(families)} families × seeds {seeds.start}-{seeds.stop - 1}, {episodes} episode(s) of "
          "20 min each; 5 s decisions, 30 s pod start, idle timeout 60 s, the same launch pacing for both; "
          f"conserveGpuNodes {args.conserve_gpu_nodes} for ours.")
    print("Per family and split: medians of ours / Ray's; per-seed ratio ours/Ray as median [worst]; launched / "
          "lower bound as median [worst] (old LB: without the idle timeout); launched / most nodes at once, worst. "
          "Cost = node-seconds × price (CPU node 1, GPU node 8).\n")
    started = time.monotonic()
    runs = run_quality(seeds, episodes, args.jobs, families, conserve)
    summaries = splits(runs)
    rows = quality_rows(summaries)
    print_table(QUALITY_HEADER, rows)
    print(f"\n({len(runs)} traces in {time.monotonic() - started:.0f} s; our decide() in all of them: "
          f"{fmt_s(sum(r.ours.decide_seconds for r in runs))}, Ray's schedule(): "
          f"{fmt_s(sum(r.ray.decide_seconds for r in runs))})")
    if args.markdown:
        print("\n" + markdown(QUALITY_HEADER, rows))
    if args.save:
        args.save.write_text(json.dumps({"seeds": list(seeds), "episodes": episodes, "conserve_gpu_nodes": conserve,
                                         "runs": [asdict(r) for r in runs]}, indent=1) + "\n")
    for s in summaries:
        targets += check(s)

    print("\nTargets")
    for text, met in targets:
        print(f"  {text} -> {'met' if met else 'NOT met'}")
    missed = sum(1 for _, met in targets if not met)
    print(f"\n{len(targets) - missed} of {len(targets)} targets met" + (f"; {missed} NOT met" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
