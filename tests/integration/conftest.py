"""Fixtures of the integration tier: a real API server, the CRD, a fresh namespace per test.

The cluster is the one named by ``SWARM_TEST_KUBECONFIG`` (kind, or any cluster: that
is how the same tests run elsewhere); without it a local kwok cluster is brought up
for the session, and down at its end if this session started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest
from kubernetes import client

from localcluster import versions
from localcluster.cluster import LocalCluster
from localcluster.operator_process import OperatorProcess
from tests.integration.helpers import (
    CRD_FILE,
    CRD_NAME,
    JOB_CRD_FILE,
    JOB_CRD_NAME,
    Cluster,
    Kubectl,
    Namespaces,
    await_gone,
    delete_namespace,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test in this folder needs an API server, whoever wrote it: mark it so
    # that `-m "not integration"` deselects the whole tier.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_tools_built() -> bool:
    """True when localcluster's binaries exist (kubectl, kwokctl, …), i.e. a local cluster can run."""
    return all(versions.tool_path(t).is_file() for t in ("kubectl", "kwokctl", "kube-apiserver", "etcd"))


@pytest.fixture(scope="session")
def kubeconfig(local_tools_built: bool) -> Iterator[str]:
    given = os.environ.get("SWARM_TEST_KUBECONFIG")
    if given:
        yield given
        return
    if not local_tools_built:
        pytest.skip("no cluster: set SWARM_TEST_KUBECONFIG, or run `python -m localcluster build` first")
    cluster = LocalCluster.from_env()
    with cluster.borrowed():
        yield str(cluster.kubeconfig)


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, persist_config=False)
    with cast(client.ApiClient, api) as opened:
        yield opened


# The API handles are typed Any: tests pass plain dicts as bodies, not the client's models.
@pytest.fixture(scope="session")
def core_v1(api_client: client.ApiClient) -> Any:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom_objects(api_client: client.ApiClient) -> Any:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str, local_tools_built: bool) -> Kubectl:
    """Run kubectl against the test cluster: ``kubectl("get", "nodes")`` → CompletedProcess (not checked)."""
    binary = str(versions.tool_path("kubectl")) if local_tools_built else shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not on PATH")

    def run(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, "--kubeconfig", kubeconfig, *args], input=input, capture_output=True,
                              text=True, timeout=timeout, check=False)

    return run


def _apply_crd(kubectl: Kubectl, api_client: client.ApiClient, path: Path, name: str) -> dict[str, Any]:
    """Server-side apply a CRD from crds/ and wait until it is Established; returns it as a dict."""
    res = kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=swarm-tests", "-f", str(path))
    assert res.returncode == 0, f"applying {path.name} failed: {res.stderr}"
    ext: Any = client.ApiextensionsV1Api(api_client)
    deadline = time.monotonic() + 30
    while True:
        obj = api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            ext.read_custom_resource_definition(name))
        conditions = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
        if conditions.get("Established") == "True":
            return cast(dict[str, Any], obj)
        assert time.monotonic() < deadline, f"CRD {name} not Established after 30s: {conditions}"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl, api_client: client.ApiClient) -> dict[str, Any]:
    """The SwarmCluster CRD (and the SwarmJob one, which the operator serves too), applied and Established;
    returns the SwarmCluster CRD."""
    _apply_crd(kubectl, api_client, JOB_CRD_FILE, JOB_CRD_NAME)
    return _apply_crd(kubectl, api_client, CRD_FILE, CRD_NAME)


@pytest.fixture(scope="session")
def namespaces(core_v1: Any, custom_objects: Any, crd: dict[str, Any]) -> Iterator[Namespaces]:
    pool = Namespaces(core_v1, custom_objects)
    yield pool
    for name in pool.created:
        delete_namespace(core_v1, custom_objects, name)
    await_gone(core_v1, custom_objects, pool.created)


@pytest.fixture
def namespace(namespaces: Namespaces) -> Iterator[str]:
    """A fresh namespace for one test; its deletion starts afterwards, cannot hang on finalizers,
    and is awaited (bounded) once at the end of the session."""
    name = namespaces.new()
    yield name
    namespaces.delete(name)


@pytest.fixture
def swc(api_client: client.ApiClient, namespace: str) -> Iterator[Cluster]:
    """SwarmClusters in the test's namespace; their state is printed, which pytest shows only on failure."""
    cluster = Cluster(api_client, namespace)
    yield cluster
    print(cluster.snapshot())


@pytest.fixture
def operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """Our operator as a local process serving the test's namespace."""
    proc = OperatorProcess(kubeconfig, [namespace], tmp_path / "operator.log")
    proc.start()
    yield proc
    proc.stop()
