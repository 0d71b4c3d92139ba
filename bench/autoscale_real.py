"""Autoscaling on real Ray, side by side: our operator (SwarmCluster) against KubeRay v1.6.2 (RayCluster with
Ray's in-tree autoscaler as the head's sidecar, v2 and optionally v1), both on process nodes (localcluster's
node agent: every pod a set of real processes in its own network namespace).

Each workload is a driver job submitted through the head's Jobs API. Per run the benchmark watches the
namespace's pods and records, from the watch's event times: seconds from submission to the first task running
and to all done (the driver's own clock, the same host's), worker pods created and the most alive at once,
worker pod-seconds (creation seen → deletion seen; a pod still there when the run gives up counts until then),
tasks failed and retried (Ray's state API, one entry per attempt), busy pods deleted, and how many scaling
actions an Event on the cluster object explains. A pod counts as busy when a task ran on it (its hostname is the
pod's name) across the moment its deletion was seen, less a second of watch latency: the count errs towards
finding a busy pod, never away from it. A task killed with its pod shows up as retried or failed as well. In
the actors-objects workload a pod holding an object the driver still references is busy too (each holder is
recorded from the object's making to the driver's read), and objects the driver cannot read back are counted.

Both operators get the same groups, shapes, min/max, idle timeout (30 s), decision interval (5 s) and
upscaling (no rate limit: KubeRay's default upscalingMode gives Ray's autoscaler upscaling_speed 1000, so ours
gets upscalingSpeed 1000); ours also gets scaleDownStabilizationSeconds 0, a setting Ray lacks.

Run: `make bench-autoscale-real AUTOSCALE_REAL_ARGS="--workloads burst --pairs 3"`, or
`python -m localcluster run -- .venv/bin/python bench/autoscale_real.py --workloads burst`. Needs root (process
nodes). Exits 1 when a target of issue 28 is missed or a run did not finish.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import autosim
from bench.common import (
    CRD,
    Spread,
    add_round_arguments,
    kubeconfig_from_env,
    kubectl_apply,
    print_targets,
    spread,
    wait_gone,
)
from localcluster import kuberay, rayjobs
from localcluster.nodeagent import NodeAgentProcess
from localcluster.operator_process import OperatorProcess
from swarm_operator.autoscaler.policy import Settings

IDLE_TIMEOUT_S = 30
INTERVAL_S = 5  # ours: intervalSeconds; Ray's autoscaler: AUTOSCALER_UPDATE_INTERVAL_S's default
UPSCALING_SPEED = 1000  # what KubeRay's upscalingMode Default gives Ray's autoscaler
RAY_VERSION = "2.60.0"
POOL_LABEL = "swarm.io/pool"
PROCESS_TAINT = {"key": "swarm.io/process-node", "operator": "Exists", "effect": "NoSchedule"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
HEAD = {"cpu": "1", "memory": "2Gi"}
# (name, resources per pod, maxReplicas): logical CPUs, far above the machine's 2 cores; the tasks sleep.
GROUPS = (("cpu", {"cpu": "8", "memory": "4Gi"}, 6), ("gpu", {"cpu": "4", "memory": "4Gi", "nvidia.com/gpu": "1"}, 3))
OPERATORS = ("swarm", "kuberay-v2", "kuberay-v1")
# Words with which an Event says why a group changed size (demand pending, a node idle), not only that it did.
CAUSE_WORDS = ("pending", "idle", "demand", "request")
WATCH_LATENCY_S = 1.0
JOB_TIMEOUT_S = 600.0
SCALE_DOWN_GRACE_S = 120.0  # after the job: the idle timeout, the drain and the pod's exit, with room


def placement(pool: str, gpu: bool) -> dict[str, Any]:
    return {"nodeSelector": {POOL_LABEL: f"{pool}-{'gpu' if gpu else 'cpu'}"},
            "tolerations": [PROCESS_TAINT, *([GPU_TAINT] if gpu else [])]}


def swarmcluster_body(name: str, pool: str) -> dict[str, Any]:
    groups = []
    for group, res, most in GROUPS:
        resources: dict[str, Any] = {"cpu": int(res["cpu"]), "memory": res["memory"]}
        if "nvidia.com/gpu" in res:
            resources["gpu"] = int(res["nvidia.com/gpu"])
        groups.append({"name": group, "minReplicas": 0, "maxReplicas": most, "resources": resources,
                       "template": {"spec": placement(pool, "nvidia.com/gpu" in res)}})
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster", "metadata": {"name": name},
            "spec": {"rayVersion": RAY_VERSION, "image": f"rayproject/ray:{RAY_VERSION}",
                     "head": {"resources": {"cpu": int(HEAD["cpu"]), "memory": HEAD["memory"], "rayCpus": 0},
                              "template": {"spec": placement(pool, False)}},
                     "workerGroups": groups,
                     "autoscaling": {"enabled": True, "idleTimeoutSeconds": IDLE_TIMEOUT_S,
                                     "intervalSeconds": INTERVAL_S, "upscalingSpeed": UPSCALING_SPEED,
                                     "scaleDownStabilizationSeconds": 0}}}


def raycluster_body(name: str, pool: str, autoscaler_version: str) -> dict[str, Any]:
    def template(container: str, res: Mapping[str, str], gpu: bool) -> dict[str, Any]:
        return {"spec": {**placement(pool, gpu), "containers": [{
            "name": container, "image": f"rayproject/ray:{RAY_VERSION}",
            "resources": {"requests": dict(res), "limits": dict(res)}}]}}

    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name},
            "spec": {"rayVersion": RAY_VERSION, "enableInTreeAutoscaling": True,
                     "autoscalerOptions": {"version": autoscaler_version, "idleTimeoutSeconds": IDLE_TIMEOUT_S,
                                           "upscalingMode": "Default"},
                     "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                                       "template": template("ray-head", HEAD, False)},
                     "workerGroupSpecs": [{"groupName": group, "replicas": 0, "minReplicas": 0, "maxReplicas": most,
                                           "rayStartParams": {},
                                           "template": template("ray-worker", res, "nvidia.com/gpu" in res)}
                                          for group, res, most in GROUPS]}}


# The drivers. Every task returns [kind, hostname (= its pod's name), start, end] on the host's clock; the
# driver prints one BENCH-RESULT line: those records, tasks that failed for good, attempts retried and failed
# (Ray's state API lists one entry per attempt), when everything was done, and marks of its own.
DRIVER_PRELUDE = """\
import json, socket, time, ray
from ray.util.state import list_tasks
ray.init()
marks = {}

@ray.remote(num_cpus=1, max_retries=3)
def work(kind, seconds):
    start = time.time()
    time.sleep(seconds)
    return [kind, socket.gethostname(), start, time.time()]

def collect(refs):
    records, failed = [], 0
    for ref in refs:
        try:
            records.append(ray.get(ref))
        except Exception:
            failed += 1
    return records, failed

def finish(records, failed):
    done = time.time()
    attempts = list_tasks(filters=[("job_id", "=", ray.get_runtime_context().get_job_id())], detail=True,
                          limit=10000, raise_on_missing_output=False)
    print("BENCH-RESULT " + json.dumps({
        "tasks": records, "failed": failed, "done": done, "marks": marks,
        "retried": sum(1 for a in attempts if (a.attempt_number or 0) > 0),
        "failed_attempts": sum(1 for a in attempts if a.state == "FAILED")}), flush=True)
"""

WORKLOADS: dict[str, str] = {
    # 40 one-CPU tasks of 20 s from zero workers.
    "burst": """
records, failed = collect([work.remote("cpu", 20) for _ in range(40)])
finish(records, failed)
""",
    # 16 CPU preprocessing tasks of 10 s, then 2 trainers of {GPU 1, CPU 1} for 20 s.
    "gpu-after-cpu": """
records, failed = collect([work.remote("cpu", 10) for _ in range(16)])
marks["gpu_submitted"] = time.time()
more, more_failed = collect([work.options(num_gpus=1).remote("gpu", 20) for _ in range(2)])
finish(records + more, failed + more_failed)
""",
    # A STRICT_SPREAD placement group of 3 one-CPU bundles, a 20 s task in each.
    "strict-spread": """
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=600)
records, failed = collect([work.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
    pg, placement_group_bundle_index=i)).remote("cpu", 20) for i in range(3)])
finish(records, failed)
""",
    # Two waves of 16 one-CPU tasks of 20 s, submitted 60 s apart (start to start), idle timeout 30 s.
    "two-waves": """
first = time.time()
wave1 = [work.remote("cpu", 20) for _ in range(16)]
time.sleep(max(0.0, first + 60 - time.time()))
marks["wave2_submitted"] = time.time()
records, failed = collect(wave1 + [work.remote("cpu", 20) for _ in range(16)])
finish(records, failed)
""",
    # Actors holding objects: 3 of Ray's default actors (1 CPU to place, none while alive) each keep 64 MiB in
    # their node's object store, and 3 one-CPU tasks return 64 MiB each (the primary copy stays where the task
    # ran; max_retries=0, so a lost one is not rebuilt). The driver holds every reference for twice the idle
    # timeout and more, then reads them all back. A node holding a referenced object must stay: each holder is
    # recorded busy until the read, and an object that cannot be read counts in marks["objects_lost"].
    "actors-objects": """
@ray.remote
class Holder:
    def __init__(self):
        self.blob = ray.put(b"x" * (64 << 20))
        self.since = time.time()

    def held(self):
        return [self.blob], socket.gethostname(), self.since

@ray.remote(num_cpus=1, max_retries=0, num_returns=3)
def make():
    return b"x" * (64 << 20), socket.gethostname(), time.time()

holders = [Holder.remote() for _ in range(3)]
held = [(refs[0], host, since) for refs, host, since in ray.get([h.held.remote() for h in holders])]
made = [make.remote() for _ in range(3)]
held += [(blob, ray.get(host), ray.get(start)) for blob, host, start in made]
time.sleep(75)
marks["read"] = read = time.time()
records, lost = [], 0
for blob, host, since in held:
    try:
        ray.get(blob, timeout=60)
    except Exception:
        lost += 1
    records.append(["object", host, since, read])
marks["objects_lost"] = lost
finish(records, 0)
""",
}


# ---- pure parts: what a run's event log says --------------------------------------------------------------

@dataclass(frozen=True)
class PodEvent:
    """One pod watch event as it arrived: ``deleting`` once the pod has a deletionTimestamp (the DELETE
    happened) or the event is DELETED."""

    at: float
    name: str
    group: str  # "" for the head
    deleting: bool


@dataclass
class PodLife:
    name: str
    group: str
    created: float
    deleted: float | None = None


def pod_lives(events: Sequence[PodEvent]) -> dict[str, PodLife]:
    """Each worker pod's life: first seen → first seen deleting. The head (group "") is left out."""
    lives: dict[str, PodLife] = {}
    for ev in sorted(events, key=lambda e: e.at):
        if not ev.group:
            continue
        life = lives.setdefault(ev.name, PodLife(ev.name, ev.group, ev.at))
        if ev.deleting and life.deleted is None:
            life.deleted = ev.at
    return lives


def pod_seconds(lives: Mapping[str, PodLife], end: float) -> float:
    """Worker pod-seconds, the cost: creation → deletion; a pod not deleted counts until ``end``."""
    return sum((life.deleted if life.deleted is not None else end) - life.created for life in lives.values())


def peak_alive(lives: Mapping[str, PodLife]) -> int:
    """The most worker pods alive at once (a deletion at the same instant as a creation goes first)."""
    steps = sorted([(life.created, 1) for life in lives.values()]
                   + [(life.deleted, -1) for life in lives.values() if life.deleted is not None])
    alive = peak = 0
    for _, step in steps:
        alive += step
        peak = max(peak, alive)
    return peak


@dataclass(frozen=True)
class TaskRecord:
    kind: str
    host: str  # the pod's name
    start: float
    end: float


def busy_deleted(lives: Mapping[str, PodLife], tasks: Sequence[TaskRecord],
                 latency: float = WATCH_LATENCY_S) -> list[str]:
    """Pods whose deletion was seen while one of their tasks ran: started before the deletion was seen and
    ended after (that moment less the watch's ``latency``, which errs towards calling a pod busy)."""
    busy = []
    for life in lives.values():
        if life.deleted is None:
            continue
        seen = life.deleted
        if any(t.host == life.name and t.start <= seen and t.end > seen - latency for t in tasks):
            busy.append(life.name)
    return sorted(busy)


def idle_before_deletion(lives: Mapping[str, PodLife], tasks: Sequence[TaskRecord]) -> list[float]:
    """For each deleted pod that ran a task: seconds from its last task's end to its deletion being seen (the idle
    timeout plus what the scale-down path adds: decision interval, drain, the DELETE)."""
    out = []
    for life in lives.values():
        ends = [t.end for t in tasks if t.host == life.name]
        if life.deleted is not None and ends:
            out.append(life.deleted - max(ends))
    return sorted(out)


@dataclass(frozen=True)
class ClusterEvent:
    at: float
    reason: str
    message: str


def explained(lives: Mapping[str, PodLife], events: Sequence[ClusterEvent],
              before: float = 30.0, after: float = 10.0) -> tuple[int, int]:
    """(scaling actions with an Event on the cluster object that gives a cause, scaling actions): an action is a
    worker pod's creation or deletion; an Event explains it when it comes at most ``before`` seconds earlier or
    ``after`` seconds later (Event times are whole seconds) and its message has one of CAUSE_WORDS."""
    actions = [life.created for life in lives.values()] + [life.deleted for life in lives.values()
                                                              if life.deleted is not None]
    causes = [e.at for e in events if any(w in e.message.lower() for w in CAUSE_WORDS)]
    hit = sum(1 for t in actions if any(t - before <= at <= t + after for at in causes))
    return hit, len(actions)


@dataclass
class Run:
    operator: str
    workload: str
    finished: bool = False
    note: str = ""
    first_task_s: float = math.nan
    all_done_s: float = math.nan
    pods_created: int = 0
    peak_pods: int = 0
    pod_seconds: float = math.nan
    workers_left: int = 0  # worker pods still there when the run stopped waiting for scale-down
    tasks: int = 0
    tasks_failed: int = 0
    attempts_retried: int = 0
    attempts_failed: int = 0
    objects_lost: int = 0  # referenced objects the driver could not read back (actors-objects)
    busy_pods_deleted: list[str] = field(default_factory=list)
    gpu_pods_before_gpu_demand: int = 0
    cpu_tasks_on_gpu_pods: int = 0
    idle_before_deletion_s: list[float] = field(default_factory=list)  # per deleted pod that ran a task
    explained_actions: int = 0
    scaling_actions: int = 0
    events: list[list[Any]] = field(default_factory=list)  # [seconds after submission, reason, message]
    pods: list[list[Any]] = field(default_factory=list)  # [name, group, created s, deleted s | None]
    task_records: list[list[Any]] = field(default_factory=list)  # [kind, pod, start s, end s]
    # Ours: each new status.autoscaler.lastDecision, [seconds after submission, text] (a held scale-up shows here only)
    decisions: list[list[Any]] = field(default_factory=list)


def measure(run: Run, submitted: float, result: Mapping[str, Any], pod_events: Sequence[PodEvent],
            cluster_events: Sequence[ClusterEvent], end: float) -> None:
    """Fill ``run``'s figures from the driver's BENCH-RESULT, the pod watch and the cluster's Events."""
    tasks = [TaskRecord(*t) for t in result.get("tasks", [])]
    lives = pod_lives(pod_events)
    run.tasks = len(tasks)
    run.tasks_failed = int(result.get("failed", 0))
    run.attempts_retried = int(result.get("retried", 0))
    run.attempts_failed = int(result.get("failed_attempts", 0))
    if tasks:
        run.first_task_s = min(t.start for t in tasks) - submitted
    if "done" in result:
        run.all_done_s = float(result["done"]) - submitted
    run.pods_created = len(lives)
    run.peak_pods = peak_alive(lives)
    run.pod_seconds = pod_seconds(lives, end)
    run.workers_left = sum(1 for life in lives.values() if life.deleted is None)
    run.busy_pods_deleted = busy_deleted(lives, tasks)
    run.objects_lost = int((result.get("marks") or {}).get("objects_lost", 0))
    gpu_at = (result.get("marks") or {}).get("gpu_submitted")
    if gpu_at is not None:
        run.gpu_pods_before_gpu_demand = sum(1 for life in lives.values()
                                             if life.group == "gpu" and life.created < gpu_at)
    gpu_pods = {life.name for life in lives.values() if life.group == "gpu"}
    run.cpu_tasks_on_gpu_pods = sum(1 for t in tasks if t.kind == "cpu" and t.host in gpu_pods)
    run.idle_before_deletion_s = [round(s, 2) for s in idle_before_deletion(lives, tasks)]
    run.explained_actions, run.scaling_actions = explained(lives, cluster_events)
    run.task_records = [[t.kind, t.host, round(t.start - submitted, 2), round(t.end - submitted, 2)] for t in tasks]
    run.events = [[round(e.at - submitted, 1), e.reason, e.message] for e in cluster_events]
    run.pods = [[life.name, life.group, round(life.created - submitted, 2),
                 None if life.deleted is None else round(life.deleted - submitted, 2)] for life in lives.values()]
    run.finished = bool(tasks) and run.tasks_failed == 0 and "done" in result


def known_spread(values: Sequence[float]) -> Spread:
    """The spread of the values that are known (runs saved before a measure existed hold NaN for it)."""
    known = [v for v in values if not math.isnan(v)]
    return spread(known) if known else Spread(math.nan, math.nan, math.nan)


MEASURES: dict[str, Callable[[Run], float]] = {
    "first task s": lambda r: r.first_task_s,
    "all done s": lambda r: r.all_done_s,
    "pods created": lambda r: r.pods_created,
    "peak pods": lambda r: r.peak_pods,
    "worker pod-s": lambda r: r.pod_seconds,
    "retried": lambda r: r.attempts_retried,
    "busy deleted": lambda r: len(r.busy_pods_deleted),
    "objects lost": lambda r: r.objects_lost,
    "idle s before deletion": lambda r: statistics.median(r.idle_before_deletion_s) if r.idle_before_deletion_s
    else math.nan,
    "explained": lambda r: r.explained_actions / r.scaling_actions if r.scaling_actions else math.nan,
}
COMPARED = ("all done s", "worker pod-s")  # the targets: ours never worse beyond the spread, on both


def summarize(runs: Sequence[Run]) -> dict[tuple[str, str], dict[str, Spread]]:
    """Median and spread of each measure per (workload, operator), over the runs that finished."""
    out: dict[tuple[str, str], dict[str, Spread]] = {}
    for key in sorted({(r.workload, r.operator) for r in runs}):
        done = [r for r in runs if (r.workload, r.operator) == key and r.finished]
        if done:
            out[key] = {name: known_spread([m(r) for r in done]) for name, m in MEASURES.items()}
    return out


def check_targets(summary: Mapping[tuple[str, str], Mapping[str, Spread]], runs: Sequence[Run],
                  against: str = "kuberay-v2") -> list[tuple[str, bool]]:
    """Issue 28's targets, per workload both sides finished: ours not worse than ``against`` beyond the spread
    (our median within their range or below it) on completion and pod-seconds; ours better with the spreads
    apart on at least 3 of 5 workloads; no busy pod deleted in any run."""
    checks: list[tuple[str, bool]] = []
    better = 0
    workloads = sorted({w for w, _ in summary})
    for workload in workloads:
        ours, theirs = summary.get((workload, "swarm")), summary.get((workload, against))
        if ours is None or theirs is None:
            continue
        wins = 0
        for m in COMPARED:
            not_worse = ours[m].median <= theirs[m].high
            checks.append((f"{workload}: {m} ours {ours[m]} not worse than {against} {theirs[m]}", not_worse))
            wins += ours[m].high < theirs[m].low
        better += wins == len(COMPARED)
    checks.append((f"ours better on both measures with spreads apart on {better} workloads, want ≥ 3 of 5",
                   better >= 3))
    busy = sum(len(r.busy_pods_deleted) for r in runs)
    checks.append((f"busy pods deleted: {busy}, want 0", busy == 0))
    lost = sum(r.objects_lost for r in runs if r.operator == "swarm")
    checks.append((f"referenced objects lost by ours: {lost}, want 0", lost == 0))
    return checks


def markdown(summary: Mapping[tuple[str, str], Mapping[str, Spread]], runs: Sequence[Run]) -> str:
    """The table for bench/README.md: one row per workload and operator, medians [min–max]."""
    head = "| workload | operator | runs | " + " | ".join(MEASURES) + " |"
    lines = [head, "|" + "---|" * (3 + len(MEASURES))]
    for (workload, operator), row in summary.items():
        n = sum(1 for r in runs if (r.workload, r.operator) == (workload, operator) and r.finished)
        lines.append(f"| {workload} | {operator} | {n} | " + " | ".join(str(row[m]) for m in MEASURES) + " |")
    return "\n".join(lines)


def run_order(operators: Sequence[str], pairs: int) -> list[str]:
    """Rounds of every operator, the order reversed every other round, so neither side always goes first."""
    order: list[str] = []
    for i in range(pairs):
        order += list(operators) if i % 2 == 0 else list(reversed(operators))
    return order


def result_line(logs: str) -> dict[str, Any]:
    """The driver's BENCH-RESULT line, or {} when it printed none."""
    line = next((ln for ln in logs.splitlines() if ln.startswith("BENCH-RESULT ")), "")
    return dict(json.loads(line.split(" ", 1)[1])) if line else {}


# ---- the simulator's prediction (issue 28, part 6) ---------------------------------------------------------

# What bench/autosim.py can replay of a workload: (arrival s, one-CPU tasks, seconds each) per wave. The other
# workloads depend on when a wave ends (gpu-after-cpu) or on placement (strict-spread), which a fixed trace lacks.
SIMULATED_WAVES: dict[str, tuple[tuple[float, int, float], ...]] = {
    "burst": ((0.0, 40, 20.0),),
    "two-waves": ((0.0, 16, 20.0), (60.0, 16, 20.0)),
}


def simulated_trace(workload: str) -> autosim.Trace:
    """The workload as the simulator's trace, on this benchmark's groups (prices: a GPU node costs 8 CPU nodes,
    as in the simulator's families)."""
    types = tuple(autosim.NodeType(group, {"CPU": float(res["cpu"]), "memory": 4 * autosim.G,
                                          **({"GPU": 1.0} if "nvidia.com/gpu" in res else {})},
                                   most, autosim.GPU_PRICE if "nvidia.com/gpu" in res else 1.0)
                  for group, res, most in GROUPS)
    work = tuple(autosim.Work(at, ({"CPU": 1.0},), seconds) for at, count, seconds in SIMULATED_WAVES[workload]
                 for _ in range(count))
    return autosim.Trace(workload, 0, (types[0], types[1]), ((0.0, work),), autosim.EPISODE_S)


def simulate(workload: str) -> dict[str, autosim.SimResult]:
    """Both of the simulator's policies on the workload, with this benchmark's settings (idle timeout 30 s, no
    upscaling limit, no stabilization). The simulator reads them from its module's SETTINGS, so they are set
    there for the replay and put back after."""
    default = autosim.SETTINGS
    autosim.SETTINGS = Settings(upscaling_speed=UPSCALING_SPEED, idle_timeout_s=IDLE_TIMEOUT_S,
                                        conserve_gpu_nodes=True, scale_down_stabilization_s=0.0)
    try:
        trace = simulated_trace(workload)
        return {"swarm": autosim.simulate(trace, autosim.OursDriver()),
                "kuberay-v2": autosim.simulate(trace, autosim.RayDriver())}
    finally:
        autosim.SETTINGS = default


def simulator_gap(runs: Sequence[Run]) -> list[str]:
    """Per workload the simulator replays and operator measured: simulated node-seconds and launches against the
    measured medians of worker pod-seconds and pods created."""
    lines = []
    summary = summarize(runs)
    for workload in SIMULATED_WAVES:
        sims = None
        for operator in ("swarm", "kuberay-v2"):
            row = summary.get((workload, operator))
            if row is None:
                continue
            sims = sims or simulate(workload)
            sim = sims[operator]
            lines.append(f"{workload} {operator}: simulated {sim.node_seconds:.0f} node-s, {sim.launched} launched; "
                         f"measured {row['worker pod-s']} pod-s, {row['pods created']} created; measured/simulated "
                         f"node-s {row['worker pod-s'].median / sim.node_seconds:.2f}")
    return lines


# ---- the real part ----------------------------------------------------------------------------------------

def worker_group(pod: Any) -> str:
    labels = pod.metadata.labels or {}
    if labels.get("swarm.io/node-type") == "worker":
        return str(labels.get("swarm.io/group", "?"))
    if labels.get("ray.io/node-type") == "worker":
        return str(labels.get("ray.io/group", "?"))
    return ""


def is_head(pod: Any) -> bool:
    labels = pod.metadata.labels or {}
    return "head" in (labels.get("swarm.io/node-type"), labels.get("ray.io/node-type"))


class BackgroundWatch:
    """A loop on a daemon thread of its own, from start() until stop(); subclasses write _loop."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _loop(self) -> None:
        raise NotImplementedError


class DecisionWatch(BackgroundWatch):
    """Each new status.autoscaler.lastDecision of a SwarmCluster, stamped when a 0.5 s poll first sees it."""

    def __init__(self, custom: Any, namespace: str, name: str) -> None:
        super().__init__()
        self.custom, self.namespace, self.name = custom, namespace, name
        self.seen: list[tuple[float, str]] = []

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                obj = self.custom.get_namespaced_custom_object("swarm.io", "v1alpha1", self.namespace, "swarmclusters",
                                                               self.name)
            except ApiException:
                continue
            text = str(((obj.get("status") or {}).get("autoscaler") or {}).get("lastDecision") or "")
            if text and (not self.seen or self.seen[-1][1] != text):
                self.seen.append((time.time(), text))


class PodWatch(BackgroundWatch):
    """Every pod event of a namespace, stamped on arrival, from a thread of its own."""

    def __init__(self, core: Any, namespace: str) -> None:
        super().__init__()
        self.core, self.namespace = core, namespace
        self.events: list[PodEvent] = []
        self.heads: dict[str, Any] = {}

    def _loop(self) -> None:
        version = ""
        while not self._stop.is_set():
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for ev in w.stream(  # type: ignore[no-untyped-call]
                        self.core.list_namespaced_pod, self.namespace, timeout_seconds=5,
                        resource_version=version or None):
                    pod = ev["object"]
                    version = pod.metadata.resource_version
                    deleting = ev["type"] == "DELETED" or pod.metadata.deletion_timestamp is not None
                    self.events.append(PodEvent(time.time(), pod.metadata.name, worker_group(pod), deleting))
                    if is_head(pod):
                        self.heads[pod.metadata.name] = None if deleting else pod
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # expired: list again
                    version = ""
                else:
                    raise

    def alive_workers(self) -> int:
        lives = pod_lives(self.events)
        return sum(1 for life in lives.values() if life.deleted is None)

    def ready_head_ip(self) -> str | None:
        for pod in self.heads.values():
            if pod is not None and pod.status.pod_ip and any(
                    c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])):
                return str(pod.status.pod_ip)
        return None


def cluster_events(core: Any, namespace: str, kind: str) -> list[ClusterEvent]:
    out = []
    for e in core.list_namespaced_event(namespace).items:
        if e.involved_object.kind != kind:
            continue
        when = e.last_timestamp or e.event_time or e.metadata.creation_timestamp
        out.append(ClusterEvent(when.timestamp(), e.reason or "", e.message or ""))
    return sorted(out, key=lambda e: e.at)


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except (OSError, ValueError, RuntimeError):
            got = None
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s")


def start_operator(which: str, kubeconfig: str, namespace: str, log: Path) -> OperatorProcess:
    op = OperatorProcess(kubeconfig, [namespace], log) if which == "swarm" else \
        kuberay.KubeRayProcess(kubeconfig, [namespace], log)
    op.start()
    return op


def run_one(api: Any, kubeconfig: str, which: str, workload: str, pool: str, logs: Path) -> Run:
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    namespace = f"asr-{which}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": namespace}})
    run = Run(which, workload)
    name = "bench"
    if which == "swarm":
        group, version, plural, kind = "swarm.io", "v1alpha1", "swarmclusters", "SwarmCluster"
        body = swarmcluster_body(name, pool)
    else:
        group, version, plural, kind = "ray.io", "v1", "rayclusters", "RayCluster"
        body = raycluster_body(name, pool, which.rsplit("-", 1)[1])
    pods = PodWatch(core, namespace)
    pods.start()
    decisions = DecisionWatch(custom, namespace, name)
    if which == "swarm":
        decisions.start()
    op = start_operator(which, kubeconfig, namespace, logs / f"{namespace}.log")
    print(f"[autoscale-real] {workload} on {which} in {namespace} (operator log {logs / f'{namespace}.log'})",
          flush=True)
    try:
        custom.create_namespaced_custom_object(group, version, namespace, plural, body)
        head_ip: str = wait_until("a ready head", pods.ready_head_ip, timeout=180)
        wait_until("the Jobs API", lambda: rayjobs.list_jobs(head_ip) is not None, timeout=120)
        entrypoint = "python -c " + shlex.quote(DRIVER_PRELUDE + WORKLOADS[workload])
        submitted = time.time()
        job = rayjobs.submit_job(head_ip, entrypoint)
        try:
            info = rayjobs.wait_job(head_ip, job, timeout=JOB_TIMEOUT_S)
            logs_text = rayjobs.job_logs(head_ip, job)
        except (TimeoutError, OSError) as exc:
            info, logs_text = {"status": f"not ended: {exc}"}, ""
        result = result_line(logs_text)
        if info["status"] != "SUCCEEDED" or not result:
            run.note = f"job {info['status']}: {logs_text[-400:]}"
        print(f"[autoscale-real]   job {info['status']} after {time.time() - submitted:.0f}s; waiting for the "
              f"workers to be removed …", flush=True)
        try:
            wait_until("no worker pods", lambda: pods.alive_workers() == 0, timeout=IDLE_TIMEOUT_S +
                       SCALE_DOWN_GRACE_S)
        except TimeoutError as exc:
            run.note += f" {exc}"
        end = time.time()
        time.sleep(2)  # the Events of the last deletions
        measure(run, submitted, result, pods.events, cluster_events(core, namespace, kind), end)
        run.decisions = [[round(at - submitted, 2), text] for at, text in decisions.seen]
        held = sum(1 for _, text in decisions.seen if text.startswith("held for a second read"))
        print(f"[autoscale-real]   first task {run.first_task_s:.1f}s, all done {run.all_done_s:.1f}s, "
              f"{run.pods_created} pods (peak {run.peak_pods}), {run.pod_seconds:.0f} pod-s, "
              f"retried {run.attempts_retried}, busy deleted {run.busy_pods_deleted}, "
              f"explained {run.explained_actions}/{run.scaling_actions}"
              + (f", scale-ups held for a second read {held}" if which == "swarm" else "") + f" {run.note}",
              flush=True)
        return run
    finally:
        try:
            custom.delete_namespaced_custom_object(group, version, namespace, plural, name)
            wait_until("the cluster's pods gone", lambda: not core.list_namespaced_pod(namespace).items, timeout=120)
        except (ApiException, TimeoutError) as exc:
            print(f"[autoscale-real]   teardown: {exc}", flush=True)
        op.stop()
        pods.stop()
        if which == "swarm":
            decisions.stop()
        core.delete_namespace(namespace)
        wait_gone(core, namespace, timeout=300)


def report(runs: Sequence[Run]) -> list[tuple[str, bool]]:
    print("\nEvery run:")
    for r in runs:
        print(f"  {r.workload:<14} {r.operator:<11} " + ("" if r.finished else "NOT FINISHED ")
              + ", ".join(f"{m} {f(r):.3g}" for m, f in MEASURES.items()) + (f" ({r.note})" if r.note else ""))
    summary = summarize(runs)
    print("\n" + markdown(summary, runs))
    print("\nThe simulator (bench/autosim.py) against the runs:")
    for line in simulator_gap(runs):
        print(f"  {line}")
    checks = check_targets(summary, runs)
    print_targets(checks)
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    ap.add_argument("--operators", default="swarm,kuberay-v2", help=f"comma-separated, of {', '.join(OPERATORS)}")
    add_round_arguments(ap)
    args = ap.parse_args()
    if args.report:
        saved = [Run(**r) for r in json.loads(args.report.read_text())]
        checks = report(saved)
        return 0 if all(r.finished for r in saved) and all(met for _, met in checks) else 1
    kubeconfig = kubeconfig_from_env()
    if not kubeconfig:
        print("set KUBECONFIG (or run through `python -m localcluster run -- …`)", file=sys.stderr)
        return 2
    operators = [o for o in args.operators.split(",") if o]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(operators) - set(OPERATORS)) + sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        print(f"unknown: {unknown}", file=sys.stderr)
        return 2
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    kubectl_apply(kubeconfig, CRD)
    if any(o.startswith("kuberay") for o in operators):
        kuberay.apply_crds(kubeconfig)
    pool = f"asr-{uuid.uuid4().hex[:5]}"
    taint = "swarm.io/process-node=true:NoSchedule"
    agents = [NodeAgentProcess(kubeconfig, f"{pool}-cpu", cpu="64", memory="64Gi",
                               labels={POOL_LABEL: f"{pool}-cpu"}, taints=[taint]),
              NodeAgentProcess(kubeconfig, f"{pool}-gpu", cpu="16", memory="16Gi", gpus=4,
                               labels={POOL_LABEL: f"{pool}-gpu"}, taints=[taint, "nvidia.com/gpu=present:NoSchedule"])]
    saved_runs = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    runs: list[Run] = []
    logs = Path(tempfile.mkdtemp(prefix="swarm-autoscale-real-"))  # kept: the operators' logs
    try:
        for agent in agents:
            agent.start()
        for workload in workloads:
            for which in run_order(operators, args.pairs):
                runs.append(run_one(api, kubeconfig, which, workload, pool, logs))
                if args.json:
                    args.json.write_text(json.dumps([*saved_runs, *(asdict(r) for r in runs)], indent=1))
    finally:
        for agent in agents:
            agent.stop()
    checks = report(runs)
    return 0 if all(r.finished for r in runs) and all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
