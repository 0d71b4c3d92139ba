"""A queued object's Kueue Workload (a SwarmJob with a cluster of its own, or a SwarmCluster), and what Kueue's answer
lets it do. Pure: plain data in, plain data out.

Kueue has no code for our kinds: `integrations.externalFrameworks` only registers SwarmJob and SwarmCluster for owner
matching, so the operator runs the Workload's lifecycle itself, as Kueue's own job reconciler (jobframework) does for
its kinds: create it (controller-owned by our object), recreate it while it is not admitted when its pod sets no
longer match, start the object once it is admitted, stop it when it is evicted and give the quota back only once its
pods are gone, and report PodsReady and Finished.

The suspension is the operator's decision, not a write to `spec.suspend`: the user's manifest stays as written
(a GitOps tool re-applying it does not fight Kueue), and `spec.suspend: true` still holds an object Kueue admitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from swarm_operator import GROUP, VERSION
from swarm_operator.kube import Resource
from swarm_operator.resources.labels import HEAD
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.spec.types import ClusterSpec

KUEUE_GROUP = "kueue.x-k8s.io"
QUEUE_LABEL = f"{KUEUE_GROUP}/queue-name"
WORKLOAD = Resource(KUEUE_GROUP, "v1beta2", "workloads", "Workload")
RESOURCE_FLAVOR = Resource(KUEUE_GROUP, "v1beta2", "resourceflavors", "ResourceFlavor", namespaced=False)
WORKLOAD_PRIORITY_CLASS = Resource(KUEUE_GROUP, "v1beta2", "workloadpriorityclasses", "WorkloadPriorityClass",
                                   namespaced=False)
PRIORITY_CLASS = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False)
PRIORITY_CLASS_LABEL = f"{KUEUE_GROUP}/priority-class"
QUOTA_ANNOTATION = f"{GROUP}/kueue-quota"  # on a queued job's own cluster: what the job's admission bounds
MAX_NAME = 253
# Kueue's own reasons, so that `kubectl describe workload` reads the same for our kinds as for its own.
FINISHED_SUCCEEDED = "Succeeded"
FINISHED_FAILED = "Failed"
RELEASED_REASON = "Pending"
NO_KUEUE = ("is labelled kueue.x-k8s.io/queue-name, but Kueue is not installed: the API server serves no Workload "
            "(kueue.x-k8s.io/v1beta2); install Kueue, or remove the label to run it unqueued")


@dataclass(frozen=True)
class Owner:
    """The object a Workload stands for: a SwarmJob or a SwarmCluster."""

    kind: str
    name: str
    namespace: str
    uid: str
    priority_class: str = ""  # its label kueue.x-k8s.io/priority-class: a WorkloadPriorityClass


def owner_of(kind: str, body: Mapping[str, Any]) -> Owner:
    meta = body.get("metadata") or {}
    return Owner(kind, str(meta.get("name") or ""), str(meta.get("namespace") or ""), str(meta.get("uid") or ""),
                 str((meta.get("labels") or {}).get(PRIORITY_CLASS_LABEL) or ""))


def queue_name(body: Mapping[str, Any]) -> str | None:
    """The LocalQueue an object asks for, from its label; None when it is not queued."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    name = labels.get(QUEUE_LABEL)
    return str(name) if name else None


def workload_name(owner: Owner) -> str:
    """Named as Kueue names the Workload of a job of its own kinds: `<kind>-<name>-<5 hex of the owner>`."""
    digest = hashlib.sha1(f"{owner.kind}/{owner.name}/{owner.uid}".encode()).hexdigest()[:5]
    return f"{owner.kind.lower()}-{owner.name}"[:MAX_NAME - 6] + f"-{digest}"


def _pod_set(name: str, count: int, pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod set as Kueue reads it: the count, and of the pod template what admission uses (each container's
    resources, the node selector and tolerations that flavors are matched against)."""
    spec = pod.get("spec") or {}
    template: dict[str, Any] = {"spec": {
        "containers": [{"name": c["name"], "image": c.get("image", ""), "resources": c.get("resources") or {}}
                       for c in spec.get("containers") or []],
    }}
    if spec.get("initContainers"):
        template["spec"]["initContainers"] = [
            {"name": c["name"], "image": c.get("image", ""), "resources": c.get("resources") or {}}
            for c in spec["initContainers"]]
    for key in ("nodeSelector", "tolerations", "priorityClassName"):
        if spec.get(key):
            template["spec"][key] = spec[key]
    return {"name": name, "count": count, "template": template}


def pod_sets(cluster: ClusterSpec) -> list[dict[str, Any]]:
    """The head, then each worker group with its guaranteed size: `replicas`, or `minReplicas` with autoscaling on
    (what the autoscaler adds beyond it is not admitted; issue #26 step 3). A group of size 0 is left out (Kueue
    refuses a pod set of count 0 unless it is elastic), so is a group name equal to the head's."""
    sets = [_pod_set(HEAD, 1, build_head_pod(cluster))]
    for group in cluster.worker_groups:
        count = group.min_replicas if cluster.autoscaling.enabled else group.initial_replicas()
        if count > 0:
            sets.append(_pod_set(group.name, count, build_worker_pod(cluster, group, "x")))
    return sets


def priority_source(owner: Owner, sets: list[dict[str, Any]]) -> tuple[Resource, str] | None:
    """Which class gives the Workload its priority, as Kueue's job reconciler chooses: the WorkloadPriorityClass
    named by the owner's label `kueue.x-k8s.io/priority-class`, else the PriorityClass of the first pod set that
    names one (`priorityClassName` in a pod template); None: neither (priority 0)."""
    if owner.priority_class:
        return WORKLOAD_PRIORITY_CLASS, owner.priority_class
    named = [p["template"]["spec"]["priorityClassName"] for p in sets if p["template"]["spec"].get("priorityClassName")]
    return (PRIORITY_CLASS, named[0]) if named else None


@dataclass(frozen=True)
class Priority:
    """A Workload's priority: the class it comes from and its value."""

    kind: Resource  # WORKLOAD_PRIORITY_CLASS or PRIORITY_CLASS
    name: str
    value: int


def build_workload(owner: Owner, queue: str, cluster: ClusterSpec, priority: Priority | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"queueName": queue, "podSets": pod_sets(cluster)}
    if priority is not None:
        spec["priorityClassRef"] = {"group": priority.kind.group, "kind": priority.kind.kind, "name": priority.name}
        spec["priority"] = priority.value
    return {
        "apiVersion": WORKLOAD.api_version,
        "kind": WORKLOAD.kind,
        "metadata": {
            "name": workload_name(owner),
            "namespace": owner.namespace,
            "labels": {f"{KUEUE_GROUP}/job-uid": owner.uid},
            # Kueue matches a Workload to its job through this controller reference (and the external framework).
            "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": owner.kind, "name": owner.name,
                                 "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class WorkloadView:
    """What the decisions read of a Workload."""

    name: str
    pod_sets_match: bool  # its pod sets' names and counts are the ones its owner needs now (Kueue's webhook may
    # default fields of the templates, so they are not compared)
    quota_reserved: bool
    admitted: bool
    evicted: tuple[str, str] | None  # (reason, message) of Evicted=True
    finished: bool
    pods_ready: bool | None  # the PodsReady condition; None: not set
    pending: str  # why it is not admitted, as Kueue says it (QuotaReserved=False's message)
    cluster_queue: str
    deleting: bool = False


def _conditions(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (body.get("status") or {}).get("conditions") or []}


def workload_view(body: Mapping[str, Any], wanted_pod_sets: list[dict[str, Any]]) -> WorkloadView:
    conds = _conditions(body)

    def true(ctype: str) -> bool:
        return conds.get(ctype, {}).get("status") == "True"

    evicted = conds.get("Evicted")
    ready = conds.get("PodsReady")
    stored = [{"name": p.get("name"), "count": p.get("count")} for p in (body.get("spec") or {}).get("podSets") or []]
    wanted = [{"name": p["name"], "count": p["count"]} for p in wanted_pod_sets]
    admission = (body.get("status") or {}).get("admission") or {}
    return WorkloadView(
        name=str((body.get("metadata") or {}).get("name") or ""),
        pod_sets_match=stored == wanted,
        quota_reserved=true("QuotaReserved"),
        admitted=true("Admitted"),
        evicted=(str(evicted.get("reason") or ""), str(evicted.get("message") or "")) if true("Evicted") and evicted
        else None,
        finished=true("Finished"),
        pods_ready=None if ready is None else ready.get("status") == "True",
        pending=str(conds.get("QuotaReserved", {}).get("message") or ""),
        cluster_queue=str(admission.get("clusterQueue") or ""),
        deleting=bool((body.get("metadata") or {}).get("deletionTimestamp")),
    )


def admitted_flavors(body: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Each admitted pod set's flavors (one per resource, usually the same for all), from status.admission."""
    assignments = ((body.get("status") or {}).get("admission") or {}).get("podSetAssignments") or []
    return {str(a.get("name")): tuple(sorted(set((a.get("flavors") or {}).values()))) for a in assignments}


def admitted_counts(body: Mapping[str, Any]) -> dict[str, int]:
    """How many pods of each pod set Kueue admitted (status.admission; a pod set it left out has none)."""
    assignments = ((body.get("status") or {}).get("admission") or {}).get("podSetAssignments") or []
    return {str(a.get("name")): int(a.get("count") or 0) for a in assignments}


def bounded_by_admission(cluster: ClusterSpec, admitted: Mapping[str, int]) -> tuple[ClusterSpec, str]:
    """The cluster with each autoscaled group's maxReplicas lowered to what Kueue admitted of it, so the autoscaler
    never starts a pod beyond the quota (Kueue v0.17 can grow an admitted Workload only through workload slices, an
    alpha feature of its own job integrations: docs/kueue.md); and what that bound says, for status.autoscaler
    ("" when no group is bounded). Without autoscaling a group's size is what its pod set asked for, unless its
    replicas were raised after the admission: they are held to the admitted count too."""
    groups, notes = [], []
    for group in cluster.worker_groups:
        allowed = admitted.get(group.name, 0)
        wanted = group.max_replicas if cluster.autoscaling.enabled else group.initial_replicas()
        if wanted > allowed:
            notes.append(f"admitted {allowed} of {wanted} {group.name} workers")
            group = replace(group, max_replicas=allowed, min_replicas=min(group.min_replicas, allowed),
                            replicas=None if group.replicas is None else min(group.replicas, allowed))
        groups.append(group)
    quota = "quota: " + "; ".join(notes) if notes else ""
    return replace(cluster, worker_groups=tuple(groups)), quota


def with_bounds(cluster_spec: Mapping[str, Any], bounded: ClusterSpec) -> dict[str, Any]:
    """A clusterSpec with the worker groups' sizes of `bounded` (bounded_by_admission) where they differ: how a
    queued job's own cluster carries its admission's bound."""
    sizes = {g.name: g for g in bounded.worker_groups}
    groups = []
    for group in cluster_spec.get("workerGroups") or []:
        size = sizes.get(str(group.get("name")))
        if size is not None and size.max_replicas < int(group.get("maxReplicas", size.max_replicas)):
            group = {**group, "minReplicas": size.min_replicas, "maxReplicas": size.max_replicas,
                     **({"replicas": size.replicas} if size.replicas is not None else {})}
        groups.append(group)
    return {**cluster_spec, "workerGroups": groups}


def with_flavors(cluster_spec: Mapping[str, Any], assigned: Mapping[str, tuple[str, ...]],
                 flavors: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A clusterSpec with its admitted flavors applied, as Kueue starts a job of its own kinds: each pod
    set's pod template gets its flavors' `nodeLabels` in its nodeSelector (a flavor's label wins over the template's
    own) and their `tolerations` added, so the pods land on the flavor's nodes. A flavor not read is skipped."""
    spec = dict(cluster_spec)

    def flavored(template: Mapping[str, Any] | None, pod_set: str) -> dict[str, Any]:
        template = dict(template or {})
        pod = dict(template.get("spec") or {})
        selector = dict(pod.get("nodeSelector") or {})
        tolerations = list(pod.get("tolerations") or [])
        for name in assigned.get(pod_set, ()):
            flavor = flavors.get(name) or {}
            selector.update(flavor.get("nodeLabels") or {})
            tolerations += [t for t in flavor.get("tolerations") or [] if t not in tolerations]
        if selector:
            pod["nodeSelector"] = selector
        if tolerations:
            pod["tolerations"] = tolerations
        template["spec"] = pod
        return template

    head = dict(spec.get("head") or {})
    head["template"] = flavored(head.get("template"), HEAD)
    spec["head"] = head
    spec["workerGroups"] = [{**g, "template": flavored(g.get("template"), str(g.get("name")))}
                            for g in spec.get("workerGroups") or []]
    return spec


@dataclass(frozen=True)
class CreateWorkload:
    reason: str


@dataclass(frozen=True)
class DeleteWorkload:
    reason: str


@dataclass(frozen=True)
class ReleaseQuota:
    """Clear the admission (QuotaReserved=False, Admitted=False), as Kueue's job reconciler does after an
    eviction once the job is no longer active; Requeued says whether Kueue may admit it again at once."""

    evict_reason: str
    message: str


@dataclass(frozen=True)
class SetPodsReady:
    ready: bool
    message: str


@dataclass(frozen=True)
class SetFinished:
    reason: str  # FINISHED_SUCCEEDED or FINISHED_FAILED
    message: str


WorkloadAction = CreateWorkload | DeleteWorkload | ReleaseQuota | SetPodsReady | SetFinished


@dataclass(frozen=True)
class Gate:
    """Whether Kueue lets the object run this turn; `why` goes into its status while it may not."""

    may_run: bool
    why: str
    actions: tuple[WorkloadAction, ...] = ()


@dataclass(frozen=True)
class OwnerSide:
    """What the Workload's decisions read of its owner (a SwarmJob, or a SwarmCluster, which never finishes)."""

    queue: str
    finished: str  # "", "Complete" or "Failed": a job's end
    message: str  # the job's status message (Finished's message)
    running: bool  # its cluster is Running with a ready head
    pods_left: int  # its clusters, and then their pods, still present (being deleted or not)
    what: str = "the job's cluster"  # how messages name what runs: "the job's cluster", "the cluster"


def admission_gate(owner: OwnerSide, workload: WorkloadView | None) -> Gate:
    """The Workload's lifecycle for one turn: the action to take on it, and whether its owner may run."""
    if workload is None or workload.deleting:
        if owner.finished:
            return Gate(False, "finished")
        return Gate(False, f"waiting for Kueue: creating its Workload in LocalQueue {owner.queue}",
                    () if workload is not None else (CreateWorkload(f"queued in LocalQueue {owner.queue}"),))
    if owner.finished:
        if workload.finished:
            return Gate(False, "finished")
        reason = FINISHED_SUCCEEDED if owner.finished == "Complete" else FINISHED_FAILED
        return Gate(False, "finished", (SetFinished(reason, owner.message or f"the SwarmJob is {owner.finished}"),))
    if workload.evicted is not None:
        reason, message = workload.evicted
        why = f"evicted by Kueue ({reason}): {message}"
        if not workload.quota_reserved:
            return Gate(False, why + "; waiting to be admitted again")
        if owner.pods_left:
            return Gate(False, f"{why}; waiting for {owner.what} and its pods to be gone ({owner.pods_left} left) "
                               "before the quota is released")
        return Gate(False, why, (ReleaseQuota(reason, message),))
    if not workload.quota_reserved:
        if not workload.pod_sets_match:
            return Gate(False, "waiting for Kueue: the Workload's pod sets changed; recreating it",
                        (DeleteWorkload(f"its pod sets no longer match {owner.what}"),))
        pending = f": {workload.pending}" if workload.pending else ""
        return Gate(False, f"waiting for Kueue to admit Workload {workload.name} (LocalQueue {owner.queue}){pending}")
    if not workload.admitted:
        return Gate(False, f"waiting for Kueue: quota reserved in ClusterQueue {workload.cluster_queue}, "
                           "waiting for its admission checks")
    if workload.pods_ready != owner.running:
        message = f"{owner.what} is running" if owner.running else f"{owner.what} is not running yet"
        return Gate(True, "", (SetPodsReady(owner.running, message),))
    return Gate(True, "")


def released_status(conditions: list[Mapping[str, Any]], evict_reason: str, message: str,
                    now_text: str, generation: int) -> dict[str, Any]:
    """The Workload's status after its quota is released (a merge patch: `admission` removed, the conditions list
    whole): QuotaReserved=False and Admitted=False, and Requeued=True only after a preemption or node failure."""
    requeue = evict_reason in ("Preempted", "NodeFailures")
    updates = {
        "QuotaReserved": ("False", RELEASED_REASON, message),
        "Admitted": ("False", "NoReservation", "The workload has no reservation"),
        "Requeued": ("True" if requeue else "False", evict_reason, message),
    }
    return {"admission": None, "conditions": set_conditions(conditions, updates, now_text, generation)}


def set_conditions(conditions: list[Mapping[str, Any]], updates: Mapping[str, tuple[str, str, str]], now_text: str,
                   generation: int) -> list[dict[str, Any]]:
    """`conditions` with each of `updates` (type → status, reason, message) set; a transition time moves only when
    the status flips, as Kubernetes' meta.SetStatusCondition does."""
    out = [dict(c) for c in conditions]
    for ctype, (status, reason, message) in updates.items():
        found = next((c for c in out if c.get("type") == ctype), None)
        new = {"type": ctype, "status": status, "reason": reason, "message": message[:32768],
               "observedGeneration": generation,
               "lastTransitionTime": found["lastTransitionTime"] if found and found.get("status") == status
               and found.get("lastTransitionTime") else now_text}
        if found is None:
            out.append(new)
        else:
            found.clear()
            found.update(new)
    return out
