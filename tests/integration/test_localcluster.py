"""The local cluster's parts are real: API server, garbage collector, scheduler, kwok nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.apiserver import readyz
from localcluster.chaos import fail_pod
from localcluster.cluster import LocalCluster
from localcluster.kwokctl import COMPONENTS
from localcluster.nodes import GPU_LABEL
from localcluster.processes import pid_alive
from tests.integration.helpers import fake_nodes, pod, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kwok_nodes(core_v1: Any) -> dict[str, dict[str, str]]:
    nodes = fake_nodes(core_v1)
    if not nodes:
        pytest.skip("this cluster has no kwok-managed nodes (not a localcluster)")
    return nodes


def _running_pod(core: Any, namespace: str, name: str) -> Any:
    return wait_for(f"pod {name} Running",
                    lambda: (p := core.read_namespaced_pod(name, namespace)).status.phase == "Running" and p)


def test_readyz_answers_with_admin_credentials(api_client: client.ApiClient) -> None:
    assert readyz(api_client)
    authz: Any = client.AuthorizationV1Api(api_client)
    review = authz.create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "*", "group": "*", "resource": "*"}}})
    assert review.status.allowed, "the kubeconfig's credentials are not cluster-admin"


def test_garbage_collector_deletes_pod_owned_by_configmap(core_v1: Any, namespace: str) -> None:
    cm = core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {"k": "v"}})
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": cm.metadata.uid}
    core_v1.create_namespaced_pod(namespace, pod("dependent", owner=owner))
    core_v1.delete_namespaced_config_map("owner", namespace)

    def pod_gone() -> bool:
        try:
            core_v1.read_namespaced_pod("dependent", namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for("the garbage collector to delete the dependent pod", pod_gone, timeout=60)


def test_pod_is_scheduled_and_runs_on_a_fake_node(core_v1: Any, namespace: str,
                                                  kwok_nodes: dict[str, dict[str, str]]) -> None:
    core_v1.create_namespaced_pod(namespace, pod("plain"))
    running = _running_pod(core_v1, namespace, "plain")
    assert running.spec.node_name in kwok_nodes
    assert running.status.pod_ip, "kwok gives running pods an IP"
    assert all(c.ready for c in running.status.container_statuses)


def test_gpu_pods_land_only_on_gpu_nodes(core_v1: Any, namespace: str,
                                         kwok_nodes: dict[str, dict[str, str]]) -> None:
    gpu_nodes = {n for n, labels in kwok_nodes.items() if labels.get(GPU_LABEL) == "true"}
    assert gpu_nodes, "the default pool has GPU nodes"
    names = [f"gpu-{i}" for i in range(4)]
    for name in names:
        core_v1.create_namespaced_pod(namespace, pod(name, gpus=2))
    placed = {name: _running_pod(core_v1, namespace, name).spec.node_name for name in names}
    assert set(placed.values()) <= gpu_nodes, placed

    # More GPUs than any node has: the scheduler really counts nvidia.com/gpu.
    core_v1.create_namespaced_pod(namespace, pod("too-big", gpus=64))

    def unschedulable() -> bool:
        conditions = core_v1.read_namespaced_pod("too-big", namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" and "nvidia.com/gpu" in (c.message or "")
                   for c in conditions)

    wait_for("the scheduler to report Insufficient nvidia.com/gpu", unschedulable, timeout=30)


def test_failed_pod_stays_failed(api_client: client.ApiClient, core_v1: Any, namespace: str,
                                 kwok_nodes: dict[str, dict[str, str]]) -> None:
    core_v1.create_namespaced_pod(namespace, pod("crashy"))
    _running_pod(core_v1, namespace, "crashy")
    fail_pod(api_client, namespace, "crashy", exit_code=1)
    # kwok would act within milliseconds if one of its stages matched; give it ample time.
    time.sleep(3)
    failed = core_v1.read_namespaced_pod("crashy", namespace)
    assert failed.status.phase == "Failed"
    ready = {c.type: c.status for c in failed.status.conditions}
    assert ready["Ready"] == "False" and ready["ContainersReady"] == "False"
    (status,) = failed.status.container_statuses
    assert not status.ready and status.state.running is None
    assert status.state.terminated.exit_code == 1


def test_kwok_leaves_nodes_without_its_annotation_alone(core_v1: Any,
                                                       kwok_nodes: dict[str, dict[str, str]]) -> None:
    """Nodes that something else runs (process nodes) can join without kwok marking them Ready."""
    name = f"not-kwok-{uuid.uuid4().hex[:6]}"
    core_v1.create_node({"metadata": {"name": name}})
    try:
        time.sleep(2)  # kwok marks its nodes Ready within milliseconds
        conditions = core_v1.read_node(name).status.conditions or []
        assert not any(c.type == "Ready" and c.status == "True" for c in conditions)
    finally:
        core_v1.delete_node(name)


def test_cli_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path, local_tools_built: bool) -> None:
    """A second, separate cluster: `up` twice, then `down` ends every process and removes every file."""
    if not local_tools_built:
        pytest.skip("localcluster binaries are not built")
    root = tmp_path / "lc"
    env = {**os.environ, "SWARM_LOCALCLUSTER_DIR": str(root), "SWARM_LOCALCLUSTER_NAME": "downtest"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "localcluster", *args], env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    cluster = LocalCluster(name="downtest", root=root)
    pids: list[int] = []
    try:
        first = cli("up")
        assert first.returncode == 0, first.stdout + first.stderr
        pids = [p.pid for p in cluster.processes()]
        assert sorted(p.component for p in cluster.processes()) == sorted(COMPONENTS)
        assert all(p.alive for p in cluster.processes())

        start = time.monotonic()
        second = cli("up")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running" in second.stdout
        assert time.monotonic() - start < 20
        assert [p.pid for p in cluster.processes()] == pids, "a second up must not restart anything"
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in pids if pid_alive(pid)], "processes left running"
    assert cluster.stray_pids() == []
    assert not root.exists(), f"files left: {sorted(str(p) for p in root.rglob('*'))}"
