"""The chart, its RBAC and in-cluster config together: the operator's own pod, installed with Helm
onto a process node, runs `swarm-operator run` (the chart's command, from the local environment
instead of the image), logs in with its ServiceAccount's projected token through the API server
address every pod has (KUBERNETES_SERVICE_HOST/PORT), and brings a SwarmCluster up with real Ray.

Needs process nodes, so the local cluster: against another cluster (kind-e2e.sh) the chart's
operator is installed already and the whole tier runs with it (SWARM_TEST_OPERATOR=in-cluster).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from localcluster.nodeagent import NodeAgentProcess
from tests.e2e.chart import ChartOperator, environ, gone, is_local_cluster, jwt_claims, service_account_files
from tests.e2e.helpers import ProcessNodes, delete_swarmcluster, sample_manifest, wait_ray_cluster
from tests.integration.helpers import GROUP, PLURAL, VERSION, Namespaces, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

NAME = "in-cluster"


def small_cpu_cluster(pool: str) -> dict[str, Any]:
    """The sample without its GPU group: a head and one CPU worker on this session's CPU node."""
    manifest = copy.deepcopy(sample_manifest(pool))
    manifest["metadata"]["name"] = NAME
    manifest["spec"]["workerGroups"] = [g for g in manifest["spec"]["workerGroups"] if g["name"] == "cpu"]
    return manifest


@pytest.fixture
def chart_operator(kubeconfig: str, core_v1: Any, crd: dict[str, Any], namespaces: Namespaces,
                   request: pytest.FixtureRequest) -> Any:
    if not is_local_cluster(kubeconfig):
        # Elsewhere (kind-e2e.sh) the chart's operator is installed cluster-wide already and the
        # whole tier runs with it; a second one would reconcile the same SwarmClusters.
        pytest.skip("the chart's operator on a process node: the local cluster only")
    watched = namespaces.new("swarm-e2e")
    system: NodeAgentProcess = request.getfixturevalue("system_node")
    op = ChartOperator(kubeconfig, namespaces.new("swarm-op"), [watched], system.node)
    try:
        yield op
    finally:
        pods = [p.metadata.name for p in op.pods(core_v1)]
        op.uninstall(core_v1)
        assert all(gone(core_v1, op.namespace, p) for p in pods)


def test_chart_operator_runs_in_cluster_and_brings_up_ray(chart_operator: ChartOperator, core_v1: Any,
                                                         custom_objects: Any, process_nodes: ProcessNodes) -> None:
    op = chart_operator
    watched = op.watch[0]
    start = time.monotonic()
    pod = op.install(core_v1)
    print(f"\n[in-cluster] helm install → operator pod Ready: {op.installed_in:.1f}s")
    assert pod.spec.node_name == op.node
    assert pod.spec.service_account_name == op.fullname

    # The chart's command line, run from the local environment, with what a kubelet gives a pod.
    pid = op.main_pid(pod.metadata.name)
    env = environ(pid)
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "443")
    assert env["POD_NAMESPACE"] == op.namespace
    # No kubeconfig anywhere it could look: in-cluster config is the only way it can have logged in.
    assert "KUBECONFIG" not in env
    assert not Path(f"/proc/{pid}/root{env['HOME']}/.kube/config").exists()
    files = service_account_files(pid)
    assert files["namespace"] == op.namespace
    assert files["ca.crt"] == core_v1.read_namespaced_config_map("kube-root-ca.crt", op.namespace).data["ca.crt"]
    claims = jwt_claims(files["token"])
    assert claims["sub"] == op.service_account
    assert claims["kubernetes.io"]["pod"]["name"] == pod.metadata.name  # bound to this very pod

    # The operator (the only one serving `watched`) makes a Ray cluster of it.
    applied = time.monotonic()
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, watched, PLURAL,
                                                   small_cpu_cluster(process_nodes.pool))
    ray = wait_ray_cluster(core_v1, watched, NAME, want=2, timeout=150)
    took = time.monotonic() - applied
    assert {n.node_type for n in ray.nodes.values()} >= {"cpu"}
    assert all(p.spec.node_name == process_nodes.cpu.node for p in ray.pods.values())

    def running() -> bool:
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, NAME)
        return bool((obj.get("status") or {}).get("phase") == "Running")

    wait_for(f"{NAME} Running", running, timeout=60)
    print(f"[in-cluster] kubectl apply → 2 Ray nodes in the GCS: {took:.1f}s")

    logs = op.logs(core_v1)
    # Every request went through with the ServiceAccount's RBAC: no denial, no failed login.
    for bad in ("Forbidden", " 403", "LoginError", "Unauthorized", "Traceback"):
        assert bad not in logs, f"{bad!r} in the operator's log:\n{logs[-3000:]}"
    assert "swarm-operator started: namespaces=" + watched in logs
    # Its API calls (urllib3's DEBUG lines) went to the in-cluster address, named their field manager,
    # and were accepted.
    assert ('https://127.0.0.1:443 "POST /api/v1/namespaces/' + watched
            + '/pods?fieldManager=swarm-operator HTTP/1.1" 201') in logs
    assert f"/swarmclusters/{NAME}/status?fieldManager=swarm-operator HTTP/1.1\" 200" in logs
    assert f"logged in as {op.service_account}" in logs
    delete_swarmcluster(core_v1, custom_objects, watched, NAME)
    print(f"[in-cluster] whole test before uninstall: {time.monotonic() - start:.1f}s")
