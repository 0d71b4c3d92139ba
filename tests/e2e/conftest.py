"""Fixtures of the end-to-end tier: real Ray in the pods of process nodes, driven by the real operator.

The cluster fixtures are the integration tier's (a local cluster, or SWARM_TEST_KUBECONFIG).
On top: two process nodes for the session (a CPU node and a "GPU" node with fake
``nvidia.com/gpu``), tainted like the demo's and labelled with a pool of this session (a third,
"TPU" node with fake ``google.com/tpu`` for the module that asks for it), and the operator per
module, watching only that module's namespace.

The operator is a local subprocess by default. With ``SWARM_TEST_OPERATOR=in-cluster`` it is
the Helm chart's Deployment instead: on the local cluster it is installed per module onto the
session's system process node (its pod runs `swarm-operator run` and logs in with its
ServiceAccount); on another cluster (hack/kind-e2e.sh) the chart is installed already, and the
tier uses that operator.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from localcluster.nodeagent import NodeAgentProcess
from localcluster.operator_process import OperatorProcess
from tests.e2e.chart import ChartOperator, is_local_cluster
from tests.e2e.helpers import POOL_LABEL, ProcessNodes
from tests.e2e.redis_server import Redis, running_redis
from tests.e2e.swarmjobs import Jobs

# The integration tier's fixtures, imported so that pytest finds them here too (a conftest
# below the rootdir cannot use pytest_plugins).
from tests.integration.conftest import (  # noqa: F401
    api_client,
    core_v1,
    crd,
    custom_objects,
    kubeconfig,
    kubectl,
    local_tools_built,
    namespaces,
)
from tests.integration.helpers import GROUP, JOB_PLURAL, VERSION, Namespaces, wait_for

# As in the demo: the sample tolerates both taints; pods that cannot run here (no command) do not.
PROCESS_TAINT = "swarm.io/process-node=true:NoSchedule"
GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
TPU_TAINT = "google.com/tpu=present:NoSchedule"


@pytest.fixture(scope="session")
def process_nodes(kubeconfig: str) -> Iterator[ProcessNodes]:  # noqa: F811
    """A CPU node (4 CPUs, 8 GiB) and a GPU node (2 CPUs, 4 GiB, 2 GPUs) for the whole session.

    Their pool label is unique to the session: other process nodes on the same cluster (the
    demo's, another run's) are never chosen, even though they carry the same taint.
    """
    if os.geteuid() != 0:
        pytest.skip("process nodes need root (network namespaces)")
    if shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.skip("process nodes need iproute2's `ip`")
    pool = f"e2e-{uuid.uuid4().hex[:6]}"
    labels = {POOL_LABEL: pool}
    cpu = NodeAgentProcess(kubeconfig, f"{pool}-cpu", cpu="4", memory="8Gi", labels=labels, taints=[PROCESS_TAINT])
    gpu = NodeAgentProcess(kubeconfig, f"{pool}-gpu", cpu="2", memory="4Gi", gpus=2, labels=labels,
                           taints=[PROCESS_TAINT, GPU_TAINT])
    with ExitStack() as stack:
        for agent in (cpu, gpu):
            agent.start()
            stack.callback(_stop_agent, agent)
        yield ProcessNodes(pool, cpu, gpu)


@pytest.fixture(scope="module")
def tpu_node(kubeconfig: str, process_nodes: ProcessNodes) -> Iterator[NodeAgentProcess]:  # noqa: F811
    """A "TPU" node (2 CPUs, 4 GiB, 1 fake `google.com/tpu`, tainted like a TPU node pool) in the session's pool,
    for the module that asks for it. Only pods that tolerate the TPU taint land there."""
    agent = NodeAgentProcess(kubeconfig, f"{process_nodes.pool}-tpu", cpu="2", memory="4Gi", gpus=1,
                             gpu_resource="google.com/tpu", labels={POOL_LABEL: process_nodes.pool},
                             taints=[PROCESS_TAINT, TPU_TAINT])
    agent.start()
    try:
        yield agent
    finally:
        _stop_agent(agent)


@pytest.fixture(scope="session")
def system_node(kubeconfig: str, process_nodes: ProcessNodes) -> Iterator[NodeAgentProcess]:  # noqa: F811
    """A process node of its own for the operator's pod (SWARM_TEST_OPERATOR=in-cluster,
    test_operator_in_cluster.py), started when first asked for. Its pool label is not the session's,
    so no Ray pod lands there, and the operator's requests (100m CPU) take none of the room the tests
    size their Ray clusters to (a head and three 1-CPU workers fill the CPU node)."""
    pool = f"{process_nodes.pool}-system"
    agent = NodeAgentProcess(kubeconfig, pool, cpu="1", memory="2Gi", labels={POOL_LABEL: pool},
                             taints=[PROCESS_TAINT])
    agent.start()
    try:
        yield agent
    finally:
        _stop_agent(agent)


def _stop_agent(agent: NodeAgentProcess) -> None:
    assert agent.stop() == 0, f"node agent {agent.node} did not stop cleanly:\n{agent.log_tail()}"


@pytest.fixture(scope="module")
def redis(process_nodes: ProcessNodes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A Redis for GCS fault tolerance, per module that asks (after the process nodes: it listens on their bridge)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def module_namespace(namespaces: Namespaces) -> Iterator[str]:  # noqa: F811
    """One namespace per test module: its operator watches only it."""
    name = namespaces.new("swarm-e2e")
    yield name
    namespaces.delete(name)


@pytest.fixture(scope="module")
def operator(kubeconfig: str, module_namespace: str, core_v1: Any, namespaces: Namespaces,  # noqa: F811
             request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess | ChartOperator | None]:
    mode = os.environ.get("SWARM_TEST_OPERATOR", "local")
    if mode not in ("local", "in-cluster"):
        raise pytest.UsageError(f"SWARM_TEST_OPERATOR={mode!r}: want local or in-cluster")
    if mode == "in-cluster":
        if not is_local_cluster(kubeconfig):
            yield None  # installed with the cluster (hack/kind-e2e.sh), serving every namespace
            return
        # Its own release namespace: the module's namespace holds only the module's pods.
        node: NodeAgentProcess = request.getfixturevalue("system_node")
        chart = ChartOperator(kubeconfig, namespaces.new("swarm-op"), [module_namespace], node.node)
        try:
            chart.install(core_v1)
            yield chart
        finally:
            chart.uninstall(core_v1)
        return
    log: Path = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(kubeconfig, [module_namespace], log)
    try:
        op.start()
        yield op
    finally:
        op.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test (or its set-up or teardown) shows what the operator and the node agents did meanwhile: their
    logs' tails and the namespace's Events. CI keeps only this output; a flaky failure is diagnosed from it or not
    at all."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    op = funcargs.get("operator")
    if isinstance(op, OperatorProcess):
        report.sections.append(("operator log (last 120 lines)", op.log_tail(120)))
    nodes = funcargs.get("process_nodes")
    if isinstance(nodes, ProcessNodes):
        for agent in (nodes.cpu, nodes.gpu):
            report.sections.append((f"node agent {agent.node} (last 40 lines)", agent.log_tail(40)))
    ns, core = funcargs.get("module_namespace"), funcargs.get("core_v1")
    if ns and core is not None:
        report.sections.append((f"events in {ns}", namespace_events(core, ns)))


def namespace_events(core: Any, namespace: str, last: int = 80) -> str:
    try:
        events = core.list_namespaced_event(namespace).items
    except ApiException as exc:
        return f"(events not readable: {exc.status} {exc.reason})"
    events.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return "\n".join(f"{e.last_timestamp or e.event_time} {e.type} {e.reason} "
                     f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}" for e in events[-last:])


@pytest.fixture
def jobs(custom_objects: Any, core_v1: Any, module_namespace: str, operator: Any,  # noqa: F811
         process_nodes: ProcessNodes) -> Iterator[Jobs]:
    """SwarmJobs of the module's namespace; after each test every job is deleted and its pods waited out."""
    made = Jobs(custom_objects, core_v1, module_namespace, process_nodes.pool)
    yield made
    for item in custom_objects.list_namespaced_custom_object(GROUP, VERSION, module_namespace, JOB_PLURAL)["items"]:
        print(f"swj {item['metadata']['name']}: {item.get('status')}")
        made.delete(item["metadata"]["name"])
    wait_for("every job's pods gone", lambda: not core_v1.list_namespaced_pod(module_namespace).items, timeout=120)
