"""A rolling update with autoscaling off never deletes a busy worker: real Ray on process nodes, the real operator.

Two cpu workers, one running a long task. A change to the group's pod template must replace the idle
worker first, then have Ray drain the busy one (PREEMPTION, a deadline): its task finishes, and only
then does its pod go.
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

NAME = "roll"
TASK_SECONDS = 40

def rollout_manifest(pool: str) -> dict[str, Any]:
    manifest = copy.deepcopy(sample_manifest(pool))
    manifest["metadata"]["name"] = NAME
    cpu = manifest["spec"]["workerGroups"][0]
    # `slot` keeps the task off the head (which has a CPU too); one slot per worker.
    cpu.update(replicas=2, minReplicas=2, maxReplicas=2, rayResources={"slot": 1})
    manifest["spec"]["workerGroups"] = [cpu]
    manifest["spec"]["autoscaling"] = {"enabled": False}
    manifest["spec"]["updateStrategy"] = {"type": "Rolling", "maxUnavailable": 1, "drainTimeoutSeconds": 300}
    return manifest


def test_a_template_change_replaces_the_idle_worker_first_and_drains_the_busy_one(
        core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any, process_nodes: ProcessNodes) -> None:
    ns = module_namespace
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, rollout_manifest(process_nodes.pool))
    try:
        ray = wait_ray_cluster(core_v1, ns, NAME, want=3, timeout=150)
        old_workers = {n for n in ray.pods if n.startswith(f"{NAME}-cpu-")}
        job = rayjobs.submit_job(ray.head_ip, "python -c " + shlex.quote(LONG_TASK % TASK_SECONDS))
        busy = wait_for("the long task started", lambda: started_on(rayjobs.job_logs(ray.head_ip, job)), timeout=60)
        assert busy in old_workers, busy
        (idle,) = old_workers - {busy}

        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME)
        groups = obj["spec"]["workerGroups"]
        groups[0]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
        custom_objects.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME,
                                                      {"spec": {"workerGroups": groups}})
        changed_at = time.time()

        # Until the job ends: when each old worker was first seen deleting (or gone), and whether
        # the busy one was ever seen deleting before its task finished.
        leaving: dict[str, float] = {}
        busy_seen_leaving: list[float] = []
        info: dict[str, Any] = {}
        deadline = time.monotonic() + TASK_SECONDS + 120
        while time.monotonic() < deadline:
            now = time.time()
            pods = {p.metadata.name: p for p in cluster_pods(core_v1, ns, NAME)}
            for name in old_workers:
                pod = pods.get(name)
                if name not in leaving and (pod is None or pod.metadata.deletion_timestamp is not None):
                    leaving[name] = now
                if name == busy and name in leaving:
                    busy_seen_leaving.append(now)
            info = rayjobs.job_info(ray.head_ip, job)
            if info["status"] in rayjobs.TERMINAL_JOB_STATES:
                break
            time.sleep(0.5)
        logs = rayjobs.job_logs(ray.head_ip, job)
        assert info.get("status") == "SUCCEEDED", logs
        line = next(ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT "))
        result = json.loads(line.split(" ", 1)[1])
        assert result["pod"] == busy, result
        # The idle worker went while the task ran; the busy one was never seen leaving before it finished.
        assert idle in leaving and changed_at <= leaving[idle] < result["finished"], (leaving, result)
        assert all(t >= result["finished"] for t in busy_seen_leaving), (busy_seen_leaving, result)

        # The busy worker is drained through Ray, then removed; the group ends up fully replaced.
        wait_for("the busy worker removed", lambda: busy not in {p.metadata.name
                                                                 for p in cluster_pods(core_v1, ns, NAME)},
                 timeout=90)
        removed_at = time.time()
        after = wait_ray_cluster(core_v1, ns, NAME, want=3, timeout=120)
        print(f"rollout figures: idle worker leaving {leaving[idle] - changed_at:.1f}s after the change; task done "
              f"{result['finished'] - changed_at:.1f}s after it; busy pod gone {removed_at - result['finished']:.1f}s "
              f"after the task; all replaced {time.time() - changed_at:.1f}s after the change")
        assert not old_workers & set(after.pods), sorted(after.pods)
        events = [e for e in core_v1.list_namespaced_event(ns).items if e.involved_object.name == NAME]
        draining = [e.message for e in events if e.reason == "Draining"]
        # Both went through Ray's drain: the busy worker's lets its task finish; the idle one's (IDLE_TERMINATION)
        # is refused had a task started there since Ray's state was read.
        assert any(busy in m and "running tasks finish" in m for m in draining), draining
        assert any(idle in m and "idle in Ray" in m for m in draining), draining
        deleted = " ".join(e.message for e in events if e.reason == "Deleted")
        assert idle in deleted and busy in deleted, deleted
        assert not [e.message for e in events if e.reason == "Replacing"], "no worker counted as failed"
    finally:
        delete_swarmcluster(core_v1, custom_objects, ns, NAME)
