"""Scale benchmark: N clusters of 1 head + 3 workers on kwok's fake nodes, our operator against KubeRay's.

For each size (default 250 and 1,000 clusters), runs in pairs whose order alternates (ours, KubeRay;
KubeRay, ours; …) so neither operator always meets a fresher control plane, plus a control-plane-only
baseline before each pair: the same pods created directly by this benchmark, no operator, which is the
floor both operators stand on. Every run gets a fresh namespace; everything of one run is deleted and
gone before the next starts. Each run measures seconds from the first create until every pod is Running,
the operator's RSS when idle and at its peak (VmHWM), its CPU seconds (utime+stime over its whole life,
start-up included, and its waited-for children: our login helper), the requests it issued by its own
count, and the API server's `apiserver_request_total` delta (every client but this benchmark).

Reported per size and operator: median and spread (min–max) over the runs; the ratio ours/KubeRay of the
medians is claimed only where the two spreads do not overlap. Targets (issues 13, 14), at the median:
operator CPU-seconds per cluster ≤ 0.8× KubeRay's and time to all Running ≤ KubeRay's at every size;
peak RSS ≤ 0.7× KubeRay's at 1,000 clusters. Exits 1 when a target is missed or a run did not finish.

Run: `make bench-scale`, or
`python -m localcluster run -- .venv/bin/python bench/scale.py [--sizes 250,1000] [--pairs 3] [--skip-kuberay]`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client
from kubernetes.utils import parse_quantity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    CRD,
    FAKE_NODES,
    RESOURCES,
    WORKERS,
    Spread,
    apiserver_requests_by,
    client_go_requests,
    cluster_body,
    delta,
    kubeconfig_from_env,
    kubectl_apply,
    pod_rows,
    proc_stats,
    spread,
    swarm_operator_requests,
    wait_gone,
)
from localcluster import kuberay, nodes
from localcluster.operator_process import OperatorProcess

POLL_SECONDS = 0.5
CREATE_THREADS = 8
STALL_SECONDS = 120


def raycluster_body(name: str, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    """The RayCluster twin of ``cluster_body``: same pods, same requests = limits, no autoscaler."""
    def template(container: str) -> dict[str, Any]:
        return {"spec": {"nodeSelector": dict(node_selector or {}), "containers": [{
            "name": container, "image": "rayproject/ray:2.60.0",
            "resources": {"requests": dict(RESOURCES), "limits": dict(RESOURCES)}}]}}

    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name},
        "spec": {
            "rayVersion": "2.60.0",
            "enableInTreeAutoscaling": False,
            "headGroupSpec": {"rayStartParams": {}, "template": template("ray-head")},
            "workerGroupSpecs": [{"groupName": "cpu", "replicas": WORKERS, "minReplicas": 0, "maxReplicas": 10,
                                  "rayStartParams": {}, "template": template("ray-worker")}],
        },
    }


@dataclass
class Result:
    operator: str
    clusters: int
    pods: int
    running: int = 0
    create_s: float = 0.0
    all_running_s: float = math.nan
    idle_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    cpu_s: float = 0.0
    op_requests: float = 0.0
    api_requests: float = 0.0  # every client but this benchmark
    api_by_resource: dict[str, float] = field(default_factory=dict)
    off_fake_nodes: int = 0  # pods that landed anywhere but a kwok fake node (must be 0)
    flags: str = ""

    @property
    def done(self) -> bool:
        return self.running >= self.pods


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def quantity(q: str) -> float:
    return float(parse_quantity(q))  # type: ignore[no-untyped-call]


# KubeRay injects an init container into every worker pod (ENABLE_INIT_CONTAINER_INJECTION, on by default) that
# waits for the GCS, with requests = limits = 200m CPU and 256Mi (ray-operator/controllers/ray/common/pod.go in
# v1.6.2); a pod asks the scheduler for the larger of its init containers and the sum of its containers.
KUBERAY_INIT = {"cpu": "200m", "memory": "256Mi"}
BENCH_NODE = {"cpu": "256", "memory": "2Ti", "pods": "1000"}


def pod_shape(kuberay_run: bool) -> dict[str, float]:
    """The largest pod of a run, as the scheduler counts it: pods, CPUs, bytes of memory."""
    worker = {k: max(quantity(RESOURCES[k]), quantity(KUBERAY_INIT[k])) if kuberay_run else quantity(RESOURCES[k])
              for k in ("cpu", "memory")}
    return {"pods": 1.0, **worker}


def fits(allocatable: dict[str, float], shape: dict[str, float]) -> int:
    """How many pods of ``shape`` one node holds: its scarcest resource decides."""
    return int(min(allocatable[k] / shape[k] for k in shape))


def ensure_capacity(api: client.ApiClient, pods: int, shape: dict[str, float]) -> None:
    """Add kwok fake nodes (pool ``kwok-bench``, BENCH_NODE each) until the fake nodes hold ``pods`` pods of
    ``shape`` with a 10% margin. Counted node by node (a node full of CPU takes no more pods, whatever its pod
    limit); the default `up` has 6 nodes of 32 CPUs and 1,000 pods each."""
    core: Any = client.CoreV1Api(api)
    fake = [n for n in core.list_node().items
            if (n.metadata.annotations or {}).get(nodes.KWOK_ANNOTATION) == "fake"
            and all((n.metadata.labels or {}).get(k) == v for k, v in FAKE_NODES.items())]
    have = sum(fits({k: quantity(n.status.allocatable.get(k, "0")) for k in shape}, shape) for n in fake)
    per_node = fits({k: quantity(BENCH_NODE[k]) for k in shape}, shape)
    extra = max(0, math.ceil((pods * 1.1 - have) / per_node))
    if not extra:
        print(f"[scale] {len(fake)} fake nodes hold {have} pods of {shape}: enough for {pods}", flush=True)
        return
    existing = sum(1 for n in fake if n.metadata.name.startswith("kwok-bench-"))
    pool = nodes.NodePool(prefix="kwok-bench", count=existing + extra, cpu=BENCH_NODE["cpu"],
                          memory=BENCH_NODE["memory"], pods=int(BENCH_NODE["pods"]))
    print(f"[scale] {len(fake)} fake nodes hold {have} pods of {shape}; adding {extra} "
          f"(pool kwok-bench, {BENCH_NODE} each) for {pods}", flush=True)
    nodes.create_nodes(api, nodes.pool_nodes((pool,)))
    nodes.wait_nodes_ready(api, pool.names())


def fake_node_names(api: client.ApiClient) -> set[str]:
    core: Any = client.CoreV1Api(api)
    return {n.metadata.name for n in core.list_node().items
            if (n.metadata.annotations or {}).get(nodes.KWOK_ANNOTATION) == "fake"}


def pod_body(name: str) -> dict[str, Any]:
    """A pod as either operator makes it, for the baseline: the same resources on the same fake nodes."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "baseline"}},
            "spec": {"nodeSelector": dict(FAKE_NODES), "restartPolicy": "Never", "containers": [{
                "name": "ray", "image": "rayproject/ray:2.60.0",
                "resources": {"requests": dict(RESOURCES), "limits": dict(RESOURCES)}}]}}


def wait_all_running(api: client.ApiClient, ns: str, res: Result, started: float, timeout: float) -> int:
    """Poll until every pod of the run is Running (sets res.running, res.all_running_s); the polls made."""
    polls = 0
    last_report = last_progress = started
    while time.monotonic() - started < timeout:
        running = len(pod_rows(api, ns, "status.phase=Running"))
        polls += 1
        if running != res.running:
            res.running, last_progress = running, time.monotonic()
        if res.running >= res.pods:
            res.all_running_s = time.monotonic() - started
            break
        if time.monotonic() - last_progress > STALL_SECONDS:
            print(f"[scale]   no pod became Running for {STALL_SECONDS}s: giving up (unschedulable? "
                  f"`kubectl -n {ns} describe pod` of a Pending one says why)", flush=True)
            break
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            print(f"[scale]   {res.running}/{res.pods} Running after {last_report - started:.0f}s", flush=True)
        time.sleep(POLL_SECONDS)
    return polls


def run_one(api: client.ApiClient, kubeconfig: str, which: str, n: int, workdir: Path, timeout: float,
            swarm_flags: list[str], kuberay_flags: list[str]) -> Result:
    """One run: `which` is swarm, kuberay or baseline (the pods created directly, no operator)."""
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    ns = f"scale-{which}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    log = workdir / f"{which}-{n}-{ns}.log"
    op: OperatorProcess | None = None
    create: Callable[[int], None]
    requests: Callable[[str], float] = swarm_operator_requests
    if which == "baseline":
        flags = "(no operator: the pods created directly)"

        def create(i: int) -> None:
            for name in (f"c{i}-head", *(f"c{i}-w{w}" for w in range(WORKERS))):
                core.create_namespaced_pod(ns, pod_body(name))
    else:
        body: Callable[[str, dict[str, str] | None], dict[str, Any]]
        if which == "swarm":
            op = OperatorProcess(kubeconfig, [ns], log, extra=swarm_flags)
            group, version, plural, body = "swarm.io", "v1alpha1", "swarmclusters", cluster_body
            flags = " ".join(swarm_flags)
        else:
            op = kuberay.KubeRayProcess(kubeconfig, [ns], log, extra=kuberay_flags)
            group, version, plural, body = "ray.io", "v1", "rayclusters", raycluster_body
            requests, flags = client_go_requests, " ".join(kuberay_flags) or "(KubeRay's defaults)"

        def create(i: int) -> None:
            custom.create_namespaced_custom_object(group, version, ns, plural, body(f"c{i}", dict(FAKE_NODES)))
    res = Result(operator=which, clusters=n, pods=n * (1 + WORKERS), flags=flags)
    fake = fake_node_names(api)
    pid = 0
    if op is not None:
        op.start()
        pid = op.proc.pid if op.proc else 0
    try:
        time.sleep(3)  # informers listed and watching: idle means idle
        res.idle_rss_mib = rss_mib(pid) if pid else 0.0
        base_api = apiserver_requests_by(kubeconfig, "resource")
        base_op = requests(op.metrics()) if op else 0.0
        print(f"[scale] {which}: creating {n} clusters in {ns} (pid {pid or '-'}, log {log}) …", flush=True)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, range(n)))
        own = n * (1 + WORKERS) if which == "baseline" else n  # this benchmark's own requests
        res.create_s = time.monotonic() - started
        own += wait_all_running(api, ns, res, started, timeout)
        time.sleep(2)  # let status writes triggered by the last pods land before counting requests
        if op is not None:
            res.peak_rss_mib, res.cpu_s = proc_stats(pid)
            res.op_requests = requests(op.metrics()) - base_op
        rows = pod_rows(api, ns)
        own += 1
        res.off_fake_nodes = sum(1 for r in rows if r.get("Node") not in fake)
        by_resource = delta(apiserver_requests_by(kubeconfig, "resource"), base_api)
        res.api_by_resource = dict(sorted(by_resource.items(), key=lambda kv: -kv[1]))
        res.api_requests = sum(by_resource.values()) - own
        state = f"{res.all_running_s:.1f}s" if res.done else f"NOT all after {time.monotonic() - started:.0f}s"
        print(f"[scale]   {res.running}/{res.pods} pods Running: {state}; peak RSS {res.peak_rss_mib:.0f} MiB, "
              f"CPU {res.cpu_s:.1f}s, {res.op_requests:.0f} operator requests", flush=True)
        return res
    finally:
        if op is not None:
            op.stop()
        core.delete_namespace(ns)
        print(f"[scale]   deleting namespace {ns} and waiting until it is gone …", flush=True)
        gone_from = time.monotonic()
        if wait_gone(core, ns, timeout=900):
            print(f"[scale]   gone after {time.monotonic() - gone_from:.0f}s", flush=True)


def run_order(pairs: int, with_kuberay: bool = True) -> list[str]:
    """The runs at one size: a baseline, then a pair whose order alternates (ours first, then KubeRay first)."""
    order: list[str] = []
    for i in range(pairs):
        pair = ("swarm", "kuberay") if i % 2 == 0 else ("kuberay", "swarm")
        order += ["baseline", *(pair if with_kuberay else ("swarm",))]
    return order


# What is compared, per cluster where a total grows with the clusters.
MEASURES: dict[str, Callable[[Result], float]] = {
    "all Running s": lambda r: r.all_running_s,
    "CPU s/cluster": lambda r: r.cpu_s / r.clusters,
    "peak RSS MiB": lambda r: r.peak_rss_mib,
    "op req/cluster": lambda r: r.op_requests / r.clusters,
    "apiserver req/cluster": lambda r: r.api_requests / r.clusters,
}


def summarize(results: Sequence[Result]) -> dict[tuple[int, str], dict[str, Spread]]:
    """Median and spread of each measure per (size, operator), over the runs that finished."""
    out: dict[tuple[int, str], dict[str, Spread]] = {}
    for key in sorted({(r.clusters, r.operator) for r in results}):
        done = [r for r in results if (r.clusters, r.operator) == key and r.done]
        if done:
            out[key] = {name: spread([measure(r) for r in done]) for name, measure in MEASURES.items()}
    return out


# (measure, the largest ours/KubeRay ratio of the medians allowed, the smallest size it applies to)
TARGETS = [("CPU s/cluster", 0.8, 0), ("all Running s", 1.0, 0), ("peak RSS MiB", 0.7, 1000)]


def check_targets(summary: dict[tuple[int, str], dict[str, Spread]]) -> list[tuple[str, bool]]:
    """(what, met) for every target at every size both operators finished."""
    checks = []
    for size in sorted({size for size, _ in summary}):
        ours, theirs = summary.get((size, "swarm")), summary.get((size, "kuberay"))
        if ours is None or theirs is None:
            continue
        for measure, limit, from_size in TARGETS:
            if size < from_size:
                continue
            got = ours[measure].median / theirs[measure].median if theirs[measure].median else math.inf
            checks.append((f"{size} clusters: {measure} ours/KubeRay {got:.2f} ≤ {limit}", got <= limit))
    return checks


def report(results: Sequence[Result]) -> list[tuple[str, bool]]:
    """Print every run, then medians and spreads and the ratios; return the target checks."""
    print("\nEvery run:")
    for r in results:
        t = f"{r.all_running_s:.1f}s" if r.done else f"timeout ({r.running} Running)"
        print(f"  {r.clusters:>5} {r.operator:<8} all Running {t:>9}, CPU {r.cpu_s:6.1f}s, peak RSS "
              f"{r.peak_rss_mib:4.0f} MiB, op requests {r.op_requests:7.0f}, apiserver requests {r.api_requests:7.0f}"
              + (f", WARNING {r.off_fake_nodes} pods not on kwok fake nodes" if r.off_fake_nodes else ""))
    summary = summarize(results)
    print("\nMedian [min–max] over runs:")
    head = f"{'clusters':>8} {'operator':<9} {'runs':>4} " + " ".join(f"{m:>22}" for m in MEASURES)
    print(head)
    print("-" * len(head))
    for (size, which), row in summary.items():
        runs = sum(1 for r in results if (r.clusters, r.operator) == (size, which) and r.done)
        print(f"{size:>8} {which:<9} {runs:>4} " + " ".join(f"{row[m]!s:>22}" for m in MEASURES))
    for size in sorted({size for size, _ in summary}):
        ours, theirs = summary.get((size, "swarm")), summary.get((size, "kuberay"))
        if ours is None or theirs is None:
            continue
        parts = []
        for m in MEASURES:
            verdict = "spreads overlap" if ours[m].overlaps(theirs[m]) else "claimed"
            parts.append(f"{m} {ratio(ours[m].median, theirs[m].median)} ({verdict})")
        print(f"ours/KubeRay at {size}: " + "; ".join(parts))
    checks = check_targets(summary)
    print("\nTargets (medians):")
    for what, met in checks:
        print(f"  {what}: {'met' if met else 'NOT met'}")
    return checks


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not (math.isnan(a) or math.isnan(b)) else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="250,1000", help="clusters per run, comma-separated (default 250,1000)")
    ap.add_argument("--pairs", type=int, default=3, help="pairs of runs per size, order alternating (default 3)")
    ap.add_argument("--skip-kuberay", action="store_true", help="only our operator and the baseline")
    ap.add_argument("--workers", type=int, default=32, help="our operator's --workers (as bench/reconcile.py)")
    ap.add_argument("--kuberay-flags", default=None,
                    help="KubeRay's flags (default: -reconcile-concurrency=<--workers> -qps=1000 -burst=2000, "
                         "so neither operator is held back by a setting the other lacks; '' for KubeRay's "
                         "own defaults: concurrency 1, qps 100, burst 200)")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up on one run after this many seconds")
    ap.add_argument("--json", type=Path, help="also write every run's results here")
    ap.add_argument("--report", type=Path, metavar="JSON", help="only print the report of runs saved by --json")
    args = ap.parse_args()
    if args.report:
        saved = [Result(**r) for r in json.loads(args.report.read_text())]
        checks = report(saved)
        return 0 if all(r.done for r in saved) and all(met for _, met in checks) else 1
    kubeconfig = kubeconfig_from_env()
    if not kubeconfig:
        print("set KUBECONFIG (or run through `python -m localcluster run -- …`)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    kuberay_flags = (shlex.split(args.kuberay_flags) if args.kuberay_flags is not None else
                     [f"-reconcile-concurrency={args.workers}", "-qps=1000", "-burst=2000"])
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    kubectl_apply(kubeconfig, CRD)
    if not args.skip_kuberay:
        kuberay.apply_crds(kubeconfig)  # builds KubeRay first if it is not cached
    # The runs take turns: room for the larger pods of the two at the largest size is enough.
    ensure_capacity(api, max(sizes) * (1 + WORKERS), pod_shape(kuberay_run=not args.skip_kuberay))
    results: list[Result] = []
    logs = Path(tempfile.mkdtemp(prefix="swarm-scale-"))  # kept: the operators' logs
    for size in sizes:
        for which in run_order(args.pairs, with_kuberay=not args.skip_kuberay):
            results.append(run_one(api, kubeconfig, which, size, logs, args.timeout,
                                   ["--workers", str(args.workers)], kuberay_flags))
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    checks = report(results)
    finished = all(r.done for r in results)
    if not finished:
        print("NOT every run brought all its pods to Running", flush=True)
    return 0 if finished and all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
