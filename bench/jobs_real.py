"""Short Ray jobs on real Ray, side by side (issue 25, step 8): SwarmJob with a clusterSpec against KubeRay
v1.6.2's RayJob, each job on a cluster of its own, on process nodes (localcluster's node agent: every pod a set
of real processes in its own network namespace).

A run applies ``--jobs`` jobs (default 20), at most ``--concurrency`` (default 4) unfinished at a time, in a
fresh namespace watched by a fresh operator process, and polls the jobs, their clusters and pods every 0.5 s.
Per job: apply → the job's status says Ray's RUNNING, and apply → its cluster gone (the cluster object and every
pod of it); per run: jobs per minute (jobs finished ÷ first apply to last finish), the operator's CPU seconds
from the first apply to the last cluster gone, and its peak RSS (VmHWM). Each entrypoint appends its job's name to
a file on the host when it starts (a process node's pods share the host's /var/tmp), so a job run twice is seen:
duplicate executions must be 0.

Both get the same head (1 CPU, 2 Gi; no workers: the driver's one task runs on the head) and the same entrypoint.
KubeRay's RayJob runs with ``submissionMode: HTTPMode`` (the operator posts to the Jobs API, as ours does by
default; its own default, K8sJobMode, adds a submitter pod per job), ``shutdownAfterJobFinishes: true`` and
``ttlSecondsAfterFinished: 0`` (its cluster deleted at the end, as our default deletionPolicy does), and its
operator with ``-use-kubernetes-proxy``: it runs on the host, where the head service's cluster DNS name does not
resolve, so it reaches the dashboard through the API server's service proxy (ours uses the head pod's IP).

Run: `make bench-jobs-real JOBS_REAL_ARGS="--jobs 8 --concurrency 2 --pairs 1"`, or
`python -m localcluster run -- .venv/bin/python bench/jobs_real.py`. Needs root (process nodes). Exits 1 when a
target is missed (ours ≤ KubeRay on apply → RUNNING and on CPU, by median; 0 duplicate executions) or a run did
not finish.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.autoscale_real import (
    HEAD,
    POOL_LABEL,
    RAY_VERSION,
    is_head,
    known_spread,
    placement,
    run_order,
    wait_until,
)
from bench.common import (
    CRD,
    REPO,
    Spread,
    add_round_arguments,
    kubeconfig_from_env,
    kubectl_apply,
    print_targets,
    proc_stats,
    wait_gone,
)
from localcluster import kuberay, rayjobs
from localcluster.demo_cluster import is_ready
from localcluster.nodeagent import NodeAgentProcess
from localcluster.operator_process import OperatorProcess

JOB_CRD = REPO / "crds" / "swarmjob.yaml"
OPERATORS = ("swarm", "kuberay")
POLL_S = 0.5
TASK_SECONDS = 10.0
COUNTER_DIR = Path("/var/tmp")  # shared by the host and the process nodes' pods (their /tmp is private)


@dataclass(frozen=True)
class Kind:
    """How one operator's job resource and its cluster are named and read."""

    group: str
    version: str
    plural: str
    cluster_plural: str
    cluster_label: str  # the label on every pod of a cluster, valued with the cluster's name


KINDS = {"swarm": Kind("swarm.io", "v1alpha1", "swarmjobs", "swarmclusters", "swarm.io/cluster"),
         "kuberay": Kind("ray.io", "v1", "rayjobs", "rayclusters", "ray.io/cluster")}


def entrypoint(counter: Path, job: str, seconds: float = TASK_SECONDS) -> str:
    """Counts its own execution (a line with the job's name), then runs one task of ``seconds`` on the cluster."""
    code = (f"import time, ray\nopen({str(counter)!r}, 'a').write({job!r} + '\\n')\nray.init()\n"
            f"print('slept', ray.get(ray.remote(lambda: time.sleep({seconds}) or {seconds}).remote()))\n")
    return "python -c " + shlex.quote(code)


def swarmjob_body(name: str, pool: str, command: str) -> dict[str, Any]:
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmJob", "metadata": {"name": name},
            "spec": {"entrypoint": command,
                     "clusterSpec": {"rayVersion": RAY_VERSION, "image": f"rayproject/ray:{RAY_VERSION}",
                                     "head": {"resources": {"cpu": int(HEAD["cpu"]), "memory": HEAD["memory"]},
                                              "template": {"spec": placement(pool, False)}}}}}


def rayjob_body(name: str, pool: str, command: str) -> dict[str, Any]:
    head = {"spec": {**placement(pool, False), "containers": [{
        "name": "ray-head", "image": f"rayproject/ray:{RAY_VERSION}",
        "resources": {"requests": dict(HEAD), "limits": dict(HEAD)}}]}}
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name},
            "spec": {"entrypoint": command, "submissionMode": "HTTPMode", "shutdownAfterJobFinishes": True,
                     "ttlSecondsAfterFinished": 0,
                     "rayClusterSpec": {"rayVersion": RAY_VERSION,
                                        "headGroupSpec": {"rayStartParams": {}, "template": head}}}}


@dataclass(frozen=True)
class Seen:
    """One job as one poll saw it."""

    ray_status: str  # Ray's PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, or "" before the operator wrote it
    finished: bool  # the job resource's deployment status is final
    failed: bool
    cluster: str  # its cluster's name, "" while unknown
    job_id: str = ""  # the Ray job's submission id, once the operator wrote it


def seen_job(operator: str, obj: Mapping[str, Any]) -> Seen:
    """What a job object's status says, for either operator (the two name the same things alike)."""
    status = obj.get("status") or {}
    deployment = str(status.get("jobDeploymentStatus") or "")
    cluster = str(status.get("clusterName" if operator == "swarm" else "rayClusterName") or "")
    return Seen(str(status.get("jobStatus") or ""), deployment in ("Complete", "Failed"), deployment == "Failed",
                cluster, str(status.get("jobId") or ""))


@dataclass
class JobTimes:
    """Seconds after the run's first apply; None: not (yet) seen."""

    name: str
    applied: float
    head_ready: float | None = None  # its cluster's head pod Ready: apply → here is the cluster's start
    submitted: float | None = None  # Ray took the job (its Jobs API's start_time): head Ready → here is the operator's
    running: float | None = None
    finished: float | None = None
    gone: float | None = None
    cluster: str = ""
    failed: bool = False

    def observe(self, seen: Seen | None, cluster_alive: bool, at: float, head_ready: bool = False) -> None:
        """One poll: ``seen`` is the job's status (None: the job object is missing), ``cluster_alive`` whether its
        cluster object or any pod of it exists, ``head_ready`` whether its head pod is Ready. A job seen past RUNNING
        (a poll missed it) counts as RUNNING then."""
        if head_ready and self.head_ready is None:
            self.head_ready = at
        if seen is not None:
            self.cluster = seen.cluster or self.cluster
            if self.running is None and seen.ray_status and seen.ray_status != "PENDING":
                self.running = at
            if seen.finished and self.finished is None:
                self.finished, self.failed = at, seen.failed
        if self.finished is not None and self.cluster and not cluster_alive and self.gone is None:
            self.gone = at


@dataclass
class Run:
    operator: str
    jobs: int
    concurrency: int
    times: list[JobTimes] = field(default_factory=list)
    cpu_s: float = 0.0  # the operator's, from the first apply to the last cluster gone
    startup_cpu_s: float = 0.0  # before the first apply (imports, caches, informers)
    peak_rss_mib: float = 0.0
    executions: dict[str, int] = field(default_factory=dict)  # per job, from the counter file
    turns: dict[str, float] = field(default_factory=dict)  # reconciles by "job" and "cluster", from its metrics
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end
    note: str = ""

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.executions.values() if n > 1)

    @property
    def finished(self) -> bool:
        return len(self.times) == self.jobs and all(t.finished is not None and not t.failed and t.gone is not None
                                                    and self.executions.get(t.name) for t in self.times)


def executions(counter_text: str) -> dict[str, int]:
    """Executions per job from the counter file: one line with the job's name per run of its entrypoint."""
    return dict(Counter(line for line in counter_text.splitlines() if line))


# Each operator counts its own reconciles: ours by kind, KubeRay's (controller-runtime's) by controller.
RECONCILE_METRICS = {"swarm": ("swarm_reconcile_total", "kind"),
                     "kuberay": ("controller_runtime_reconcile_total", "controller")}
TURN_KINDS = {"swarmjob": "job", "rayjob": "job", "swarmcluster": "cluster", "raycluster": "cluster"}


def turns(metrics_text: str, metric: str, label: str) -> dict[str, float]:
    """Reconciles of jobs and of clusters (every result summed) from a Prometheus text exposition (TURN_KINDS:
    KubeRay's controllers are named after their kinds, in lower case); other kinds are left out."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        found = re.match(rf'{re.escape(metric)}{{.*\b{re.escape(label)}="([^"]*)".*}} (\S+)$', line)
        if found is None:
            continue
        what = TURN_KINDS.get(found[1].lower())
        if what is not None:
            out[what] = out.get(what, 0.0) + float(found[2])
    return out


def run_from_json(raw: Mapping[str, Any]) -> Run:
    fields = dict(raw)
    fields["times"] = [JobTimes(**t) for t in fields.get("times", [])]
    fields["load"] = tuple(fields.get("load", (0.0, 0.0)))
    return Run(**fields)


def _median(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


MEASURES: dict[str, Callable[[Run], float]] = {
    "apply→head Ready s": lambda r: _median([t.head_ready - t.applied if t.head_ready is not None else None
                                             for t in r.times]),
    "head Ready→submitted s": lambda r: _median([t.submitted - t.head_ready
                                                 if t.submitted is not None and t.head_ready is not None else None
                                                 for t in r.times]),
    "apply→RUNNING s": lambda r: _median([t.running - t.applied if t.running is not None else None for t in r.times]),
    "apply→cluster gone s": lambda r: _median([t.gone - t.applied if t.gone is not None else None for t in r.times]),
    "jobs/min": lambda r: jobs_per_minute(r.times),
    "operator CPU s": lambda r: r.cpu_s,
    "operator peak RSS MiB": lambda r: r.peak_rss_mib,
    "duplicate executions": lambda r: float(r.duplicates),
    "job turns/job": lambda r: r.turns["job"] / r.jobs if "job" in r.turns else math.nan,
    "cluster turns/job": lambda r: r.turns["cluster"] / r.jobs if "cluster" in r.turns else math.nan,
}
# The targets: ours ≤ KubeRay's by median on these (lower is better on both).
COMPARED = ("apply→RUNNING s", "operator CPU s")


def jobs_per_minute(times: Sequence[JobTimes]) -> float:
    """Jobs finished per minute, from the first apply to the last finish."""
    ends = [t.finished for t in times if t.finished is not None]
    if not ends:
        return 0.0
    span = max(ends) - min(t.applied for t in times)
    return 60.0 * len(ends) / span if span > 0 else float("nan")


def summarize(runs: Sequence[Run]) -> dict[str, dict[str, Spread]]:
    """Per operator, each measure's median and range over the runs that finished (each run's figure is itself a
    median over its jobs for the per-job times; runs saved before a measure existed are left out of it)."""
    out: dict[str, dict[str, Spread]] = {}
    for operator in OPERATORS:
        done = [r for r in runs if r.operator == operator and r.finished]
        if done:
            out[operator] = {name: known_spread([m(r) for r in done]) for name, m in MEASURES.items()}
    return out


def check_targets(summary: Mapping[str, Mapping[str, Spread]], runs: Sequence[Run]) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    ours, theirs = summary.get("swarm"), summary.get("kuberay")
    for m in COMPARED:
        if ours is None or theirs is None:
            checks.append((f"{m}: both sides need a finished run", False))
        else:
            checks.append((f"{m}: ours {ours[m]} ≤ KubeRay {theirs[m]} (medians)", ours[m].median <= theirs[m].median))
    dupes = sum(r.duplicates for r in runs)
    checks.append((f"duplicate executions: {dupes} over {len(runs)} runs, want 0", dupes == 0))
    return checks


def markdown(summary: Mapping[str, Mapping[str, Spread]], runs: Sequence[Run]) -> str:
    """The table for bench/README.md: one row per operator, medians [min–max] over its finished runs."""
    lines = ["| operator | runs | " + " | ".join(MEASURES) + " |", "|" + "---|" * (2 + len(MEASURES))]
    for operator, row in summary.items():
        n = sum(1 for r in runs if r.operator == operator and r.finished)
        lines.append(f"| {operator} | {n} | " + " | ".join("—" if math.isnan(row[m].median) else str(row[m])
                                                           for m in MEASURES) + " |")
    return "\n".join(lines)


# ---- the real part ----------------------------------------------------------------------------------------

def start_operator(which: str, kubeconfig: str, namespace: str, log: Path) -> OperatorProcess:
    op = OperatorProcess(kubeconfig, [namespace], log) if which == "swarm" else \
        kuberay.KubeRayProcess(kubeconfig, [namespace], log, ["-use-kubernetes-proxy"])
    op.start()
    return op


def ray_took(head_ip: str, job_id: str, wall_start: float) -> float | None:
    """When the head's Jobs API took the job (its start_time, set at submission; both run on this host's clock), in
    seconds after the run's start; None while it does not know the job."""
    try:
        start_ms = rayjobs.job_info(head_ip, job_id).get("start_time")
    except (OSError, ValueError):
        return None
    return start_ms / 1000 - wall_start if isinstance(start_ms, int | float) else None


def run_one(api: Any, kubeconfig: str, which: str, jobs: int, concurrency: int, pool: str, logs: Path,
            timeout: float) -> Run:
    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    kind = KINDS[which]
    namespace = f"jr-{which}-{uuid.uuid4().hex[:5]}"
    counter = COUNTER_DIR / f"swarm-jobs-real-{namespace}"
    core.create_namespace({"metadata": {"name": namespace}})
    run = Run(which, jobs, concurrency, load=(os.getloadavg()[0], 0.0))
    op = start_operator(which, kubeconfig, namespace, logs / f"{namespace}.log")
    assert op.proc is not None
    print(f"[jobs-real] {jobs} jobs, {concurrency} at a time, on {which} in {namespace} (operator log "
          f"{logs / f'{namespace}.log'}; load {run.load[0]:.1f})", flush=True)
    names = [f"j{i:02d}" for i in range(jobs)]
    body = swarmjob_body if which == "swarm" else rayjob_body
    _, startup_cpu = proc_stats(op.proc.pid)
    start, wall_start = time.monotonic(), time.time()
    deadline = start + timeout
    try:
        while time.monotonic() < deadline:
            now = time.monotonic() - start
            objs = {o["metadata"]["name"]: o for o in custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural)["items"]}
            alive = {o["metadata"]["name"] for o in custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.cluster_plural)["items"]}
            pods = core.list_namespaced_pod(namespace).items
            alive |= {(p.metadata.labels or {}).get(kind.cluster_label, "") for p in pods}
            ready_heads = {(p.metadata.labels or {}).get(kind.cluster_label, "") for p in pods
                           if is_head(p) and is_ready(p)}
            head_ips = {(p.metadata.labels or {}).get(kind.cluster_label, ""): p.status.pod_ip for p in pods
                        if is_head(p) and p.status.pod_ip}
            for t in run.times:
                obj = objs.get(t.name)
                seen = seen_job(which, obj) if obj is not None else None
                t.observe(seen, t.cluster in alive, now, t.cluster in ready_heads)
                if t.submitted is None and seen is not None and seen.job_id and t.cluster in head_ips:
                    t.submitted = ray_took(head_ips[t.cluster], seen.job_id, wall_start)
            unfinished = sum(1 for t in run.times if t.finished is None)
            while unfinished < concurrency and len(run.times) < jobs:
                name = names[len(run.times)]
                custom.create_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural,
                                                       body(name, pool, entrypoint(counter, name)))
                run.times.append(JobTimes(name, time.monotonic() - start))
                unfinished += 1
            if len(run.times) == jobs and all(t.gone is not None or t.failed for t in run.times):
                break
            time.sleep(POLL_S)
        else:
            run.note = f"not done after {timeout:.0f}s"
        run.peak_rss_mib, end_cpu = proc_stats(op.proc.pid)
        try:
            run.turns = turns(op.metrics(), *RECONCILE_METRICS[which])
        except OSError as exc:
            run.note += f" metrics not read: {exc}"
        run.startup_cpu_s, run.cpu_s = startup_cpu, end_cpu - startup_cpu
        run.executions = executions(counter.read_text() if counter.exists() else "")
        run.load = (run.load[0], os.getloadavg()[0])
        failed = [t.name for t in run.times if t.failed]
        if failed:
            run.note += f" failed: {failed}"
        print("[jobs-real]   " + ", ".join(f"{m} {f(run):.3g}" for m, f in MEASURES.items())
              + f"; load {run.load[1]:.1f} {run.note}", flush=True)
        return run
    finally:
        # The jobs go while their operator still runs: a RayJob (and an unfinished SwarmJob) carries a finalizer
        # that only its operator removes, and the namespace would hang on it.
        try:
            custom.delete_collection_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural)
            wait_until("the jobs gone", lambda: not custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural)["items"], timeout=120)
        except (ApiException, TimeoutError) as exc:
            print(f"[jobs-real]   teardown: {exc}", flush=True)
        op.stop()
        counter.unlink(missing_ok=True)
        core.delete_namespace(namespace)
        wait_gone(core, namespace, timeout=300)


def report(runs: Sequence[Run]) -> list[tuple[str, bool]]:
    print("\nEvery run:")
    for r in runs:
        print(f"  {r.operator:<8} {r.jobs} jobs × {r.concurrency} " + ("" if r.finished else "NOT FINISHED ")
              + ", ".join(f"{m} {f(r):.3g}" for m, f in MEASURES.items())
              + f", load {r.load[0]:.1f}→{r.load[1]:.1f}" + (f" ({r.note.strip()})" if r.note.strip() else ""))
    summary = summarize(runs)
    print("\n" + markdown(summary, runs))
    checks = check_targets(summary, runs)
    print_targets(checks)
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20, help="jobs per run (default 20)")
    ap.add_argument("--concurrency", type=int, default=4, help="at most this many unfinished at a time (default 4)")
    ap.add_argument("--operators", default=",".join(OPERATORS), help="comma-separated, of swarm, kuberay")
    add_round_arguments(ap)
    args = ap.parse_args()
    if args.report:
        saved = [run_from_json(r) for r in json.loads(args.report.read_text())]
        checks = report(saved)
        return 0 if all(r.finished for r in saved) and all(met for _, met in checks) else 1
    kubeconfig = kubeconfig_from_env()
    if not kubeconfig:
        print("set KUBECONFIG (or run through `python -m localcluster run -- …`)", file=sys.stderr)
        return 2
    operators = [o for o in args.operators.split(",") if o]
    if set(operators) - set(OPERATORS):
        print(f"unknown: {sorted(set(operators) - set(OPERATORS))}", file=sys.stderr)
        return 2
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    kubectl_apply(kubeconfig, CRD)
    kubectl_apply(kubeconfig, JOB_CRD)
    if "kuberay" in operators:
        kuberay.apply_crds(kubeconfig)
    pool = f"jr-{uuid.uuid4().hex[:5]}"
    # Room for every head at once (1 CPU, 2 Gi each), those still being torn down included.
    agent = NodeAgentProcess(kubeconfig, f"{pool}-cpu", cpu="32", memory="128Gi", labels={POOL_LABEL: f"{pool}-cpu"},
                             taints=["swarm.io/process-node=true:NoSchedule"])
    saved_runs = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    runs: list[Run] = []
    logs = Path(tempfile.mkdtemp(prefix="swarm-jobs-real-"))  # kept: the operators' logs
    timeout = max(600.0, 120.0 * args.jobs / args.concurrency)
    try:
        agent.start()
        for which in run_order(operators, args.pairs):
            runs.append(run_one(api, kubeconfig, which, args.jobs, args.concurrency, pool, logs, timeout))
            if args.json:
                args.json.write_text(json.dumps([*saved_runs, *(asdict(r) for r in runs)], indent=1))
    finally:
        agent.stop()
    checks = report(runs)
    return 0 if all(r.finished for r in runs) and all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
