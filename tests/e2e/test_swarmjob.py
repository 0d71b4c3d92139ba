"""SwarmJob on real Ray: each job makes its own SwarmCluster on the session's process nodes, the operator submits
the entrypoint through the head's Jobs API, follows it, and tears the cluster down."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from localcluster import rayjobs
from localcluster.nodeagent import read_logs
from tests.e2e.helpers import cluster_pods, job_cluster_spec
from tests.e2e.swarmjobs import FAILS, SLEEPS, SUCCEEDS, Jobs
from tests.integration.helpers import GROUP, JOB_PLURAL, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

def test_a_job_succeeds_its_cluster_goes_and_its_ttl_deletes_it(jobs: Jobs, core_v1: Any) -> None:
    jobs.create("ok", SUCCEEDS, ttlSecondsAfterFinished=10)
    running = wait_for("Running", jobs.deployment("ok", "Running"), timeout=240)
    assert running["clusterName"] == "ok-1" and running["dashboardURL"].endswith(":8265")
    done = wait_for("Complete", jobs.deployment("ok", "Complete"), timeout=180)
    assert done["jobStatus"] == "SUCCEEDED" and done["attempt"] == 1 and done["failedAttempts"] == 0
    assert done["startTime"] <= done["endTime"]
    conditions = {c["type"]: c["status"] for c in done["conditions"]}
    assert conditions == {"Complete": "True", "Failed": "False", "Suspended": "False"}
    # The turn that finishes the job writes status first and posts its Complete Event after (jobs/turn.py).
    reasons = wait_for("the Complete Event", lambda: (rs := [r for r, _ in jobs.events("ok")]) and "Complete" in rs
                       and rs, timeout=30)
    assert reasons.count("Submitted") == 1, reasons
    wait_for("its cluster torn down", lambda: jobs.cluster("ok-1") is None
             and not cluster_pods(core_v1, jobs.ns, "ok-1"), timeout=90)
    wait_for("the job deleted by its TTL", lambda: jobs.get("ok") is None, timeout=60)


def test_a_failing_entrypoint_is_retried_on_fresh_clusters_then_fails_with_its_log(jobs: Jobs) -> None:
    jobs.create("bad", FAILS, backoffLimit=1)
    first = wait_for("attempt 1's cluster", lambda: jobs.cluster("bad-1"), timeout=60)
    second = wait_for("attempt 2's cluster", lambda: jobs.cluster("bad-2"), timeout=300)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    failed = wait_for("Failed", jobs.deployment("bad", "Failed"), timeout=300)
    assert failed["reason"] == "BackoffLimitExceeded" and failed["failedAttempts"] == 2 and failed["attempt"] == 2
    assert failed["jobStatus"] == "FAILED"
    assert "boom: the entrypoint failed on purpose" in failed["message"], failed["message"]
    assert len(failed["message"].encode()) <= 4096
    # As above: the BackoffLimitExceeded Event follows the status write that says Failed.
    reasons = wait_for("the BackoffLimitExceeded Event", lambda: (rs := [r for r, _ in jobs.events("bad")])
                       and "BackoffLimitExceeded" in rs and rs, timeout=30)
    assert reasons.count("Submitted") == 2 and "Retrying" in reasons, reasons
    wait_for("both clusters gone", lambda: jobs.cluster("bad-1") is None and jobs.cluster("bad-2") is None,
             timeout=90)


def test_the_active_deadline_stops_the_ray_job(jobs: Jobs) -> None:
    jobs.create("slow", SLEEPS, activeDeadlineSeconds=45, deletionPolicy={"onFailure": "DeleteNone"})
    running = wait_for("Running", jobs.deployment("slow", "Running"), timeout=240)
    failed = wait_for("Failed at its deadline", jobs.deployment("slow", "Failed"), timeout=120)
    assert failed["reason"] == "DeadlineExceeded" and failed["failedAttempts"] == 1 and failed["attempt"] == 1
    head_ip = (jobs.cluster("slow-1") or {})["status"]["head"]["podIP"]
    info = wait_for("Ray's job STOPPED", lambda: (i := rayjobs.job_info(head_ip, running["jobId"]))["status"]
                    == "STOPPED" and i, timeout=60)
    assert info["submission_id"] == running["jobId"]


def test_suspend_stops_the_job_and_deletes_its_cluster_and_resume_runs_it_again(jobs: Jobs, core_v1: Any) -> None:
    # The first attempt (on cluster pause-1, whose head's Ray node names its pod) runs until it is stopped: it runs
    # when suspended, however slow the machine. The resumed one goes straight on instead of sleeping a fixed while.
    jobs.create("pause", SUCCEEDS.replace("ray.init();", "ray.init(); import os, time; time.sleep(600 if os.environ["
                                          "'RAY_CLOUD_INSTANCE_ID'].startswith('pause-1-') else 0);"))
    wait_for("Running", jobs.deployment("pause", "Running"), timeout=240)
    jobs.patch_spec("pause", {"suspend": True})
    suspended = wait_for("Suspended", jobs.deployment("pause", "Suspended"), timeout=60)
    assert "startTime" not in suspended
    wait_for("its cluster gone", lambda: jobs.cluster("pause-1") is None
             and not cluster_pods(core_v1, jobs.ns, "pause-1"), timeout=90)
    jobs.patch_spec("pause", {"suspend": False})
    done = wait_for("Complete after the resume", jobs.deployment("pause", "Complete"), timeout=300)
    assert done["attempt"] == 2 and done["failedAttempts"] == 0 and done["clusterName"] == "pause-2"


def test_a_submitter_pod_submits_once_and_its_log_shows_the_driver(jobs: Jobs, core_v1: Any) -> None:
    jobs.create("viapod", SUCCEEDS, submissionMode="SubmitterPod")
    done = wait_for("Complete", jobs.deployment("viapod", "Complete"), timeout=300)
    assert done["jobStatus"] == "SUCCEEDED"
    pod = core_v1.read_namespaced_pod("viapod-1-submitter", jobs.ns)
    assert pod.metadata.owner_references[0].name == "viapod"
    def whole_log() -> str | None:
        text = read_logs("viapod-1-submitter", jobs.ns)
        return text if "ended SUCCEEDED" in text else None

    log = wait_for("the submitter's log to the end", whole_log, timeout=60)
    assert "the answer is 42" in log and log.count("submitted Ray job") == 1, log
    assert "Submitted" not in [r for r, _ in jobs.events("viapod")]  # the pod submitted it, not the operator


def test_two_jobs_share_an_existing_cluster_which_outlives_them(jobs: Jobs, core_v1: Any) -> None:
    shared = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": "shared"},
              "spec": {**job_cluster_spec(jobs.pool)}}
    shared["spec"]["head"]["resources"]["cpu"] = 2  # one task of each job at once
    jobs.custom.create_namespaced_custom_object(GROUP, VERSION, jobs.ns, PLURAL, shared)
    for name in ("first", "second"):
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmJob", "metadata": {"name": name},
                "spec": {"entrypoint": SUCCEEDS, "clusterSelector": {"name": "shared"}}}
        jobs.custom.create_namespaced_custom_object(GROUP, VERSION, jobs.ns, JOB_PLURAL, body)
    for name in ("first", "second"):
        done = wait_for(f"{name} Complete", jobs.deployment(name, "Complete"), timeout=300)
        assert done["clusterName"] == "shared" and done["jobStatus"] == "SUCCEEDED"
    head_ip = (jobs.cluster("shared") or {})["status"]["head"]["podIP"]
    ours = [j for j in rayjobs.list_jobs(head_ip) if (j.get("metadata") or {}).get("swarm.io/job")]
    assert sorted(j["metadata"]["swarm.io/job"] for j in ours) == ["first", "second"]
    for name in ("first", "second"):
        jobs.delete(name)
    wait_for("both jobs gone (their finalizers removed)", lambda: jobs.get("first") is None
             and jobs.get("second") is None, timeout=60)
    still = jobs.cluster("shared")
    assert still is not None and not still["metadata"].get("deletionTimestamp")
    jobs.custom.delete_namespaced_custom_object(GROUP, VERSION, jobs.ns, PLURAL, "shared")


# The task fails the job unless it ran on a pod of the gpu group with a GPU of its own.
GPU_TASK = ("python -c \"import os, ray; ray.init(); "
            "f = ray.remote(num_gpus={gpus})(lambda: (os.environ['RAY_CLOUD_INSTANCE_ID'], ray.get_gpu_ids())); "
            "pod, ids = ray.get(f.remote()); print('ran on', pod, ids); "
            "assert '-gpu-' in pod and ids, (pod, ids)\"")


def gpu_cluster_spec(pool: str) -> dict[str, Any]:
    """A head, and a gpu group from zero (at most one pod: one GPU) on the session's fake-GPU process node."""
    spec = job_cluster_spec(pool)
    placement = copy.deepcopy(spec["head"]["template"])
    placement["spec"]["tolerations"].append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    spec["workerGroups"] = [{"name": "gpu", "minReplicas": 0, "maxReplicas": 1,
                             "resources": {"cpu": 1, "memory": "1Gi", "gpu": 1}, "template": placement}]
    spec["autoscaling"] = {"enabled": True, "intervalSeconds": 2}
    return spec


def test_a_gpu_job_starts_the_gpu_group_from_zero_and_one_that_fits_no_group_fails_after_the_grace_period(
        jobs: Jobs, core_v1: Any) -> None:
    jobs.create("gpu", GPU_TASK.format(gpus=1), clusterSpec=gpu_cluster_spec(jobs.pool))
    grace = 30  # spec.unschedulableGracePeriodSeconds, half the default: the field is what counts
    jobs.create("toobig", GPU_TASK.format(gpus=2), clusterSpec=gpu_cluster_spec(jobs.pool),
                unschedulableGracePeriodSeconds=grace)
    wait_for("gpu Running", jobs.deployment("gpu", "Running"), timeout=240)
    done = wait_for("gpu Complete", lambda: (st := jobs.status("gpu")).get("jobDeploymentStatus") in (
        "Complete", "Failed") and st, timeout=240)
    assert done["jobDeploymentStatus"] == "Complete", done
    scaled = [e.message for e in core_v1.list_namespaced_event(jobs.ns).items
              if e.involved_object.name == "gpu-1" and e.reason == "Autoscaled"]
    assert any("gpu 0→1" in m for m in scaled), scaled

    waiting = wait_for("toobig saying what fits no group", lambda: (st := jobs.status("toobig")).get(
        "infeasibleSince") and st, timeout=240)
    assert "fits no worker group of SwarmCluster toobig-1" in waiting["message"], waiting["message"]
    assert "fails (Unschedulable) at" in waiting["message"]
    failed = wait_for("toobig Failed", jobs.deployment("toobig", "Failed"), timeout=grace + 30)
    assert failed["reason"] == "Unschedulable" and failed["attempt"] == 1, failed
    assert f"(unschedulableGracePeriodSeconds {grace})" in failed["message"], failed["message"]
    assert "GPU:2" in failed["message"], failed["message"]
    assert not [p for p in cluster_pods(core_v1, jobs.ns, "toobig-1") if p.metadata.labels["swarm.io/node-type"]
                == "worker"], "nothing is scaled for demand that fits no group"
