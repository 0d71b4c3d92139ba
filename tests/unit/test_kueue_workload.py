"""A queued object's Workload (kueue/workload.py): its pod sets, how its status is read, and the lifecycle decisions."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.jobs.admission import queued
from swarm_operator.jobs.spec import JobSpec, parse_job
from swarm_operator.kueue.workload import (
    PRIORITY_CLASS,
    RESOURCE_FLAVOR,
    WORKLOAD_PRIORITY_CLASS,
    CreateWorkload,
    DeleteWorkload,
    Gate,
    Owner,
    OwnerSide,
    Priority,
    ReleaseQuota,
    SetFinished,
    SetPodsReady,
    WorkloadView,
    admission_gate,
    admitted_counts,
    admitted_flavors,
    bounded_by_admission,
    build_workload,
    owner_of,
    pod_sets,
    priority_source,
    queue_name,
    released_status,
    set_conditions,
    with_bounds,
    with_flavors,
    workload_name,
    workload_view,
)
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.types import ClusterSpec

CLUSTER_SPEC: dict[str, Any] = {
    "head": {"resources": {"cpu": 1, "memory": "1Gi"}, "template": {"spec": {"nodeSelector": {"pool": "a"}}}},
    "workerGroups": [
        {"name": "cpu", "replicas": 3, "minReplicas": 1, "maxReplicas": 4, "resources": {"cpu": 2, "memory": "2Gi"},
         "template": {"spec": {"tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]}}},
        {"name": "gpu", "minReplicas": 0, "maxReplicas": 2, "resources": {"cpu": 1, "memory": "4Gi", "gpu": 1}},
    ],
}


JOB = Owner("SwarmJob", "pi", "ns", "u1")


def job(**spec: Any) -> JobSpec:
    body: dict[str, Any] = {"entrypoint": "python pi.py", "clusterSpec": CLUSTER_SPEC, **spec}
    if "clusterSelector" in spec:
        body.pop("clusterSpec")
    return parse_job({"metadata": {"name": "pi", "namespace": "ns", "uid": "u1", "generation": 1}, "spec": body})


def cluster(autoscaling: bool) -> ClusterSpec:
    return parse_cluster({"metadata": {"name": "pi-1", "namespace": "ns"},
                          "spec": {**CLUSTER_SPEC, "autoscaling": {"enabled": autoscaling}}})


# -- what is queued, and its Workload -----------------------------------------------------------------------

def test_only_a_labelled_job_with_its_own_cluster_is_queued() -> None:
    labelled = {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "team-a"}}}
    assert queue_name(labelled) == "team-a"
    assert queue_name({"metadata": {"labels": {}}}) is None
    assert queued(job(), "team-a")
    assert not queued(job(), None)
    assert not queued(job(clusterSelector={"name": "shared"}), "team-a")  # its cluster is not its own


def test_workload_name_is_stable_per_job_and_differs_by_uid() -> None:
    a = workload_name(JOB)
    assert a == workload_name(JOB) and a.startswith("swarmjob-pi-") and len(a) == len("swarmjob-pi-") + 5
    assert workload_name(Owner("SwarmJob", "pi", "ns", "u2")) != a  # a job re-created under the same name


@pytest.mark.parametrize(("autoscaling", "counts"), [
    (False, [("head", 1), ("cpu", 3)]),  # replicas; the gpu group has none (0) and is left out
    (True, [("head", 1), ("cpu", 1)]),  # minReplicas: the guaranteed size
], ids=["replicas", "autoscaling-min-replicas"])
def test_pod_sets_count_the_guaranteed_size(autoscaling: bool, counts: list[tuple[str, int]]) -> None:
    assert [(p["name"], p["count"]) for p in pod_sets(cluster(autoscaling))] == counts


def test_pod_sets_carry_requests_node_selector_and_tolerations() -> None:
    head, cpu = pod_sets(cluster(False))
    assert head["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert head["template"]["spec"]["nodeSelector"] == {"pool": "a"}
    assert cpu["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": "2Gi"}
    assert cpu["template"]["spec"]["tolerations"] == [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]


def test_workload_is_controller_owned_by_the_job_in_its_queue() -> None:
    wl = build_workload(JOB, "team-a", cluster(False))
    assert wl["apiVersion"] == "kueue.x-k8s.io/v1beta2" and wl["kind"] == "Workload"
    assert wl["spec"]["queueName"] == "team-a"
    assert wl["metadata"]["ownerReferences"] == [{"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmJob",
                                                   "name": "pi", "uid": "u1", "controller": True,
                                                   "blockOwnerDeletion": True}]


# -- reading the Workload ---------------------------------------------------------------------------------

def conditions(**types: str | tuple[str, str, str]) -> list[dict[str, Any]]:
    out = []
    for ctype, value in types.items():
        status, reason, message = value if isinstance(value, tuple) else (value, "R", "")
        out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": "2026-12-06T10:00:00Z"})
    return out


def workload(conds: list[dict[str, Any]], counts: tuple[int, ...] = (1, 3)) -> dict[str, Any]:
    names = ("head", "cpu")
    return {"metadata": {"name": "swarmjob-pi-abcde", "resourceVersion": "7", "generation": 1},
            "spec": {"podSets": [{"name": n, "count": c} for n, c in zip(names, counts, strict=True)]},
            "status": {"conditions": conds, "admission": {"clusterQueue": "cq"}}}


def test_workload_view_reads_kueue_conditions() -> None:
    wanted = pod_sets(cluster(False))
    pending = workload_view(workload(conditions(QuotaReserved=("False", "Pending", "insufficient quota"))), wanted)
    assert (pending.quota_reserved, pending.admitted, pending.pending, pending.pod_sets_match) == (
        False, False, "insufficient quota", True)
    evicted = workload_view(workload(conditions(QuotaReserved="True", Admitted="True",
                                                Evicted=("True", "Preempted", "by a higher priority"))), wanted)
    assert evicted.evicted == ("Preempted", "by a higher priority") and evicted.cluster_queue == "cq"
    assert not workload_view(workload([], counts=(1, 2)), wanted).pod_sets_match


# -- the lifecycle decisions -------------------------------------------------------------------------------

def view(**kw: Any) -> WorkloadView:
    base: dict[str, Any] = {"name": "wl", "pod_sets_match": True, "quota_reserved": False, "admitted": False,
                            "evicted": None, "finished": False, "pods_ready": None, "pending": "",
                            "cluster_queue": "cq"}
    return WorkloadView(**{**base, **kw})


def side(**kw: Any) -> OwnerSide:
    return OwnerSide(**{"queue": "lq", "finished": "", "message": "", "running": False, "pods_left": 0, **kw})


ADMITTED = {"quota_reserved": True, "admitted": True}
EVICTED = {**ADMITTED, "evicted": ("InactiveWorkload", "deactivated")}


@pytest.mark.parametrize(("job_side", "wl", "may_run", "actions", "why"), [
    (side(), None, False, (CreateWorkload("queued in LocalQueue lq"),), "creating its Workload"),
    (side(), view(deleting=True), False, (), "creating its Workload"),
    (side(), view(pending="insufficient quota for cpu"), False, (), "insufficient quota for cpu"),
    (side(), view(pod_sets_match=False), False, (DeleteWorkload("its pod sets no longer match the job's cluster"),),
     "recreating"),
    (side(), view(quota_reserved=True), False, (), "admission checks"),
    (side(), view(**ADMITTED), True, (SetPodsReady(False, "the job's cluster is not running yet"),), ""),
    (side(running=True), view(**ADMITTED, pods_ready=False), True,
     (SetPodsReady(True, "the job's cluster is running"),), ""),
    (side(running=True), view(**ADMITTED, pods_ready=True), True, (), ""),
    (side(), view(**ADMITTED, pod_sets_match=False, pods_ready=False), True, (), ""),  # admitted: not recreated
    (side(pods_left=2), view(**EVICTED), False, (), "2 left"),
    (side(), view(**EVICTED), False, (ReleaseQuota("InactiveWorkload", "deactivated"),), "evicted by Kueue"),
    (side(), view(**{**EVICTED, "quota_reserved": False, "admitted": False}), False, (), "admitted again"),
    (side(finished="Complete", message="done"), view(**ADMITTED), False, (SetFinished("Succeeded", "done"),),
     "finished"),
    (side(finished="Failed", message="boom"), view(**ADMITTED), False, (SetFinished("Failed", "boom"),), "finished"),
    (side(finished="Failed"), view(**ADMITTED, finished=True), False, (), "finished"),
    (side(finished="Complete"), None, False, (), "finished"),  # its Workload gone: none is made again
], ids=["create", "being-deleted", "pending-with-kueue's-reason", "pod-sets-changed", "reserved-not-admitted",
        "admitted-not-ready", "pods-ready", "steady", "admitted-pod-sets-kept", "evicted-pods-left",
        "evicted-release", "released-waits", "finished-succeeded", "finished-failed", "finished-once",
        "finished-no-workload"])
def test_admission_gate(job_side: OwnerSide, wl: WorkloadView | None, may_run: bool, actions: tuple[Any, ...],
                        why: str) -> None:
    gate = admission_gate(job_side, wl)
    assert gate == Gate(may_run, gate.why, actions)
    assert why in gate.why


def test_release_clears_admission_and_requeues_only_a_preemption() -> None:
    before = conditions(QuotaReserved="True", Admitted="True", Evicted=("True", "Preempted", "p"))
    status = released_status(before, "Preempted", "p", "2026-12-06T11:00:00Z", 2)
    assert status["admission"] is None  # removed by the merge patch
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (by_type["QuotaReserved"]["status"], by_type["QuotaReserved"]["reason"]) == ("False", "Pending")
    assert by_type["Admitted"]["status"] == "False"
    assert by_type["Requeued"]["status"] == "True"
    assert by_type["Evicted"]["status"] == "True"  # Kueue's own condition is kept
    deactivated = released_status(before, "InactiveWorkload", "d", "2026-12-06T11:00:00Z", 2)
    assert {c["type"]: c for c in deactivated["conditions"]}["Requeued"]["status"] == "False"


def test_set_conditions_moves_the_time_only_on_a_flip() -> None:
    before = conditions(PodsReady="True")
    same = set_conditions(before, {"PodsReady": ("True", "PodsReady", "m")}, "2026-12-06T12:00:00Z", 1)
    assert same[0]["lastTransitionTime"] == "2026-12-06T10:00:00Z"
    flipped = set_conditions(before, {"PodsReady": ("False", "WaitForStart", "m")}, "2026-12-06T12:00:00Z", 1)
    assert flipped[0]["lastTransitionTime"] == "2026-12-06T12:00:00Z"


# -- the admitted flavors on the pods --------------------------------------------------------------------------

def test_admitted_flavors_per_pod_set() -> None:
    body = {"status": {"admission": {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "head", "flavors": {"cpu": "on-demand", "memory": "on-demand"}, "count": 1},
        {"name": "cpu", "flavors": {"cpu": "spot", "memory": "spot"}, "count": 3}]}}}
    assert admitted_flavors(body) == {"head": ("on-demand",), "cpu": ("spot",)}
    assert admitted_flavors({"status": {}}) == {}


def test_flavors_put_node_labels_and_tolerations_on_each_pod_set() -> None:
    spot_toleration = {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}
    flavors = {"on-demand": {"nodeLabels": {"pool": "on-demand"}},
               "spot": {"nodeLabels": {"pool": "spot", "zone": "b"}, "tolerations": [spot_toleration]}}
    spec = with_flavors(CLUSTER_SPEC, {"head": ("on-demand",), "cpu": ("spot",)}, flavors)
    assert spec["head"]["template"]["spec"]["nodeSelector"] == {"pool": "on-demand"}  # the flavor's label wins
    cpu, gpu = spec["workerGroups"]
    assert cpu["template"]["spec"]["nodeSelector"] == {"pool": "spot", "zone": "b"}
    assert cpu["template"]["spec"]["tolerations"] == [spot_toleration]  # already the template's: not twice
    assert gpu["template"] == {"spec": {}}  # not admitted (a group of size 0): untouched
    assert CLUSTER_SPEC["head"]["template"]["spec"]["nodeSelector"] == {"pool": "a"}  # the job's spec is not changed


def test_resource_flavors_are_cluster_scoped() -> None:
    assert RESOURCE_FLAVOR.item("ns", "spot") == "/apis/kueue.x-k8s.io/v1beta2/resourceflavors/spot"


# -- the autoscaler bounded by the admission -------------------------------------------------------------------

def test_admitted_counts_per_pod_set() -> None:
    body = {"status": {"admission": {"podSetAssignments": [{"name": "head", "count": 1}, {"name": "cpu", "count": 2}]}}}
    assert admitted_counts(body) == {"head": 1, "cpu": 2}
    assert admitted_counts({}) == {}


@pytest.mark.parametrize(("autoscaling", "admitted", "maxima", "quota"), [
    pytest.param(True, {"head": 1, "cpu": 1}, {"cpu": 1, "gpu": 0},
                 "quota: admitted 1 of 4 cpu workers; admitted 0 of 2 gpu workers", id="autoscaled-groups-bounded"),
    pytest.param(True, {"head": 1, "cpu": 4, "gpu": 2}, {"cpu": 4, "gpu": 2}, "", id="admitted-all-it-may-grow-to"),
    pytest.param(False, {"head": 1, "cpu": 3}, {"cpu": 4, "gpu": 2}, "", id="no-autoscaling-its-replicas-were-asked"),
    pytest.param(False, {"head": 1, "cpu": 2}, {"cpu": 2, "gpu": 2}, "quota: admitted 2 of 3 cpu workers",
                 id="no-autoscaling-replicas-raised-after-the-admission"),
])
def test_bounded_by_admission(autoscaling: bool, admitted: dict[str, int], maxima: dict[str, int],
                              quota: str) -> None:
    bounded, said = bounded_by_admission(cluster(autoscaling), admitted)
    assert {g.name: g.max_replicas for g in bounded.worker_groups} == maxima
    assert all(g.min_replicas <= g.initial_replicas() <= g.max_replicas for g in bounded.worker_groups)
    if not autoscaling:
        assert {g.name: g.initial_replicas() for g in bounded.worker_groups} == {"cpu": min(3, admitted["cpu"]),
                                                                                 "gpu": 0}
    assert said == quota


def test_a_cluster_workload_is_owned_by_the_cluster() -> None:
    owner = Owner("SwarmCluster", "shared", "ns", "u9")
    wl = build_workload(owner, "team-a", cluster(True))
    assert workload_name(owner).startswith("swarmcluster-shared-")
    assert wl["metadata"]["ownerReferences"][0]["kind"] == "SwarmCluster"
    assert [(p["name"], p["count"]) for p in wl["spec"]["podSets"]] == [("head", 1), ("cpu", 1)]


# -- priority ------------------------------------------------------------------------------------------------

def test_owner_of_reads_the_priority_class_label() -> None:
    body = {"metadata": {"name": "pi", "namespace": "ns", "uid": "u1",
                         "labels": {"kueue.x-k8s.io/priority-class": "high"}}}
    assert owner_of("SwarmJob", body) == Owner("SwarmJob", "pi", "ns", "u1", "high")


PRIORITY_SPEC: dict[str, Any] = {**CLUSTER_SPEC, "head": {**CLUSTER_SPEC["head"], "template": {
    "spec": {"priorityClassName": "pods-high"}}}}


@pytest.mark.parametrize(("label", "spec", "source"), [
    pytest.param("high", PRIORITY_SPEC, (WORKLOAD_PRIORITY_CLASS, "high"), id="the-label-wins"),
    pytest.param("", PRIORITY_SPEC, (PRIORITY_CLASS, "pods-high"), id="else-a-pod-templates-priorityClassName"),
    pytest.param("", CLUSTER_SPEC, None, id="neither"),
])
def test_priority_source(label: str, spec: dict[str, Any], source: tuple[Any, str] | None) -> None:
    c = parse_cluster({"metadata": {"name": "pi-1", "namespace": "ns"}, "spec": spec})
    assert priority_source(Owner("SwarmJob", "pi", "ns", "u1", label), pod_sets(c)) == source


def test_workload_carries_its_priority_class_and_value() -> None:
    wl = build_workload(JOB, "team-a", cluster(False), Priority(WORKLOAD_PRIORITY_CLASS, "high", 1000))
    assert wl["spec"]["priorityClassRef"] == {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass",
                                              "name": "high"}
    assert wl["spec"]["priority"] == 1000
    assert "priority" not in build_workload(JOB, "team-a", cluster(False))["spec"]
    assert PRIORITY_CLASS.item("", "x") == "/apis/scheduling.k8s.io/v1/priorityclasses/x"


def test_with_bounds_writes_a_bounded_groups_sizes_into_the_spec() -> None:
    bounded, _ = bounded_by_admission(cluster(True), {"head": 1, "cpu": 1})
    spec = with_bounds({**CLUSTER_SPEC, "autoscaling": {"enabled": True}}, bounded)
    cpu, gpu = spec["workerGroups"]
    assert (cpu["minReplicas"], cpu["maxReplicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (1, 1, 0, 0)
    assert CLUSTER_SPEC["workerGroups"][0]["maxReplicas"] == 4  # the job's spec is not changed
    unbounded, _ = bounded_by_admission(cluster(True), {"head": 1, "cpu": 4, "gpu": 2})
    assert with_bounds(CLUSTER_SPEC, unbounded)["workerGroups"] == CLUSTER_SPEC["workerGroups"]
