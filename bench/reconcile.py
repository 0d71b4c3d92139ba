"""Reconcile benchmark: N SwarmClusters of 1 head + 3 workers on kwok's fake nodes.

Prints, per N: seconds until every pod is Running, the operator's peak RSS and CPU seconds,
and API requests per cluster — the operator's own count (every call kube.py makes, plus
its watches) and the API server's `apiserver_request_total` delta over the run (all
clients: the scheduler, kwok and the garbage collector too, so an upper bound).

Run: `make bench`, or `python -m localcluster run -- .venv/bin/python bench/reconcile.py [--sizes 10,100,500]`.
Targets (issue 4): 500 clusters Running in < 60 s; RSS < 150 MiB; ≤ ~10 requests per cluster; the exit
status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    CRD,
    WORKERS,
    apiserver_requests,
    cluster_body,
    proc_stats,
    running_pods,
    swarm_operator_requests,
    wait_gone,
)
from localcluster.operator_process import OperatorProcess


def run_size(api: client.ApiClient, kubeconfig: str, n: int, workdir: Path, timeout: float) -> dict[str, Any]:
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    ns = f"bench-{n}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    op = OperatorProcess(kubeconfig, [ns], workdir / f"operator-{n}.log", extra=["--workers", "32"])
    op.start()
    try:
        base_api = apiserver_requests(kubeconfig)
        base_op = swarm_operator_requests(op.metrics())
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: custom.create_namespaced_custom_object(
                "swarm.io", "v1alpha1", ns, "swarmclusters", cluster_body(f"c{i}")), range(n)))
        created = time.monotonic() - started
        want = n * (1 + WORKERS)
        running = 0
        while time.monotonic() - started < timeout:
            running = running_pods(core, ns)
            if running >= want:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        time.sleep(2)  # let status writes triggered by the last pods land before counting requests
        rss, cpu = proc_stats(op.proc.pid if op.proc else 0)
        return {
            "n": n, "pods": want, "running": running, "create_s": created, "all_running_s": elapsed,
            "rss_mib": rss, "cpu_s": cpu,
            "op_req_per_cluster": (swarm_operator_requests(op.metrics()) - base_op) / n,
            "api_req_per_cluster": (apiserver_requests(kubeconfig) - base_api) / n,
        }
    finally:
        op.stop()
        core.delete_namespace(ns)
        wait_gone(core, ns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on one size after this many seconds")
    args = ap.parse_args()
    kubeconfig = os.environ.get("SWARM_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print("set KUBECONFIG (or run through `python -m localcluster run -- …`)", file=sys.stderr)
        return 2
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts",
                    "-f", str(CRD)], check=True, capture_output=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            print(f"[bench] {n} clusters …", flush=True)
            row = run_size(api, kubeconfig, n, Path(tmp), args.timeout)
            rows.append(row)
            print(f"[bench]   {row['running']}/{row['pods']} pods Running after {row['all_running_s']:.1f}s",
                  flush=True)
    print()
    print(f"{'clusters':>8} {'pods':>6} {'all Running s':>14} {'op RSS MiB':>11} {'op CPU s':>9} "
          f"{'op req/cluster':>15} {'apiserver req/cluster (all clients)':>36}")
    for r in rows:
        done = r["all_running_s"] if r["running"] >= r["pods"] else float("nan")
        print(f"{r['n']:>8} {r['pods']:>6} {done:>14.1f} {r['rss_mib']:>11.0f} {r['cpu_s']:>9.1f} "
              f"{r['op_req_per_cluster']:>15.1f} {r['api_req_per_cluster']:>36.1f}")
    return 0 if all(met for _, met in check_targets(max(rows, key=lambda r: r["n"]))) else 1


def check_targets(big: dict[str, Any]) -> list[tuple[str, bool]]:
    """The targets of issue 4 at the largest size, each printed as met or NOT met: (what, met)."""
    checks = [
        (f"all Running < 60 s ({big['all_running_s']:.1f} s, {big['running']}/{big['pods']} pods)",
         big["all_running_s"] < 60 and big["running"] >= big["pods"]),
        (f"operator peak RSS < 150 MiB ({big['rss_mib']:.0f})", big["rss_mib"] < 150),
        (f"<= 10 operator requests per cluster ({big['op_req_per_cluster']:.1f})", big["op_req_per_cluster"] <= 10),
    ]
    print(f"\nTargets at {big['n']} clusters:")
    for what, met in checks:
        print(f"  {what}: {'met' if met else 'NOT met'}")
    return checks


if __name__ == "__main__":
    sys.exit(main())
