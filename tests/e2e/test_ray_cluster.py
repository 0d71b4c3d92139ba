"""The GPU + CPU sample as a real Ray cluster: it forms, serves jobs, and heals.

One SwarmCluster for the module (head + one CPU worker + one GPU worker: three Ray nodes,
at most six alive while the head is replaced), so the healing tests run against a
cluster that is already up, as a user's would be. Every test leaves the cluster whole again.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import rayjobs
from swarm_operator.resources.pods import ray_shape
from swarm_operator.spec.parse import parse_cluster
from tests.e2e.helpers import (
    ProcessNodes,
    RayCluster,
    delete_swarmcluster,
    raylet_pid,
    sample_manifest,
    wait_ray_cluster,
)
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# A driver that needs every kind of node: a task on the GPU worker and one that may run anywhere.
JOB = """\
import json, os, socket
import ray

ray.init()

@ray.remote(num_gpus=1)
def on_gpu():
    return socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES")

@ray.remote(num_cpus=1)
def square(x):
    return x * x

pod, cuda = ray.get(on_gpu.remote())
squares = ray.get([square.remote(i) for i in range(4)])
nodes = len([n for n in ray.nodes() if n["Alive"]])
print("E2E-RESULT " + json.dumps({"gpu_pod": pod, "cuda": cuda, "squares": squares, "nodes": nodes}))
"""


@pytest.fixture(scope="module")
def sample(core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any,
           process_nodes: ProcessNodes) -> Iterator[dict[str, Any]]:
    """The SwarmCluster, created once; deleted (pods gone) before the next module starts its own."""
    manifest = sample_manifest(process_nodes.pool)
    obj = custom_objects.create_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL, manifest)
    yield obj
    delete_swarmcluster(core_v1, custom_objects, module_namespace, obj["metadata"]["name"])


def _up(core_v1: Any, sample: dict[str, Any], timeout: float = 120.0) -> RayCluster:
    meta = sample["metadata"]
    return wait_ray_cluster(core_v1, meta["namespace"], meta["name"], want=3, timeout=timeout)


def _run_job(head_ip: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Submit JOB; returns (job info, the driver's result line as JSON, the logs)."""
    job_id = rayjobs.submit_job(head_ip, "python -c " + shlex.quote(JOB))
    info = rayjobs.wait_job(head_ip, job_id, timeout=120)
    logs = rayjobs.job_logs(head_ip, job_id)
    line = next((ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT ")), "E2E-RESULT {}")
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return info, result, logs


def test_the_sample_becomes_a_ray_cluster_with_the_declared_resources(
        core_v1: Any, custom_objects: Any, sample: dict[str, Any], process_nodes: ProcessNodes) -> None:
    start = time.monotonic()
    rc = _up(core_v1, sample, timeout=180)
    print(f"\n[e2e] sample Ready as a Ray cluster of {len(rc.nodes)} nodes after {time.monotonic() - start:.0f}s")
    spec = parse_cluster(sample)
    declared = {"head": ray_shape(spec.head.resources, spec.head.ray_start_params),
                **{g.name: ray_shape(g.resources, g.ray_start_params, g.ray_resources) for g in spec.worker_groups}}
    by_role: dict[str, str] = {}
    for name, pod in rc.pods.items():
        labels = pod.metadata.labels
        role = "head" if labels["swarm.io/node-type"] == "head" else labels["swarm.io/group"]
        by_role[role] = name
        node = rc.nodes[name]  # instance_id is the pod's name (RAY_CLOUD_INSTANCE_ID)
        assert node.node_type == role
        assert node.ip == pod.status.pod_ip
        got = {k: v for k, v in node.total.items() if k in declared[role] or k == "GPU"}
        assert got == declared[role], f"Ray node of {name}"
    assert sorted(by_role) == ["cpu", "gpu", "head"]
    # The taints put the gpu worker alone on the GPU node; nothing landed on kwok's fake nodes.
    nodes = {name: pod.spec.node_name for name, pod in rc.pods.items()}
    assert nodes == {by_role["head"]: process_nodes.cpu.node, by_role["cpu"]: process_nodes.cpu.node,
                     by_role["gpu"]: process_nodes.gpu.node}
    meta = sample["metadata"]

    # Status is the operator's write after its turn over the last pod turning Ready: it may lag the pods a moment.
    def running() -> dict[str, Any] | None:
        status: dict[str, Any] = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]).get("status") or {}
        return status if status.get("phase") == "Running" else None

    status = wait_for("status phase Running", running, timeout=60)
    assert (status["gpus"], status["head"]["podIP"]) == (1, rc.head_ip), status


def test_a_job_through_the_jobs_api_succeeds_and_its_logs_are_readable(
        core_v1: Any, sample: dict[str, Any]) -> None:
    rc = _up(core_v1, sample)
    gpu_pod = next(n for n, p in rc.pods.items() if p.metadata.labels.get("swarm.io/group") == "gpu")
    info, result, logs = _run_job(rc.head_ip)
    assert info["status"] == "SUCCEEDED", logs
    assert info["driver_exit_code"] == 0
    assert result == {"gpu_pod": gpu_pod, "cuda": "0", "squares": [0, 1, 4, 9], "nodes": 3}, logs
    assert "Connected to Ray cluster" in logs


def test_a_killed_raylet_fails_its_pod_and_the_operator_replaces_it(
        core_v1: Any, sample: dict[str, Any]) -> None:
    namespace, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    before = _up(core_v1, sample)
    victim = next(n for n, p in before.pods.items() if p.metadata.labels.get("swarm.io/group") == "cpu")
    os.kill(raylet_pid(namespace, victim), signal.SIGKILL)
    start = time.monotonic()

    def replaced() -> list[str]:
        events = core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [e.message for e in events if e.reason == "Replacing" and victim in e.message]

    why = wait_for(f"the operator replacing {victim}", replaced, timeout=60)
    assert "pod Failed" in why[0], why
    after = _up(core_v1, sample)
    took = time.monotonic() - start
    print(f"\n[e2e] raylet killed → a new Ray node in the cluster after {took:.1f}s")
    new = set(after.pods) - set(before.pods)
    assert len(new) == 1 and victim not in after.pods
    (replacement,) = new
    assert after.pods[replacement].metadata.labels["swarm.io/group"] == "cpu"
    assert after.nodes[replacement].node_type == "cpu"
    assert after.dead[victim].node_id == before.nodes[victim].node_id, "the killed node is not reported DEAD"
    assert after.head_ip == before.head_ip


def test_a_deleted_head_is_replaced_and_the_cluster_serves_a_job_again(
        core_v1: Any, sample: dict[str, Any]) -> None:
    namespace = sample["metadata"]["namespace"]
    before = _up(core_v1, sample)
    head = next(n for n, p in before.pods.items() if p.metadata.labels["swarm.io/node-type"] == "head")
    old_uid = before.pods[head].metadata.uid
    core_v1.delete_namespaced_pod(head, namespace)
    start = time.monotonic()
    wait_for("a new head pod", lambda: (p := core_v1.read_namespaced_pod(head, namespace)).metadata.uid != old_uid
             and p, timeout=60)
    # Without GCS fault tolerance the old workers cannot join the new GCS: they are replaced too.
    after = _up(core_v1, sample, timeout=180)
    took = time.monotonic() - start
    print(f"\n[e2e] head deleted → new head, {len(after.nodes) - 1} new workers joined after {took:.1f}s")
    assert after.pods[head].metadata.uid != old_uid
    assert not (set(after.pods) - {head}) & set(before.pods), "an old worker is still there"
    info, result, logs = _run_job(after.head_ip)
    assert info["status"] == "SUCCEEDED", logs
    assert result["nodes"] == 3
