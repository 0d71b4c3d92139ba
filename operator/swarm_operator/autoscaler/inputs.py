"""Ray's snapshot + the operator's view of its pods → the policy's input. Pure.

The GCS and the policy each have their own small types; this module is the only place
that knows both, so each side stays free of the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from swarm_operator.autoscaler import policy
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels
from swarm_operator.resources.pods import object_store_bytes, ray_accelerators, ray_num_cpus
from swarm_operator.spec import ClusterSpec, WorkerGroupSpec

if TYPE_CHECKING:  # importing ray costs ~40 MiB: only processes that autoscale pay for it
    from swarm_operator.autoscaler import ray_state as rs

# Per-node resources (node:<ip>, the head marker) and placement-group reservations
# (<res>_group_[<bundle>_]<pg id>, 36 hex digits) are unique per node or per group: they only defeat
# aggregation. A user's own resource may contain "_group_": only Ray's exact form is dropped.
_UNIQUE = re.compile(r"node:.*|.+_group_(?:\d+_)?[0-9a-f]{36}")


def group_shape(group: WorkerGroupSpec) -> dict[str, float]:
    """The Ray resources one worker of the group advertises, as `ray start` is told."""
    res = group.resources
    shape: dict[str, float] = {"CPU": float(ray_num_cpus(res)), "memory": float(res.memory),
                               "object_store_memory": float(object_store_bytes(res, dict(group.ray_start_params)))}
    num_gpus, accelerators = ray_accelerators(res)
    if num_gpus:
        shape["GPU"] = float(num_gpus)
    shape.update(accelerators)  # TPU, neuron_cores …: demand for them maps to this group
    shape.update(group.ray_resources)
    return shape


def capacity(resources: Mapping[str, float]) -> dict[str, float]:
    # The substring tests pass only names the pattern might match; they spare most names the regex, which
    # at a thousand nodes was a third of this translation's time.
    return {k: v for k, v in resources.items()
            if not ((k.startswith("node:") or "_group_" in k) and _UNIQUE.fullmatch(k))}


# Both enums are StrEnums of the same values, so Ray's statuses look up the policy's by value; a dict lookup
# costs a tenth of calling the enum.
_STATUS = {s.value: s for s in policy.NodeStatus}


def _selector(terms: rs.LabelSelector) -> policy.LabelSelector:
    return tuple(policy.LabelRequirement(t.key, policy.LabelOp(t.op.value), t.values) for t in terms)


def _demands(items: Iterable[rs.ResourceDemand]) -> tuple[policy.Demand, ...]:
    # Ray tries label-selector alternatives in order; the first is what a new node must satisfy.
    return tuple(policy.Demand(dict(d.shape), d.count, _selector(d.label_selectors[0]) if d.label_selectors else ())
                 for d in items if d.count > 0)


def _gangs(items: Iterable[rs.GangDemand]) -> tuple[policy.Gang, ...]:
    out = []
    for g in items:
        selector = _selector(g.bundles[0].label_selector) if g.bundles else ()
        out.append(policy.Gang(tuple(dict(b.shape) for b in g.bundles), policy.Strategy(g.strategy.value),
                               g.count, selector))
    return tuple(out)


def ray_node_of(snapshot: rs.ClusterSnapshot, pod: str) -> rs.RayNode | None:
    return snapshot.node_by_instance(pod)


def policy_input(cluster: ClusterSpec, snapshot: rs.ClusterSnapshot, pods: Iterable[PodState],
                 targets: Mapping[str, int], last_scale_up: Mapping[str, float], unavailable: frozenset[str],
                 now: float) -> policy.PolicyInput:
    """What the policy needs: groups with their coming capacity, live Ray nodes, and pending demand."""
    pod_list = [p for p in pods if p.alive]
    created = {p.name: p.created for p in pod_list}
    group_names = {g.name for g in cluster.worker_groups}
    nodes = []
    for n in snapshot.nodes:
        if not n.alive or (n.instance_id and n.instance_id not in created and n.node_type in group_names):
            continue  # dead, or its pod is already gone
        group = n.node_type if n.node_type in group_names and not n.is_head else None
        nodes.append(policy.RayNode(
            name=n.instance_id or n.node_id, group=group, status=_STATUS[n.status],
            total=capacity(n.total), available=capacity(n.available), idle_s=n.idle_duration_ms / 1000.0,
            age_s=max(0.0, now - created.get(n.instance_id, now)),
        ))
    # Pods Ray knows (alive, or already DEAD and about to go) and drained pods bring no new capacity.
    known = {n.instance_id for n in snapshot.nodes}
    coming: dict[str | None, int] = {}
    for p in pod_list:
        if p.node_type == labels.WORKER and p.name not in known and not p.drained:
            coming[p.group] = coming.get(p.group, 0) + 1
    groups = []
    for g in cluster.worker_groups:
        target = max(g.min_replicas, min(g.max_replicas, targets.get(g.name, g.initial_replicas())))
        groups.append(policy.WorkerGroup(
            name=g.name, resources=group_shape(g), min_replicas=g.min_replicas, max_replicas=g.max_replicas,
            replicas=target, pending_pods=coming.get(g.name, 0),
        ))
    a = cluster.autoscaling
    return policy.PolicyInput(
        groups=tuple(groups), nodes=tuple(nodes), demands=_demands(snapshot.pending), gangs=_gangs(snapshot.gangs),
        constraints=_demands(snapshot.constraints), unavailable=unavailable,
        settings=policy.Settings(upscaling_speed=a.upscaling_speed, idle_timeout_s=float(a.idle_timeout_seconds),
                                 conserve_gpu_nodes=a.conserve_gpu_nodes,
                                 scale_down_stabilization_s=float(a.scale_down_stabilization_seconds)),
        now=now, last_scale_up=dict(last_scale_up),
    )


def demand_summary(demands: Iterable[policy.Demand | policy.Unplaced], limit: int = 8) -> str:
    """"12×{GPU:1}, 3×{CPU:4}" — the largest first, at most `limit` shapes."""
    parts: list[tuple[int, str]] = []
    for d in demands:
        if isinstance(d, policy.Demand):
            parts.append((d.count, f"{d.count}×{policy.format_resources(d.shape)}"))
        else:
            shape = " + ".join(policy.format_resources(b) for b in d.bundles)
            parts.append((d.count, f"{d.count}×{{{shape}}}" if len(d.bundles) > 1 else f"{d.count}×{shape}"))
    parts.sort(key=lambda p: -p[0])
    text = ", ".join(p for _, p in parts[:limit])
    return text + (f" and {len(parts) - limit} more shapes" if len(parts) > limit else "")
