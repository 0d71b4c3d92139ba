"""Autoscaling from Ray's own demand, end to end: real Ray on process nodes, the real operator.

Each test has its own small SwarmCluster (head + at most 3 workers alive), scaled from zero.
CPU work asks for the custom resource `slot`, which only cpu workers have, so the head's
own CPU never absorbs the demand the tests are about. Every group's maxReplicas leaves room
above the count a test expects, and the test asserts the peak it sampled: a cap equal to the
expected count would hide over-scaling.
"""

from __future__ import annotations

import copy
import json
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray

from localcluster import rayjobs
from tests.e2e.helpers import ProcessNodes, cluster_pods, delete_swarmcluster, is_ready, sample_manifest
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

IDLE_TIMEOUT = 8
PENDING_TIMEOUT = 10


def autoscaling_manifest(pool: str, name: str, cpu_max: int = 3, gpu_max: int = 2,
                         stuck_cpu: bool = False, ray_version: str | None = None) -> dict[str, Any]:
    """``stuck_cpu``: the cpu group's pods can never be scheduled, and an identical group "spare" follows it."""
    manifest = copy.deepcopy(sample_manifest(pool))
    manifest["metadata"]["name"] = name
    cpu, gpu = manifest["spec"]["workerGroups"]
    cpu.update(minReplicas=0, maxReplicas=cpu_max, rayResources={"slot": 1})
    gpu.update(minReplicas=0, maxReplicas=gpu_max)
    manifest["spec"]["autoscaling"] = {"enabled": True, "idleTimeoutSeconds": IDLE_TIMEOUT, "intervalSeconds": 1,
                                       "scaleDownStabilizationSeconds": 5, "pendingTimeoutSeconds": PENDING_TIMEOUT}
    if ray_version:
        manifest["spec"]["rayVersion"] = ray_version
    if stuck_cpu:
        spare = copy.deepcopy(cpu)
        spare["name"] = "spare"
        cpu["template"]["spec"]["nodeSelector"]["swarm.io/no-such-node"] = "true"
        manifest["spec"]["workerGroups"].append(spare)
    return manifest


class Scaled:
    """One autoscaling SwarmCluster: its pods, status and events, sampled over time."""

    def __init__(self, core: Any, custom: Any, namespace: str, name: str) -> None:
        self.core, self.custom, self.ns, self.name = core, custom, namespace, name
        # The most pods (Pending ones included) each group had at once, over every sample taken.
        self.max_pods: dict[str, int] = {"cpu": 0, "gpu": 0}

    def pods(self, group: str | None = None) -> list[Any]:
        out = [p for p in cluster_pods(self.core, self.ns, self.name) if p.metadata.deletion_timestamp is None]
        now: dict[str, int] = {}
        for p in out:
            g = p.metadata.labels.get("swarm.io/group")
            if g is not None:
                now[g] = now.get(g, 0) + 1
        for g in now.keys() | self.max_pods.keys():
            self.max_pods[g] = max(self.max_pods.get(g, 0), now.get(g, 0))
        if group is not None:
            out = [p for p in out if p.metadata.labels.get("swarm.io/group") == group]
        return out

    def status(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.name)
        return dict(obj.get("status") or {})

    def target(self, group: str) -> int:
        return next(int(g.get("desiredReplicas", 0)) for g in self.status().get("workerGroups", [])
                    if g["name"] == group)

    def head_ip(self) -> str:
        def ready_head() -> str | None:
            heads = [p for p in self.pods() if p.metadata.labels.get("swarm.io/node-type") == "head" and is_ready(p)]
            return heads[0].status.pod_ip if heads else None
        ip: str = wait_for("a ready head", ready_head, timeout=120)
        return ip

    def events(self, reason: str) -> list[str]:
        return [e.message for e in self.core.list_namespaced_event(self.ns).items
                if e.involved_object.name == self.name and e.reason == reason]

    def submit(self, driver: str) -> str:
        ip = self.head_ip()
        wait_for("the GCS", lambda: rayjobs.ray_nodes(ip), timeout=60)
        return rayjobs.submit_job(ip, "python -c " + shlex.quote(driver))

    def wait_job(self, job_id: str, timeout: float = 240, while_waiting: Callable[[], None] | None = None) -> str:
        ip = self.head_ip()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = rayjobs.job_info(ip, job_id)
            if info["status"] in rayjobs.TERMINAL_JOB_STATES:
                logs = rayjobs.job_logs(ip, job_id)
                assert info["status"] == "SUCCEEDED", logs
                return logs
            if while_waiting:
                while_waiting()
            time.sleep(1)
        raise AssertionError(f"job {job_id} did not end in {timeout}s")


@pytest.fixture
def scaled(core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any,
           process_nodes: ProcessNodes, request: pytest.FixtureRequest) -> Iterator[Callable[..., Scaled]]:
    made: list[str] = []

    def make(name: str, **kw: Any) -> Scaled:
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL,
                                                       autoscaling_manifest(process_nodes.pool, name, **kw))
        made.append(name)
        return Scaled(core_v1, custom_objects, module_namespace, name)

    yield make
    for name in made:
        # Its pods too, not only through the garbage collector: a fresh cluster's collector learns of the SwarmCluster
        # kind at its next discovery sync (every 30 s), which held the session's first teardown ~27 s. The cascade
        # is what test_cluster_deletion.py proves; here only the room on the process nodes matters.
        custom_objects.delete_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL, name)
        core_v1.delete_collection_namespaced_pod(module_namespace, label_selector=f"swarm.io/cluster={name}")
        delete_swarmcluster(core_v1, custom_objects, module_namespace, name)


def result_line(logs: str) -> dict[str, Any]:
    line = next((ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT ")), "E2E-RESULT {}")
    parsed: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return parsed


GPU_JOB = """\
import json, socket, ray
ray.init()

@ray.remote(num_gpus=1)
def on_gpu():
    return socket.gethostname()

print("E2E-RESULT " + json.dumps({"pod": ray.get(on_gpu.remote())}))
"""


def test_gpu_tasks_start_the_gpu_group_from_zero_and_nothing_else(scaled: Callable[..., Scaled]) -> None:
    c = scaled("as-gpu")
    wait_for("the head alone", lambda: len(c.pods()) == 1 and c.head_ip(), timeout=120)
    assert c.target("gpu") == 0 and c.target("cpu") == 0
    logs = c.wait_job(c.submit(GPU_JOB), while_waiting=c.pods)
    pod = result_line(logs)["pod"]
    assert pod.startswith("as-gpu-gpu-"), logs
    assert c.max_pods["cpu"] == 0, "CPU workers must not start for GPU demand"
    assert c.max_pods["gpu"] == 1, f"one GPU task needs one GPU worker (maxReplicas 2): {c.max_pods}"
    assert any("gpu 0→1" in m for m in c.events("Autoscaled")), c.events("Autoscaled")


CPU_JOB = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1})
def work(seconds):
    time.sleep(seconds)
    return socket.gethostname()

short, long = work.remote(2), work.remote(%d)
short_pod = ray.get(short)
print("E2E-SHORT-DONE", flush=True)
print("E2E-RESULT " + json.dumps({"short": short_pod, "long": ray.get(long)}))
"""


def test_cpu_tasks_scale_the_cpu_group_and_idle_scale_down_spares_the_busy_node(
        scaled: Callable[..., Scaled]) -> None:
    c = scaled("as-cpu")
    long_seconds = IDLE_TIMEOUT + 35
    job = c.submit(CPU_JOB % long_seconds)
    seen_during: list[int] = []

    def watch() -> None:
        seen_during.append(len(c.pods("cpu")))

    logs = c.wait_job(job, timeout=300, while_waiting=watch)
    result = result_line(logs)
    assert result["short"] != result["long"], "two tasks of one slot each need two cpu workers"
    assert c.max_pods["cpu"] == 2 and c.max_pods["gpu"] == 0, f"two tasks, maxReplicas 3: {c.max_pods}"
    # While the long task ran, the short task's idle worker was drained and removed; the busy one stayed.
    assert 1 in seen_during[-10:], seen_during
    assert c.target("cpu") <= 1
    # After the job, the last worker idles out too: down to minReplicas (0), by drain, not by failure.
    wait_for("cpu workers gone", lambda: not c.pods("cpu"), timeout=IDLE_TIMEOUT + 90)
    group = next(g for g in c.status()["workerGroups"] if g["name"] == "cpu")
    assert group["restarts"] == 0 and group["desiredReplicas"] == 0, group
    assert any("cpu" in m and "→" in m for m in c.events("Autoscaled"))


PG_JOB = """\
import json, ray
from ray.util.placement_group import placement_group, placement_group_table
ray.init()
pg = placement_group([{"slot": 1}] * 3, strategy="STRICT_SPREAD")
ray.get(pg.ready(), timeout=240)
nodes = {b: n for b, n in placement_group_table(pg)["bundles_to_node_id"].items()}
print("E2E-RESULT " + json.dumps({"nodes": len(set(nodes.values()))}))
"""


def test_a_strict_spread_placement_group_of_three_gets_three_nodes(scaled: Callable[..., Scaled]) -> None:
    c = scaled("as-pg", cpu_max=4)
    logs = c.wait_job(c.submit(PG_JOB), timeout=300, while_waiting=c.pods)
    assert result_line(logs) == {"nodes": 3}, logs
    assert c.max_pods["cpu"] == 3 and c.max_pods["gpu"] == 0, f"three bundles, maxReplicas 4: {c.max_pods}"


REQUEST_JOB = """\
import ray
from ray.autoscaler.sdk import request_resources
ray.init()
request_resources(bundles=[{"slot": 1}, {"slot": 1}])
print("E2E-RESULT {}")
"""


def test_a_ray_version_other_than_the_specs_is_shown_with_a_warning(scaled: Callable[..., Scaled]) -> None:
    c = scaled("as-ver", ray_version="2.59.0")  # the process nodes run the installed Ray

    def warned() -> list[str] | None:
        return c.events("RayVersionMismatch") or None

    (message, *_) = wait_for("a RayVersionMismatch event", warned, timeout=150)
    assert message.startswith(f"spec.rayVersion is 2.59.0 but the head runs Ray {ray.__version__}")

    # The Event goes out during the turn and the status patch ends it, so the record may lag by a moment.
    def recorded() -> dict[str, Any] | None:
        record: dict[str, Any] = c.status().get("autoscaler", {})
        return record if record.get("rayVersionWarning") else None

    record = wait_for("status.autoscaler with the warning", recorded, timeout=30)
    assert record["rayVersion"] == ray.__version__ and record["rayVersionWarning"] == message


def test_request_resources_scales_up_with_no_tasks(scaled: Callable[..., Scaled]) -> None:
    c = scaled("as-req")
    c.wait_job(c.submit(REQUEST_JOB), timeout=120)
    wait_for("two cpu workers for the constraint", lambda: len([p for p in c.pods("cpu") if is_ready(p)]) == 2,
             timeout=180)
    assert c.target("cpu") == 2
    # A constraint keeps its nodes even when they idle past the timeout, and gets no more than it asked for.
    deadline = time.monotonic() + IDLE_TIMEOUT + 5
    while time.monotonic() < deadline:
        c.pods()
        time.sleep(1)
    assert len(c.pods("cpu")) == 2
    assert c.max_pods["cpu"] == 2 and c.max_pods["gpu"] == 0, f"two bundles, maxReplicas 3: {c.max_pods}"


SLOT_JOB = """\
import json, socket, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1})
def where():
    return socket.gethostname()

print("E2E-RESULT " + json.dumps({"pod": ray.get(where.remote())}))
"""


def test_a_group_whose_pods_stay_pending_gives_way_to_the_next_group(scaled: Callable[..., Scaled]) -> None:
    c = scaled("as-stuck", stuck_cpu=True)
    job = c.submit(SLOT_JOB)
    # The cpu group fits best (first in the spec), but its pod can never be scheduled.
    wait_for("a cpu pod, Pending", lambda: c.pods("cpu"), timeout=60)
    logs = c.wait_job(job, timeout=PENDING_TIMEOUT + 150, while_waiting=c.pods)
    assert result_line(logs)["pod"].startswith("as-stuck-spare-"), logs
    # After the timeout the stuck pod is given up, not left Pending forever.
    wait_for("the stuck cpu pod removed", lambda: not c.pods("cpu"), timeout=60)
    assert any("unavailable" in m for m in c.events("Autoscaled")), c.events("Autoscaled")
    # One task: one pod at a time in each group, though both may have 3.
    assert c.max_pods["cpu"] == 1 and c.max_pods["spare"] == 1 and c.max_pods["gpu"] == 0, c.max_pods
