"""Scale benchmark: N clusters of 1 head + 3 workers on kwok's fake nodes, our operator against KubeRay's.

First N SwarmClusters with our operator, then (unless --skip-kuberay) the same workload as N
RayClusters (1 head + one worker group of 3 replicas, the same resources, autoscaling off) with
KubeRay's operator, on the same control plane, each in a fresh namespace; everything of the first
run is deleted and gone before the second starts. For each: seconds from the first create until
every pod is Running, the operator's RSS when idle and at its peak (VmHWM), its CPU seconds
(utime+stime over its whole life, start-up included), the requests it issued by its own count, and
the API server's `apiserver_request_total` delta (every client but this benchmark). Then a table of
both and the ratios ours/KubeRay.

Run: `make bench-scale`, or
`python -m localcluster run -- .venv/bin/python bench/scale.py [--clusters 1000] [--skip-kuberay]`.
Targets (issue 8): our time ≤ KubeRay's; our peak RSS at 4,000 pods ≤ KubeRay's.
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
from collections.abc import Callable
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
    apiserver_requests_by,
    client_go_requests,
    cluster_body,
    delta,
    kubeconfig_from_env,
    kubectl_apply,
    pod_rows,
    proc_stats,
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


def run_one(api: client.ApiClient, kubeconfig: str, which: str, n: int, workdir: Path, timeout: float,
            swarm_flags: list[str], kuberay_flags: list[str]) -> Result:
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    ns = f"scale-{which}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    log = workdir / f"{which}-{n}.log"
    op: OperatorProcess
    body: Callable[[str, dict[str, str] | None], dict[str, Any]]
    if which == "swarm":
        op = OperatorProcess(kubeconfig, [ns], log, extra=swarm_flags)
        group, version, plural, body = "swarm.io", "v1alpha1", "swarmclusters", cluster_body
        requests, flags = swarm_operator_requests, " ".join(swarm_flags)
    else:
        op = kuberay.KubeRayProcess(kubeconfig, [ns], log, extra=kuberay_flags)
        group, version, plural, body = "ray.io", "v1", "rayclusters", raycluster_body
        requests, flags = client_go_requests, " ".join(kuberay_flags) or "(KubeRay's defaults)"
    res = Result(operator=which, clusters=n, pods=n * (1 + WORKERS), flags=flags)
    fake = fake_node_names(api)
    op.start()
    pid = op.proc.pid if op.proc else 0
    try:
        time.sleep(3)  # informers listed and watching: idle means idle
        res.idle_rss_mib = rss_mib(pid)
        own = 0  # this benchmark's own requests, taken out of the API server's count
        base_api = apiserver_requests_by(kubeconfig, "resource")
        base_op = requests(op.metrics())
        print(f"[scale] {which}: creating {n} clusters in {ns} (operator pid {pid}, log {log}) …", flush=True)
        started = time.monotonic()

        def create(i: int) -> None:
            custom.create_namespaced_custom_object(group, version, ns, plural, body(f"c{i}", dict(FAKE_NODES)))

        with concurrent.futures.ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(create, range(n)))
        own += n
        res.create_s = time.monotonic() - started
        last_report = last_progress = started
        while time.monotonic() - started < timeout:
            running = len(pod_rows(api, ns, "status.phase=Running"))
            own += 1
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
        time.sleep(2)  # let status writes triggered by the last pods land before counting requests
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
        op.stop()
        core.delete_namespace(ns)
        print(f"[scale]   deleting namespace {ns} and waiting until it is gone …", flush=True)
        gone_from = time.monotonic()
        if wait_gone(core, ns, timeout=900):
            print(f"[scale]   gone after {time.monotonic() - gone_from:.0f}s", flush=True)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and not (math.isnan(a) or math.isnan(b)) else "n/a"


def report(results: list[Result]) -> None:
    print()
    head = (f"{'operator':<9} {'clusters':>8} {'pods':>6} {'creates done s':>14} {'all Running s':>13} "
            f"{'idle RSS MiB':>12} {'peak RSS MiB':>12} {'CPU s':>7} {'op req/cluster':>14} "
            f"{'apiserver req/cluster':>21}")
    print(head)
    print("-" * len(head))
    for r in results:
        t = f"{r.all_running_s:.1f}" if r.done else f"timeout ({r.running} Running)"
        print(f"{r.operator:<9} {r.clusters:>8} {r.pods:>6} {r.create_s:>14.1f} {t:>13} {r.idle_rss_mib:>12.0f} "
              f"{r.peak_rss_mib:>12.0f} "
              f"{r.cpu_s:>7.1f} {r.op_requests / r.clusters:>14.1f} {r.api_requests / r.clusters:>21.1f}")
    for r in results:
        top = ", ".join(f"{k or '-'} {v:.0f}" for k, v in list(r.api_by_resource.items())[:8])
        print(f"  {r.operator}: flags {r.flags}; apiserver requests by resource: {top}")
        if r.off_fake_nodes:
            print(f"  {r.operator}: WARNING {r.off_fake_nodes} pods not on kwok fake nodes")
    by = {r.operator: r for r in results}
    if "swarm" in by and "kuberay" in by:
        ours, theirs = by["swarm"], by["kuberay"]
        print(f"\nours/KubeRay: time {ratio(ours.all_running_s, theirs.all_running_s)}, "
              f"peak RSS {ratio(ours.peak_rss_mib, theirs.peak_rss_mib)}, CPU {ratio(ours.cpu_s, theirs.cpu_s)}, "
              f"operator requests {ratio(ours.op_requests, theirs.op_requests)}, "
              f"apiserver requests {ratio(ours.api_requests, theirs.api_requests)}")
        faster = ours.done and theirs.done and ours.all_running_s <= theirs.all_running_s
        print(f"targets at {ours.pods} pods: time ≤ KubeRay's: {faster}; "
              f"peak RSS ≤ KubeRay's: {ours.peak_rss_mib <= theirs.peak_rss_mib}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000, help="clusters per operator (default 1000: 4,000 pods)")
    ap.add_argument("--skip-kuberay", action="store_true", help="only our operator")
    ap.add_argument("--workers", type=int, default=32, help="our operator's --workers (as bench/reconcile.py)")
    ap.add_argument("--kuberay-flags", default=None,
                    help="KubeRay's flags (default: -reconcile-concurrency=<--workers> -qps=1000 -burst=2000, "
                         "so neither operator is held back by a setting the other lacks; '' for KubeRay's "
                         "own defaults: concurrency 1, qps 100, burst 200)")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up on one operator after this many seconds")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    kubeconfig = kubeconfig_from_env()
    if not kubeconfig:
        print("set KUBECONFIG (or run through `python -m localcluster run -- …`)", file=sys.stderr)
        return 2
    kuberay_flags = (shlex.split(args.kuberay_flags) if args.kuberay_flags is not None else
                     [f"-reconcile-concurrency={args.workers}", "-qps=1000", "-burst=2000"])
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    kubectl_apply(kubeconfig, CRD)
    if not args.skip_kuberay:
        kuberay.apply_crds(kubeconfig)  # builds KubeRay first if it is not cached
    # The runs take turns: room for the larger pods of the two is enough.
    ensure_capacity(api, args.clusters * (1 + WORKERS), pod_shape(kuberay_run=not args.skip_kuberay))
    results = []
    logs = Path(tempfile.mkdtemp(prefix="swarm-scale-"))  # kept: the operators' logs
    for which in ("swarm", *(() if args.skip_kuberay else ("kuberay",))):
        results.append(run_one(api, kubeconfig, which, args.clusters, logs, args.timeout,
                               ["--workers", str(args.workers)], kuberay_flags))
    report(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.done for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
