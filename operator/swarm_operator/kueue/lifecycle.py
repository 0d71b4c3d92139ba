"""A queued object's Workload, read and acted on: the I/O side of kueue/workload.py's decisions, for one turn of a
SwarmJob (jobs/admission.py) or a SwarmCluster (turn.py). Kueue admits; the operator runs the Workload's lifecycle
(docs/kueue.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from swarm_operator.kit.effects import Effects
from swarm_operator.kube_http import ApiError
from swarm_operator.kueue.workload import (
    RESOURCE_FLAVOR,
    WORKLOAD,
    CreateWorkload,
    DeleteWorkload,
    Owner,
    Priority,
    ReleaseQuota,
    SetFinished,
    SetPodsReady,
    WorkloadAction,
    admitted_flavors,
    build_workload,
    pod_sets,
    priority_source,
    released_status,
    set_conditions,
    with_flavors,
    workload_name,
)
from swarm_operator.reasons import EventReason
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.times import timestamp


async def read_workload(fx: Effects, owner: Owner) -> dict[str, Any] | None:
    """The owner's Workload; None when there is none yet. Raises ApiError 404 when Kueue is not installed."""
    return await fx.call(fx.kube.get_resource, WORKLOAD, owner.namespace, workload_name(owner))


async def flavored_spec(fx: Effects, workload: Mapping[str, Any], cluster_spec: Mapping[str, Any]) -> dict[str, Any]:
    """`cluster_spec` with the admitted flavors of `workload` applied (their ResourceFlavors read)."""
    assigned = admitted_flavors(workload)
    flavors = {}
    for flavor in sorted({f for names in assigned.values() for f in names}):
        found = await fx.call(fx.kube.get_resource, RESOURCE_FLAVOR, "", flavor)
        flavors[flavor] = dict((found or {}).get("spec") or {})
    return with_flavors(cluster_spec, assigned, flavors)


async def read_priority(fx: Effects, owner: Owner, cluster: ClusterSpec) -> Priority | str | None:
    """The Workload's priority from its class (kueue/workload.py's priority_source); a message when the class named
    does not exist (as Kueue's job reconciler, the Workload is then not created)."""
    source = priority_source(owner, pod_sets(cluster))
    if source is None:
        return None
    kind, name = source
    found = await fx.call(fx.kube.get_resource, kind, "", name)
    if found is None:
        return f"its {kind.kind} {name} does not exist"
    return Priority(kind, name, int(found.get("value") or 0))


async def act_on_workload(fx: Effects, owner: Owner, queue: str, cluster: ClusterSpec,
                          body: Mapping[str, Any] | None, action: WorkloadAction) -> None:
    if isinstance(action, CreateWorkload):
        priority = await read_priority(fx, owner, cluster)
        if isinstance(priority, str):
            await fx.event(EventReason.INVALID_SPEC, f"Workload {workload_name(owner)} not created: {priority}")
            return
        created = await fx.call(fx.kube.create_resource, WORKLOAD, owner.namespace,
                                build_workload(owner, queue, cluster, priority))
        if created is not None:
            await fx.event(EventReason.CREATED, f"created Workload {workload_name(owner)}: {action.reason}")
        return
    if isinstance(action, DeleteWorkload):
        await fx.call(fx.kube.delete_resource, WORKLOAD, owner.namespace, workload_name(owner))
        await fx.event(EventReason.DELETED, f"Workload {workload_name(owner)}: {action.reason}")
        return
    assert body is not None  # the other actions are decided on a Workload that was read
    meta = body.get("metadata") or {}
    conditions = list((body.get("status") or {}).get("conditions") or [])
    now, generation = timestamp(time.time()), int(meta.get("generation") or 0)
    if isinstance(action, ReleaseQuota):
        status = released_status(conditions, action.evict_reason, action.message, now, generation)
        event = (EventReason.UPDATED, f"Workload {meta.get('name')}: its pods are gone, quota released")
    elif isinstance(action, SetPodsReady):
        status = {"conditions": set_conditions(conditions, {"PodsReady": (
            "True" if action.ready else "False", "PodsReady" if action.ready else "WaitForStart", action.message)},
            now, generation)}
        event = None
    else:
        assert isinstance(action, SetFinished)
        status = {"conditions": set_conditions(conditions, {"Finished": ("True", action.reason, action.message)},
                                               now, generation)}
        event = (EventReason.UPDATED, f"Workload {meta.get('name')} finished ({action.reason})")
    try:
        await fx.call(fx.kube.patch_status_at, WORKLOAD, owner.namespace, str(meta.get("name")), status,
                      str(meta.get("resourceVersion") or ""))
    except ApiError as exc:
        if exc.status != 409:
            raise
        return  # Kueue wrote it meanwhile: the next turn reads it again
    if event is not None:
        await fx.event(*event)
