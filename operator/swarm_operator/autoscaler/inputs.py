"""Ray's snapshot + the operator's view of its pods → the policy's input; demand summaries. Pure.

The policy reads the snapshot's demand as it is; what is joined here is what Ray does not know: which pod
a node is, how old it is, which group it belongs to, and which pods are still coming up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from swarm_operator.autoscaler import policy
from swarm_operator.autoscaler.snapshot import ClusterSnapshot, ResourceDemand
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels
from swarm_operator.resources.pods import ray_shape
from swarm_operator.spec.types import ClusterSpec

# Per-node resources (node:<ip>, the head marker) and placement-group reservations
# (<res>_group_[<bundle>_]<pg id>, 36 hex digits) are unique per node or per group: they only defeat
# aggregation. A user's own resource may contain "_group_": only Ray's exact form is dropped.
_UNIQUE = re.compile(r"node:.*|.+_group_(?:\d+_)?[0-9a-f]{36}")


def capacity(resources: Mapping[str, float]) -> dict[str, float]:
    # The substring tests pass only names the pattern might match; they spare most names the regex, which
    # at a thousand nodes was a third of this translation's time.
    return {k: v for k, v in resources.items()
            if not ((k.startswith("node:") or "_group_" in k) and _UNIQUE.fullmatch(k))}


def _counted(demands: tuple[ResourceDemand, ...]) -> tuple[ResourceDemand, ...]:
    # A snapshot built elsewhere than gcs.parse (which aggregates) may hold empty entries: status would
    # then report "0×{...}" as pending demand.
    return tuple(d for d in demands if d.count > 0)


def policy_input(cluster: ClusterSpec, snapshot: ClusterSnapshot, pods: Iterable[PodState],
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
        nodes.append(policy.Node(
            name=n.instance_id or n.node_id, group=group, status=n.status,
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
            name=g.name, resources=ray_shape(g.resources, g.ray_start_params, g.ray_resources),
            min_replicas=g.min_replicas, max_replicas=g.max_replicas, replicas=target,
            pending_pods=coming.get(g.name, 0),
        ))
    a = cluster.autoscaling
    return policy.PolicyInput(
        groups=tuple(groups), nodes=tuple(nodes), demands=_counted(snapshot.pending), gangs=snapshot.gangs,
        constraints=_counted(snapshot.constraints), unavailable=unavailable,
        settings=policy.Settings(upscaling_speed=a.upscaling_speed, idle_timeout_s=float(a.idle_timeout_seconds),
                                 conserve_gpu_nodes=a.conserve_gpu_nodes,
                                 scale_down_stabilization_s=float(a.scale_down_stabilization_seconds)),
        now=now, last_scale_up=dict(last_scale_up),
    )


def demand_summary(demands: Iterable[ResourceDemand | policy.Unplaced], limit: int = 8) -> str:
    """"12×{GPU:1}, 3×{CPU:4}" — the largest first, at most `limit` shapes."""
    parts: list[tuple[int, str]] = []
    for d in demands:
        if isinstance(d, ResourceDemand):
            parts.append((d.count, f"{d.count}×{policy.format_resources(d.shape)}"))
        else:
            shape = " + ".join(policy.format_resources(b) for b in d.bundles)
            parts.append((d.count, f"{d.count}×{{{shape}}}" if len(d.bundles) > 1 else f"{d.count}×{shape}"))
    parts.sort(key=lambda p: -p[0])
    text = ", ".join(p for _, p in parts[:limit])
    return text + (f" and {len(parts) - limit} more shapes" if len(parts) > limit else "")
