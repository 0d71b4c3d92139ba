"""Ray is drained ahead of a disruption: real Ray on process nodes, the real operator.

A cluster autoscaler marks the node of a busy worker for removal (its ToBeDeletedByClusterAutoscaler taint). The
operator must have Ray drain that worker's node (PREEMPTION) at once: Ray shows it DRAINING while the task it
runs (max_retries=0) goes on and finishes; a replacement worker is made at once; the drained pod goes only after
the task.

`kubectl drain` (the real one) of a node with a busy worker: Ray shows the node DRAINING before the pod gets
SIGTERM (the node agent runs the Ray container's preStop as a kubelet would, within the grace period), the task
(max_retries=0) finishes there, and a task submitted meanwhile runs on another node although the drained one has
room. That the head's PodDisruptionBudget refuses an eviction of the head until the user switches it off is the
integration tier's (tests/integration/test_disruption.py: the Eviction API that kubectl drain calls).
"""

from __future__ import annotations

import copy
import json
import shlex
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import rayjobs
from localcluster.nodeagent import NodeAgentProcess
from tests.e2e.conftest import PROCESS_TAINT, _stop_agent
from tests.e2e.helpers import (
    LONG_TASK,
    POOL_LABEL,
    ProcessNodes,
    cluster_pods,
    delete_swarmcluster,
    sample_manifest,
    started_on,
    wait_ray_cluster,
)
from tests.integration.helpers import GROUP, PLURAL, VERSION, Kubectl, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAME = "reclaim"
TASK_SECONDS = 25
REMOVAL_TAINT = {"key": "ToBeDeletedByClusterAutoscaler", "value": str(int(time.time())), "effect": "NoSchedule"}


def one_worker(pool: str) -> dict[str, Any]:
    manifest = copy.deepcopy(sample_manifest(pool))
    manifest["metadata"]["name"] = NAME
    cpu = manifest["spec"]["workerGroups"][0]
    cpu.update(replicas=1, minReplicas=0, maxReplicas=1, rayResources={"slot": 1})
    manifest["spec"]["workerGroups"] = [cpu]
    manifest["spec"]["autoscaling"] = {"enabled": False}
    return manifest


def set_taints(core: Any, node: str, taints: list[dict[str, Any]]) -> None:
    core.patch_node(node, {"spec": {"taints": taints}})


def test_a_node_marked_for_removal_has_its_ray_node_drained_first(
        core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any, process_nodes: ProcessNodes) -> None:
    ns = module_namespace
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, one_worker(process_nodes.pool))
    node = ""
    before: list[dict[str, Any]] = []
    try:
        ray = wait_ray_cluster(core_v1, ns, NAME, want=2, timeout=150)
        (busy,) = {n for n in ray.pods if n != ray.head}
        job = rayjobs.submit_job(ray.head_ip, "python -c " + shlex.quote(LONG_TASK % TASK_SECONDS))
        assert wait_for("the long task started", lambda: started_on(rayjobs.job_logs(ray.head_ip, job)),
                        timeout=60) == busy
        node = ray.pods[busy].spec.node_name
        before = [{"key": t.key, "value": t.value, "effect": t.effect}
                  for t in core_v1.read_node(node).spec.taints or []]
        set_taints(core_v1, node, [*before, REMOVAL_TAINT])
        tainted_at = time.time()

        draining_at = 0.0
        replacement = None
        busy_seen_leaving: list[float] = []
        info: dict[str, Any] = {}
        deadline = time.monotonic() + TASK_SECONDS + 60
        while time.monotonic() < deadline:
            now = time.time()
            if not draining_at and any(n.instance_id == busy and n.status == "DRAINING"
                                       for n in rayjobs.ray_nodes(ray.head_ip)):
                draining_at = now
            pods = {p.metadata.name: p for p in cluster_pods(core_v1, ns, NAME)}
            replacement = replacement or next((n for n in pods if n not in ray.pods), None)
            if busy not in pods or pods[busy].metadata.deletion_timestamp is not None:
                busy_seen_leaving.append(now)
            info = rayjobs.job_info(ray.head_ip, job)
            if info["status"] in rayjobs.TERMINAL_JOB_STATES:
                break
            time.sleep(0.5)
        logs = rayjobs.job_logs(ray.head_ip, job)
        assert info.get("status") == "SUCCEEDED", logs
        result = json.loads(next(ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT ")).split(" ", 1)[1])
        assert result["pod"] == busy, result
        print(f"reclaim figures: Ray node DRAINING {draining_at - tainted_at:.1f}s after the taint; task done "
              f"{result['finished'] - tainted_at:.1f}s after it")
        assert tainted_at <= draining_at < result["finished"], (draining_at, tainted_at, result)
        assert replacement is not None, "a replacement is made at once, while the drained worker finishes"
        assert all(t >= result["finished"] for t in busy_seen_leaving), (busy_seen_leaving, result)
        wait_for("the drained worker's pod gone",
                 lambda: busy not in {p.metadata.name for p in cluster_pods(core_v1, ns, NAME)}, timeout=90)
        events = [e for e in core_v1.list_namespaced_event(ns).items if e.involved_object.name == NAME]
        draining = [e.message for e in events if e.reason == "Draining"]
        assert any(busy in m and "cluster autoscaler" in m for m in draining), draining
        assert not [e.message for e in events if e.reason == "Replacing"], "no worker counted as failed"
    finally:
        if node:  # the node is the session's: give it back as it was
            set_taints(core_v1, node, before)
        delete_swarmcluster(core_v1, custom_objects, ns, NAME)


DRAINED = "drained"
# A driver whose one task (max_retries=0) asks for a resource that only some worker has (given as JSON).
PINNED_TASK = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, max_retries=0)
def work(seconds):
    print("E2E-" + "STARTED " + socket.gethostname(), flush=True)  # split: the logs echo this source
    time.sleep(seconds)
    return {"pod": socket.gethostname(), "finished": time.time()}

print("E2E-RESULT " + json.dumps(ray.get(work.options(resources=%s).remote(%d))))
"""
DRAIN_TASK_SECONDS = 20
DRAIN_GRACE_SECONDS = 45  # the spot worker's: room for its task after the drain began


@pytest.fixture(scope="module")
def spot_node(kubeconfig: str, process_nodes: ProcessNodes) -> Iterator[NodeAgentProcess]:
    """A process node of this module's own (3 CPUs), to be drained: its pool label is not the session's, so only
    the pods that ask for it land there."""
    agent = NodeAgentProcess(kubeconfig, f"{process_nodes.pool}-{DRAINED}", cpu="3", memory="4Gi",
                             labels={POOL_LABEL: f"{process_nodes.pool}-{DRAINED}"}, taints=[PROCESS_TAINT])
    agent.start()
    try:
        yield agent
    finally:
        _stop_agent(agent)


def spot_and_steady(pool: str, spot_pool: str) -> dict[str, Any]:
    """A head and a one-slot worker on the session's CPU node, and a two-slot worker on the node to be drained."""
    manifest = copy.deepcopy(sample_manifest(pool))
    manifest["metadata"]["name"] = DRAINED
    steady = manifest["spec"]["workerGroups"][0]
    steady.update(replicas=1, minReplicas=0, maxReplicas=1, rayResources={"slot": 1})
    spot = copy.deepcopy(steady)
    spot.update(name="spot", resources={"cpu": 2, "memory": "1Gi"}, rayResources={"slot": 2, "spot": 1},
                terminationGracePeriodSeconds=DRAIN_GRACE_SECONDS)
    spot["template"]["spec"]["nodeSelector"][POOL_LABEL] = spot_pool
    manifest["spec"]["workerGroups"] = [steady, spot]
    manifest["spec"]["autoscaling"] = {"enabled": False}
    return manifest


def test_kubectl_drain_of_a_busy_workers_node_drains_ray_before_sigterm(
        core_v1: Any, custom_objects: Any, kubectl: Kubectl, module_namespace: str, operator: Any,
        process_nodes: ProcessNodes, spot_node: NodeAgentProcess) -> None:
    ns = module_namespace
    node = spot_node.node
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                   spot_and_steady(process_nodes.pool, node))
    drain: list[Any] = []
    try:
        ray = wait_ray_cluster(core_v1, ns, DRAINED, want=3, timeout=150)
        (busy,) = {n for n, p in ray.pods.items() if p.spec.node_name == node}
        (steady,) = {n for n in ray.pods if n not in (busy, ray.head)}
        job = rayjobs.submit_job(ray.head_ip, "python -c " + shlex.quote(
            PINNED_TASK % ('{"spot": 1}', DRAIN_TASK_SECONDS)))
        assert wait_for("the long task started", lambda: started_on(rayjobs.job_logs(ray.head_ip, job)),
                        timeout=60) == busy

        drain_thread = threading.Thread(target=lambda: drain.append(kubectl(
            "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=150s", timeout=170)))
        drain_started = time.time()
        drain_thread.start()
        draining_at = 0.0
        second_job = ""
        while not draining_at and time.time() - drain_started < 30:
            if any(n.instance_id == busy and n.status == "DRAINING" for n in rayjobs.ray_nodes(ray.head_ip)):
                draining_at = time.time()
                # A new task that fits the drained worker (it has a free slot and CPU) must go elsewhere.
                second_job = rayjobs.submit_job(ray.head_ip, "python -c " + shlex.quote(
                    PINNED_TASK % ('{"slot": 1}', 1)))
            time.sleep(0.3)
        assert draining_at, f"{busy} not DRAINING in Ray 30 s after kubectl drain began"

        info = rayjobs.wait_job(ray.head_ip, job, timeout=DRAIN_TASK_SECONDS + 60)
        logs = rayjobs.job_logs(ray.head_ip, job)
        assert info["status"] == "SUCCEEDED", logs
        result = json.loads(next(ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT ")).split(" ", 1)[1])
        assert result["pod"] == busy, result
        second = rayjobs.wait_job(ray.head_ip, second_job, timeout=60)
        second_logs = rayjobs.job_logs(ray.head_ip, second_job)
        assert second["status"] == "SUCCEEDED", second_logs
        assert started_on(second_logs) == steady, f"a new task went to the draining {busy}: {second_logs}"

        drain_thread.join(180)
        assert drain and drain[0].returncode == 0, drain and (drain[0].stdout + drain[0].stderr)
        events = [e for e in core_v1.list_namespaced_event(ns).items if e.involved_object.name == busy]
        # Seconds, rounded down: a SIGTERM in the same second as the first DRAINING seen would fail this.
        killing = min(e.first_timestamp.timestamp() for e in events if e.reason == "Killing")
        print(f"kubectl drain figures: Ray node DRAINING seen {draining_at - drain_started:.1f}s after kubectl drain "
              f"began; task done {result['finished'] - drain_started:.1f}s after it; SIGTERM (Killing) "
              f"{killing - drain_started:.0f}s after it; drain took {time.time() - drain_started:.0f}s")
        assert draining_at < killing, (draining_at, killing)
        assert result["finished"] < killing + 1, "the task finished before its pod was stopped"
        assert not [e.message for e in core_v1.list_namespaced_event(ns).items
                    if e.involved_object.name == DRAINED and e.reason == "Replacing"], "no worker counted as failed"
    finally:
        kubectl("uncordon", node)  # kubectl drain cordons it first, even when it then fails
        delete_swarmcluster(core_v1, custom_objects, ns, DRAINED)
