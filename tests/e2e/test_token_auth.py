"""A Ray token per cluster, on real Ray: two token-auth clusters, each with the Secret the operator made,
each autoscaled by the operator reading its own GCS with its own token; neither GCS takes the other's
token, nor none. SwarmJobs on such a cluster: every Jobs API call and the submitter pod carry its token."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.nodeagent import read_logs
from swarm_operator.autoscaler.gcs import GcsAuthError, RayStateClient, RayStateError
from swarm_operator.resources.pods import DASHBOARD_PORT
from tests.e2e.helpers import POOL_LABEL, ProcessNodes, cluster_pods, is_ready
from tests.e2e.swarmjobs import FAILS, SLEEPS, SUCCEEDS, Jobs
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


def _jobs_api(head_ip: str, path: str, token: str | None) -> tuple[int, Any]:
    """GET the head's Jobs API, with the token or without; (HTTP status, JSON body or text)."""
    req = urllib.request.Request(f"http://{head_ip}:{DASHBOARD_PORT}/api/jobs/{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:  # not answering (yet)
        return 0, str(exc)


def test_swarmjobs_on_a_token_cluster_carry_its_token_in_every_jobs_api_call_and_their_submitter_pod(
        core_v1: Any, custom_objects: Any, module_namespace: str, process_nodes: ProcessNodes,
        clusters: list[str]) -> None:
    ns = module_namespace
    head_ip = wait_for("tok-a's head running", lambda: (custom_objects.get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "tok-a").get("status") or {}).get("head", {}).get("podIP") if any(
        is_ready(p) for p in cluster_pods(core_v1, ns, "tok-a")) else None, timeout=300, every=2.0)
    token = base64.b64decode(core_v1.read_namespaced_secret("tok-a-ray-token", ns).data["token"]).decode()
    refused, _ = wait_for("the Jobs API answering", lambda: (r := _jobs_api(head_ip, "", None))[0] and r, timeout=60)
    assert refused in (401, 403), "the Jobs API must refuse a call without the token: else this test proves nothing"

    jobs = Jobs(custom_objects, core_v1, ns, process_nodes.pool)
    jobs.create_on("tok-a", "tok-http", SUCCEEDS)  # submit, then status reads
    jobs.create_on("tok-a", "tok-pod", SUCCEEDS, submissionMode="SubmitterPod")  # the pod submits, with the token
    jobs.create_on("tok-a", "tok-fail", FAILS)  # the driver's log, read once it failed
    jobs.create_on("tok-a", "tok-stop", SLEEPS)  # stop, on deletion
    try:
        for name in ("tok-http", "tok-pod"):
            done = wait_for(f"{name} Complete", jobs.deployment(name, "Complete"), timeout=240)
            assert done["jobStatus"] == "SUCCEEDED", done
        assert "submitted Ray job" in read_logs("tok-pod-1-submitter", ns)
        failed = wait_for("tok-fail Failed", jobs.deployment("tok-fail", "Failed"), timeout=240)
        assert "boom: the entrypoint failed on purpose" in failed["message"], failed["message"]
        running = wait_for("tok-stop Running", jobs.deployment("tok-stop", "Running"), timeout=240)
        jobs.delete("tok-stop")
        wait_for("tok-stop's Ray job STOPPED", lambda: (answer := _jobs_api(head_ip, running["jobId"], token))[0]
                 == 200 and answer[1]["status"] == "STOPPED", timeout=60)
        wait_for("tok-stop gone (its finalizer removed)", lambda: jobs.get("tok-stop") is None, timeout=60)
    finally:
        for name in ("tok-http", "tok-pod", "tok-fail", "tok-stop"):
            jobs.delete(name)
