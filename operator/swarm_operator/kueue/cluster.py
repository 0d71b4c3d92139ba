"""A queued SwarmCluster's admission, for one turn of the cluster (turn.py): kueue/'s Workload lifecycle applied to
the cluster itself. Held, it is planned as suspended (its pods go, the resource stays); admitted, it runs with the
admitted flavors on its pods and its autoscaled groups bounded by what Kueue admitted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from swarm_operator import KIND
from swarm_operator.kit.effects import Effects
from swarm_operator.kueue.lifecycle import act_on_workload, flavored_spec, read_workload
from swarm_operator.kueue.workload import (
    Gate,
    OwnerSide,
    admission_gate,
    admitted_counts,
    bounded_by_admission,
    owner_of,
    pod_sets,
    workload_view,
)
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.types import ClusterSpec


@dataclass(frozen=True)
class Admission:
    cluster: ClusterSpec  # as this turn runs it: suspended while held; flavored and bounded while admitted
    held: str  # why Kueue holds it ("" while it may run): the Suspended condition's message
    quota: str  # what the admission bounds (status.autoscaler.quota), "" when nothing
    gate: Gate


async def admit_cluster(fx: Effects, body: Mapping[str, Any], cluster: ClusterSpec, queue: str,
                        pods: list[PodState]) -> Admission:
    """Read the cluster's Workload, decide (kueue/workload.py), act on it; raises ApiError 404 when Kueue is absent.
    `pods` are the cluster's own, deleting ones included: the quota is given back only once none is left."""
    owner = owner_of(KIND, body)
    workload = await read_workload(fx, owner)
    view = workload_view(workload, pod_sets(cluster)) if workload is not None else None
    running = any(p.node_type == labels.HEAD and p.alive and p.ready for p in pods)
    side = OwnerSide(queue=queue, finished="", message="", running=running, pods_left=len(pods), what="the cluster")
    gate = admission_gate(side, view)
    for action in gate.actions:
        await act_on_workload(fx, owner, queue, cluster, workload, action)
    if not gate.may_run or workload is None:
        return Admission(replace(cluster, suspend=True), gate.why, "", gate)
    flavored = parse_cluster({**body, "spec": await flavored_spec(fx, workload, body.get("spec") or {})})
    bounded, quota = bounded_by_admission(flavored, admitted_counts(workload))
    return Admission(replace(bounded, suspend=cluster.suspend), "", quota, gate)
