"""A SwarmJob's turns (jobs/turn.py) on the kit, against the fake API server and a fake Jobs API: the
machine's actions reach the API, status survives a restart, and a restarted operator never submits twice."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from swarm_operator.jobs.controller import jobs_of_cluster
from swarm_operator.jobs.machine import NEXT_TURN_SECONDS, RayJob, RayJobMissing, RayView
from swarm_operator.jobs.names import JOB_LABEL
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.jobs.turn import STOP_FINALIZER, JobTurns
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, ObjectStore, WatchCache
from tests.unit.operator_fixtures import FakeKube

NS = "ns"
KEY: Key = (NS, "pi")


class FakeRay(RayJobsClient):
    """The Jobs API of one head: jobs by submission id; each submission counted."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, str] = {}
        self.posts: list[str] = []
        self.stops: list[str] = []

    def observe(self, head_ip: str, job_id: str, token: str | None) -> RayView:
        return RayJob(self.jobs[job_id]) if job_id in self.jobs else RayJobMissing()

    def submit_once(self, head_ip: str, body: Any, token: str | None) -> bool:
        job_id = str(body["submission_id"])
        if job_id in self.jobs:
            return False
        self.posts.append(job_id)
        self.jobs[job_id] = "PENDING"
        return True

    def stop(self, head_ip: str, job_id: str, token: str | None) -> None:
        self.stops.append(job_id)
        self.jobs[job_id] = "STOPPED"


def job_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmJob",
            "metadata": {"name": "pi", "namespace": NS, "uid": "ju", "generation": 1, "resourceVersion": "1"},
            "spec": {"entrypoint": "python pi.py", **spec}}


class World:
    """The fake API server (which keeps every custom object in one dict), SwarmCluster's cache, the job's."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.kube = FakeKube()
        self.kube.swarmclusters[KEY] = copy.deepcopy(body)
        self.ray = FakeRay()
        self.clusters = ObjectStore()
        self.cache = WatchCache(JOB_LABEL)
        self.cache.objects.put(KEY, body)
        self.blocking = Blocking(2)
        self.gone: list[Key] = []
        self.turns = self.restart()

    def restart(self) -> JobTurns:
        """A new operator process: nothing in memory, the same objects."""
        self.turns = JobTurns(self.kube, self.blocking, self.cache, self.clusters, self.ray,
                              lambda key, stored: self.gone.append(key))
        return self.turns

    def turn(self) -> float | None:
        return asyncio.run(self.turns.run(KEY))

    def status(self) -> dict[str, Any]:
        return dict((self.cache.objects.get(KEY) or {}).get("status") or {})

    def cluster_up(self, name: str, phase: str = "Running", head_ready: bool = True) -> None:
        """The SwarmCluster the job made, as its watch shows it once its head runs (Pending: workers are short)."""
        body = copy.deepcopy(self.kube.swarmclusters[(NS, name)])
        body["status"] = {"phase": phase, "head": {"ready": head_ready, "podIP": "10.0.0.9",
                                                       "dashboardURL": f"http://{name}-head-svc.{NS}.svc:8265"}}
        self.clusters.put((NS, name), body)

    def cluster_gone(self, name: str) -> None:
        self.clusters.drop((NS, name))


def test_a_job_on_its_own_cluster_from_start_to_success() -> None:
    w = World(job_body(clusterSpec={"head": {}}))
    assert w.turn() == NEXT_TURN_SECONDS
    assert w.status()["jobDeploymentStatus"] == "Initializing" and w.status()["attempt"] == 1
    assert "create_resource" not in w.kube.verbs()  # the attempt is in status first
    w.turn()
    made = w.kube.swarmclusters[(NS, "pi-1")]
    assert made["metadata"]["ownerReferences"][0]["uid"] == "ju"
    w.cluster_up("pi-1")
    w.turn()
    assert w.ray.posts == ["pi-ju-1"]
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Running" and w.status()["jobStatus"] == "PENDING"
    assert w.status()["dashboardURL"] == "http://pi-1-head-svc.ns.svc:8265"
    w.ray.jobs["pi-ju-1"] = "SUCCEEDED"
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Complete" and w.status()["endTime"]
    assert (NS, "pi-1") not in w.kube.swarmclusters  # deletionPolicy DeleteCluster
    reasons = [e[2] for e in w.kube.events]
    assert reasons == ["Initializing", "Created", "Submitted", "Running", "Deleted", "Complete"]


def test_the_job_is_submitted_once_the_head_is_ready_not_once_every_worker_is() -> None:
    w = World(job_body(clusterSpec={"head": {}, "workerGroups": [{"name": "cpu", "replicas": 2}]}))
    w.turn()
    w.turn()
    w.cluster_up("pi-1", phase="Pending", head_ready=False)
    w.turn()
    assert w.ray.posts == []
    w.cluster_up("pi-1", phase="Pending")
    w.turn()
    assert w.ray.posts == ["pi-ju-1"]
    w.restart()  # and a restarted operator, its cluster still Pending, finds it
    w.turn()
    w.turn()
    assert w.ray.posts == ["pi-ju-1"] and w.status()["jobDeploymentStatus"] == "Running"


def test_a_restarted_operator_finds_its_job_instead_of_submitting_again() -> None:
    w = World(job_body(clusterSpec={"head": {}}))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()  # submitted; suppose the process dies before anything else
    w.restart()
    for _ in range(3):
        w.turn()
    assert w.ray.posts == ["pi-ju-1"]
    assert w.status()["jobDeploymentStatus"] == "Running"


def test_a_restarted_operator_whose_cluster_cache_is_not_listed_yet_keeps_the_running_job() -> None:
    """After a restart the jobs' watch may deliver before SwarmCluster's listing: the job asks the API server
    for its cluster instead of failing the attempt as "cluster gone"."""
    w = World(job_body(clusterSpec={"head": {}}))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Running"
    w.kube.swarmclusters[(NS, "pi-1")] = copy.deepcopy(w.clusters.get((NS, "pi-1")))  # as the API server has it
    w.cluster_gone("pi-1")  # the new process's SwarmCluster cache: not listed yet
    w.restart()
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Running", w.status()
    assert ("get_resource", "pi-1") in w.kube.calls and w.ray.posts == ["pi-ju-1"]
    del w.kube.swarmclusters[(NS, "pi-1")]  # really gone: now the attempt is lost
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Failed" and "is gone" in w.status()["message"]


def test_retries_get_fresh_clusters_and_the_failed_one_goes() -> None:
    w = World(job_body(clusterSpec={"head": {}}, backoffLimit=1))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    w.ray.jobs["pi-ju-1"] = "FAILED"
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Retrying" and w.status()["attempt"] == 2
    assert (NS, "pi-1") not in w.kube.swarmclusters
    w.cluster_gone("pi-1")
    w.turn()
    assert (NS, "pi-2") in w.kube.swarmclusters
    w.cluster_up("pi-2")
    w.turn()
    assert w.ray.posts == ["pi-ju-1", "pi-ju-2"]
    w.ray.jobs["pi-ju-2"] = "FAILED"
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Failed" and w.status()["reason"] == "BackoffLimitExceeded"
    assert w.status()["failedAttempts"] == 2


def test_a_shared_cluster_job_carries_the_finalizer_and_stops_its_ray_job_when_deleted() -> None:
    w = World(job_body(clusterSelector={"name": "shared"}))
    w.clusters.put((NS, "shared"), {"metadata": {"name": "shared", "namespace": NS, "uid": "cu"},
                                    "status": {"phase": "Running", "head": {"ready": True, "podIP": "10.0.0.7"}}})
    w.turn()
    assert STOP_FINALIZER in w.kube.swarmclusters[KEY]["metadata"]["finalizers"]
    w.turn()
    assert w.ray.posts == ["pi-ju-1"]
    w.ray.jobs["pi-ju-1"] = "RUNNING"
    w.turn()
    deleted = copy.deepcopy(w.cache.objects.get(KEY) or {})
    deleted["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    w.cache.objects.put(KEY, deleted)
    assert w.turn() == pytest.approx(1.0)
    assert w.ray.stops == ["pi-ju-1"]
    w.cache.objects.put(KEY, {**deleted, "metadata": {**deleted["metadata"], "resourceVersion": "9"}})
    assert w.turn() is None
    assert STOP_FINALIZER not in w.kube.swarmclusters[KEY]["metadata"]["finalizers"]
    assert "delete_resource" not in w.kube.verbs()  # the shared cluster is never touched


def test_a_deleted_job_stops_its_ray_job_before_it_deletes_its_own_cluster() -> None:
    w = World(job_body(clusterSpec={"head": {}}))
    w.turn()
    assert STOP_FINALIZER in w.kube.swarmclusters[KEY]["metadata"]["finalizers"]
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    w.ray.jobs["pi-ju-1"] = "RUNNING"
    w.turn()
    deleted = copy.deepcopy(w.cache.objects.get(KEY) or {})
    deleted["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    w.cache.objects.put(KEY, deleted)
    w.ray.stop = lambda head_ip, job_id, token: w.ray.stops.append(job_id)  # type: ignore[method-assign]
    assert w.turn() == pytest.approx(1.0)  # asked to stop; Ray still says RUNNING: the cluster stays
    assert w.ray.stops == ["pi-ju-1"] and (NS, "pi-1") in w.kube.swarmclusters
    w.ray.jobs["pi-ju-1"] = "STOPPED"
    assert w.turn() is None
    assert (NS, "pi-1") not in w.kube.swarmclusters
    assert STOP_FINALIZER not in w.kube.swarmclusters[KEY]["metadata"]["finalizers"]


def test_a_finished_job_lets_its_finalizer_go() -> None:
    w = World(job_body(clusterSpec={"head": {}}))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    w.ray.jobs["pi-ju-1"] = "SUCCEEDED"
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Complete"
    assert STOP_FINALIZER in w.kube.swarmclusters[KEY]["metadata"]["finalizers"]
    w.turn()
    assert STOP_FINALIZER not in w.kube.swarmclusters[KEY]["metadata"]["finalizers"]


def test_the_cluster_spec_and_its_autoscaler_report_tell_the_machine_what_fits_no_group() -> None:
    w = World(job_body(clusterSpec={"head": {}}, entrypointResources={"numGpus": 1}))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    assert w.ray.posts == [] and "entrypointResources {GPU:1} fit no node of SwarmCluster pi-1" in w.status()[
        "message"]
    assert w.status()["infeasibleSince"]

    w = World(job_body(clusterSpec={"head": {}}))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    body = copy.deepcopy(w.clusters.get((NS, "pi-1")) or {})
    body["status"]["autoscaler"] = {"infeasibleDemand": "1×{GPU: 8}"}
    w.clusters.put((NS, "pi-1"), body)
    w.ray.jobs["pi-ju-1"] = "RUNNING"
    w.turn()
    assert "Ray's demand 1×{GPU: 8} fits no worker group of SwarmCluster pi-1" in w.status()["message"]


def test_an_invalid_job_says_why_and_makes_nothing() -> None:
    w = World(job_body())
    assert w.turn() is None
    assert w.status()["jobDeploymentStatus"] == "Invalid"
    assert "spec.clusterSpec, spec.clusterSelector" in w.status()["message"]
    assert [e[2] for e in w.kube.events] == ["InvalidSpec"]


def test_a_cluster_event_queues_its_owner_and_the_jobs_selecting_it() -> None:
    jobs = ObjectStore()
    jobs.put((NS, "own"), {"metadata": {"name": "own", "namespace": NS}, "spec": {}})
    jobs.put((NS, "sel"), {"metadata": {"name": "sel", "namespace": NS}, "spec": {"clusterSelector": {"name": "c"}}})
    jobs.put(("other", "sel"), {"metadata": {"name": "sel", "namespace": "other"},
                                "spec": {"clusterSelector": {"name": "c"}}})
    cluster = {"metadata": {"name": "c", "namespace": NS, "ownerReferences": [{"kind": "SwarmJob", "name": "own"}]}}
    assert jobs_of_cluster(cluster, jobs) == {(NS, "own"), (NS, "sel")}


def test_a_submitter_pod_is_made_once_even_across_a_restart() -> None:
    w = World(job_body(clusterSpec={"head": {}}, submissionMode="SubmitterPod"))
    w.turn()
    w.turn()
    w.cluster_up("pi-1")
    w.turn()
    pod = w.kube.pods[(NS, "pi-1-submitter")]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "ju"
    w.restart()
    w.turn()
    assert w.kube.verbs()["create_pod"] == 1 and w.ray.posts == []  # the pod submits, not the operator
    assert "submitter pod pi-1-submitter is Pending" in w.status()["message"]
    w.ray.jobs["pi-ju-1"] = "RUNNING"
    w.turn()
    assert w.status()["jobDeploymentStatus"] == "Running"
