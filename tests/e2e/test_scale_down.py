"""Every scale-down path drains first: real Ray on process nodes, the real operator.

Each test starts two cpu workers, one running a long task that may not be retried (max_retries=0), the other
idle, then scales down one way: replicas lowered (autoscaling off), maxReplicas lowered (autoscaling on), the
group removed, the cluster suspended. The idle worker goes while the task runs; the busy one is drained by Ray
(PREEMPTION) and its pod is never seen deleting before the task has finished, so the task succeeds. Ray's own
retries cannot hide a killed worker here: the task allows none.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
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

TASK_SECONDS = 25
AUTOSCALING_OFF = {"enabled": False}
# Idle workers are not the autoscaler's to remove during the test: only the lowered maxReplicas removes them.
AUTOSCALING_ON = {"enabled": True, "intervalSeconds": 2, "idleTimeoutSeconds": 600}


def two_workers(pool: str, name: str, autoscaling: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(sample_manifest(pool))
    manifest["metadata"]["name"] = name
    cpu = manifest["spec"]["workerGroups"][0]
    cpu.update(replicas=2, minReplicas=0, maxReplicas=2, rayResources={"slot": 1})  # one task slot per worker
    manifest["spec"]["workerGroups"] = [cpu]
    manifest["spec"]["autoscaling"] = autoscaling
    manifest["spec"]["updateStrategy"] = {"drainTimeoutSeconds": 300}
    return manifest


@dataclass(frozen=True)
class Run:
    """What one scale-down did: when each pod was first seen deleting or gone, and the task's result."""

    busy: str
    idle: str
    head: str
    changed_at: float
    finished: float  # when the long task returned (epoch seconds, on the worker)
    leaving: dict[str, float]
    busy_gone_at: float
    head_ip: str
    guard: str | None  # a job that keeps a suspended cluster's head until the test stops it


def scale_down_while_busy(core: Any, custom: Any, ns: str, pool: str, name: str, autoscaling: dict[str, Any],
                          change: Callable[[dict[str, Any]], dict[str, Any]], guard: bool = False) -> Run:
    """Start the long task on one of two workers, apply `change(stored spec) -> merge patch of spec`, and follow
    the pods until the task's job ends; then wait until the busy worker's pod is gone.

    The job's driver runs on the head, which stays on every path (suspend too: while a job runs there): its
    SUCCEEDED must be read while the head pod is there and not deleting. With `guard`, a second job (no Ray work:
    it only sleeps) runs on the head until the test stops it: once the long job has ended, a suspended cluster's
    head would otherwise go at the operator's next read of the Jobs API, maybe before this test's own read."""
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, two_workers(pool, name, autoscaling))
    ray = wait_ray_cluster(core, ns, name, want=3, timeout=150)
    workers = {n for n in ray.pods if n != ray.head}
    guard_job = rayjobs.submit_job(ray.head_ip, "sleep 600") if guard else None
    job = rayjobs.submit_job(ray.head_ip, "python -c " + shlex.quote(LONG_TASK % TASK_SECONDS))
    busy = wait_for("the long task started", lambda: started_on(rayjobs.job_logs(ray.head_ip, job)), timeout=60)
    assert busy in workers, busy
    (idle,) = workers - {busy}

    stored = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": change(stored["spec"])})
    changed_at = time.time()
    leaving: dict[str, float] = {}
    info: dict[str, Any] = {}
    logs = ""

    def note_leaving() -> dict[str, Any]:
        now, pods = time.time(), {p.metadata.name: p for p in cluster_pods(core, ns, name)}
        for pod_name in (*workers, ray.head):
            pod = pods.get(pod_name)
            if pod_name not in leaving and (pod is None or pod.metadata.deletion_timestamp is not None):
                leaving[pod_name] = now
        return pods

    deadline = time.monotonic() + TASK_SECONDS + 60
    while time.monotonic() < deadline:
        note_leaving()
        info = rayjobs.job_info(ray.head_ip, job)
        if info.get("status") in rayjobs.TERMINAL_JOB_STATES:
            logs = rayjobs.job_logs(ray.head_ip, job)
            break
        time.sleep(0.5)
    # Listed after the result was read: a head here and not deleting now was so when the driver reported.
    head_after = note_leaving().get(ray.head)
    assert head_after is not None and ray.head not in leaving, (info, leaving)
    assert info.get("status") == "SUCCEEDED", (info, logs, leaving)
    line = next(ln for ln in logs.splitlines() if ln.startswith("E2E-RESULT "))
    result = json.loads(line.split(" ", 1)[1])
    assert result["pod"] == busy, result
    wait_for("the busy worker's pod gone", lambda: busy not in note_leaving(), timeout=90)
    run = Run(busy, idle, ray.head, changed_at, result["finished"], leaving, time.time(), ray.head_ip, guard_job)
    print(f"{name}: idle worker leaving {leaving.get(idle, math.nan) - changed_at:.1f}s after the change; task done "
          f"{run.finished - changed_at:.1f}s after it; busy pod gone {run.busy_gone_at - run.finished:.1f}s after "
          "the task")
    return run


def assert_drained_first(core: Any, ns: str, name: str, run: Run) -> None:
    """The idle worker went while the task ran; the busy one not before it finished, and through Ray's drain."""
    assert run.idle in run.leaving and run.changed_at <= run.leaving[run.idle] < run.finished, run
    assert run.leaving.get(run.busy, run.busy_gone_at) >= run.finished, run

    def events() -> list[Any]:
        return [e for e in core.list_namespaced_event(ns).items if e.involved_object.name == name]

    # The Deleted Event is posted once the API server answered the deletion: a pod stopped at once (its raylet
    # drained and gone) can vanish from the list before that Event is there.
    wait_for("Deleted Events naming both workers", lambda: (d := " ".join(
        e.message for e in events() if e.reason == "Deleted")) and run.idle in d and run.busy in d and d, timeout=30)
    listed = events()
    draining = [e.message for e in listed if e.reason == "Draining"]
    assert any(run.busy in m and "running tasks finish" in m for m in draining), draining
    assert any(run.idle in m and "idle in Ray" in m for m in draining), draining
    assert not [e.message for e in listed if e.reason == "Replacing"], "no worker counted as failed"


def test_replicas_lowered_drains_the_busy_worker(core_v1: Any, custom_objects: Any, module_namespace: str,
                                                 operator: Any, process_nodes: ProcessNodes) -> None:
    def to_zero(spec: dict[str, Any]) -> dict[str, Any]:
        groups = spec["workerGroups"]
        groups[0]["replicas"] = 0
        return {"workerGroups": groups}

    ns, name = module_namespace, "lowered"
    try:
        run = scale_down_while_busy(core_v1, custom_objects, ns, process_nodes.pool, name, AUTOSCALING_OFF, to_zero)
        assert_drained_first(core_v1, ns, name, run)
        assert {p.metadata.name for p in cluster_pods(core_v1, ns, name)} == {run.head}
    finally:
        delete_swarmcluster(core_v1, custom_objects, ns, name)


def test_max_replicas_lowered_with_autoscaling_drains_the_busy_worker(
        core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any, process_nodes: ProcessNodes) -> None:
    def max_zero(spec: dict[str, Any]) -> dict[str, Any]:
        groups = spec["workerGroups"]
        del groups[0]["replicas"]  # it may not exceed maxReplicas; with autoscaling on, status holds the target
        groups[0]["maxReplicas"] = 0
        return {"workerGroups": groups}

    ns, name = module_namespace, "capped"
    try:
        run = scale_down_while_busy(core_v1, custom_objects, ns, process_nodes.pool, name, AUTOSCALING_ON, max_zero)
        assert_drained_first(core_v1, ns, name, run)
        assert {p.metadata.name for p in cluster_pods(core_v1, ns, name)} == {run.head}
    finally:
        delete_swarmcluster(core_v1, custom_objects, ns, name)


def test_a_removed_group_drains_its_busy_worker(core_v1: Any, custom_objects: Any, module_namespace: str,
                                                operator: Any, process_nodes: ProcessNodes) -> None:
    ns, name = module_namespace, "removed"
    try:
        run = scale_down_while_busy(core_v1, custom_objects, ns, process_nodes.pool, name, AUTOSCALING_OFF,
                                    lambda spec: {"workerGroups": []})
        assert_drained_first(core_v1, ns, name, run)
        assert {p.metadata.name for p in cluster_pods(core_v1, ns, name)} == {run.head}
    finally:
        delete_swarmcluster(core_v1, custom_objects, ns, name)


def test_suspend_drains_the_busy_worker_and_removes_the_head_last(
        core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any, process_nodes: ProcessNodes) -> None:
    """The busy worker is drained first; the head, where the jobs' drivers run, stays while a job runs there: the
    long job's SUCCEEDED is read with the head up, and the head goes once the guard job is stopped too."""
    ns, name = module_namespace, "paused"
    try:
        run = scale_down_while_busy(core_v1, custom_objects, ns, process_nodes.pool, name, AUTOSCALING_OFF,
                                    lambda spec: {"suspend": True}, guard=True)
        assert_drained_first(core_v1, ns, name, run)
        assert run.guard is not None

        def events(reason: str) -> list[str]:
            return [e.message for e in core_v1.list_namespaced_event(ns).items
                    if e.involved_object.name == name and e.reason == reason]

        # No worker left: the head stays for the guard job, and says so.
        stays = wait_for("SuspendWaiting naming the guard job", lambda: [
            m for m in events("SuspendWaiting") if f"Ray job(s) {run.guard} run" in m], timeout=15)
        head = {p.metadata.name: p for p in cluster_pods(core_v1, ns, name)}.get(run.head)
        assert head is not None and head.metadata.deletion_timestamp is None, stays
        assert not [p.metadata.name for p in cluster_pods(core_v1, ns, name)
                    if p.metadata.name != run.head and p.metadata.deletion_timestamp is None], "no worker left"

        def suspended_message() -> str:
            obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            return str(next(c for c in obj["status"]["conditions"] if c["type"] == "Suspended")["message"])
        # The turn that posts the Event writes status after it.
        wait_for("the Suspended condition naming the guard job",
                 lambda: f"the head stays while Ray job(s) {run.guard} run" in suspended_message(), timeout=10)

        rayjobs.stop_job(run.head_ip, run.guard)
        stopped_at = time.time()
        wait_for("every pod gone", lambda: not cluster_pods(core_v1, ns, name), timeout=60)
        print(f"{name}: head gone {time.time() - stopped_at:.1f}s after the guard job was stopped")
        assert not events("SuspendTimedOut"), "the head went within the bound, once no job ran"
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        assert obj["status"]["phase"] == "Suspended", obj["status"]
    finally:
        delete_swarmcluster(core_v1, custom_objects, ns, name)
