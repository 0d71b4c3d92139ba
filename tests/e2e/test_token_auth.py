"""A Ray token per cluster, on real Ray: two token-auth clusters, each with the Secret the operator made,
each autoscaled by the operator reading its own GCS with its own token; neither GCS takes the other's
token, nor none."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from swarm_operator.autoscaler.gcs import GcsAuthError, RayStateClient, RayStateError
from tests.e2e.helpers import POOL_LABEL, ProcessNodes, cluster_pods, is_ready
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

NAMES = ("tok-a", "tok-b")


def _manifest(name: str, pool: str) -> dict[str, Any]:
    placement = {"nodeSelector": {"swarm.io/process-node": "true", POOL_LABEL: pool},
                 "tolerations": [{"key": "swarm.io/process-node", "operator": "Exists", "effect": "NoSchedule"}]}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": name},
            "spec": {"auth": {"mode": "token"},
                     "head": {"resources": {"cpu": 1, "memory": "1Gi"}, "template": {"spec": placement}},
                     "workerGroups": [{"name": "cpu", "minReplicas": 0, "maxReplicas": 1,
                                       "resources": {"cpu": 1, "memory": "1Gi"}, "template": {"spec": placement}}],
                     "autoscaling": {"enabled": True, "intervalSeconds": 2}}}


@pytest.fixture(scope="module")
def clusters(custom_objects: Any, module_namespace: str, operator: Any,
             process_nodes: ProcessNodes) -> Iterator[list[str]]:
    for name in NAMES:
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL,
                                                       _manifest(name, process_nodes.pool))
    yield list(NAMES)
    for name in NAMES:
        custom_objects.delete_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL, name)


def _read(address: str, token: str | None) -> str:
    """'ok' or why the GCS refused."""
    client = RayStateClient(address, token=token) if token else RayStateClient(address)
    try:
        client.read()
        return "ok"
    except GcsAuthError as exc:
        return f"refused: {exc}"
    except RayStateError as exc:
        return f"error: {exc}"
    finally:
        client.close()


def test_each_cluster_has_its_own_token_and_the_autoscaler_reads_each_gcs_with_it(
        core_v1: Any, custom_objects: Any, module_namespace: str, clusters: list[str]) -> None:
    ns = module_namespace

    seen: dict[str, Any] = {}  # each cluster's last status, for the failure message

    def autoscaled(name: str) -> dict[str, Any] | None:
        status = custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}
        seen[name] = {"phase": status.get("phase"), "autoscaler": status.get("autoscaler"),
                      "conditions": status.get("conditions")}
        auto = status.get("autoscaler") or {}
        heads = [p for p in cluster_pods(core_v1, ns, name) if is_ready(p)]
        ok = status.get("phase") == "Running" and heads and auto.get("rayVersion") not in (None, "", "unknown") \
            and not auto.get("lastError")
        return status if ok else None

    try:
        statuses = {n: wait_for(f"{n} Running with the autoscaler reading its GCS", lambda n=n: autoscaled(n),
                                timeout=300, every=2.0) for n in clusters}
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last statuses: {seen}") from None
    tokens = {n: base64.b64decode(core_v1.read_namespaced_secret(f"{n}-ray-token", ns).data["token"]).decode()
              for n in clusters}
    assert tokens["tok-a"] != tokens["tok-b"]
    a, b = (f"{statuses[n]['head']['podIP']}:6379" for n in clusters)
    assert _read(a, tokens["tok-a"]) == "ok" and _read(b, tokens["tok-b"]) == "ok"
    assert _read(a, tokens["tok-b"]).startswith("refused"), "a GCS must not take another cluster's token"
    assert _read(b, "0" * 64).startswith("refused")
