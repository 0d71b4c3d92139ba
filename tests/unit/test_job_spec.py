"""Reading a SwarmJob (jobs/spec.py), its status (jobs/status.py) and what it sends Ray (jobs/rayapi.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.kueue import EXTERNAL_FRAMEWORKS
from swarm_operator.jobs.cluster import build_job_cluster, workers_to_zero
from swarm_operator.jobs.machine import JobState
from swarm_operator.jobs.rayapi import submission_body, submitted_at
from swarm_operator.jobs.spec import (
    DEFAULT_UNSCHEDULABLE_GRACE_SECONDS,
    MAX_SECONDS,
    OwnCluster,
    SharedCluster,
    parse_job,
)
from swarm_operator.jobs.status import bounded, cluster_view, job_status, log_tail, state_from_status
from swarm_operator.jobs.submitter import build_submitter_pod
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError

REPO = Path(__file__).resolve().parents[2]


def body(name: str = "pi", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": "u1", "generation": 2},
            "spec": {"entrypoint": "python pi.py", **spec}}


def test_the_sample_job_is_valid() -> None:
    sample = yaml.safe_load((REPO / "manifests" / "samples" / "jobs" / "pi.yaml").read_text())
    job = parse_job({**sample, "metadata": {**sample["metadata"], "uid": "u1"}})
    assert isinstance(job.cluster, OwnCluster) and job.on_failure == "DeleteWorkers" and job.backoff_limit == 1


def test_defaults() -> None:
    job = parse_job(body(clusterSpec={"head": {}}))
    assert isinstance(job.cluster, OwnCluster)
    assert (job.submission_mode, job.on_success, job.on_failure, job.backoff_limit, job.suspend) == (
        "HTTP", "DeleteCluster", "DeleteCluster", 0, False)
    assert job.ttl_seconds_after_finished is None and job.active_deadline_seconds is None
    assert job.unschedulable_grace_seconds == DEFAULT_UNSCHEDULABLE_GRACE_SECONDS == 60


@pytest.mark.parametrize("grace", [0, 1, 3600])
def test_the_unschedulable_grace_period_is_read(grace: int) -> None:
    assert parse_job(body(clusterSpec={"head": {}}, unschedulableGracePeriodSeconds=grace)
                     ).unschedulable_grace_seconds == grace


def test_a_shared_cluster() -> None:
    job = parse_job(body(clusterSelector={"name": "shared"}))
    assert job.cluster == SharedCluster("shared")


@pytest.mark.parametrize("name, spec, path", [
    ("pi", {}, "spec.clusterSpec, spec.clusterSelector"),
    ("pi", {"clusterSpec": {"head": {}}, "clusterSelector": {"name": "x"}}, "spec.clusterSpec, spec.clusterSelector"),
    ("pi", {"clusterSelector": {"name": "x"}, "deletionPolicy": {"onSuccess": "DeleteNone"}}, "spec.deletionPolicy"),
    ("pi", {"clusterSelector": {"name": "Bad_Name"}}, "spec.clusterSelector.name"),
    ("a" * 39, {"clusterSpec": {"head": {}}}, "metadata.name"),
    ("pi", {"clusterSpec": {"head": {}, "workerGroups": [{"name": "g", "minReplicas": 3, "maxReplicas": 1}]}},
     "spec.clusterSpec.workerGroups"),
    ("pi", {"clusterSpec": {"head": {}}, "backoffLimit": 101}, "spec.backoffLimit"),
    ("pi", {"clusterSpec": {"head": {}}, "unschedulableGracePeriodSeconds": -1},
     "spec.unschedulableGracePeriodSeconds"),
    ("pi", {"clusterSelector": {"name": "c"}, "unschedulableGracePeriodSeconds": "1m"},
     "spec.unschedulableGracePeriodSeconds"),
    ("pi", {"clusterSpec": {"head": {}}, "submissionMode": "Sidecar"}, "spec.submissionMode"),
    ("a" * 46, {"clusterSelector": {"name": "c"}}, "metadata.name"),
    ("pi", {"clusterSpec": {"head": {}}, "entrypointResources": {"numCpus": -1}}, "spec.entrypointResources.numCpus"),
    ("pi", {"clusterSpec": {"head": {}}, "metadata": {"k": 1}}, "spec.metadata.k"),
])
def test_invalid_fields_are_named(name: str, spec: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_job(body(name, **spec))
    assert any(e.path.startswith(path) for e in err.value.errors), str(err.value)


def test_an_empty_entrypoint_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec\.entrypoint"):
        parse_job({**body(clusterSpec={"head": {}}), "spec": {"entrypoint": " ", "clusterSpec": {"head": {}}}})


def test_the_own_cluster_is_owned_labelled_and_never_suspended() -> None:
    job = parse_job(body(clusterSpec={"head": {}, "suspend": True}))
    obj = build_job_cluster(job, 3)
    assert obj["metadata"]["name"] == "pi-3"
    assert obj["metadata"]["ownerReferences"][0] | {"kind": "SwarmJob", "uid": "u1", "controller": True} == (
        obj["metadata"]["ownerReferences"][0])
    assert obj["metadata"]["labels"] == {"swarm.io/job": "pi", "swarm.io/job-attempt": "3"}
    assert obj["spec"]["suspend"] is False
    assert "annotations" not in obj["metadata"]


def test_a_queued_jobs_cluster_says_what_its_admission_bounds() -> None:
    job = parse_job(body(clusterSpec={"head": {}}))
    bounded = dataclasses.replace(job, cluster=OwnCluster({"head": {}}, "quota: admitted 1 of 3 cpu workers"))
    assert build_job_cluster(bounded, 1)["metadata"]["annotations"] == {
        "swarm.io/kueue-quota": "quota: admitted 1 of 3 cpu workers"}


def test_workers_to_zero_keeps_every_group() -> None:
    patch = workers_to_zero({"spec": {"workerGroups": [{"name": "a", "replicas": 2, "maxReplicas": 4}]}})
    assert patch == {"spec": {"workerGroups": [{"name": "a", "replicas": 0, "minReplicas": 0, "maxReplicas": 0}]}}
    view = cluster_view({"metadata": {"name": "c"}, "spec": patch["spec"]}, "u1")
    assert view.workers_zero and not view.owned


@pytest.mark.parametrize("phase, ready, head_ip, running", [
    ("Running", True, "10.0.0.9", True),
    ("Pending", True, "10.0.0.9", False),  # workers still starting: the job is submitted and followed; not PodsReady
    ("Degraded", True, "10.0.0.9", True),
    ("Pending", False, None, False),  # a head starting, or being replaced
    ("Running", False, None, False),
    ("Suspended", True, None, False),  # its head is on its way out
    ("Invalid", True, None, False),  # an invalid spec's status keeps the last head; it is not used
])
def test_the_head_is_used_once_it_is_ready(phase: str, ready: bool, head_ip: str | None, running: bool) -> None:
    body = {"metadata": {"name": "c"}, "status": {"phase": phase, "head": {"ready": ready, "podIP": "10.0.0.9"}}}
    view = cluster_view(body, "u1")
    assert view.head_ip == head_ip and view.running == running


@pytest.mark.parametrize("info, seconds", [
    ({"start_time": 1_700_000_000_500}, 1_700_000_000.5),  # Ray's milliseconds
    ({"start_time": None}, 0.0),
    ({}, 0.0),
    ({"start_time": "soon"}, 0.0),
])
def test_when_ray_took_the_submission(info: dict[str, Any], seconds: float) -> None:
    assert submitted_at(info) == seconds


def test_submission_body() -> None:
    job = parse_job(body(clusterSpec={"head": {}}, runtimeEnv={"env_vars": {"A": "1"}}, metadata={"team": "x"},
                         entrypointResources={"numCpus": 1, "resources": {"disk": 2}}))
    sent = submission_body(job, "pi-u1-1")
    assert sent == {"entrypoint": "python pi.py", "submission_id": "pi-u1-1",
                    "metadata": {"team": "x", "swarm.io/job": "pi", "swarm.io/job-uid": "u1"},
                    "runtime_env": {"env_vars": {"A": "1"}}, "entrypoint_num_cpus": 1.0,
                    "entrypoint_resources": {"disk": 2.0}}


def test_the_submitter_pod_submits_through_the_head_service_where_the_head_may_run() -> None:
    placement = {"nodeSelector": {"pool": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}]}
    job = parse_job(body(clusterSelector={"name": "shared"}, submissionMode="SubmitterPod"))
    cluster = parse_cluster({"metadata": {"name": "shared", "namespace": "ns", "uid": "cu"},
                             "spec": {"image": "ray:x", "auth": {"mode": "token"},
                                      "head": {"template": {"spec": placement}}}})
    pod = build_submitter_pod(job, 2, "pi-u1-2", cluster, "cluster.local")
    assert pod["metadata"]["name"] == "pi-2-submitter" and pod["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert pod["spec"]["nodeSelector"] == {"pool": "a"} and pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "ray:x"
    env = {e["name"]: e for e in container["env"]}
    assert env["SWARM_DASHBOARD_ADDRESS"]["value"] == "http://shared-head-svc.ns.svc.cluster.local:8265"
    assert json.loads(env["SWARM_SUBMISSION"]["value"])["submission_id"] == "pi-u1-2"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "shared-ray-token", "key": "token"}
    compile(container["command"][2], "submitter", "exec")  # the script is Python


def test_a_queued_jobs_submitter_pod_is_the_jobs_for_kueue_not_queued_again() -> None:
    """Kueue's pod integration leaves alone a pod whose controller is a kind it manages (jobframework's
    IsOwnerManagedByKueueForObject), which SwarmJob is as an external framework: the submitter pod is controlled by
    its job, and carries no queue label of its own."""
    job = parse_job({**body(clusterSpec={"head": {}}, submissionMode="SubmitterPod"),
                     "metadata": {"name": "pi", "namespace": "ns", "uid": "u1",
                                  "labels": {"kueue.x-k8s.io/queue-name": "team-a"}}})
    cluster = parse_cluster({"metadata": {"name": "pi-1", "namespace": "ns", "uid": "cu"}, "spec": {"head": {}}})
    pod = build_submitter_pod(job, 1, "pi-u1-1", cluster, "cluster.local")
    (controller,) = [r for r in pod["metadata"]["ownerReferences"] if r.get("controller")]
    kind, version, group = EXTERNAL_FRAMEWORKS[0].split(".", 2)
    assert (controller["kind"], controller["apiVersion"], controller["uid"]) == (kind, f"{group}/{version}", "u1")
    assert not any(k.startswith("kueue.x-k8s.io/") for k in pod["metadata"].get("labels") or {})


def test_status_round_trips() -> None:
    job = parse_job(body(clusterSpec={"head": {}}))
    state = JobState(deployment="Running", attempt=2, failed_attempts=1, job_status="RUNNING", reason="Running",
                     message="m", start_time=1000.0, attempt_start=1100.0, dashboard_url="http://d")
    status = job_status(job, state, {}, 1200.0)
    assert status["jobId"] == "pi-u1-2" and status["clusterName"] == "pi-2" and status["endTime"] is None
    assert state_from_status({k: v for k, v in status.items() if v is not None}) == state
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Complete": "False", "Failed": "False", "Suspended": "False"}


def test_log_tail_keeps_the_last_lines_within_bounds() -> None:
    logs = "\n".join(f"line {i}" for i in range(100))
    assert log_tail(logs).splitlines() == [f"line {i}" for i in range(80, 100)]
    long = "\n".join("x" * 500 for _ in range(30))
    assert len(log_tail(long).encode()) <= 2048
    assert len(bounded("a" * 10_000).encode()) <= 4096


def test_cluster_view_reads_the_head() -> None:
    obj = {"metadata": {"name": "c", "ownerReferences": [{"uid": "u1"}]},
           "status": {"phase": "Running", "head": {"ready": True, "podIP": "10.1.1.1", "dashboardURL": "http://x"}},
           "spec": {"workerGroups": [{"name": "a", "replicas": 1}]}}
    view = cluster_view(obj, "u1")
    assert view.owned and view.head_ip == "10.1.1.1" and not view.workers_zero
    assert cluster_view({**obj, "status": {"phase": "Pending", "head": {"podIP": "1"}}}, "u1").head_ip is None


def test_the_crd_defaults_and_bounds_the_grace_period_as_the_operator_does() -> None:
    crd = yaml.safe_load((REPO / "crds" / "swarmjob.yaml").read_text())
    field = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "unschedulableGracePeriodSeconds"]
    assert (field["default"], field["minimum"], field["maximum"]) == (DEFAULT_UNSCHEDULABLE_GRACE_SECONDS, 0,
                                                                      MAX_SECONDS)
