"""A preemption by Kueue on real Ray: two queued SwarmJobs, quota for one; the higher-priority one preempts the lower,
whose Ray job is stopped and whose cluster is torn down before its quota goes; both complete in the end.

Kueue (built from its Go module, cached) runs as a process for this module and is uninstalled afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import kueue as local_kueue
from localcluster import rayjobs
from tests.e2e.helpers import cluster_pods, job_cluster_spec
from tests.e2e.swarmjobs import SUCCEEDS, Jobs
from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kueue, pytest.mark.timeout(900)]
KUEUE, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
# The first attempt (on cluster low-1, whose head's Ray node names its pod) runs until it is stopped: it is preempted
# while it runs, however slow the machine. The resumed attempt ends at once instead of sleeping through a fixed wait.
SLEEPS_UNTIL_RESUMED = ("python -c \"import os, ray, time; ray.init(); print('started', flush=True); "
                        "time.sleep(600 if os.environ['RAY_CLOUD_INSTANCE_ID'].startswith('low-1-') else 0); "
                        "print('slept')\"")


@pytest.fixture(scope="module")
def queue(kubeconfig: str, module_namespace: str, custom_objects: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Kueue, a ClusterQueue of 1 CPU (one job's head) that preempts lower priorities, its LocalQueue, and the
    WorkloadPriorityClasses `<ns>-low` and `<ns>-high`; everything removed afterwards."""
    cq = f"{module_namespace}-cq"
    made = [("resourceflavors", cq), ("clusterqueues", cq), ("workloadpriorityclasses", f"{module_namespace}-low"),
            ("workloadpriorityclasses", f"{module_namespace}-high")]
    with local_kueue.running(kubeconfig, tmp_path_factory.mktemp("kueue")) as proc:
        try:
            api = f"{KUEUE}/{KUEUE_VERSION}"
            custom_objects.create_cluster_custom_object(KUEUE, KUEUE_VERSION, "resourceflavors", {
                "apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": cq}})
            custom_objects.create_cluster_custom_object(KUEUE, KUEUE_VERSION, "clusterqueues", {
                "apiVersion": api, "kind": "ClusterQueue", "metadata": {"name": cq},
                "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": module_namespace}},
                         "preemption": {"withinClusterQueue": "LowerPriority"},
                         "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                             "name": cq, "resources": [{"name": "cpu", "nominalQuota": 1},
                                                       {"name": "memory", "nominalQuota": "8Gi"}]}]}]}})
            for name, value in ((f"{module_namespace}-low", 10), (f"{module_namespace}-high", 1000)):
                custom_objects.create_cluster_custom_object(KUEUE, KUEUE_VERSION, "workloadpriorityclasses", {
                    "apiVersion": api, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value})
            custom_objects.create_namespaced_custom_object(KUEUE, KUEUE_VERSION, module_namespace, "localqueues", {
                "apiVersion": api, "kind": "LocalQueue", "metadata": {"name": "team-a"}, "spec": {"clusterQueue": cq}})
            yield "team-a"
        finally:
            print(proc.log_tail(40))
            for plural, name in made:
                try:
                    custom_objects.delete_cluster_custom_object(KUEUE, KUEUE_VERSION, plural, name)
                except Exception as exc:
                    print(f"deleting {plural}/{name}: {exc}")


def queued(jobs: Jobs, name: str, entrypoint: str, queue: str, priority: str) -> None:
    """A job with a cluster of its own on the process nodes (a head of 1 CPU), labelled from its creation on."""
    body = {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmJob",
            "metadata": {"name": name, "labels": {f"{KUEUE}/queue-name": queue,
                                                  f"{KUEUE}/priority-class": f"{jobs.ns}-{priority}"}},
            "spec": {"entrypoint": entrypoint, "clusterSpec": job_cluster_spec(jobs.pool)}}
    jobs.custom.create_namespaced_custom_object("swarm.io", "v1alpha1", jobs.ns, "swarmjobs", body)


def evicted(jobs: Jobs, name: str) -> dict[str, Any] | None:
    items = jobs.custom.list_namespaced_custom_object(KUEUE, KUEUE_VERSION, jobs.ns, "workloads")["items"]
    workload: dict[str, Any] = next((w for w in items if any(r.get("name") == name
                                                               for r in w["metadata"]["ownerReferences"])), {})
    return next((c for c in (workload.get("status") or {}).get("conditions") or []
                 if c["type"] == "Evicted" and c["status"] == "True"), None)


def test_a_higher_priority_job_preempts_a_running_one_which_completes_later(queue: str, jobs: Jobs,
                                                                           core_v1: Any) -> None:
    queued(jobs, "low", SLEEPS_UNTIL_RESUMED, queue, "low")
    running = wait_for("the low job Running on Ray", jobs.deployment("low", "Running"), timeout=240)
    head_ip = (jobs.cluster("low-1") or {})["status"]["head"]["podIP"]
    wait_for("the low job's Ray job RUNNING", lambda: rayjobs.job_info(head_ip, running["jobId"])["status"]
             == "RUNNING", timeout=60)

    queued(jobs, "high", SUCCEEDS, queue, "high")
    assert wait_for("the low job preempted", lambda: evicted(jobs, "low"), timeout=60)["reason"] == "Preempted"
    suspended = wait_for("the low job suspended", jobs.deployment("low", "Suspended"), timeout=60)
    assert "evicted by Kueue (Preempted)" in suspended["message"], suspended
    events = [m for r, m in jobs.events("low") if r == "RayJobStopped"]
    assert events, jobs.events("low")  # its Ray job was stopped before its cluster went
    wait_for("the low job's cluster torn down", lambda: jobs.cluster("low-1") is None
             and not cluster_pods(core_v1, jobs.ns, "low-1"), timeout=120)

    high = wait_for("the high job Complete", jobs.deployment("high", "Complete"), timeout=300)
    assert high["jobStatus"] == "SUCCEEDED"
    done = wait_for("the low job resumed and Complete", jobs.deployment("low", "Complete"), timeout=300)
    assert done["jobStatus"] == "SUCCEEDED" and done["attempt"] == 2 and done["failedAttempts"] == 0
