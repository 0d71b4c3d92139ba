"""A worker pod deleted while its Ray node runs a task: the Ray container's preStop drains the node and holds the
kubelet's SIGTERM until the task is done, within the grace period. Only a kubelet runs preStop hooks and grace
periods, so this case lives on the kind tier (process nodes stop a pod at once).

Without the preStop the kubelet would SIGTERM `ray start` at once, the raylet would die with it, and the task,
which allows no retry (max_retries=0), would fail the job.
"""

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
from tests.kind.helpers import swarmcluster, wait_ray_cluster

pytestmark = [pytest.mark.kind, pytest.mark.timeout(480)]

NAME = "prestop"
TASK_SECONDS = 25  # within the default 60 s grace period


def test_a_deleted_busy_worker_finishes_its_task_before_it_stops(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, namespace: str) -> None:
    manifest = swarmcluster(NAME, kind_tier.ray_image)
    spec = manifest["spec"]
    cpu = spec["workerGroups"][0]
    cpu.update(replicas=1, minReplicas=1, maxReplicas=1, rayResources={"slot": 1})
    spec["workerGroups"] = [cpu]
    spec["autoscaling"] = {"enabled": False}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    try:
        ray = wait_ray_cluster(kind_tier, core_v1, namespace, NAME, want=2)
        with kind_tier.dashboard(namespace, ray.head) as dashboard:
            job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(LONG_TASK % TASK_SECONDS))
            busy = wait_for("the long task started", lambda: started_on(rayjobs.job_logs(dashboard, job)),
                            timeout=90)
            assert ray.pods[busy].spec.termination_grace_period_seconds == 60
            core_v1.delete_namespaced_pod(busy, namespace)  # as a user or a controller would: the pod's grace
            deleted_at = time.time()
            gone_at = 0.0
            info: dict[str, Any] = {}
            deadline = time.monotonic() + TASK_SECONDS + 90
            while time.monotonic() < deadline:
                if not gone_at and busy not in {p.metadata.name for p in cluster_pods(core_v1, namespace, NAME)}:
                    gone_at = time.time()
                info = rayjobs.job_info(dashboard, job)
                if info["status"] in rayjobs.TERMINAL_JOB_STATES and gone_at:
                    break
                time.sleep(1)
            logs = rayjobs.job_logs(dashboard, job)
        assert info.get("status") == "SUCCEEDED", logs
        result = json.loads(next(ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT ")).split(" ", 1)[1])
        assert result["pod"] == busy, result
        print(f"preStop figures: task done {result['finished'] - deleted_at:.1f}s after the deletion; pod gone "
              f"{gone_at - deleted_at:.1f}s after it")
        assert gone_at >= result["finished"], "the pod stopped before its task finished"
        assert gone_at - deleted_at < 60 + 10, "the preStop returned once the raylet ended, not at the grace's end"
    finally:
        delete_swarmcluster(core_v1, custom_objects, namespace, NAME)
