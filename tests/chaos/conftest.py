"""Fixtures of the chaos tier: the integration tier's cluster and namespaces, the real operator
as a process that the tests kill, and the local cluster's control plane, which they restart.

Every test here is marked ``chaos`` (``-m "not chaos"`` deselects the tier); the one that runs
real Ray on process nodes is also marked ``ray``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.cluster import LocalCluster
from localcluster.operator_process import OperatorProcess
from tests.chaos.helpers import Api, seed

# The integration and end-to-end tiers' fixtures, imported so that pytest finds them here too.
from tests.e2e.conftest import process_nodes  # noqa: F401
from tests.integration.conftest import (  # noqa: F401
    api_client,
    core_v1,
    crd,
    custom_objects,
    kubeconfig,
    kubectl,
    local_tools_built,
    namespace,
    namespaces,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.chaos)


def pytest_report_header() -> str:
    return f"chaos seed: {seed()} (set CHAOS_SEED to change it)"


@pytest.fixture
def api(api_client: client.ApiClient, namespace: str) -> Api:  # noqa: F811
    return Api(api_client, namespace)


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def operator_factory(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorFactory]:  # noqa: F811
    """Make (not start) operators watching the test's namespace; each is stopped at the end."""
    made: list[OperatorProcess] = []

    def make(log_name: str = "operator.log", extra: list[str] | None = None) -> OperatorProcess:
        proc = OperatorProcess(kubeconfig, [namespace], tmp_path / log_name, extra=extra)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture(scope="session")
def local_cluster(kubeconfig: str) -> LocalCluster:  # noqa: F811
    """The local cluster the tests run against, for restarting its components; skips on any other cluster."""
    cluster = LocalCluster.from_env()
    if not cluster.exists() or os.path.realpath(kubeconfig) != os.path.realpath(cluster.kubeconfig):
        pytest.skip("restarting control-plane components needs the local cluster (not SWARM_TEST_KUBECONFIG)")
    return cluster
