"""What the kind tier's tests share: SwarmClusters sized for kind's two workers, and reaching Ray in its pods.

The host does not route to kind's pod network, so the tests reach Ray the way a kind user does: the GCS from
inside the head's container (`kubectl exec`), the Jobs API through `kubectl port-forward`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from hack.generate import helm_binary
from localcluster import image, kind, rayjobs, versions
from localcluster.docker_engine import DockerEngine
from swarm_operator.resources.pods import DASHBOARD_PORT, GCS_PORT
from tests.e2e import helpers as e2e_helpers
from tests.e2e.helpers import RayCluster
from tests.integration.helpers import REPO

RAY_CONTAINER = "ray"
CHART = REPO / "helm" / "swarm-operator"
OPERATOR_IMAGE = image.KIND_OPERATOR_IMAGE
GPU_TOLERATION = {"key": kind.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass
class KindTier:
    """The session's kind cluster and what runs in it."""

    cluster: kind.KindCluster
    engine: DockerEngine
    ray_image: str
    redis_image: str
    operator_image: str
    upgrade_image: Future[str]  # another release of the operator's image (image.build_upgrade_image), built and
    # loaded into the CPU worker behind the set-up
    release: str = "swarm-operator"
    operator_namespace: str = "swarm-operator"

    def exec(self, namespace: str, pod: str, *cmd: str, timeout: float = 120) -> str:
        """Run ``cmd`` in the Ray container of ``pod``; its stdout (raises with stderr on failure)."""
        return self.cluster.kubectl("exec", "-n", namespace, pod, "-c", RAY_CONTAINER, "--", *cmd, timeout=timeout)

    def ray_nodes(self, namespace: str, head_pod: str, head_ip: str) -> list[rayjobs.RayNode]:
        """Every node the head's GCS knows (dead ones included), asked from inside the head's container."""
        return rayjobs.parse_nodes(self.exec(namespace, head_pod, "python", "-c", rayjobs.GCS_PROBE,
                                             f"{head_ip}:{GCS_PORT}", timeout=60))

    @contextlib.contextmanager
    def dashboard(self, namespace: str, pod: str) -> Iterator[str]:
        """`kubectl port-forward` to the head's dashboard; yields its local host:port (for rayjobs)."""
        proc = subprocess.Popen([str(versions.tool_path("kubectl")), "--kubeconfig", str(self.cluster.kubeconfig),
                                 "port-forward", "-n", namespace, f"pod/{pod}", f":{DASHBOARD_PORT}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # Forwarding from 127.0.0.1:41735 -> 8265
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert found, f"kubectl port-forward said {line!r}"
            yield f"127.0.0.1:{found.group(1)}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


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


def operator_values(tag: str) -> dict[str, Any]:
    repository, _, version = tag.rpartition(":")
    return {
        "image": {"repository": repository, "tag": version, "pullPolicy": "Never"},
        "nodeSelector": {kind.POOL_LABEL: "cpu"},
        # Tiny requests: the machine has 2 shared cores, and the limits are what the operator may use.
        "resources": {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "terminationGracePeriodSeconds": 10,
    }


def helm(tier: KindTier, *args: str, values: dict[str, Any] | None = None, timeout: float = 300) -> str:
    binary = helm_binary()
    assert binary is not None
    extra = ["--values", "-"] if values is not None else []
    res = subprocess.run([binary, "--kubeconfig", str(tier.cluster.kubeconfig), *args, *extra],
                         input=json.dumps(values or {}), capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def install_operator(tier: KindTier, tag: str) -> None:
    """`helm upgrade --install` of the chart with the operator image ``tag``, waited until rolled out."""
    helm(tier, "upgrade", "--install", tier.release, str(CHART), "--namespace", tier.operator_namespace,
         "--create-namespace", "--skip-crds", "--wait", "--timeout", "4m", values=operator_values(tag))
    tier.cluster.kubectl("-n", tier.operator_namespace, "rollout", "status", f"deployment/{tier.release}",
                         "--timeout=120s")
