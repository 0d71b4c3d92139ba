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

- spot reclaims (default 10 per seed, seeds 2-4): on fake spot nodes of the benchmark's own (each cluster's
  workers there, its head elsewhere), one node at a time is reclaimed as a cloud does it: announced (a cluster
  autoscaler's removal taint, or the kubelet's graceful node shutdown failing its pods), then deleted after
  --notice seconds, and a fresh spot node joins. Measured: seconds from the node's deletion (from the shutdown,
  for that kind) to each of its workers' replacements Running, median and spread per seed; and that no group
  counted a failure (their first backoff step is 30 s, so a counted reclaim would show as a 30 s wait).

- announced reclaims on real Ray (--real-reclaims N, default 0; root, process nodes, the shared Ray lock): in each
  of --real-lanes clusters side by side, its head on a steady process node and one spot worker on a spot process
  node of its own; N times in all, a task with max_retries=0 starts on a lane's worker, the reclaim is announced
  (the node's removal taint or the pod's DisruptionTarget condition, seeded), and --notice seconds later the pod
  is deleted with its grace period (30 s, the preStop drain's room), as a spot termination handler or a cluster
  autoscaler does. Measured: tasks lost (target 0). Process nodes run no preStop hook, and the operator turns Ray's
  own drain on SIGTERM off where its preStop would drain, so there the deleted worker's task dies (48 of 48, session
  12); --ray-sigterm-drain 30 gives the workers Ray's own drain in its place.

- the same reclaims under a real kubelet (--real-reclaims N --kind; root, the kind tier's images; the shared Ray
  lock): a kind cluster made as the kind tier makes it (localcluster.kind_tier: node, Ray and operator images built
  here, the operator from the Helm chart) plus a spot node per lane; the workers keep every operator default, so
  the kubelet runs their preStop (drain the Ray node, wait for its tasks) within the default 60 s grace period.
  Measured: tasks lost (target 0), and seconds from the announcement to the reclaimed pod gone and to its
  replacement worker pod Running. Nothing else runs with --kind; no local cluster is needed.

The operator delays a group's replacements by its backoff (spec.faultTolerance.workerBackoffInitialSeconds,
default 1 s, doubling with every consecutive failure of that group within max(60 s, 2 × the cap)). Each
failure here hits a group that has not failed before, so every replacement waits exactly the initial
delay: that is what a first crash costs. `--backoff-initial 0` takes it out to show the reaction alone.
Times are taken when this process receives the watch events (pods and SwarmClusters).

Run: `make bench-recovery`, or `python -m localcluster run -- .venv/bin/python bench/recovery.py`; the kind reclaims:
`make bench-recovery-kind` (`bench/recovery.py --kind --real-reclaims 100`, no local cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
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
    spread,
    wait_gone,
)
from localcluster import kind, kind_tier, rayjobs, versions
from localcluster.chaos import fail_pod, failed_status_patch
from localcluster.docker_engine import EngineError
from localcluster.nodeagent import NodeAgentProcess
from localcluster.nodes import fake_node, remove_node, wait_nodes_ready
from localcluster.operator_process import OperatorProcess
from swarm_operator.reconcile.disruption import NODE_SHUTDOWN_MESSAGE
from swarm_operator.resources import labels
from swarm_operator.times import timestamp


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

SPOT_POOL = "swarm.io/bench-spot"
# The reclaim clusters' first backoff step: a reclaim counted as a failure would hold its replacement this long.
RECLAIM_BACKOFF_SECONDS = 30
REMOVAL_TAINT = {"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}
RECLAIM_KINDS = ("removal taint", "node shutdown")


def spot_cluster_body(name: str, pool: str) -> dict[str, Any]:
    """A cluster of the reclaim phase: its workers spread over the spot pool, its head off every spot node."""
    body = cluster_body(name, dict(FAKE_NODES))
    off_spot = {"matchExpressions": [{"key": SPOT_POOL, "operator": "DoesNotExist"}]}
    body["spec"]["head"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [off_spot]}}}
    # Spread over the spot nodes (the scheduler would pack these tiny pods onto one): a reclaim takes some.
    spread_out = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                  "labelSelector": {"matchLabels": {labels.NODE_TYPE: labels.WORKER}}}
    body["spec"]["workerGroups"][0]["template"] = {"spec": {"nodeSelector": {SPOT_POOL: pool},
                                                            "topologySpreadConstraints": [spread_out]}}
    body["spec"]["faultTolerance"] = {"workerBackoffInitialSeconds": RECLAIM_BACKOFF_SECONDS}
    return body


@dataclass
class Reclaim:
    at: float  # time.monotonic() when the node was deleted (for a node shutdown: when its pods were stopped)
    node: str
    kind: str
    lost: dict[tuple[str, str], int]  # workers lost per (cluster, group)
    known_uids: frozenset[str]


def replacements_running(r: Reclaim, events: list[Seen]) -> list[float | None]:
    """Seconds from the reclaim to each lost worker's replacement Running (None: not yet): per group, the first
    new pods of that group seen Running, as many as it lost."""
    out: list[float | None] = []
    for (cluster, group), lost in r.lost.items():
        first: dict[str, float] = {}
        for e in events:
            if (e.at >= r.at and e.kind == "pod" and e.phase == "Running" and e.uid not in r.known_uids
                    and e.uid not in first and e.labels.get(labels.CLUSTER) == cluster
                    and e.labels.get(labels.WORKER_GROUP) == group):
                first[e.uid] = e.at - r.at
        found = sorted(first.values())[:lost]
        out += [*found, *[None] * (lost - len(found))]
    return out


def all_replaced(r: Reclaim, rec: Recorder) -> bool:
    return None not in replacements_running(r, rec.snapshot())


def spot_node(core: Any, pool: str, index: int) -> str:
    name = f"{pool}-{index}"
    core.create_node(fake_node(name, "32", "128Gi", labels={SPOT_POOL: pool}))
    return name


def remove_nodes(core: Any, names: list[str]) -> None:
    """Delete the spot nodes left, their pods first (no kubelet will finish those deletions)."""
    for name in names:
        remove_node(core, name)


def reclaim_round(api: client.ApiClient, ns: str, rec: Recorder, seed: int,
                  args: argparse.Namespace) -> tuple[list[float | None], list[str]]:
    """One seed's spot reclaims, one node at a time; the replacement times and the groups that counted a failure."""
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    rng = random.Random(seed)
    pool = f"spot{seed}-{uuid.uuid4().hex[:4]}"
    made = args.spot_nodes
    nodes = [spot_node(core, pool, i) for i in range(made)]
    wait_nodes_ready(api, nodes)
    names = [f"s{seed}-{i}" for i in range(args.reclaim_clusters)]
    for name in names:
        custom.create_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters",
                                               spot_cluster_body(name, pool))
    mine = f"{labels.CLUSTER} in ({','.join(names)}),{labels.NODE_TYPE}={labels.WORKER}"

    def live_workers() -> list[Any]:
        return [p for p in core.list_namespaced_pod(ns, label_selector=mine).items
                if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]

    times: list[float | None] = []
    failed: list[str] = []
    try:
        if not wait_for(lambda: len(live_workers()) == len(names) * WORKERS, args.timeout,
                        f"seed {seed}: every spot worker Running"):
            return [None], failed
        for _ in range(args.reclaims):
            by_node: dict[str, list[Any]] = {}
            for p in live_workers():
                by_node.setdefault(p.spec.node_name, []).append(p)
            node = rng.choice(sorted(n for n in nodes if by_node.get(n)))
            kind = rng.choice(RECLAIM_KINDS)
            pods = by_node[node]
            lost: dict[tuple[str, str], int] = {}
            for p in pods:
                key = (p.metadata.labels[labels.CLUSTER], p.metadata.labels[labels.WORKER_GROUP])
                lost[key] = lost.get(key, 0) + 1
            if kind == "removal taint":  # a cluster autoscaler or Karpenter announces it, then the node goes
                core.patch_node(node, {"spec": {"taints": [REMOVAL_TAINT]}})
                time.sleep(args.notice)
                known = frozenset(e.uid for e in rec.snapshot() if e.kind == "pod")
                at = time.monotonic()
                core.delete_node(node)
            else:  # the kubelet's graceful node shutdown stops its pods, then the node goes
                known = frozenset(e.uid for e in rec.snapshot() if e.kind == "pod")
                at = time.monotonic()
                for p in pods:
                    core.patch_namespaced_pod_status(p.metadata.name, ns, failed_status_patch(
                        [c.name for c in p.spec.containers], exit_code=137, reason="Terminated",
                        message=NODE_SHUTDOWN_MESSAGE))
                time.sleep(args.notice)
                core.delete_node(node)
            nodes.remove(node)
            nodes.append(spot_node(core, pool, made))  # the cloud brings a fresh one
            made += 1
            r = Reclaim(at, node, kind, lost, known)
            wait_for(partial(all_replaced, r, rec), args.timeout,
                     f"seed {seed}: the replacements of {node}'s {len(pods)} workers Running")
            times += replacements_running(r, rec.snapshot())
            time.sleep(args.interval)
        for c in custom.list_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters")["items"]:
            if c["metadata"]["name"] in names:
                failed += [f"{c['metadata']['name']}/{g.get('name')}" for g in (c.get("status") or {})
                           .get("workerGroups") or [] if g.get("consecutiveFailures") or g.get("restarts")]
    finally:
        for name in names:
            custom.delete_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters", name)
        wait_for(lambda: not core.list_namespaced_pod(ns, label_selector=f"{labels.CLUSTER} in ({','.join(names)})")
                 .items, 120, f"seed {seed}: the clusters' pods gone")
        remove_nodes(core, nodes)
    return times, failed


def reclaim_report(by_seed: dict[int, list[float | None]], failed: list[str]) -> bool:
    """Print the reclaim figures per seed and over all seeds; whether the targets were met."""
    print(f"\nspot reclaims (fake nodes; first backoff step {RECLAIM_BACKOFF_SECONDS} s):")
    medians: list[float] = []
    everything: list[float | None] = []
    for seed, values in by_seed.items():
        everything += values
        print(summary(f"seed {seed}: node reclaimed → replacement Running", values))
        done = [v for v in values if v is not None]
        if done:
            medians.append(statistics.median(done))
    done = sorted(v for v in everything if v is not None)
    if medians:
        print(f"median over seeds {spread(medians)} s (median [min–max] of the per-seed medians); all "
              f"{len(done)} replacements: p95 {pct(done, 95):.2f} s, max {done[-1]:.2f} s")
    met_time = bool(done) and len(done) == len(everything) and done[-1] < RECLAIM_BACKOFF_SECONDS
    print(f"target: every replacement Running, each sooner than the {RECLAIM_BACKOFF_SECONDS} s backoff step: "
          f"{'met' if met_time else 'NOT met'}")
    print(f"target: no reclaim counted as a failure: {'met' if not failed else 'NOT met: ' + ', '.join(failed)}")
    return met_time and not failed


# --- announced reclaims on real Ray (process nodes: root; run under the shared Ray lock) ----------------------

REAL_TASK_SECONDS = 8
REAL_GRACE_SECONDS = 30  # the spot workers' terminationGracePeriodSeconds: their preStop drain's room
PROCESS_TAINT = {"key": "swarm.io/process-node", "value": "true", "effect": "NoSchedule"}
# One task that may not be retried, on the spot worker: it succeeds only if its worker lives until it is done.
REAL_TASK = """\
import socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"spot": 1}, max_retries=0)
def work(seconds):
    print("BENCH-" + "STARTED " + socket.gethostname(), flush=True)  # split: the logs echo this source
    time.sleep(seconds)
    return socket.gethostname()

print("BENCH-RESULT " + ray.get(work.remote(%d)))
"""


def reclaim_cluster(name: str, image: str, head: dict[str, Any], worker: dict[str, Any]) -> dict[str, Any]:
    """A head and one spot worker (Ray resource `spot`), no autoscaling; `head` and `worker`: the rest of their
    specs (resources, template, …)."""
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster", "metadata": {"name": name},
            "spec": {"rayVersion": versions.RAY, "image": image, "head": head,
                     "workerGroups": [{"name": "spot", "replicas": 1, "minReplicas": 0, "maxReplicas": 1,
                                       "rayResources": {"spot": 1}, **worker}],
                     "autoscaling": {"enabled": False}}}


def real_cluster_body(name: str, pool: str, spot: str = "spot", sigterm_drain: int | None = None) -> dict[str, Any]:
    """A head on the steady process node and one spot worker on the `spot` one.
    `sigterm_drain`: the workers' RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (None: the operator's default, 0)."""
    def place(role: str, env: list[dict[str, str]] | None = None) -> dict[str, Any]:
        template: dict[str, Any] = {"spec": {"nodeSelector": {"swarm.io/pool": f"{pool}-{role}"}, "tolerations": [
            {"key": PROCESS_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]}}
        if env:
            template["spec"]["containers"] = [{"name": "ray", "env": env}]
        return template
    drain_env = None if sigterm_drain is None else [
        {"name": "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "value": str(sigterm_drain)}]
    # The image is never pulled: process nodes run `ray start` from the local environment.
    return reclaim_cluster(name, "rayproject/ray:2.60.0",
                           {"resources": {"cpu": 1, "memory": "2Gi", "rayCpus": 0}, "template": place("steady")},
                           {"resources": {"cpu": 1, "memory": "1Gi"},
                            "terminationGracePeriodSeconds": REAL_GRACE_SECONDS, "template": place(spot, drain_env)})


def live_spot_worker(core: Any, ns: str, name: str) -> tuple[str, str] | None:
    """(head IP, worker pod) once the head and one spot worker are Ready and the worker is a live Ray node."""
    pods = [p for p in core.list_namespaced_pod(ns, label_selector=f"{labels.CLUSTER}={name}").items
            if p.metadata.deletion_timestamp is None and any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    heads = [p for p in pods if p.metadata.labels.get(labels.NODE_TYPE) == labels.HEAD]
    workers = [p.metadata.name for p in pods if p.metadata.labels.get(labels.NODE_TYPE) == labels.WORKER]
    if len(heads) != 1 or len(workers) != 1:
        return None
    try:
        nodes = rayjobs.ray_nodes(heads[0].status.pod_ip)
    except (subprocess.SubprocessError, RuntimeError):
        return None
    if any(n.instance_id == workers[0] and n.status in ("RUNNING", "IDLE") for n in nodes):
        return heads[0].status.pod_ip, workers[0]
    return None


def announce_and_delete(core: Any, ns: str, pod: str, node: str, how: str, notice: float,
                        node_taints: list[dict[str, str]]) -> None:
    """A spot reclaim as a termination handler or a cluster autoscaler makes it: `node` tainted for removal (beside
    its `node_taints`) or `pod` given condition DisruptionTarget, then, `notice` s later, `pod` deleted with its grace
    period."""
    if how == "removal taint":
        core.patch_node(node, {"spec": {"taints": [*node_taints, REMOVAL_TAINT]}})
    else:
        core.patch_namespaced_pod_status(pod, ns, {"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
             "message": "spot instance reclaimed", "lastTransitionTime": timestamp(time.time())}]}})
    time.sleep(notice)
    with contextlib.suppress(ApiException):  # the operator may have deleted it already
        core.delete_namespaced_pod(pod, ns)  # with its grace period


def one_real_reclaim(core: Any, ns: str, name: str, spot: str, how: str, notice: float) -> tuple[str, str]:
    """One announced reclaim of cluster `name`'s busy spot worker: (the worker, how its task ended: a Ray job status,
    or why there was none; no worker when none came up)."""
    deadline = time.monotonic() + 300
    while (found := live_spot_worker(core, ns, name)) is None:
        if time.monotonic() > deadline:
            return "", "none: no live spot worker within 300 s"
        time.sleep(1)
    head_ip, worker = found
    job = rayjobs.submit_job(head_ip, "python -c " + shlex.quote(REAL_TASK % REAL_TASK_SECONDS))
    deadline = time.monotonic() + 120
    while "BENCH-STARTED " not in rayjobs.job_logs(head_ip, job):
        if time.monotonic() > deadline:
            return worker, "none: it did not start within 120 s"
        time.sleep(0.5)
    announce_and_delete(core, ns, worker, spot, how, notice, [PROCESS_TAINT])
    info = rayjobs.wait_job(head_ip, job, timeout=REAL_TASK_SECONDS + REAL_GRACE_SECONDS + 60)
    if how == "removal taint":
        core.patch_node(spot, {"spec": {"taints": [PROCESS_TAINT]}})  # its replacement may land there
    return worker, str(info["status"])


def real_lane(core: Any, ns: str, lane: int, spot: str, kinds: list[str], notice: float,
              lost: list[int], notes: list[str]) -> None:
    """One cluster's reclaims, one after the other; `kinds` says how each is announced."""
    for how in kinds:
        worker, end = one_real_reclaim(core, ns, f"reclaimed-{lane}", spot, how, notice)
        lost.append(end != "SUCCEEDED")
        notes.append(f"lane {lane}, reclaim {len(lost)} ({how}, {worker or 'no worker'}): task {end}")
        print(f"[recovery] {notes[-1]}", flush=True)
        if not worker:
            return


def real_reclaims(api: client.ApiClient, kubeconfig: str, ns: str, args: argparse.Namespace) -> tuple[int, list[str]]:
    """--real-reclaims announced reclaims of a busy spot worker, spread over --real-lanes clusters that run side by
    side (each its own spot process node, one reclaim at a time): the node tainted for removal or the pod marked
    DisruptionTarget (seeded), --notice seconds later the pod deleted with its grace period, as a spot termination
    handler or a cluster autoscaler does. The tasks (max_retries=0) lost, and a line per reclaim."""
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    rng = random.Random(args.real_seed)
    kinds = [rng.choice(("removal taint", "DisruptionTarget")) for _ in range(args.real_reclaims)]
    lanes = max(1, min(args.real_lanes, args.real_reclaims))
    pool = f"rr-{uuid.uuid4().hex[:5]}"
    taint = f"{PROCESS_TAINT['key']}={PROCESS_TAINT['value']}:{PROCESS_TAINT['effect']}"
    # The heads share the steady node (one logical CPU each); each lane's worker has a spot node of its own.
    agents = [NodeAgentProcess(kubeconfig, f"{pool}-steady", cpu=str(lanes + 1), memory=f"{2 * lanes + 2}Gi",
                               labels={"swarm.io/pool": f"{pool}-steady"}, taints=[taint])]
    agents += [NodeAgentProcess(kubeconfig, f"{pool}-spot{k}", cpu="2", memory="4Gi",
                                labels={"swarm.io/pool": f"{pool}-spot{k}"}, taints=[taint]) for k in range(lanes)]
    names = [f"reclaimed-{k}" for k in range(lanes)]
    lost: dict[int, list[int]] = {k: [] for k in range(lanes)}
    notes: dict[int, list[str]] = {k: [] for k in range(lanes)}
    try:
        for agent in agents:
            agent.start()
        for k, name in enumerate(names):
            custom.create_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters",
                                                   real_cluster_body(name, pool, f"spot{k}", args.ray_sigterm_drain))
        print(f"[recovery] {args.real_reclaims} announced reclaims on real Ray over {lanes} clusters side by side",
              flush=True)
        with ThreadPoolExecutor(lanes) as executor:
            for future in [executor.submit(real_lane, core, ns, k, agents[k + 1].node, kinds[k::lanes], args.notice,
                                        lost[k], notes[k]) for k in range(lanes)]:
                future.result()
    finally:
        for name in names:
            with contextlib.suppress(ApiException):
                custom.delete_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters", name)
        wait_for(lambda: not [p for p in core.list_namespaced_pod(ns).items
                              if p.metadata.labels.get(labels.CLUSTER) in names],
                 120, "the real clusters' pods gone")
        for agent in agents:
            agent.stop()
    return sum(sum(v) for v in lost.values()), [n for k in range(lanes) for n in notes[k]]


# --- announced reclaims under a real kubelet (--kind: root, the kind tier's images; take the Ray lock) -----------

KIND_CLUSTER = "swarm-reclaims"
# The kind tier's requests and limits: tiny requests, as every pod shares the machine's 2 cores; real limits, which
# Ray counts.
KIND_HEAD = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
KIND_WORKER = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
# The operator's default worker grace period (resources/pods.py DEFAULT_WORKER_GRACE_SECONDS): the preStop's room.
KIND_GRACE_SECONDS = 60


def kind_cluster_body(name: str, ray_image: str, spot: str) -> dict[str, Any]:
    """A head on the kind tier's CPU worker, one spot worker on the spot node of pool `spot`; nothing else set: the
    workers get the operator's defaults (the preStop drain, a 60 s grace period, Ray's drain on SIGTERM off)."""
    return reclaim_cluster(name, ray_image,
                           {"resources": KIND_HEAD, "template": {"spec": {"nodeSelector": {kind.POOL_LABEL: "cpu"}}}},
                           {"resources": KIND_WORKER, "template": {"spec": {"nodeSelector": {kind.POOL_LABEL: spot}}}})


@dataclass
class KindReclaim:
    """One announced reclaim under the kubelet, as the benchmark saw it."""

    lane: int
    how: str  # how it was announced: "removal taint" or "DisruptionTarget"
    worker: str  # the reclaimed pod
    task: str  # the job's end status (SUCCEEDED: the task was not lost), or why there was none
    ran_on: str  # the pod the task said it ran on
    pod_gone_s: float | None = None  # announcement → the reclaimed pod deleted (the preStop held it this long)
    replacement_running_s: float | None = None  # announcement → its replacement worker pod Running

    @property
    def lost(self) -> bool:
        return self.task != "SUCCEEDED"


def first_seen(rec: Recorder, since: float, match: Callable[[Seen], bool]) -> float | None:
    """Seconds from `since` to the first pod event that matches; None when none did yet."""
    return next((e.at - since for e in rec.snapshot() if e.kind == "pod" and e.at >= since and match(e)), None)


def ready_pods(core: Any, ns: str, name: str) -> tuple[str, str] | None:
    """(head pod, worker pod) once cluster `name` has a Ready head and exactly one worker, Ready, none leaving."""
    pods = [p for p in core.list_namespaced_pod(ns, label_selector=f"{labels.CLUSTER}={name}").items]
    heads = [p for p in pods if p.metadata.labels.get(labels.NODE_TYPE) == labels.HEAD]
    workers = [p for p in pods if p.metadata.labels.get(labels.NODE_TYPE) == labels.WORKER]
    ready = [p for p in heads + workers if p.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    if len(heads) != 1 or len(workers) != 1 or len(ready) != 2:
        return None
    return heads[0].metadata.name, workers[0].metadata.name


def kind_job_end(tier: kind_tier.KindTier, ns: str, head: str, job: str, timeout: float) -> str:
    """The job's end status, read through a port-forward to the head that is opened again if it breaks."""
    deadline = time.monotonic() + timeout
    why = "not read"
    while time.monotonic() < deadline:
        try:
            with tier.dashboard(ns, head) as dashboard:
                return str(rayjobs.wait_job(dashboard, job, timeout=deadline - time.monotonic())["status"])
        except TimeoutError as exc:
            return f"none: {exc}"
        except (OSError, EngineError) as exc:  # the port-forward ended (a dropped stream): forward again
            why = str(exc)
            time.sleep(1)
    return f"none: not ended within {timeout:.0f} s ({why})"


@dataclass(frozen=True)
class BusyWorker:
    """A lane's spot worker running the task, before its reclaim is announced."""

    head: str
    worker: str
    uid: str
    job: str
    ran_on: str  # the pod the task said it runs on


def busy_worker(tier: kind_tier.KindTier, core: Any, ns: str, name: str) -> BusyWorker | str:
    """Cluster `name`'s spot worker once it runs the task (a job submitted through a port-forward to the head), or
    why it does not."""
    deadline = time.monotonic() + 300
    while (found := ready_pods(core, ns, name)) is None:
        if time.monotonic() > deadline:
            return "no Ready head and spot worker within 300 s"
        time.sleep(1)
    head, worker = found
    uid = core.read_namespaced_pod(worker, ns).metadata.uid
    with tier.dashboard(ns, head) as dashboard:
        job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(REAL_TASK % REAL_TASK_SECONDS))
        deadline = time.monotonic() + 120
        while "BENCH-STARTED " not in (logs := rayjobs.job_logs(dashboard, job)):
            if time.monotonic() > deadline:
                return f"the task on {worker} did not start within 120 s"
            time.sleep(0.5)
    return BusyWorker(head, worker, uid, job, logs.split("BENCH-STARTED ", 1)[1].split()[0])


def reclaim_busy(tier: kind_tier.KindTier, core: Any, rec: Recorder, ns: str, lane: int, spot: str, how: str,
                 busy: BusyWorker, notice: float) -> KindReclaim:
    """`busy`'s reclaim: announced (`how`), the pod deleted with its grace period `notice` s later (the kubelet runs
    its preStop); the task's end, and the times of the pod's end and of its replacement Running."""
    known = frozenset(e.uid for e in rec.snapshot() if e.kind == "pod")
    at = time.monotonic()

    def gone(e: Seen) -> bool:
        return e.uid == busy.uid and e.phase == "Deleted"

    def replacement(e: Seen) -> bool:
        return (e.phase == "Running" and e.uid not in known and e.labels.get(labels.CLUSTER) == f"reclaimed-{lane}"
                and e.labels.get(labels.NODE_TYPE) == labels.WORKER)

    announce_and_delete(core, ns, busy.worker, spot, how, notice, [])
    wait_for(lambda: first_seen(rec, at, gone) is not None, KIND_GRACE_SECONDS + 60, f"{busy.worker} gone")
    if how == "removal taint":
        # The reclaimed node is gone with its last pod; this node stands for the fresh one the cloud brings, so the
        # replacement (held off it by the taint) may land there now.
        core.patch_node(spot, {"spec": {"taints": []}})
    end = kind_job_end(tier, ns, busy.head, busy.job, REAL_TASK_SECONDS + KIND_GRACE_SECONDS + 60)
    wait_for(lambda: first_seen(rec, at, replacement) is not None, 180, f"the replacement of {busy.worker} Running")
    return KindReclaim(lane, how, busy.worker, end, busy.ran_on, first_seen(rec, at, gone),
                       first_seen(rec, at, replacement))


def kind_lane(tier: kind_tier.KindTier, core: Any, rec: Recorder, ns: str, lane: int, kinds: list[str],
              args: argparse.Namespace, done: list[KindReclaim], stop: threading.Event) -> None:
    """Lane `lane`'s reclaims, one after the other, until `kinds` are done or `stop` is set. A worker that could
    not be made busy (an API or port-forward error) is tried again, three times at most; an error after the
    announcement counts the task lost."""
    name, spot = f"reclaimed-{lane}", tier.cluster.node(kind.spot_pool(lane))
    for how in kinds:
        busy: BusyWorker | str = "not tried"
        for _ in range(3):
            if stop.is_set():
                return
            try:
                busy = busy_worker(tier, core, ns, name)
                break
            except (OSError, EngineError, ApiException) as exc:
                busy = f"{exc!r}"
                print(f"[recovery] lane {lane}: no busy worker ({busy}); trying again", flush=True)
                time.sleep(5)
        if not isinstance(busy, BusyWorker):
            print(f"[recovery] lane {lane} stops: {busy}", flush=True)
            return
        try:
            r = reclaim_busy(tier, core, rec, ns, lane, spot, how, busy, args.notice)
        except (OSError, EngineError, ApiException) as exc:
            r = KindReclaim(lane, how, busy.worker, f"none: {exc!r}", busy.ran_on)
        done.append(r)
        times = ", ".join(f"{what} +{v:.1f}s" for what, v in (("pod gone", r.pod_gone_s),
                                                              ("replacement Running", r.replacement_running_s))
                          if v is not None)
        print(f"[recovery] {len(done)}/{args.real_reclaims} lane {lane} ({r.how}, {r.worker}, task on {r.ran_on}): "
              f"task {r.task}; {times or 'no times'}", flush=True)


def kind_report(done: list[KindReclaim], loads: list[float]) -> dict[str, Any]:
    """Print the figures of the reclaims done; return them."""
    lost = [r for r in done if r.lost]
    by_kind = {how: sum(1 for r in done if r.how == how) for how in ("removal taint", "DisruptionTarget")}
    figures: dict[str, Any] = {"reclaims": len(done), "lost": len(lost), "by_kind": by_kind}
    print(f"\nannounced reclaims of a busy worker under kind's kubelet (operator defaults: preStop drain, grace "
          f"{KIND_GRACE_SECONDS} s; task {REAL_TASK_SECONDS} s, max_retries=0):")
    print(f"tasks lost: {len(lost)} of {len(done)} reclaims ({by_kind['removal taint']} removal taints, "
          f"{by_kind['DisruptionTarget']} DisruptionTarget); target 0: {'met' if not lost else 'NOT met'}")
    for r in lost:
        print(f"  lost: lane {r.lane} {r.how} {r.worker}: {r.task}")
    # The task can only run on the lane's one spot worker; one that ran elsewhere would not have been reclaimed.
    figures["ran_elsewhere"] = [r.worker for r in done if r.ran_on != r.worker]
    if figures["ran_elsewhere"]:
        print(f"NOT reclaimed while busy (the task ran on another pod): {', '.join(figures['ran_elsewhere'])}")
    # Per kind as well: a removal taint keeps the replacement off the node until the reclaimed pod is gone, a
    # DisruptionTarget does not, so the two kinds' times lie apart and their joint median says little.
    for key, what in (("replacement_running_s", "announcement → replacement worker Running"),
                      ("pod_gone_s", "announcement → reclaimed pod gone")):
        for how in ("all", *by_kind):
            values = [v for r in done if (v := getattr(r, key)) is not None and how in ("all", r.how)]
            if values:
                figures[f"{key} ({how})"] = {"median": statistics.median(values), "min": min(values),
                                             "max": max(values), "p95": pct(sorted(values), 95), "n": len(values)}
                print(f"{what} ({how}): median {spread(values)} s, p95 {pct(sorted(values), 95):.1f} s "
                      f"(n={len(values)})")
    if loads:
        figures["load1"] = {"median": statistics.median(loads), "min": min(loads), "max": max(loads), "n": len(loads)}
        print(f"1-minute load average during the reclaims: median {spread(loads)} ({len(loads)} samples, 10 s apart)")
    return figures


def kind_reclaims(args: argparse.Namespace) -> int:
    """--kind: the --real-reclaims on a kind cluster of the kind tier's with a spot node per lane (see the docstring
    at the top). A first SIGINT or SIGTERM lets the reclaims under way end and prints the figures so far; a second
    stops at once. Everything it started is stopped: the kind cluster, the Docker engine if it started it."""
    why = kind_tier.missing_prerequisite()
    if why is not None:
        print(f"[recovery] --kind: {why}", file=sys.stderr)
        return 2
    rng = random.Random(args.real_seed)
    kinds = [rng.choice(("removal taint", "DisruptionTarget")) for _ in range(args.real_reclaims)]
    lanes = max(1, min(args.real_lanes, args.real_reclaims))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"\n[recovery] {signal.Signals(signum).name}: stopping once the reclaims under way end "
              "(again: at once)", flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    done: list[KindReclaim] = []
    loads: list[float] = []
    started = time.monotonic()
    with kind_tier.kind_tier(KIND_CLUSTER, spot_workers=lanes) as tier:
        api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(tier.cluster.kubeconfig))
        core: Any = client.CoreV1Api(api)
        custom: Any = client.CustomObjectsApi(api)
        ns = f"reclaims-{uuid.uuid4().hex[:5]}"
        core.create_namespace({"metadata": {"name": ns}})
        rec = Recorder(api, ns)
        try:
            for k in range(lanes):
                custom.create_namespaced_custom_object("swarm.io", "v1alpha1", ns, "swarmclusters", kind_cluster_body(
                    f"reclaimed-{k}", tier.ray_image, kind.spot_pool(k)))
            print(f"[recovery] {args.real_reclaims} announced reclaims under kind's kubelet over {lanes} clusters side "
                  f"by side (seed {args.real_seed}, notice {args.notice:g} s)", flush=True)
            reclaims_from = time.monotonic()
            threads = [threading.Thread(target=kind_lane, daemon=True, args=(
                tier, core, rec, ns, k, kinds[k::lanes], args, done, stop)) for k in range(lanes)]
            for thread in threads:
                thread.start()
            # Daemon threads, joined in steps: a second signal leaves them to the cluster's deletion.
            while any(thread.is_alive() for thread in threads):
                loads.append(os.getloadavg()[0])
                for thread in threads:
                    thread.join(timeout=10 / lanes)
        finally:
            stop.set()
            rec.stop()
        # Before the cluster's deletion: a run stopped near a deadline keeps its figures.
        figures = kind_report(done, loads)
        figures.update(setup_seconds=round(reclaims_from - started), reclaims_seconds=round(
            time.monotonic() - reclaims_from))
        print(f"{len(done)} reclaims in {figures['reclaims_seconds']} s, after {figures['setup_seconds']} s of set-up")
        if args.json:
            args.json.write_text(json.dumps({
                "what": "bench/recovery.py --kind", "date": timestamp(time.time()),
                "args": {k: getattr(args, k) for k in ("real_reclaims", "real_seed", "real_lanes", "notice")},
                "figures": figures, "loads": loads, "reclaims": [asdict(r) for r in done]}, indent=1) + "\n")
            print(f"written to {args.json}", flush=True)
    return 0 if len(done) == args.real_reclaims and not any(r.lost for r in done) else 1


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
    ap.add_argument("--reclaims", type=int, default=10, help="spot nodes reclaimed per seed (0: no reclaim phase)")
    ap.add_argument("--reclaim-seeds", default="2,3,4",
                    help="comma-separated seeds, one round of --reclaims each (seed 1 was the one developed on)")
    ap.add_argument("--reclaim-clusters", type=int, default=5, help="clusters of 3 spot workers each, per seed")
    ap.add_argument("--spot-nodes", type=int, default=4, help="spot nodes at any time (a fresh one replaces each)")
    ap.add_argument("--notice", type=float, default=2.0, help="seconds from a reclaim's announcement to the node gone")
    ap.add_argument("--real-reclaims", type=int, default=0,
                    help="announced reclaims of a busy worker on real Ray (process nodes: root; take the Ray lock)")
    ap.add_argument("--real-seed", type=int, default=2, help="seed of the real reclaims' kinds")
    ap.add_argument("--ray-sigterm-drain", type=int, default=None, metavar="SECONDS",
                    help="the real reclaims' workers get RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=SECONDS (default: the "
                         "operator's 0): process nodes run no preStop, so Ray's own drain on SIGTERM stands in for it")
    ap.add_argument("--real-lanes", type=int, default=3,
                    help="clusters reclaimed side by side (each on a spot node of its own)")
    ap.add_argument("--kind", action="store_true",
                    help="only the --real-reclaims, under kind's kubelet (its preStop) instead of on process nodes: a "
                         "kind cluster of the kind tier's with a spot node per lane (root; `python -m localcluster "
                         "kind-images` first; take the Ray lock)")
    ap.add_argument("--json", type=Path, help="--kind: write the figures and every reclaim here")
    args = ap.parse_args()
    if args.kind:
        if args.real_reclaims < 1 or args.ray_sigterm_drain is not None:
            ap.error("--kind runs --real-reclaims N (N > 0) with the operator's defaults (no --ray-sigterm-drain)")
        return kind_reclaims(args)
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
        reclaims: dict[int, list[float | None]] = {}
        failed: list[str] = []
        for seed in [int(x) for x in args.reclaim_seeds.split(",") if x] if args.reclaims else []:
            print(f"[recovery] seed {seed}: reclaiming {args.reclaims} spot nodes, one at a time …", flush=True)
            reclaims[seed], failed_now = reclaim_round(api, ns, rec, seed, args)
            failed += failed_now
        real_lost, real_notes = real_reclaims(api, kubeconfig, ns, args) if args.real_reclaims else (0, [])
        rss, cpu = proc_stats(op.proc.pid if op.proc else 0)
    finally:
        rec.stop()
        op.stop()
        core.delete_namespace(ns)
        wait_gone(core, ns)
    backoff = "operator default (1 s)" if args.backoff_initial is None else f"{args.backoff_initial:g} s"
    print(f"\nrecovery on fake nodes; worker backoff initial delay: {backoff}; operator peak RSS {rss:.0f} MiB, "
          f"CPU {cpu:.1f}s")
    for name, values in (("worker failed → replacement created", worker_created),
                         ("worker failed → replacement Running", worker_times),
                         ("head failed → new head pod Running", head_pod_times),
                         ("head failed → cluster Running again", ready_times)):
        if values:
            print(summary(name, values))
    if reclaims:
        ok &= reclaim_report(reclaims, failed)
    if args.real_reclaims:
        print(f"\nannounced reclaims of a busy worker on real Ray (task {REAL_TASK_SECONDS} s, max_retries=0; grace "
              f"{REAL_GRACE_SECONDS} s; notice {args.notice:g} s):")
        for note in real_notes:
            print("  " + note)
        verdict = "met" if not real_lost else "NOT met"
        print(f"tasks lost: {real_lost} of {len(real_notes)} reclaims; target 0: {verdict}")
        ok &= real_lost == 0 and len(real_notes) == args.real_reclaims
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
