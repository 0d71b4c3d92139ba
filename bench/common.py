"""What the benchmarks against a local cluster share: the workload, API request counts, process figures.

Imported by bench/reconcile.py, bench/scale.py and bench/recovery.py (run as scripts, with the
repository root on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import versions

REPO = Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "swarmcluster.yaml"
WORKERS = 3
# Tiny requests: 4,000 pods must fit the local cluster's fake nodes (192 CPUs in all).
RESOURCES = {"cpu": "10m", "memory": "32Mi"}
# Every pod of the benchmarks goes to kwok's fake nodes, never to a process node that happens to be there.
FAKE_NODES = {"type": "kwok"}


def cluster_body(name: str, node_selector: dict[str, str] | None = None, groups: int = 1) -> dict[str, Any]:
    """A SwarmCluster of 1 head + ``groups`` groups of WORKERS workers (group ``cpu``, or ``cpu0``, ``cpu1``, …),
    all with RESOURCES."""
    head: dict[str, Any] = {"resources": dict(RESOURCES)}
    names = ["cpu"] if groups == 1 else [f"cpu{i}" for i in range(groups)]
    worker_groups: list[dict[str, Any]] = [
        {"name": g, "replicas": WORKERS, "maxReplicas": 10, "resources": dict(RESOURCES)} for g in names]
    if node_selector:
        for part in (head, *worker_groups):
            part["template"] = {"spec": {"nodeSelector": dict(node_selector)}}
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster", "metadata": {"name": name},
            "spec": {"head": head, "workerGroups": worker_groups}}


def kubeconfig_from_env() -> str | None:
    return os.environ.get("SWARM_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG")


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric ``name`` in Prometheus text format."""
    out = []
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        out.append((labels, float(m.group(2))))
    return out


def kubectl() -> str:
    return shutil.which("kubectl") or str(versions.tool_path("kubectl"))


def kubectl_apply(kubeconfig: str, path: Path) -> None:
    """Server-side apply (CRDs are too big for the client-side annotation)."""
    subprocess.run([kubectl(), f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts",
                    "-f", str(path)], check=True, capture_output=True)


def apiserver_metrics(kubeconfig: str) -> str:
    return subprocess.run([kubectl(), f"--kubeconfig={kubeconfig}", "get", "--raw", "/metrics"],
                          check=True, capture_output=True, text=True).stdout


def apiserver_requests_by(kubeconfig: str, label: str) -> dict[str, float]:
    """apiserver_request_total summed per value of one of its labels (verb, resource, code, …).

    The API server does not label requests by client: this counts every client (scheduler, kwok,
    controller manager, the operator); the operators' own counts come from their own metrics.
    """
    sums: dict[str, float] = defaultdict(float)
    for labels, value in metric_samples(apiserver_metrics(kubeconfig), "apiserver_request_total"):
        sums[labels.get(label, "")] += value
    return dict(sums)


def apiserver_requests(kubeconfig: str) -> float:
    """Sum of apiserver_request_total over all labels."""
    return sum(apiserver_requests_by(kubeconfig, "verb").values())


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def swarm_operator_requests(metrics_text: str) -> float:
    """Requests our operator issued (swarm_api_requests_total: every call kube.py makes, plus its watches)."""
    return sum(v for _, v in metric_samples(metrics_text, "swarm_api_requests_total"))


def client_go_requests(metrics_text: str) -> float:
    """Requests a Go operator issued (client-go's rest_client_requests_total: every HTTP request, watches too)."""
    return sum(v for _, v in metric_samples(metrics_text, "rest_client_requests_total"))


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a process, from /proc: VmHWM, and utime+stime with the CPU of the
    children it waited for (cutime+cstime: our operator's login helper)."""
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return peak, cpu


def running_pods(core: Any, ns: str) -> int:
    pods = core.list_namespaced_pod(ns, field_selector="status.phase=Running", _preload_content=False)
    return len(json.loads(pods.data)["items"])


def wait_gone(core: Any, ns: str, timeout: float = 600) -> bool:
    """Wait until namespace ``ns`` is gone: the next run must not share the nodes (or the garbage
    collector) with this one's pods. False (and a message) if it is still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not core.list_namespace(field_selector=f"metadata.name={ns}").items:
            return True
        time.sleep(2)
    print(f"[bench] namespace {ns} still terminating after {timeout:.0f}s", file=sys.stderr, flush=True)
    return False


def get_json(api: Any, path: str, query: list[tuple[str, str]] | None = None,
             accept: str = "application/json") -> Any:
    """GET ``path`` with the client's credentials and return the decoded JSON (raises on a non-2xx)."""
    method, url, headers, body, post = api.param_serialize("GET", path, query_params=query or [],
                                                           header_params={"Accept": accept},
                                                           auth_settings=["BearerToken"])
    resp = api.call_api(method, url, headers, body, post, _request_timeout=60)
    data = resp.read()
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"GET {path}: {resp.status} {data[:300]!r}")
    return json.loads(data)


def pod_rows(api: Any, ns: str, field_selector: str = "") -> list[dict[str, str]]:
    """The namespace's pods as the server's Table (name, status, node, … per pod; no objects): a few
    hundred bytes per pod, so polling thousands of pods costs the API server little."""
    query = [("includeObject", "None")]
    if field_selector:
        query.append(("fieldSelector", field_selector))
    table = get_json(api, f"/api/v1/namespaces/{ns}/pods", query, "application/json;as=Table;v=v1;g=meta.k8s.io")
    names = [c["name"] for c in table["columnDefinitions"]]
    return [dict(zip(names, (str(c) for c in row["cells"]), strict=False)) for row in table.get("rows") or []]


@dataclass(frozen=True)
class Spread:
    """A figure over repeated runs: its median and range."""

    median: float
    low: float
    high: float

    def overlaps(self, other: Spread) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return f"{self.median:.3g} [{self.low:.3g}–{self.high:.3g}]"


def spread(values: Sequence[float]) -> Spread:
    return Spread(statistics.median(values), min(values), max(values))


def add_round_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of a side-by-side benchmark on real Ray: rounds, where the runs are kept, and a report of kept runs."""
    ap.add_argument("--pairs", type=int, default=3, help="rounds, the order alternating (default 3)")
    ap.add_argument("--json", type=Path, help="write every run here (appended to what the file holds)")
    ap.add_argument("--report", type=Path, metavar="JSON", help="only print the report of runs saved by --json")


def print_targets(checks: Sequence[tuple[str, bool]]) -> None:
    print("\nTargets:")
    for what, met in checks:
        print(f"  {'met' if met else 'NOT met'}: {what}")
