"""Queued SwarmJobs and SwarmClusters against a real API server and the real Kueue (built from its Go module, run as a
process with its webhooks served to the API server), on kwok's fake nodes: no Ray is needed for admission and eviction.

Run this tier alone with `make test-kueue` (pytest -m kueue). The test without Kueue runs first, before the module's
Kueue fixture installs its CRDs; the fixture removes them again at the end, so the other tests see no Kueue.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import kueue as local_kueue
from localcluster.nodes import fake_node, remove_node, wait_nodes_ready
from localcluster.operator_process import OperatorProcess
from tests.integration.helpers import Cluster, Kubectl, SwarmJobs, manifest, wait_for
from tests.integration.test_swarmjob import cluster_exists

pytestmark = [pytest.mark.integration, pytest.mark.kueue]
KUEUE, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
FLAVOR_LABELS = {"swarm.io/pool": "kwok-cpu"}
FLAVOR_TOLERATION = {"key": "swarm.io/kueue-test", "operator": "Exists", "effect": "NoSchedule"}
QUEUE_LABEL = f"{KUEUE}/queue-name"
PRIORITY_LABEL = f"{KUEUE}/priority-class"
# Each job asks for 2 CPUs (a head of 1, one worker of 1); the ClusterQueue has 3: one job at a time.
CLUSTER_SPEC: dict[str, Any] = {
    "head": {"resources": {"cpu": 1, "memory": "1Gi"}},
    "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2,
                      "resources": {"cpu": 1, "memory": "1Gi"}}],
}


@pytest.fixture
def swj(api_client: client.ApiClient, namespace: str, swc: Cluster) -> Iterator[SwarmJobs]:
    jobs = SwarmJobs(client.CustomObjectsApi(api_client), namespace)
    yield jobs
    for item in jobs.custom.list_namespaced_custom_object("swarm.io", "v1alpha1", namespace, "swarmjobs")["items"]:
        print(f"swj {item['metadata']['name']} status={item.get('status')}")


def queued_job(swj: SwarmJobs, name: str, queue: str, labels: dict[str, str] | None = None, **spec: Any) -> None:
    body = {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmJob",
            "metadata": {"name": name, "labels": {QUEUE_LABEL: queue, **(labels or {})}},
            "spec": {"entrypoint": "python -c 'print(1)'", "clusterSpec": CLUSTER_SPEC, **spec}}
    swj.custom.create_namespaced_custom_object("swarm.io", "v1alpha1", swj.ns, "swarmjobs", body)


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})


# -- without Kueue (first: before the module's Kueue fixture installs it) --------------------------------------

def test_queue_label_without_kueue_is_invalid(kubectl: Kubectl, operator: OperatorProcess, swj: SwarmJobs,
                                               swc: Cluster) -> None:
    assert kubectl("get", f"crd/workloads.{KUEUE}").returncode != 0, "Kueue's CRDs are installed: this test needs none"
    queued_job(swj, "nokueue", "team-a")
    job = wait_for("Valid=False", lambda: (j := swj.get("nokueue")) and condition(j, "Valid").get("status") == "False"
                   and j)
    assert "Kueue is not installed" in condition(job, "Valid")["message"]
    assert job["status"]["jobDeploymentStatus"] == "Invalid"
    assert "remove the label" in job["status"]["message"]
    assert not cluster_exists(swc, "nokueue-1")
    queued_cluster(swc, "nokueue", "team-a")
    cluster = wait_for("the cluster Valid=False", lambda: condition(c := swc.get("nokueue"), "Valid").get(
        "status") == "False" and c)
    assert "SwarmCluster is labelled kueue.x-k8s.io/queue-name, but Kueue is not installed" in condition(
        cluster, "Valid")["message"]
    assert cluster["status"]["phase"] == "Invalid" and not swc.pods("nokueue")


# -- with Kueue ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kueue(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kueue.KueueProcess]:
    """Kueue installed and running for this module's tests; removed afterwards."""
    started = time.monotonic()
    with local_kueue.running(kubeconfig, tmp_path_factory.mktemp("kueue")) as proc:
        print(f"Kueue installed and serving its webhooks in {time.monotonic() - started:.1f}s")
        try:
            yield proc
        finally:
            print(proc.log_tail(60))


class Queues:
    """A ResourceFlavor, a ClusterQueue (cluster-scoped, named after the test's namespace) and a LocalQueue."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom: Any = client.CustomObjectsApi(api)
        self.ns = namespace
        self.flavor = self.cluster_queue = f"{namespace}-cq"

        self.cluster_scoped: list[tuple[str, str]] = [("resourceflavors", self.flavor)]

    def make_flavor(self, name: str, labels: dict[str, str], tolerations: list[dict[str, str]]) -> None:
        self.custom.create_cluster_custom_object(KUEUE, KUEUE_VERSION, "resourceflavors", {
            "apiVersion": f"{KUEUE}/{KUEUE_VERSION}", "kind": "ResourceFlavor", "metadata": {"name": name},
            "spec": {"nodeLabels": labels, "tolerations": tolerations}})
        self.cluster_scoped.append(("resourceflavors", name))

    def priority_class(self, name: str, value: int) -> str:
        """A WorkloadPriorityClass (cluster-scoped: named after the namespace); returns its name."""
        full = f"{self.ns}-{name}"
        self.custom.create_cluster_custom_object(KUEUE, KUEUE_VERSION, "workloadpriorityclasses", {
            "apiVersion": f"{KUEUE}/{KUEUE_VERSION}", "kind": "WorkloadPriorityClass", "metadata": {"name": full},
            "value": value})
        self.cluster_scoped.append(("workloadpriorityclasses", full))
        return full

    def create(self, cpu: int, flavors: dict[str, int] | None = None, preemption: dict[str, str] | None = None) -> str:
        """A ClusterQueue of `cpu` CPUs in one flavor (kwok's CPU nodes, which localcluster labels; its toleration is
        one no pod has), or of `flavors` (name → CPUs, made beforehand) tried in that order; and its LocalQueue."""
        if flavors is None:
            self.make_flavor(self.flavor, FLAVOR_LABELS, [FLAVOR_TOLERATION])
            flavors = {self.flavor: cpu}
        self.custom.create_cluster_custom_object(KUEUE, KUEUE_VERSION, "clusterqueues", {
            "apiVersion": f"{KUEUE}/{KUEUE_VERSION}", "kind": "ClusterQueue", "metadata": {"name": self.cluster_queue},
            "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.ns}},
                     **({"preemption": preemption} if preemption else {}),
                     "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                         "name": name, "resources": [{"name": "cpu", "nominalQuota": quota},
                                                     {"name": "memory", "nominalQuota": "64Gi"}]}
                         for name, quota in flavors.items()]}]}})
        self.custom.create_namespaced_custom_object(KUEUE, KUEUE_VERSION, self.ns, "localqueues", {
            "apiVersion": f"{KUEUE}/{KUEUE_VERSION}", "kind": "LocalQueue", "metadata": {"name": "team-a"},
            "spec": {"clusterQueue": self.cluster_queue}})
        return "team-a"

    def workload_of(self, owner: str, kind: str = "SwarmJob") -> dict[str, Any] | None:
        items = self.custom.list_namespaced_custom_object(KUEUE, KUEUE_VERSION, self.ns, "workloads")["items"]
        return next((w for w in items if any(r.get("name") == owner and r.get("kind") == kind
                                             for r in w["metadata"].get("ownerReferences") or [])), None)

    def deactivate(self, workload: str) -> None:
        self.custom.patch_namespaced_custom_object(KUEUE, KUEUE_VERSION, self.ns, "workloads", workload,
                                                   {"spec": {"active": False}})

    def delete(self) -> None:
        for plural, name in (("clusterqueues", self.cluster_queue), *self.cluster_scoped):
            try:
                self.custom.delete_cluster_custom_object(KUEUE, KUEUE_VERSION, plural, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def queues(kueue: local_kueue.KueueProcess, api_client: client.ApiClient, namespace: str) -> Iterator[Queues]:
    q = Queues(api_client, namespace)
    yield q
    for w in q.custom.list_namespaced_custom_object(KUEUE, KUEUE_VERSION, namespace, "workloads")["items"]:
        print(f"workload {w['metadata']['name']}: {w.get('status')}")
    q.delete()


def admitted(queues: Queues, owner: str, kind: str = "SwarmJob") -> dict[str, Any] | None:
    wl = queues.workload_of(owner, kind)
    return wl if condition(wl, "Admitted").get("status") == "True" else None


def test_one_quota_two_jobs_eviction_admits_the_second(queues: Queues, operator: OperatorProcess, swj: SwarmJobs,
                                                       swc: Cluster) -> None:
    queue = queues.create(cpu=3)
    queued_job(swj, "first", queue)
    wl = wait_for("the first job's Workload admitted", lambda: admitted(queues, "first"))
    owner = wl["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["controller"], owner["uid"]) == ("SwarmJob", True, swj.get("first")["metadata"]["uid"])
    assert [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [("head", 1), ("cpu", 1)]
    wait_for("the first job's cluster", lambda: cluster_exists(swc, "first-1"))
    head = wait_for("the first job's head pod", lambda: swc.heads("first-1"))[0]
    assert head.spec.node_selector == FLAVOR_LABELS, "the admitted flavor's node labels are not on the pod"
    assert any(t.key == FLAVOR_TOLERATION["key"] for t in head.spec.tolerations or []), head.spec.tolerations
    wait_for("PodsReady on the first Workload (its cluster Running on kwok)",
             lambda: condition(queues.workload_of("first"), "PodsReady").get("status") == "True")

    queued_job(swj, "second", queue)
    waiting = wait_for("the second job held with Kueue's reason", lambda: (
        s := swj.status("second")).get("jobDeploymentStatus") == "Suspended" and "insufficient" in s.get("message", "")
        and s)
    assert "waiting for Kueue to admit Workload" in waiting["message"], waiting
    assert condition(queues.workload_of("second"), "QuotaReserved").get("status") == "False"
    time.sleep(3)  # several of its turns: still nothing of it runs
    assert not cluster_exists(swc, "second-1")

    # Evict the first by deactivating its Workload, as an admin would. Kueue v0.17 drops an inactive Workload's
    # quota from its accounting at once (so the second may be admitted before the first's pods are gone; the
    # operator's own order, release only once the pods are gone, shows on the first's Workload below).
    queues.deactivate(queues.workload_of("first")["metadata"]["name"])  # type: ignore[index]
    wait_for("the first job suspended by the eviction", lambda: (s := swj.status("first")).get(
        "jobDeploymentStatus") == "Suspended" and "evicted by Kueue" in s.get("message", ""), timeout=30)
    wait_for("the first job's cluster and pods gone",
             lambda: not cluster_exists(swc, "first-1") and not swc.pods("first-1", include_deleting=True), timeout=60)
    released = wait_for("the first Workload's quota released by the operator", lambda: (
        w := queues.workload_of("first")) and condition(w, "QuotaReserved").get("status") == "False" and w)
    assert condition(released, "QuotaReserved")["reason"] == "Pending"
    assert condition(released, "Admitted").get("status") == "False"
    assert condition(released, "Evicted").get("status") == "True"
    assert not released.get("status", {}).get("admission")
    wait_for("the second job admitted", lambda: admitted(queues, "second"), timeout=30)
    wait_for("the second job's cluster", lambda: cluster_exists(swc, "second-1"))


def test_a_finished_job_gives_its_quota_to_the_next(queues: Queues, operator: OperatorProcess, swj: SwarmJobs,
                                                    swc: Cluster) -> None:
    queue = queues.create(cpu=3)
    # kwok runs no Ray: the first job ends Failed at its deadline, which counts from its admission.
    queued_job(swj, "first", queue, activeDeadlineSeconds=4)
    wait_for("the first job admitted", lambda: admitted(queues, "first"))
    queued_job(swj, "second", queue)
    wait_for("the second job waiting", lambda: "waiting for Kueue" in swj.status("second").get("message", ""))
    wait_for("the first job Failed", lambda: swj.status("first").get("jobDeploymentStatus") == "Failed", timeout=30)
    finished = wait_for("Finished on the first Workload",
                        lambda: (c := condition(queues.workload_of("first"), "Finished")).get("status") == "True" and c)
    assert finished["reason"] == "Failed"
    wait_for("the second job admitted", lambda: admitted(queues, "second"), timeout=30)
    wait_for("the second job's cluster", lambda: cluster_exists(swc, "second-1"))



def queued_cluster(swc: Cluster, name: str, queue: str, **spec: Any) -> None:
    body = manifest(name, replicas=1, **spec)
    body["metadata"]["labels"] = {QUEUE_LABEL: queue}
    swc.create(body)


def test_a_queued_cluster_waits_runs_and_on_eviction_loses_its_pods_not_itself(
        queues: Queues, operator: OperatorProcess, swc: Cluster) -> None:
    queue = queues.create(cpu=3)
    queued_cluster(swc, "first", queue)  # a head and one worker of 1 CPU each: 2 of 3
    wl = wait_for("the first cluster's Workload admitted", lambda: admitted(queues, "first", "SwarmCluster"))
    owner = wl["metadata"]["ownerReferences"][0]
    uid = swc.get("first")["metadata"]["uid"]
    assert (owner["kind"], owner["controller"], owner["uid"]) == ("SwarmCluster", True, uid)
    assert [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [("head", 1), ("cpu", 1)]
    head = wait_for("the first cluster's head pod", lambda: swc.heads("first"))[0]
    assert head.spec.node_selector == FLAVOR_LABELS, "the admitted flavor's node labels are not on the pod"
    wait_for("PodsReady on the first cluster's Workload", lambda: condition(
        queues.workload_of("first", "SwarmCluster"), "PodsReady").get("status") == "True")

    # The second autoscales (minReplicas 1 of maxReplicas 3): its Workload asks for the guaranteed size only.
    queued_cluster(swc, "second", queue, autoscaling={"enabled": True},
                   workerGroups=[{"name": "cpu", "minReplicas": 1, "maxReplicas": 3,
                                  "resources": {"cpu": 1, "memory": "1Gi"}}])
    held = wait_for("the second cluster held with Kueue's reason", lambda: (
        c := condition(swc.get("second"), "Suspended")).get("reason") == "HeldByKueue"
        and "insufficient" in c.get("message", "") and c)
    assert "waiting for Kueue to admit Workload" in held["message"], held
    assert swc.status("second")["phase"] == "Suspended"
    second = queues.workload_of("second", "SwarmCluster") or {}
    assert [(p["name"], p["count"]) for p in second["spec"]["podSets"]] == [("head", 1), ("cpu", 1)]
    time.sleep(3)  # several of its turns: still no pod
    assert not swc.pods("second")

    queues.deactivate(queues.workload_of("first", "SwarmCluster")["metadata"]["name"])  # type: ignore[index]
    wait_for("the first cluster's pods gone", lambda: not swc.pods("first", include_deleting=True), timeout=60)
    # The resource stays, suspended, saying why: written at the end of the turn that deleted the pods, which kwok
    # may finish first.
    first = wait_for("the first cluster Suspended", lambda: (c := swc.get("first"))["status"].get("phase")
                     == "Suspended" and c, timeout=10)
    assert "evicted by Kueue" in condition(first, "Suspended")["message"]
    released = wait_for("the first Workload's quota released by the operator", lambda: (
        w := queues.workload_of("first", "SwarmCluster")) and condition(w, "QuotaReserved").get("status") == "False"
        and w)
    assert not released.get("status", {}).get("admission")

    wait_for("the second cluster admitted", lambda: admitted(queues, "second", "SwarmCluster"), timeout=30)
    wait_for("the second cluster's head and its one admitted worker", lambda: len(swc.pods("second")) == 2)
    quota = wait_for("status.autoscaler.quota", lambda: swc.status("second").get("autoscaler", {}).get("quota"))
    assert quota == "quota: admitted 1 of 3 cpu workers", quota
    assert condition(swc.get("second"), "Suspended")["status"] == "False"


def test_a_higher_priority_job_preempts_a_lower_one_which_resumes_later(
        queues: Queues, operator: OperatorProcess, swj: SwarmJobs, swc: Cluster) -> None:
    low, high = queues.priority_class("low", 10), queues.priority_class("high", 1000)
    queue = queues.create(cpu=3, preemption={"withinClusterQueue": "LowerPriority"})
    # The low job's cluster autoscales (1 to 3 workers): its Workload asks for 1, and its cluster stays within it.
    queued_job(swj, "low", queue, labels={PRIORITY_LABEL: low}, clusterSpec={
        **CLUSTER_SPEC, "autoscaling": {"enabled": True},
        "workerGroups": [{"name": "cpu", "minReplicas": 1, "maxReplicas": 3,
                          "resources": {"cpu": 1, "memory": "1Gi"}}]})
    wl = wait_for("the low job admitted", lambda: admitted(queues, "low"))
    assert (wl["spec"]["priority"], wl["spec"]["priorityClassRef"]["name"]) == (10, low)
    wait_for("the low job's cluster running (PodsReady)",
             lambda: condition(queues.workload_of("low"), "PodsReady").get("status") == "True")
    group = swc.get("low-1")["spec"]["workerGroups"][0]
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 1), group
    quota = wait_for("the low job's cluster says its bound", lambda: swc.status("low-1").get("autoscaler", {}).get(
        "quota"))
    assert quota == "quota: admitted 1 of 3 cpu workers"

    # kwok runs no Ray: the high job ends Failed at its deadline, which counts from its admission.
    queued_job(swj, "high", queue, labels={PRIORITY_LABEL: high}, activeDeadlineSeconds=6)
    evicted = wait_for("the low job's Workload preempted", lambda: (
        c := condition(queues.workload_of("low"), "Evicted")).get("status") == "True" and c)
    assert evicted["reason"] == "Preempted", evicted
    wait_for("the low job suspended by the preemption", lambda: (s := swj.status("low")).get(
        "jobDeploymentStatus") == "Suspended" and "evicted by Kueue (Preempted)" in s.get("message", ""), timeout=30)
    wl = wait_for("the high job admitted", lambda: admitted(queues, "high"), timeout=60)
    assert wl["spec"]["priority"] == 1000
    # Kueue admits the preemptor only once the operator released the low job's quota, which waits for its pods.
    assert not cluster_exists(swc, "low-1") and not swc.pods("low-1", include_deleting=True)
    released = queues.workload_of("low")
    assert condition(released, "QuotaReserved").get("status") == "False"
    assert (condition(released, "Requeued").get("status"), condition(released, "Requeued").get("reason")) == (
        "True", "Preempted")

    wait_for("the high job Failed at its deadline", lambda: swj.status("high").get("jobDeploymentStatus") == "Failed",
             timeout=60)
    wait_for("the low job admitted again", lambda: admitted(queues, "low"), timeout=60)
    wait_for("the low job resumed on a new attempt's cluster", lambda: cluster_exists(swc, "low-2"), timeout=30)
    assert swj.status("low").get("attempt", 2) >= 2


def scheduled(swc: Cluster, cluster: str, count: int) -> list[Any] | None:
    """The cluster's pods, once there are `count` and each is bound to a node."""
    pods: list[Any] = swc.pods(cluster)
    return pods if len(pods) == count and all(p.spec.node_name for p in pods) else None


def test_two_flavors_put_each_jobs_pods_on_its_flavors_nodes(
        queues: Queues, api_client: client.ApiClient, operator: OperatorProcess, swj: SwarmJobs,
        swc: Cluster) -> None:
    """Quota for one job on spot nodes (tainted) and one on on-demand nodes, tried in that order: the first job is
    admitted on spot, the second on on-demand, and each one's pods are scheduled on its flavor's nodes."""
    core: Any = client.CoreV1Api(api_client)
    spot_taint = {"key": "swarm.io/spot", "value": "true", "effect": "NoSchedule"}
    nodes = {lifecycle: f"{swj.ns}-{lifecycle}" for lifecycle in ("spot", "on-demand")}
    try:
        for lifecycle, name in nodes.items():
            labels = {"swarm.io/test": swj.ns, "swarm.io/lifecycle": lifecycle}
            node = fake_node(name, "8", "32Gi", labels=labels)
            node["spec"] = {"taints": [spot_taint]} if lifecycle == "spot" else {}
            core.create_node(node)
            # The spot flavor tolerates its nodes' taint: Kueue's admission puts the toleration on the pods.
            queues.make_flavor(name, labels, [{**spot_taint, "operator": "Equal"}] if lifecycle == "spot" else [])
        wait_nodes_ready(api_client, list(nodes.values()))
        queue = queues.create(cpu=0, flavors={f"{swj.ns}-spot": 2, f"{swj.ns}-on-demand": 2})
        for job, lifecycle in (("on-spot", "spot"), ("on-demand", "on-demand")):
            queued_job(swj, job, queue)
            wl = wait_for(f"{job} admitted", partial(admitted, queues, job))
            flavors = {f for a in wl["status"]["admission"]["podSetAssignments"] for f in a["flavors"].values()}
            assert flavors == {f"{swj.ns}-{lifecycle}"}, wl["status"]["admission"]
            pods = wait_for(f"{job}'s head and worker scheduled", partial(scheduled, swc, f"{job}-1", 2))
            for pod in pods:
                assert pod.spec.node_name == nodes[lifecycle], (pod.metadata.name, pod.spec.node_name)
                assert pod.spec.node_selector["swarm.io/lifecycle"] == lifecycle
    finally:
        for name in nodes.values():
            remove_node(core, name)
