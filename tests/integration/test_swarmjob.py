"""SwarmJob against a real API server, garbage collector and the operator, on kwok's fake nodes (no Ray): the
CRD's validation, creation and ownership of the job's own cluster, deletion, suspend and TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.operator_process import OperatorProcess
from swarm_operator.jobs.machine import STOP_WAIT_SECONDS
from swarm_operator.times import timestamp
from tests.integration.helpers import GROUP, JOB_PLURAL, REPO, VERSION, Cluster, Kubectl, SwarmJobs, wait_for

pytestmark = pytest.mark.integration
HEAD = {"head": {"resources": {"cpu": 1, "memory": "1Gi"}}}


@pytest.fixture
def swj(api_client: client.ApiClient, namespace: str, swc: Cluster) -> Iterator[SwarmJobs]:
    jobs = SwarmJobs(client.CustomObjectsApi(api_client), namespace)
    yield jobs
    for item in jobs.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, JOB_PLURAL)["items"]:
        print(f"swj {item['metadata']['name']} status={item.get('status')}")


def settled(swj: SwarmJobs, name: str) -> None:
    """Wait until the operator has nothing more to write: kwok's head runs no Ray, so the job waits for its Jobs
    API with the same status every turn. A status written by the test before that could be overwritten."""
    wait_for("the job waiting for the Jobs API", lambda: swj.status(name).get("unreadableSince"))


def cluster_exists(swc: Cluster, name: str) -> bool:
    try:
        swc.get(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


# -- the CRD --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, spec, field", [
    ("both", {"clusterSpec": HEAD, "clusterSelector": {"name": "c"}}, "spec.clusterSpec, spec.clusterSelector"),
    ("neither", {}, "spec.clusterSpec, spec.clusterSelector"),
    ("policy", {"clusterSelector": {"name": "c"}, "deletionPolicy": {"onSuccess": "DeleteNone"}},
     "spec.deletionPolicy"),
    ("a" * 39, {"clusterSpec": HEAD}, "metadata.name"),
    ("groups", {"clusterSpec": {**HEAD, "workerGroups": [{"name": "g" * 30, "minReplicas": 0}]}},
     "spec.clusterSpec.workerGroups"),
    ("bad-mode", {"clusterSpec": HEAD, "submissionMode": "Sidecar"}, "spec.submissionMode"),
    ("bad-cluster", {"clusterSpec": {"head": {"resources": {"cpu": 0}}}}, "spec.clusterSpec.head.resources.cpu"),
    ("bad-grace", {"clusterSpec": HEAD, "unschedulableGracePeriodSeconds": -1}, "spec.unschedulableGracePeriodSeconds"),
])
def test_the_crd_refuses_a_bad_job_naming_the_field(swj: SwarmJobs, name: str, spec: dict[str, Any],
                                                    field: str) -> None:
    if name == "groups":
        name = "g" * 20
    with pytest.raises(ApiException) as err:
        swj.create(name, **spec)
    assert err.value.status == 422
    assert field in str(err.value.body), err.value.body


def test_the_sample_job_is_accepted(kubectl: Kubectl, namespace: str) -> None:
    res = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(REPO / "manifests/samples/jobs/pi.yaml"))
    assert res.returncode == 0, res.stderr


def test_kubectl_get_swj_shows_the_job_columns(swj: SwarmJobs, kubectl: Kubectl, namespace: str) -> None:
    swj.create("cols", clusterSpec=HEAD, suspend=True)
    out = kubectl("get", "swj", "-n", namespace).stdout
    assert out.split()[:7] == ["NAME", "JOB", "STATUS", "DEPLOYMENT", "CLUSTER", "START", "END"], out


# -- with the operator ----------------------------------------------------------------------------------

def test_a_job_makes_its_own_cluster_owned_by_it_and_deletion_takes_it_along(
        swj: SwarmJobs, swc: Cluster, operator: OperatorProcess) -> None:
    made = swj.create("own", clusterSpec=HEAD)
    cluster = wait_for("the job's cluster", lambda: cluster_exists(swc, "own-1") and swc.get("own-1"))
    owner = cluster["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "SwarmJob", "own", made["metadata"]["uid"], True)
    assert cluster["metadata"]["labels"]["swarm.io/job"] == "own"
    wait_for("its head pod", lambda: swc.heads("own-1"))
    st = swj.status("own")
    assert (st["jobDeploymentStatus"], st["attempt"], st["clusterName"]) == ("Initializing", 1, "own-1")
    assert st["jobId"] == f"own-{made['metadata']['uid']}-1"
    assert (swj.get("own") or {})["metadata"].get("finalizers") == ["swarm.io/stop-ray-job"]
    settled(swj, "own")
    deleted = time.monotonic()
    swj.delete("own")
    # kwok's head runs no Ray: nothing to stop gracefully, so the operator deletes the cluster at once and lets go.
    wait_for("its cluster deleted by the operator", lambda: not cluster_exists(swc, "own-1")
             or swc.get("own-1")["metadata"].get("deletionTimestamp"), timeout=20)
    wait_for("the job gone", lambda: swj.get("own") is None, timeout=20)
    assert time.monotonic() - deleted < STOP_WAIT_SECONDS
    wait_for("its cluster gone", lambda: not cluster_exists(swc, "own-1"), timeout=90)
    reasons = [e.reason for e in swc.core.list_namespaced_event(swc.ns).items if e.involved_object.name == "own"]
    assert "Deleted" in reasons, reasons


def test_suspend_creates_nothing_and_suspending_deletes_the_cluster(
        swj: SwarmJobs, swc: Cluster, operator: OperatorProcess) -> None:
    swj.create("sus", clusterSpec=HEAD, suspend=True)
    wait_for("Suspended", lambda: swj.status("sus").get("jobDeploymentStatus") == "Suspended")
    time.sleep(2)
    assert not cluster_exists(swc, "sus-1")
    conditions = {c["type"]: c["status"] for c in swj.status("sus")["conditions"]}
    assert conditions == {"Complete": "False", "Failed": "False", "Suspended": "True"}
    swj.patch_spec("sus", {"suspend": False})
    wait_for("the cluster of the resumed job", lambda: cluster_exists(swc, "sus-1"))
    assert swj.status("sus")["startTime"]
    swj.patch_spec("sus", {"suspend": True})
    wait_for("Suspended again", lambda: swj.status("sus").get("jobDeploymentStatus") == "Suspended")
    wait_for("its cluster deleted", lambda: not cluster_exists(swc, "sus-1"))
    assert "startTime" not in swj.status("sus")
    swj.patch_spec("sus", {"suspend": False})
    wait_for("a new attempt on a fresh cluster", lambda: cluster_exists(swc, "sus-2"))
    assert swj.status("sus")["failedAttempts"] == 0


def test_a_finished_job_deletes_its_cluster_then_itself_after_its_ttl(
        swj: SwarmJobs, swc: Cluster, operator: OperatorProcess) -> None:
    swj.create("ttl", clusterSpec=HEAD, ttlSecondsAfterFinished=3)
    wait_for("the job's cluster", lambda: cluster_exists(swc, "ttl-1"))
    settled(swj, "ttl")
    # Ray is not here: say the job succeeded as the operator would have recorded it.
    finished = float(int(time.time()))  # status times are whole seconds
    swj.patch_status("ttl", {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED",
                             "endTime": timestamp(finished)})
    wait_for("its finalizer gone: a finished job has nothing to stop", lambda: not (
        (swj.get("ttl") or {}).get("metadata", {}).get("finalizers")))
    wait_for("its cluster deleted (deletionPolicy DeleteCluster)", lambda: not cluster_exists(swc, "ttl-1"))
    wait_for("the job deleted by its TTL", lambda: swj.get("ttl") is None, timeout=30)
    assert time.time() - finished >= 3


def test_delete_none_keeps_the_cluster(swj: SwarmJobs, swc: Cluster, operator: OperatorProcess) -> None:
    swj.create("keep", clusterSpec=HEAD, deletionPolicy={"onSuccess": "DeleteNone"})
    wait_for("the job's cluster", lambda: cluster_exists(swc, "keep-1"))
    settled(swj, "keep")
    swj.patch_status("keep", {"jobDeploymentStatus": "Complete", "endTime": timestamp(time.time())})
    time.sleep(3)
    assert cluster_exists(swc, "keep-1") and swc.get("keep-1")["metadata"].get("deletionTimestamp") is None


def test_a_shared_cluster_job_carries_a_finalizer_and_never_touches_the_cluster(
        swj: SwarmJobs, swc: Cluster, operator: OperatorProcess) -> None:
    swc.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": "shared"},
                "spec": HEAD})
    swj.create("user", clusterSelector={"name": "shared"})
    wait_for("the stop-ray-job finalizer", lambda: "swarm.io/stop-ray-job" in (
        (swj.get("user") or {})["metadata"].get("finalizers") or []))
    settled(swj, "user")
    deleted = time.monotonic()
    swj.delete("user")
    # kwok's head runs no Ray: its Jobs API never answers, so the job waits for it, but only so long.
    wait_for("the job gone", lambda: swj.get("user") is None, timeout=STOP_WAIT_SECONDS + 30)
    assert time.monotonic() - deleted >= STOP_WAIT_SECONDS - 2
    assert cluster_exists(swc, "shared") and swc.get("shared")["metadata"].get("deletionTimestamp") is None
