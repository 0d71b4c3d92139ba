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
from dataclasses import replace

from swarm_operator.autoscaler.policy.capacity import Capacity, Gang, accelerators_in
from swarm_operator.autoscaler.policy.packing import Items, Shape
from swarm_operator.autoscaler.policy.types import (
    Decision,
    DemandKind,
    Drain,
    PolicyInput,
    Unplaced,
    format_bundles,
    format_resources,
)
from swarm_operator.autoscaler.snapshot import LabelSelector, NodeStatus, ResourceDemand, Strategy


def _selector(d: ResourceDemand) -> LabelSelector:
    # Ray tries label-selector alternatives in order; the first is what a new node must satisfy.
    return d.label_selectors[0] if d.label_selectors else ()


def decide(inp: PolicyInput) -> Decision:
    """Targets, drains and leftover demand for one snapshot; see the module docstring for the rules."""
    run = _Run(inp)
    decision = run.decide()
    if run.accelerator_nodes_to_hold():
        return _Run(inp, hold_accelerator_nodes=True).decide()
    return decision


class _Run(Capacity):
    """One decision: the placement phases, then the drains and the targets with their reasons."""

    # -- phases

    def place_constraints(self) -> None:
        conserve = self.settings.conserve_gpu_nodes
        for shape, count, demand in self.sorted_demands(self.inp.constraints):
            cands = self.candidates(shape, 0)
            if not self.feasible(shape, cands):
                self.infeasible.append(Unplaced(DemandKind.CONSTRAINT, (demand.shape,), count,
                                                selector=shape.selector))
                continue
            placed = self.total_pool.fill(shape, count, self.total_pool.order(shape, conserve))
            opened: list[tuple[int, int]] = []
            placed += self.open_nodes(shape, count - placed, cands, self.total_pool, self.demand_pool, 0, -1,
                                      opened)
            self.count_why(opened, DemandKind.CONSTRAINT, format_resources(demand.shape))
            if placed < count:
                self.waiting.append(Unplaced(DemandKind.CONSTRAINT, (demand.shape,), count - placed,
                                             selector=shape.selector))

    def place_gangs(self) -> None:
        pool = self.demand_pool
        conserve = self.settings.conserve_gpu_nodes

        def strictness(g: Gang) -> int:
            return 0 if g.strategy in (Strategy.STRICT_PACK, Strategy.STRICT_SPREAD) else 1

        gangs = sorted(self.merge_gangs(), key=lambda g: (
            strictness(g), -sum(self.size(self.shape(b, ()).items) for b in g.bundles)))
        for gang in gangs:
            text = f"{gang.strategy} {format_bundles(gang.bundles)}"
            if gang.strategy is Strategy.STRICT_PACK:
                combined: dict[str, float] = {}
                for b in gang.bundles:
                    for k, v in b.items():
                        combined[k] = combined.get(k, 0.0) + v
                parts = [(self.shape(combined, gang.selector), 1)]
            else:
                counts: dict[tuple[tuple[str, float], ...], int] = {}
                for b in gang.bundles:
                    key = tuple(sorted((k, v) for k, v in b.items() if v > 0))
                    counts[key] = counts.get(key, 0) + 1
                parts = sorted(((self.shape(dict(k), gang.selector), n) for k, n in counts.items()),
                               key=lambda p: (-p[0].accel, -self.size(p[0].items)))
            spread = gang.strategy in (Strategy.SPREAD, Strategy.STRICT_SPREAD)
            cap = 1 if gang.strategy is Strategy.STRICT_SPREAD else 0
            cands = [self.candidates(shape, cap) for shape, _ in parts]
            if not all(self.feasible(shape, c) for (shape, _), c in zip(parts, cands, strict=True)):
                self.infeasible.append(Unplaced(DemandKind.GANG, gang.bundles, gang.count, gang.strategy,
                                                gang.selector))
                continue
            if gang.strategy is Strategy.STRICT_PACK:  # one bundle per instance: place all instances in bulk
                shape = parts[0][0]
                opened: list[tuple[int, int]] = []
                placed = pool.fill(shape, gang.count, pool.order(shape, conserve))
                placed += self.open_nodes(shape, gang.count - placed, cands[0], pool, None, 0, -1, opened)
                self.count_why(opened, DemandKind.GANG, text)
                if placed < gang.count:
                    self.waiting.append(Unplaced(DemandKind.GANG, gang.bundles, gang.count - placed,
                                                 gang.strategy, gang.selector))
                continue
            done = 0
            lifted: dict[int, int] | None = None  # extra budget per group while one instance exceeds the speed cap
            while done < gang.count:
                # The notes as they were, for a retry past the speed cap to start from (only until one is tried).
                notes = ([dict(c) for c in self.capped], set(self.speed_capped)) if lifted is None else None
                gid = self.next_gang
                self.next_gang += 1
                pool.undo = []
                opened = []
                ok = True
                also = 0  # identical instances after this one, placed with it (STRICT_SPREAD in bulk)
                for (shape, n), shape_cands in zip(parts, cands, strict=True):
                    order = pool.order(shape, conserve)
                    placed = pool.fill(shape, n, order, cap=1 if spread else 0, gang=gid if spread else -1)
                    if gang.strategy is Strategy.SPREAD and placed < n:  # best effort: share nodes after all
                        placed += pool.fill(shape, n - placed, order)
                    if placed == 0 and cap and len(parts) == 1:  # fits no node there is, nor will the rest
                        also = self.open_spread_nodes(shape, n, gang.count - done, shape_cands, pool, opened) - 1
                        ok = also >= 0
                        break
                    # New nodes for STRICT_SPREAD take one bundle each and are tagged so the gang's other
                    # bundles go elsewhere; for PACK and SPREAD they are packed.
                    tag = gid if cap else -1
                    placed += self.open_nodes(shape, n - placed, shape_cands, pool, None, cap, tag, opened)
                    if placed < n:
                        ok = False
                        break
                journal, pool.undo = pool.undo, None
                if not ok:  # atomic: give back everything this instance took; identical ones fail the same
                    for step in reversed(journal):
                        step()
                    if lifted is None:
                        lifted = self.lift_speed_caps({gi for c in cands for gi, _, _ in c})
                        if lifted and notes is not None:
                            self.capped, self.speed_capped = notes
                            continue
                    elif lifted:  # the retry past the cap failed too: give the lifted budget back
                        for gi, extra in lifted.items():
                            self.budget[gi] = max(0, self.budget[gi] - extra)
                            self.lifted.discard(gi)
                    self.waiting.append(Unplaced(DemandKind.GANG, gang.bundles, gang.count - done,
                                                 gang.strategy, gang.selector))
                    break
                if lifted:  # that one instance may exceed the speed cap, the ones after it may not
                    for gi, extra in lifted.items():
                        self.budget[gi] = max(0, self.budget[gi] - extra)
                    lifted = {}
                done += 1 + also
                self.count_why([(gi, 1 + also) for gi in dict.fromkeys(gi for gi, _ in opened)], DemandKind.GANG,
                               text)

    def merge_gangs(self) -> list[Gang]:
        merged: dict[tuple[object, ...], Gang] = {}
        for g in self.gangs:
            if g.count <= 0:
                continue
            key = (g.strategy, g.selector, tuple(tuple(sorted(b.items())) for b in g.bundles))
            prev = merged.get(key)
            merged[key] = g if prev is None else replace(g, count=prev.count + g.count)
        return list(merged.values())

    def sorted_demands(self, demands: Iterable[ResourceDemand]) -> list[tuple[Shape, int, ResourceDemand]]:
        """Identical requests merged; accelerators first, label-constrained first, then largest first (FFD)."""
        merged: dict[tuple[Items, LabelSelector], tuple[Shape, int, ResourceDemand]] = {}
        for d in demands:
            if d.count <= 0:
                continue
            shape = self.shape(d.shape, _selector(d))
            if not shape.items:  # asks for nothing: fits anywhere, never a reason to scale
                continue
            prev = merged.get(shape.key)
            merged[shape.key] = (shape, d.count + (prev[1] if prev else 0), d)
        return sorted(merged.values(), key=lambda e: (not e[0].accel, not e[0].selector, -self.size(e[0].items),
                                                      e[0].items))

    def place_tasks(self) -> None:
        pool = self.demand_pool
        conserve = self.settings.conserve_gpu_nodes
        for shape, count, demand in self.sorted_demands(self.inp.demands):
            cands = self.candidates(shape, 0)
            if not self.feasible(shape, cands):
                self.infeasible.append(Unplaced(DemandKind.TASK, (demand.shape,), count, selector=shape.selector))
                continue
            placed = pool.fill(shape, count, pool.order(shape, conserve))
            if placed < count:
                opened: list[tuple[int, int]] = []
                placed += self.open_nodes(shape, count - placed, cands, pool, None, 0, -1, opened)
                self.count_why(opened, DemandKind.TASK, format_resources(demand.shape))
            if placed < count:
                self.waiting.append(Unplaced(DemandKind.TASK, (demand.shape,), count - placed,
                                             selector=shape.selector))

    def used_names(self) -> set[str]:
        used: set[str] = set()
        for pool in (self.demand_pool, self.total_pool):
            for lst in pool.lists:
                for b in lst.bins:
                    if b.used and b.mult:
                        used.update(b.names)
        return used

    def choose_drains(self) -> tuple[list[Drain], list[int], list[int]]:
        """The drains, and per group how many are for the idle timeout and how many for maxReplicas."""
        s = self.settings
        groups = self.inp.groups
        used = self.used_names()
        idle_out = [0] * len(groups)
        above_max = [0] * len(groups)
        drains: list[Drain] = []
        # Newest first (the oldest stay, warm), then the longest idle.
        idle = sorted((n for n in self.live_nodes if n.status is NodeStatus.IDLE and n.name not in used),
                      key=lambda n: (n.age_s, -n.idle_s, n.name))
        for n in idle:
            gi = self.gindex.get(n.group) if n.group is not None else None
            if gi is None:
                continue
            g = groups[gi]
            left = self.live[gi] - idle_out[gi] - above_max[gi]
            if left > g.max_replicas:  # maxReplicas was lowered: idle nodes go first, timeout or not
                reason = f"above maxReplicas {g.max_replicas}"
                above_max[gi] += 1
            else:
                since_up = self.inp.now - self.inp.last_scale_up.get(g.name, -math.inf)
                stabilizing = since_up < s.scale_down_stabilization_s
                if (n.idle_s <= s.idle_timeout_s or stabilizing or self.new[gi] > 0
                        or left <= g.min_replicas):
                    continue
                reason = f"idle {n.idle_s:.0f}s > idleTimeout {s.idle_timeout_s:g}s"
                idle_out[gi] += 1
            drains.append(Drain(n.name, g.name, reason))
        return drains, idle_out, above_max

    def decide(self) -> Decision:
        self.build_pools()
        self.place_constraints()  # request_resources asks for capacity outright: never held
        if any(not any(accelerators_in(b) for b in g.bundles) for g in self.gangs):
            self.hold_accelerator_budgets()  # CPU-only placement groups wait: accelerator ones are held too
        self.place_gangs()
        self.hold_accelerator_budgets()
        self.place_tasks()
        drains, idle_out, above_max = self.choose_drains()
        targets: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for gi, g in enumerate(self.inp.groups):
            raw = self.live[gi] - idle_out[gi] - above_max[gi] + self.coming[gi] + self.new[gi]
            target = max(g.min_replicas, min(g.max_replicas, raw))
            targets[g.name] = target
            if target != g.replicas:
                reasons[g.name] = f"{g.name} {g.replicas}→{target}: " + self.explain(gi, idle_out[gi], raw)
        return Decision(targets, tuple(drains), tuple(self.infeasible), tuple(self.waiting), reasons)

    def explain(self, gi: int, idle_out: int, raw: int) -> str:
        g = self.inp.groups[gi]
        parts: list[str] = []
        if self.min_new[gi] or raw < g.min_replicas:
            parts.append(f"minReplicas {g.min_replicas}")
        for (kind, text), n in self.why[gi].items():
            if kind is DemandKind.TASK:
                parts.append(f"{n} pending {text}")
            elif kind is DemandKind.GANG:
                parts.append(f"{n} pending placement group{'s' if n > 1 else ''} {text}")
            else:
                parts.append(f"request_resources {n}×{text}")
        if self.live[gi] > g.max_replicas:
            parts.append(f"above maxReplicas {g.max_replicas}")
        if idle_out:
            parts.append(f"{idle_out} idle > {self.settings.idle_timeout_s:g}s")
        if g.name in self.inp.unavailable and g.replicas > raw:
            parts.append("unavailable: pods stay unschedulable")
        parts.extend(self.capped[gi])
        if not parts:
            parts.append(f"{self.live[gi]} live + {self.coming[gi]} pending")
        return "; ".join(parts)
