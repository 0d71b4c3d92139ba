"""Ray is drained ahead of a disruption: real Ray on process nodes, the real operator.

A cluster autoscaler marks the node of a busy worker for removal (its ToBeDeletedByClusterAutoscaler taint). The
operator must have Ray drain that worker's node (PREEMPTION) at once: Ray shows it DRAINING while the task it
runs (max_retries=0) goes on and finishes; a replacement worker is made at once; the drained pod goes only after
the task. (preStop and grace periods run only under a kubelet: the kind tier's.)
"""

from __future__ import annotations

import copy
import json
import shlex
import time
from typing import Any

import pytest

from localcluster import rayjobs
from tests.e2e.helpers import (
    LONG_TASK,
    ProcessNodes,
    cluster_pods,
    delete_swarmcluster,
    sample_manifest,
    started_on,
    wait_ray_cluster,
)
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

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
