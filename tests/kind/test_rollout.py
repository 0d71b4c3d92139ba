"""A rolling template change on kind never deletes a busy worker first: the idle one is replaced, the busy one is
drained through Ray (its task finishes), and only then does its pod go, with the kubelet's grace period."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

import pytest

from localcluster import rayjobs
from localcluster.kind_tier import KindTier
from tests.e2e.helpers import LONG_TASK, cluster_pods, delete_swarmcluster, started_on
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for
from tests.kind.helpers import swarmcluster, wait_ray_cluster, watch_job

pytestmark = [pytest.mark.kind, pytest.mark.timeout(480)]

NAME = "roll"
TASK_SECONDS = 40


def test_a_template_change_drains_the_busy_worker_after_the_idle_one(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, namespace: str) -> None:
    manifest = swarmcluster(NAME, kind_tier.ray_image)
    spec = manifest["spec"]
    cpu = spec["workerGroups"][0]
    cpu.update(replicas=2, minReplicas=2, maxReplicas=2)
    spec["workerGroups"] = [cpu]
    spec["autoscaling"] = {"enabled": False}
    spec["updateStrategy"] = {"type": "Rolling", "maxUnavailable": 1, "drainTimeoutSeconds": 300}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    try:
        ray = wait_ray_cluster(kind_tier, core_v1, namespace, NAME, want=3)
        old_workers = {n for n in ray.pods if n.startswith(f"{NAME}-cpu-")}
        with kind_tier.dashboard(namespace, ray.head) as dashboard:
            job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(LONG_TASK % TASK_SECONDS))
            busy = wait_for("the long task started", lambda: started_on(rayjobs.job_logs(dashboard, job)),
                            timeout=90)
            assert busy in old_workers, busy
            (idle,) = old_workers - {busy}
            groups = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                 NAME)["spec"]["workerGroups"]
            groups[0]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
            custom_objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME,
                                                          {"spec": {"workerGroups": groups}})
            changed_at = time.time()
            leaving: dict[str, float] = {}

            def watch_leaving(now: float) -> None:
                pods = {p.metadata.name: p for p in cluster_pods(core_v1, namespace, NAME)}
                for name in old_workers:
                    pod = pods.get(name)
                    if name not in leaving and (pod is None or pod.metadata.deletion_timestamp is not None):
                        leaving[name] = now

            info, logs = watch_job(dashboard, job, TASK_SECONDS + 150, watch_leaving)
        assert info.get("status") == "SUCCEEDED", logs
        result = json.loads(next(ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT ")).split(" ", 1)[1])
        assert result["pod"] == busy, result
        assert idle in leaving and changed_at <= leaving[idle] < result["finished"], (leaving, result)
        assert leaving.get(busy, result["finished"]) >= result["finished"], "the busy worker left before its task"
        after = wait_ray_cluster(kind_tier, core_v1, namespace, NAME, want=3)
        assert not old_workers & set(after.pods), sorted(after.pods)
        events = [e for e in core_v1.list_namespaced_event(namespace).items if e.involved_object.name == NAME]
        draining = [e.message for e in events if e.reason == "Draining"]
        assert any(busy in m and "running tasks finish" in m for m in draining), draining
        assert any(idle in m and "idle in Ray" in m for m in draining), draining
    finally:
        delete_swarmcluster(core_v1, custom_objects, namespace, NAME)
