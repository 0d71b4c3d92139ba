"""The autoscaling policy: Ray's resource state in, a target per worker group and the nodes to drain out. Pure.

One call of :func:`decide` looks at a snapshot (what Ray's GCS reports plus what the operator knows about
its pods) and returns what the cluster should look like, with a human reason per changed group. It keeps
no memory: everything it must remember between calls (the last scale-up time per group) comes in.

How demand is placed, in order (the order Ray's own v2 scheduler uses):

1. ``minReplicas``: a group below its minimum gets the missing nodes, whatever the upscaling speed.
2. ``request_resources`` constraints, packed against the TOTAL capacity of live and coming nodes
   (a constraint asks for a cluster shape, not for free room), then onto new nodes.
3. Placement-group gangs, atomically: every bundle of one gang is placed or none is.
4. Pending tasks and actors.

Each step packs onto free capacity first — running nodes, then idle ones, then pods still coming up —
and only then opens new nodes, in the group that wastes least. Everything works on aggregated shapes:
``k`` identical requests go onto a node in one step (``min over resources of free // need``), and new
nodes of a group are opened in bulk (``ceil(count / per_node)``). Identical nodes are merged into one
bin with a multiplicity, and a bin is only split when part of it is used. The cost therefore grows with
the number of distinct shapes, groups and nodes, never with the number of tasks. Gangs other than
STRICT_PACK are placed one instance at a time (each instance is atomic), except that identical
STRICT_SPREAD instances that fit no node there is get new nodes at once, round robin over the fewest nodes
that keep each instance's bundles apart; STRICT_PACK gangs are one bundle each and go in bulk. One gang
instance per group and decision may go past the upscaling-speed cap: an atomic gang wider than the cap
would otherwise never start.

With ``conserve_gpu_nodes``, demand that asks for no accelerator never opens nodes of an accelerator group
(GPU, TPU, neuron_cores or HPU) while a group without one fits it, and accelerator tasks (and gangs, while
CPU-only gangs wait) open no accelerator nodes beyond the minimum while a group without accelerators is
still ramping up under the upscaling speed: Ray places CPU-only work on accelerator nodes when nothing else
has room (its placement-group scheduler does not look at accelerators at all), so accelerator nodes that
came up first would fill with the CPU backlog and the accelerator work would wait for yet more of them (the
decision is re-run with the accelerator groups' budgets at zero after ``request_resources``, which asks
for capacity outright).

Resources are compared in fixed point (1/10000 of a unit, Ray's own resolution), so ``0.1 + 0.2`` CPUs
fit where ``0.3`` are free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from swarm_operator.autoscaler.policy.capacity import DecisionState
from swarm_operator.autoscaler.policy.gangs import as_gang, place_gangs
from swarm_operator.autoscaler.policy.groups import GroupPlan, count_growth, requests_placed
from swarm_operator.autoscaler.policy.packing import Amounts, Pool, Shape
from swarm_operator.autoscaler.policy.types import (
    Decision,
    DemandKind,
    Drain,
    Node,
    PolicyInput,
    Unplaced,
    format_resources,
)
from swarm_operator.autoscaler.snapshot import LabelSelector, NodeStatus, ResourceDemand, Resources


def decide(inp: PolicyInput) -> Decision:
    """Targets, drains and leftover demand for one snapshot; see the module docstring for the rules."""
    state = DecisionState(inp)
    decision = _decide(state)
    if state.accelerator_nodes_to_hold():
        return _decide(DecisionState(inp, hold_accelerator_nodes=True))
    return decision


def _decide(state: DecisionState) -> Decision:
    gangs = [as_gang(gang) for gang in state.inp.gangs]
    state.build_pools()
    # request_resources asks for capacity outright: never held. It reserves total capacity, not free room.
    _place_demands(state, state.inp.constraints, DemandKind.CONSTRAINT, state.total_pool, also_in=state.demand_pool)
    if any(gang.cpu_only for gang in gangs):
        state.hold_accelerator_budgets()  # CPU-only placement groups wait: accelerator ones are held too
    place_gangs(state, gangs)
    state.hold_accelerator_budgets()
    _place_demands(state, state.inp.demands, DemandKind.TASK, state.demand_pool)
    drains = _choose_drains(state)
    return _decision(state, drains)


class _Demand(NamedTuple):
    """Identical requests merged: their shape, how many, and the resources as the last of them asked."""

    shape: Shape
    requests: int
    resources: Resources


def _selector(demand: ResourceDemand) -> LabelSelector:
    # Ray tries label-selector alternatives in order; the first is what a new node must satisfy.
    return demand.label_selectors[0] if demand.label_selectors else ()


def _merged(state: DecisionState, demands: Iterable[ResourceDemand]) -> list[_Demand]:
    """Identical requests merged; accelerators first, label-constrained first, then largest first (FFD)."""
    merged: dict[tuple[Amounts, LabelSelector], _Demand] = {}
    for demand in demands:
        if demand.count <= 0:
            continue
        shape = state.shape(demand.shape, _selector(demand))
        if not shape.amounts:  # asks for nothing: fits anywhere, never a reason to scale
            continue
        earlier = merged.get(shape.key)
        merged[shape.key] = _Demand(shape, demand.count + (earlier.requests if earlier else 0), demand.shape)
    return sorted(merged.values(), key=lambda d: (not d.shape.asks_accelerator, not d.shape.selector,
                                                  -state.size(d.shape.amounts), d.shape.amounts))


def _place_demands(state: DecisionState, demands: Iterable[ResourceDemand], kind: DemandKind, pool: Pool,
                   also_in: Pool | None = None) -> None:
    """Tasks or constraints: onto ``pool``'s capacity first, then onto new nodes; the rest waits (or fits no
    group and is infeasible)."""
    for demand in _merged(state, demands):
        shape = demand.shape
        candidates = state.candidates(shape)
        if not state.feasible(shape, candidates):
            state.infeasible.append(Unplaced(kind, (demand.resources,), demand.requests, selector=shape.selector))
            continue
        placed = pool.fill(shape, demand.requests, pool.shelves_for(shape, state.settings.conserve_gpu_nodes))
        if placed < demand.requests:
            openings = state.open_nodes(shape, demand.requests - placed, candidates, pool, also_in)
            count_growth(openings, kind, format_resources(demand.resources))
            if kind is DemandKind.TASK:
                for name, amount in demand.resources.items():
                    state.tasks_on_new_nodes[name] = (state.tasks_on_new_nodes.get(name, 0.0)
                                                      + amount * requests_placed(openings))
            placed += requests_placed(openings)
        if placed < demand.requests:
            state.waiting.append(Unplaced(kind, (demand.resources,), demand.requests - placed, selector=shape.selector))


def _choose_drains(state: DecisionState) -> list[Drain]:
    """Idle nodes no demand was placed on, newest first (the oldest stay, warm), then the longest idle; each
    group counts its drains for the idle timeout and for maxReplicas."""
    used = state.demand_pool.used_names() | state.total_pool.used_names()
    idle = sorted((node for node in state.live_nodes if node.status is NodeStatus.IDLE and node.name not in used),
                  key=lambda node: (node.age_s, -node.idle_s, node.name))
    drains: list[Drain] = []
    for node in idle:
        group = state.group_of(node)
        if group is None:  # the head, or a node of a group no longer in the spec: never scaled
            continue
        reason = _drain_reason(state, node, group)
        if reason is not None:
            drains.append(Drain(node.name, group.name, reason))
    return drains


def _drain_reason(state: DecisionState, node: Node, group: GroupPlan) -> str | None:
    """Why the idle ``node`` goes, counted in its group; None when it stays."""
    spec, settings = group.spec, state.settings
    left = group.live - group.idle_drains - group.above_max_drains
    if left > spec.max_replicas:  # maxReplicas was lowered: idle nodes go first, timeout or not
        group.above_max_drains += 1
        return f"above maxReplicas {spec.max_replicas}"
    since_scale_up = state.inp.now - state.inp.last_scale_up.get(spec.name, -math.inf)
    stabilizing = since_scale_up < settings.scale_down_stabilization_s
    if node.idle_s <= settings.idle_timeout_s or stabilizing or group.new > 0 or left <= spec.min_replicas:
        return None
    group.idle_drains += 1
    return f"idle {node.idle_s:.0f}s > idleTimeout {settings.idle_timeout_s:g}s"


def _decision(state: DecisionState, drains: list[Drain]) -> Decision:
    targets: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for group in state.groups:
        spec = group.spec
        wanted = group.live - group.idle_drains - group.above_max_drains + group.coming + group.new
        target = max(spec.min_replicas, min(spec.max_replicas, wanted))
        targets[spec.name] = target
        if target != spec.replicas:
            reasons[spec.name] = f"{spec.name} {spec.replicas}→{target}: " + _explain(state, group, wanted)
    more_than_tasks = any(group.minimum_new or any(kind is not DemandKind.TASK for kind, _ in group.growth)
                          for group in state.groups)
    return Decision(targets, tuple(drains), tuple(state.infeasible), tuple(state.waiting), reasons,
                    {name: amount for name, amount in state.tasks_on_new_nodes.items() if amount > 0},
                    more_than_tasks)


def _explain(state: DecisionState, group: GroupPlan, wanted: int) -> str:
    spec = group.spec
    parts: list[str] = []
    if group.minimum_new or wanted < spec.min_replicas:
        parts.append(f"minReplicas {spec.min_replicas}")
    for (kind, text), requests in group.growth.items():
        if kind is DemandKind.TASK:
            parts.append(f"{requests} pending {text}")
        elif kind is DemandKind.GANG:
            parts.append(f"{requests} pending placement group{'s' if requests > 1 else ''} {text}")
        else:
            parts.append(f"request_resources {requests}×{text}")
    if group.live > spec.max_replicas:
        parts.append(f"above maxReplicas {spec.max_replicas}")
    if group.idle_drains:
        parts.append(f"{group.idle_drains} idle > {state.settings.idle_timeout_s:g}s")
    if group.unavailable and spec.replicas > wanted:
        parts.append("unavailable: pods stay unschedulable")
    parts.extend(group.limits)
    if not parts:
        parts.append(f"{group.live} live + {group.coming} pending")
    return "; ".join(parts)
