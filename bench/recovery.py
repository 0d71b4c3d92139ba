"""Recovery benchmark: how fast our operator heals failed workers and heads, on kwok's fake nodes.

A handful of SwarmClusters (default 10, each 1 head + 5 worker groups of 3) in a fresh namespace with
a fresh operator. Then:

- worker failures (default 50): one Running worker pod at a time is marked Failed the way a crashed
  container is (localcluster.chaos.fail_pod), every --interval seconds, each in a different worker
  group. Measured: seconds from the failure to its replacement pod Running, p50/p95.
- head failures (default 10): each cluster's head is marked Failed once. Measured: seconds from the
  failure until the SwarmCluster reports phase Running again with its head restart counted (without
  GCS fault tolerance its workers are recycled too, so this includes new workers), p50/p95; and until
  the new head pod alone is Running.

The operator delays a group's replacements by its backoff (spec.faultTolerance.workerBackoffInitialSeconds,
default 1 s, doubling with every consecutive failure of that group within max(60 s, 2 × the cap)). Each
failure here hits a group that has not failed before, so every replacement waits exactly the initial
delay: that is what a first crash costs. `--backoff-initial 0` takes it out to show the reaction alone.
Times are taken when this process receives the watch events (pods and SwarmClusters).

Run: `make bench-recovery`, or `python -m localcluster run -- .venv/bin/python bench/recovery.py`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    CRD,
    FAKE_NODES,
    WORKERS,
    cluster_body,
    kubeconfig_from_env,
    kubectl_apply,
    proc_stats,
    wait_gone,
)
from localcluster.chaos import fail_pod
from localcluster.operator_process import OperatorProcess
from swarm_operator.resources import labels


@dataclass(frozen=True)
class Seen:
    """One watch event, as received."""

    at: float  # time.monotonic()
    kind: str  # "pod" | "cluster"
    name: str
    uid: str
    labels: dict[str, str]
    phase: str
    head_restarts: int = 0  # SwarmCluster status.head.restarts


class Recorder:
    """Watches the namespace's pods and SwarmClusters in two threads and keeps every event with its arrival time."""

    def __init__(self, api: client.ApiClient, ns: str):
        self.api, self.ns = api, ns
        self.events: list[Seen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        core: Any = client.CoreV1Api(api)
        custom: Any = client.CustomObjectsApi(api)
        self.threads = [
            threading.Thread(target=self._watch, args=("pod", core.list_namespaced_pod, (ns,)), daemon=True),
            threading.Thread(target=self._watch, daemon=True, args=(
                "cluster", custom.list_namespaced_custom_object, ("swarm.io", "v1alpha1", ns, "swarmclusters"))),
        ]
        for t in self.threads:
            t.start()

    def _watch(self, kind: str, list_fn: Callable[..., Any], args: tuple[str, ...]) -> None:
        rv: str | None = None
        while not self.stopping.is_set():
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                stream = w.stream(list_fn, *args, resource_version=rv,  # type: ignore[no-untyped-call]
                                  timeout_seconds=30, _request_timeout=60)
                for ev in stream:
                    obj = ev["object"]
                    if not isinstance(obj, dict):
                        obj = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
                    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
                    rv = meta.get("resourceVersion") or rv
                    seen = Seen(time.monotonic(), kind, meta.get("name", ""), meta.get("uid", ""),
                                dict(meta.get("labels") or {}),
                                "Deleted" if ev["type"] == "DELETED" else str(status.get("phase") or ""),
                                int((status.get("head") or {}).get("restarts") or 0))
                    with self.lock:
                        self.events.append(seen)
                    if self.stopping.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    rv = None  # too old: start again from a fresh list
                else:
                    time.sleep(0.5)
            except Exception:  # a dropped connection: watch again from the last version seen
                time.sleep(0.2)

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.events)

    def stop(self) -> None:
        self.stopping.set()


def latest(events: list[Seen], kind: str) -> dict[str, Seen]:
    """The last event of each object of ``kind`` (by uid), deleted ones left out."""
    last: dict[str, Seen] = {}
    for e in events:
        if e.kind == kind:
            last[e.uid] = e
    return {uid: e for uid, e in last.items() if e.phase != "Deleted"}


@dataclass
class Failure:
    at: float
    cluster: str
    group: str  # "" for a head
    pod: str
    known_uids: frozenset[str]  # every pod uid seen before the failure
    head_restarts: int = 0


def worker_recovered(f: Failure, events: list[Seen], phase: str | None = "Running") -> float | None:
    """Seconds until a new pod of the failed pod's group was seen (in ``phase``, or at all with None)."""
    for e in events:
        if (e.at >= f.at and e.kind == "pod" and (phase is None or e.phase == phase) and e.uid not in f.known_uids
                and e.labels.get(labels.CLUSTER) == f.cluster and e.labels.get(labels.WORKER_GROUP) == f.group):
            return e.at - f.at
    return None


def head_pod_running(f: Failure, events: list[Seen]) -> float | None:
    for e in events:
        if (e.at >= f.at and e.kind == "pod" and e.phase == "Running" and e.uid not in f.known_uids
                and e.labels.get(labels.CLUSTER) == f.cluster and e.labels.get(labels.NODE_TYPE) == labels.HEAD):
            return e.at - f.at
    return None


def cluster_ready_again(f: Failure, events: list[Seen]) -> float | None:
    for e in events:
        if (e.at >= f.at and e.kind == "cluster" and e.name == f.cluster and e.phase == "Running"
                and e.head_restarts > f.head_restarts):
            return e.at - f.at
    return None


def describe_cluster(core: Any, custom: Any, ns: str, f: Failure, events: list[Seen]) -> None:
    """What the API server and this benchmark's watches say of a cluster that did not recover."""
    body = custom.get_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters", f.cluster)
    status = body.get("status") or {}
    print(f"[recovery] {f.cluster} not recovered: status phase {status.get('phase')!r}, head {status.get('head')}, "
          f"conditions {[(c.get('type'), c.get('status'), c.get('reason')) for c in status.get('conditions') or []]}")
    for pod in core.list_namespaced_pod(ns, label_selector=f"{labels.CLUSTER}={f.cluster}").items:
        print(f"  pod {pod.metadata.name} uid {pod.metadata.uid} phase {pod.status.phase} "
              f"deleting {pod.metadata.deletion_timestamp is not None} "
              f"{'known before the failure' if pod.metadata.uid in f.known_uids else 'new'}")
    for e in events:
        if e.at >= f.at and (e.name == f.cluster or e.labels.get(labels.CLUSTER) == f.cluster):
            print(f"  seen +{e.at - f.at:6.2f}s {e.kind} {e.name} {e.phase} restarts={e.head_restarts}")
    for ev in core.list_namespaced_event(ns, field_selector=f"involvedObject.name={f.cluster}").items:
        print(f"  event {ev.type} {ev.reason}: {ev.message}")


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    print(f"[recovery] timed out after {timeout:.0f}s waiting for {what}", flush=True)
    return False


def pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(name: str, values: list[float | None]) -> str:
    done = sorted(v for v in values if v is not None)
    missing = len(values) - len(done)
    if not done:
        return f"{name:<36} no recovery seen ({missing} of {len(values)} timed out)"
    text = (f"{name:<36} n={len(done):<3} p50 {pct(done, 50):6.2f}s  p95 {pct(done, 95):6.2f}s  "
            f"min {done[0]:5.2f}s  max {done[-1]:6.2f}s")
    return text + (f"  ({missing} not recovered)" if missing else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--groups", type=int, default=5, help="worker groups per cluster (of 3 workers each)")
    ap.add_argument("--worker-failures", type=int, default=50, help="at most clusters × groups: one per group")
    ap.add_argument("--head-failures", type=int, default=10, help="at most --clusters: one per cluster")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between two worker failures")
    ap.add_argument("--head-interval", type=float, default=3.0, help="seconds between two head failures")
    ap.add_argument("--backoff-initial", type=float, default=None,
                    help="spec.faultTolerance.workerBackoffInitialSeconds (default: the operator's, 1 s)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    if args.worker_failures > args.clusters * args.groups or args.head_failures > args.clusters:
        ap.error("one failure per worker group and per head: raise --clusters/--groups or lower the failures")
    kubeconfig = kubeconfig_from_env()
    if not kubeconfig:
        print("set KUBECONFIG (or run through `python -m localcluster run -- …`)", file=sys.stderr)
        return 2
    kubectl_apply(kubeconfig, CRD)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    ns = f"recovery-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    log = Path(tempfile.mkdtemp(prefix="swarm-recovery-")) / "operator.log"
    op = OperatorProcess(kubeconfig, [ns], log)
    op.start()
    rec = Recorder(api, ns)
    names = [f"r{i}" for i in range(args.clusters)]
    groups = [f"cpu{g}" for g in range(args.groups)] if args.groups > 1 else ["cpu"]
    pods_total = args.clusters * (1 + args.groups * WORKERS)
    ok = True
    try:
        for name in names:
            body = cluster_body(name, dict(FAKE_NODES), args.groups)
            if args.backoff_initial is not None:
                body["spec"]["faultTolerance"] = {"workerBackoffInitialSeconds": args.backoff_initial}
            custom.create_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters", body)

        def all_running() -> bool:
            evs = rec.snapshot()
            pods = latest(evs, "pod").values()
            clusters = latest(evs, "cluster").values()
            return (sum(1 for p in pods if p.phase == "Running") == pods_total
                    and sum(1 for c in clusters if c.phase == "Running") == int(args.clusters))

        print(f"[recovery] {args.clusters} clusters × (1 head + {args.groups}×{WORKERS} workers) in {ns}; "
              f"operator log {log}", flush=True)
        if not wait_for(all_running, args.timeout, "every pod and cluster Running"):
            return 1
        time.sleep(2)

        # Worker failures: group-major order, so consecutive failures hit different clusters.
        targets = [(names[i % args.clusters], groups[(i // args.clusters) % len(groups)])
                   for i in range(args.worker_failures)]
        workers: list[Failure] = []
        print(f"[recovery] failing {len(targets)} worker pods, one every {args.interval:g}s, each in its own group …",
              flush=True)
        for cluster, group in targets:
            evs = rec.snapshot()
            running = sorted(p.name for p in latest(evs, "pod").values() if p.phase == "Running"
                             and p.labels.get(labels.CLUSTER) == cluster
                             and p.labels.get(labels.WORKER_GROUP) == group)
            f = Failure(time.monotonic(), cluster, group, running[0], frozenset(e.uid for e in evs if e.kind == "pod"))
            fail_pod(api, ns, f.pod)
            workers.append(f)
            time.sleep(args.interval)
        ok &= wait_for(lambda: all(worker_recovered(f, rec.snapshot()) is not None for f in workers),
                       args.timeout, "every replacement worker Running")
        evs = rec.snapshot()
        worker_times = [worker_recovered(f, evs) for f in workers]
        worker_created = [worker_recovered(f, evs, phase=None) for f in workers]
        if not wait_for(all_running, args.timeout, "every pod and cluster Running again"):
            return 1
        time.sleep(2)

        heads: list[Failure] = []
        print(f"[recovery] failing {args.head_failures} head pods, one every {args.head_interval:g}s …", flush=True)
        for cluster in names[: args.head_failures]:
            evs = rec.snapshot()
            restarts = max((c.head_restarts for c in latest(evs, "cluster").values() if c.name == cluster), default=0)
            f = Failure(time.monotonic(), cluster, "", labels.head_pod_name(cluster),
                        frozenset(e.uid for e in evs if e.kind == "pod"), restarts)
            fail_pod(api, ns, f.pod)
            heads.append(f)
            time.sleep(args.head_interval)
        ok &= wait_for(lambda: all(cluster_ready_again(f, rec.snapshot()) is not None for f in heads),
                       args.timeout, "every cluster Running again")
        evs = rec.snapshot()
        for f in heads:
            if cluster_ready_again(f, evs) is None:
                describe_cluster(core, custom, ns, f, evs)
        head_pod_times = [head_pod_running(f, evs) for f in heads]
        ready_times = [cluster_ready_again(f, evs) for f in heads]
        rss, cpu = proc_stats(op.proc.pid if op.proc else 0)
    finally:
        rec.stop()
        op.stop()
        core.delete_namespace(ns)
        wait_gone(core, ns)
    backoff = "operator default (1 s)" if args.backoff_initial is None else f"{args.backoff_initial:g} s"
    print(f"\nrecovery on fake nodes; worker backoff initial delay: {backoff}; operator peak RSS {rss:.0f} MiB, "
          f"CPU {cpu:.1f}s")
    print(summary("worker failed → replacement created", worker_created))
    print(summary("worker failed → replacement Running", worker_times))
    print(summary("head failed → new head pod Running", head_pod_times))
    print(summary("head failed → cluster Running again", ready_times))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
