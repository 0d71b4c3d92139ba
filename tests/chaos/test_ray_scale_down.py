"""Scale-down while tasks run on every worker: real Ray on process nodes, the real operator.

Three tasks of different lengths keep three workers busy; while all three run, the group's
maxReplicas drops to 1 (a scale-down by spec), and as each task ends its worker idles out
(a scale-down by the autoscaler). Tasks run with ``max_retries=0``: a worker removed under a
task would fail the job instead of being papered over by a retry. Every result must come
back, and no worker pod may be deleted before the task on it ended.

Heavy (a head and three Ray workers, ~1.2 GiB): marked ``ray`` so ``-m "not ray"`` skips it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.request
from typing import Any

import pytest

from localcluster import rayjobs
from swarm_operator.resources import labels
from swarm_operator.resources.pods import DASHBOARD_PORT
from tests.chaos.conftest import OperatorFactory
from tests.chaos.helpers import Api
from tests.e2e.helpers import ProcessNodes, sample_manifest

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

DURATIONS = (12, 20, 28)  # seconds; one worker each (slot: 1), ending one after another
IDLE_TIMEOUT = 6

DRIVER = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1}, max_retries=0)
def work(seconds):
    start = time.time()
    time.sleep(seconds)
    return {"pod": socket.gethostname(), "start": start, "end": time.time()}

print("CHAOS-RESULT " + json.dumps(ray.get([work.remote(s) for s in %r])))
"""


def _manifest(pool: str, name: str) -> dict[str, Any]:
    body = sample_manifest(pool)
    body["metadata"]["name"] = name
    spec = body["spec"]
    cpu = spec["workerGroups"][0]
    cpu.update(minReplicas=0, maxReplicas=len(DURATIONS), rayResources={"slot": 1})
    spec["workerGroups"] = [cpu]  # no GPU group: nothing here asks for one
    spec["autoscaling"] = {"enabled": True, "idleTimeoutSeconds": IDLE_TIMEOUT, "intervalSeconds": 1,
                           "scaleDownStabilizationSeconds": 2}
    return body


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class PodWatch:
    """Samples the cluster's pods: when each worker was first seen, and first seen deleting or gone."""

    def __init__(self, api: Api, name: str) -> None:
        self.api, self.name = api, name
        self.seen: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.head_ip: str | None = None

    def sample(self) -> list[dict[str, Any]]:
        now = time.time()
        pods = [p for p in self.api.pods() if p["metadata"]["labels"].get(labels.CLUSTER) == self.name]
        live = set()
        for p in pods:
            meta = p["metadata"]
            if meta["labels"].get(labels.NODE_TYPE) == labels.HEAD:
                if _ready(p):
                    self.head_ip = p["status"].get("podIP")
                continue
            self.seen.setdefault(meta["name"], now)
            if meta.get("deletionTimestamp"):
                self.gone.setdefault(meta["name"], now)
            else:
                live.add(meta["name"])
        for name in set(self.seen) - live:
            self.gone.setdefault(name, now)
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def workers(self) -> list[str]:
        return sorted(set(self.seen) - set(self.gone))


def _busy_workers(head_ip: str) -> int:
    """Worker nodes with their slot taken (a task runs there)."""
    try:
        nodes = rayjobs.ray_nodes(head_ip, timeout=20)
    except subprocess.SubprocessError:
        return 0
    return sum(1 for n in nodes if n.alive and n.total.get("slot") and not n.available.get("slot"))


@pytest.mark.timeout(240)
def test_scale_down_while_every_worker_runs_a_task_loses_no_task(
        api: Api, operator_factory: OperatorFactory, process_nodes: ProcessNodes) -> None:
    started = time.monotonic()
    op = operator_factory()
    op.start()
    name = "busy"
    api.create(_manifest(process_nodes.pool, name))
    watch = PodWatch(api, name)
    deadline = time.monotonic() + 90
    while watch.head_ip is None or not rayjobs_answers(watch.head_ip):
        assert time.monotonic() < deadline, "no ready head answering on its GCS in 90s\n" + op.log_tail()
        watch.sample()
        time.sleep(1)
    head_ip = watch.head_ip
    job = rayjobs.submit_job(head_ip, "python -c " + shlex.quote(DRIVER % (DURATIONS,)))

    # Every worker busy: then scale the group down by spec, to 1, under their feet.
    deadline = time.monotonic() + 90
    while _busy_workers(head_ip) < len(DURATIONS):
        assert time.monotonic() < deadline, f"not {len(DURATIONS)} busy workers in 90s; pods {watch.workers()}"
        assert rayjobs.job_info(head_ip, job)["status"] not in rayjobs.TERMINAL_JOB_STATES
        watch.sample()
        time.sleep(0.5)
    lowered_at = time.time()
    group = api.get(name)["spec"]["workerGroups"]
    group[0]["maxReplicas"] = 1
    api.patch(name, {"spec": {"workerGroups": group}})

    deadline = time.monotonic() + max(DURATIONS) + 60
    while (info := rayjobs.job_info(head_ip, job))["status"] not in rayjobs.TERMINAL_JOB_STATES:
        assert time.monotonic() < deadline, f"job still {info['status']}"
        watch.sample()
        time.sleep(0.5)
    logs = rayjobs.job_logs(head_ip, job)
    assert info["status"] == "SUCCEEDED", f"a task was lost: {info.get('message')}\n{logs[-3000:]}"
    line = next(ln for ln in logs.splitlines() if ln.startswith("CHAOS-RESULT "))
    results: list[dict[str, Any]] = json.loads(line.split(" ", 1)[1])
    assert len(results) == len(DURATIONS)
    pods = {r["pod"] for r in results}
    assert len(pods) == len(DURATIONS), f"every task on a worker of its own: {results}"
    for r in results:
        gone = watch.gone.get(r["pod"])
        assert gone is None or gone >= r["end"] - 0.5, (
            f"worker {r['pod']} was deleted {r['end'] - gone:.1f}s before its task ended: {results}")

    # Afterwards the idle workers drain away, down to minReplicas (0), none of them as a failure.
    deadline = time.monotonic() + IDLE_TIMEOUT + 45
    while watch.workers():
        assert time.monotonic() < deadline, f"workers still there: {watch.workers()}\n" + op.log_tail()
        watch.sample()
        time.sleep(1)
    status = api.get(name)["status"]["workerGroups"][0]
    assert status["restarts"] == 0 and status["desiredReplicas"] == 0, status
    api.delete(name)
    deleted_during = sorted(watch.gone.items(), key=lambda kv: kv[1])
    print(f"tasks {[(r['pod'], round(r['end'] - r['start'], 1)) for r in results]}; maxReplicas lowered to 1 at "
          f"+{lowered_at - min(r['start'] for r in results):.1f}s after the first task started; workers removed at "
          f"{[(p, round(t - lowered_at, 1)) for p, t in deleted_during]} (s after the scale-down); "
          f"test took {time.monotonic() - started:.0f}s")


def rayjobs_answers(head_ip: str) -> bool:
    """The head's GCS and Jobs API both answer."""
    try:
        rayjobs.ray_nodes(head_ip, timeout=20)
        with urllib.request.urlopen(f"http://{head_ip}:{DASHBOARD_PORT}/api/jobs/", timeout=5):
            pass
    except (subprocess.SubprocessError, OSError):
        return False
    return True
