"""What the kind tier's tests share: SwarmClusters sized for kind's two workers, and reaching Ray in its pods
(through localcluster.kind_tier's KindTier: the host does not route to kind's pod network).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from localcluster import kind, rayjobs, versions
from localcluster.kind_tier import RAY_CONTAINER, KindTier
from tests.e2e import helpers as e2e_helpers
from tests.e2e.helpers import RayCluster

GPU_TOLERATION = {"key": kind.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def resources(cpu: str = "1", memory: str = "1Gi", gpu: int = 0) -> dict[str, Any]:
    """Tiny requests, real limits: the machine's 2 shared cores schedule every pod, and Ray counts the limits."""
    res: dict[str, Any] = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"cpu": cpu, "memory": memory}}
    if gpu:
        res["gpu"] = gpu
    return res


def pool_template(pool: str, gpu: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeSelector": {kind.POOL_LABEL: pool}}
    if gpu:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"spec": spec}


def swarmcluster(name: str, ray_image: str, *, cpu: tuple[int, int] = (1, 1), gpu: tuple[int, int] = (1, 1),
                 idle_timeout: int = 10, worker_memory: str = "1Gi") -> dict[str, Any]:
    """A head and a CPU group on the CPU worker, a GPU group on the GPU worker; (min, max) replicas each."""
    return {
        "apiVersion": "swarm.io/v1alpha1",
        "kind": "SwarmCluster",
        "metadata": {"name": name},
        "spec": {
            "rayVersion": versions.RAY,
            "image": ray_image,
            "head": {"resources": resources(memory="2Gi"), "template": pool_template("cpu")},
            "workerGroups": [
                {"name": "cpu", "minReplicas": cpu[0], "maxReplicas": cpu[1],
                 "resources": resources(memory=worker_memory), "rayResources": {"slot": 1},
                 "template": pool_template("cpu")},
                {"name": "gpu", "minReplicas": gpu[0], "maxReplicas": gpu[1],
                 "resources": resources(memory=worker_memory, gpu=1), "template": pool_template("gpu", gpu=True)},
            ],
            "autoscaling": {"enabled": True, "idleTimeoutSeconds": idle_timeout, "intervalSeconds": 1,
                            "scaleDownStabilizationSeconds": 5},
        },
    }


def wait_ray_cluster(tier: KindTier, core: Any, namespace: str, name: str, want: int,
                     timeout: float = 240.0) -> RayCluster:
    """tests/e2e's wait, asking the GCS from inside the head's container."""
    return e2e_helpers.wait_ray_cluster(core, namespace, name, want, timeout, ray_nodes=lambda head: tier.ray_nodes(
        namespace, head.metadata.name, head.status.pod_ip))


def run_job(tier: KindTier, namespace: str, head: str, driver: str, timeout: float = 240,
            while_waiting: Callable[[], object] | None = None) -> str:
    """Submit ``driver`` through the Jobs API (a port-forward to the head) and wait for it; its logs. Fails
    unless it SUCCEEDED."""
    with tier.dashboard(namespace, head) as dashboard:
        job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(driver))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = rayjobs.job_info(dashboard, job)
            if info["status"] in rayjobs.TERMINAL_JOB_STATES:
                logs = rayjobs.job_logs(dashboard, job)
                assert info["status"] == "SUCCEEDED", f"{info.get('message')}\n{logs}"
                return logs
            if while_waiting is not None:
                while_waiting()
            time.sleep(1)
    raise AssertionError(f"job {job} did not end in {timeout:.0f}s")


def watch_job(dashboard: str, job: str, timeout: float, each: Callable[[float], None]) -> tuple[dict[str, Any], str]:
    """Read the job once a second until it ends or ``timeout`` passes, calling ``each(time.time())`` before every
    read (what a test watches meanwhile); its last info and its logs."""
    info: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        each(time.time())
        info = rayjobs.job_info(dashboard, job)
        if info["status"] in rayjobs.TERMINAL_JOB_STATES:
            break
        time.sleep(1)
    return info, rayjobs.job_logs(dashboard, job)


def kill_ray_container(tier: KindTier, pod: Any) -> None:
    """SIGKILL the main process of ``pod``'s Ray container from its kind node, as the kernel's OOM killer would;
    the container ends with exit code 137."""
    tier.engine.docker("exec", pod.spec.node_name, "sh", "-c",
                       "kill -9 $(crictl inspect -o go-template --template '{{.info.pid}}' "
                       f"$(crictl ps -q --name {RAY_CONTAINER} --label io.kubernetes.pod.name={pod.metadata.name}))")
