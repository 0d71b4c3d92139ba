"""SwarmJob on real Ray: each job makes its own SwarmCluster on the session's process nodes, the operator submits
the entrypoint through the head's Jobs API, follows it, and tears the cluster down."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from localcluster import rayjobs
from localcluster.nodeagent import read_logs
from tests.e2e.helpers import ProcessNodes, cluster_pods, job_cluster_spec
from tests.integration.helpers import GROUP, JOB_PLURAL, PLURAL, VERSION, SwarmJobs, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SUCCEEDS = ("python -c \"import ray; ray.init(); f = ray.remote(lambda x: x + 1); "
            "print('the answer is', ray.get(f.remote(41)))\"")
FAILS = "python -c \"print('about to fail'); import sys; sys.exit('boom: the entrypoint failed on purpose')\""
SLEEPS = "python -c \"import time; print('sleeping', flush=True); time.sleep(600)\""


class Jobs(SwarmJobs):
    """The session's SwarmJobs, each with a cluster of its own on the session's process nodes."""

    def __init__(self, custom: Any, core: Any, namespace: str, pool: str) -> None:
        super().__init__(custom, namespace)
        self.core, self.pool = core, pool

    def create(self, name: str, entrypoint: str = SUCCEEDS, **spec: Any) -> dict[str, Any]:
        return super().create(name, entrypoint, clusterSpec=job_cluster_spec(self.pool), **spec)

    def cluster(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def deployment(self, name: str, want: str) -> Any:
        """A waiter for a deployment status that reports where the job is while it waits."""
        def check() -> Any:
            st = self.status(name)
            return st if st.get("jobDeploymentStatus") == want else False
        return check

    def events(self, name: str) -> list[tuple[str, str]]:
        return [(e.reason, e.message) for e in self.core.list_namespaced_event(self.ns).items
                if e.involved_object.name == name and e.involved_object.kind == "SwarmJob"]


@pytest.fixture
def jobs(custom_objects: Any, core_v1: Any, module_namespace: str, operator: Any,
         process_nodes: ProcessNodes) -> Any:
    made = Jobs(custom_objects, core_v1, module_namespace, process_nodes.pool)
    yield made
    for item in custom_objects.list_namespaced_custom_object(GROUP, VERSION, module_namespace, JOB_PLURAL)["items"]:
        print(f"swj {item['metadata']['name']}: {item.get('status')}")
        made.delete(item["metadata"]["name"])
    wait_for("every job's pods gone", lambda: not core_v1.list_namespaced_pod(module_namespace).items, timeout=120)


def test_a_job_succeeds_its_cluster_goes_and_its_ttl_deletes_it(jobs: Jobs, core_v1: Any) -> None:
    jobs.create("ok", SUCCEEDS, ttlSecondsAfterFinished=10)
    running = wait_for("Running", jobs.deployment("ok", "Running"), timeout=240)
    assert running["clusterName"] == "ok-1" and running["dashboardURL"].endswith(":8265")
    done = wait_for("Complete", jobs.deployment("ok", "Complete"), timeout=180)
    assert done["jobStatus"] == "SUCCEEDED" and done["attempt"] == 1 and done["failedAttempts"] == 0
    assert done["startTime"] <= done["endTime"]
    conditions = {c["type"]: c["status"] for c in done["conditions"]}
    assert conditions == {"Complete": "True", "Failed": "False", "Suspended": "False"}
    reasons = [r for r, _ in jobs.events("ok")]
    assert reasons.count("Submitted") == 1 and "Complete" in reasons
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
    reasons = [r for r, _ in jobs.events("bad")]
    assert reasons.count("Submitted") == 2 and "Retrying" in reasons and "BackoffLimitExceeded" in reasons
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
    jobs.create("pause", SUCCEEDS.replace("ray.init();", "ray.init(); import time; time.sleep(20);"))
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
