"""The state one decision works on: resources in fixed point, per-group counts and budgets, and the capacity
pools; new nodes are opened here, within each group's budget. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from swarm_operator.autoscaler.policy.packing import BUSY, COMING, IDLE, NEW, Bin, Items, Pool, Shape, minus, per_node
from swarm_operator.autoscaler.policy.types import DemandKind, Node, PolicyInput, Unplaced
from swarm_operator.autoscaler.snapshot import GangDemand, LabelSelector, NodeStatus, Resources, Strategy

_SCALE = 10_000  # Ray keeps resources as fixed-point 1/10000 units; rounding the same way agrees with it
# Resources whose waste does not matter when choosing a group: every node has them and tasks rarely ask.
_COMMON_RESOURCES = frozenset({"CPU", "memory", "object_store_memory"})
# The Ray resources accelerators are scheduled as (the Ray names of spec.rules.ACCELERATORS): all scarce and dear, so
# conserveGpuNodes keeps other work off every kind of them, not only off GPUs.
ACCELERATORS = ("GPU", "TPU", "neuron_cores", "HPU")


def accelerators_in(r: Resources) -> list[str]:
    return [name for name in ACCELERATORS if r.get(name, 0) > 0]


@dataclass(frozen=True, slots=True)
class Gang:
    """A pending placement group as the placement works on it: bundle shapes and one selector."""

    bundles: tuple[Resources, ...]
    strategy: Strategy
    count: int
    selector: LabelSelector


def as_gang(g: GangDemand) -> Gang:
    # The first bundle's selector stands for every bundle: it is what a new node of the gang must satisfy.
    return Gang(tuple(b.shape for b in g.bundles), g.strategy, g.count,
                g.bundles[0].label_selector if g.bundles else ())


class Capacity:
    """State of one decision. Built from the input, then mutated by the placement phases (:mod:`.decide`)."""

    def __init__(self, inp: PolicyInput, hold_accelerator_nodes: bool = False) -> None:
        self.inp = inp
        self.settings = inp.settings
        groups = inp.groups
        self.gindex = {g.name: i for i, g in enumerate(groups)}

        names: set[str] = set()
        for g in groups:
            names.update(g.resources)
        for n in inp.nodes:
            names.update(n.total)
            names.update(n.available)
        for d in (*inp.demands, *inp.constraints):
            names.update(d.shape)
        self.gangs = [as_gang(g) for g in inp.gangs]
        for gang in self.gangs:
            for bundle in gang.bundles:
                names.update(bundle)
        self.res = {name: i for i, name in enumerate(sorted(names))}
        nres = len(self.res)

        self.label_table: list[Mapping[str, str]] = []
        self.label_ids: dict[tuple[tuple[str, str], ...], int] = {}
        self.caps = [self.vector(g.resources) for g in groups]
        self.group_labels = [self.intern_labels(g.labels) for g in groups]
        self.accel = [bool(accelerators_in(g.resources)) for g in groups]
        self.special = [{i for name, i in self.res.items() if cap[i] > 0 and name not in _COMMON_RESOURCES}
                        for cap in self.caps]
        slot_accel = [*self.accel, False, True]  # groups, then unmanaged nodes without and with accelerators
        self.demand_pool = Pool(nres, slot_accel, self.label_table)
        self.total_pool = Pool(nres, slot_accel, self.label_table)

        self.live = [0] * len(groups)  # RUNNING or IDLE Ray nodes
        live_totals: dict[tuple[tuple[int, ...], int], None] = {}
        self.live_nodes: list[Node] = []
        self.live_total_vectors: list[list[int]] = []  # never mutated: bins replace their lists
        for n in inp.nodes:
            if n.status in (NodeStatus.RUNNING, NodeStatus.IDLE):
                total = self.vector(n.total)
                self.live_nodes.append(n)
                self.live_total_vectors.append(total)
                gi = self.gindex.get(n.group) if n.group is not None else None
                if gi is not None:
                    self.live[gi] += 1
                labels = self.node_labels(n, gi)
                live_totals[(tuple(total), labels)] = None
        self.live_totals = list(live_totals)
        self.biggest = [max([1] + [c[i] for c in self.caps] + [t[i] for t, _ in self.live_totals])
                        for i in range(nres)]

        s = self.settings
        self.coming = [0] * len(groups)
        self.min_new = [0] * len(groups)
        self.budget = [0] * len(groups)
        self.speed_cap = [0] * len(groups)
        for gi, g in enumerate(groups):
            room = max(0, g.max_replicas - self.live[gi])
            if g.name not in inp.unavailable:
                self.coming[gi] = min(room, max(0, g.pending_pods, g.replicas - self.live[gi]))
                current = self.live[gi] + self.coming[gi]
                self.min_new[gi] = max(0, g.min_replicas - current)
                # Ray v1's rule: at most max(5, speed × current) nodes launching per group at once.
                self.speed_cap[gi] = (max(5, math.ceil(s.upscaling_speed * current))
                                      if math.isfinite(s.upscaling_speed) else g.max_replicas)
                self.budget[gi] = max(0, min(g.max_replicas - current - self.min_new[gi], self.speed_cap[gi]))
        self.held = {gi for gi in range(len(groups)) if hold_accelerator_nodes and self.accel[gi]}
        self.lifted: set[int] = set()  # groups whose speed cap one gang instance has already exceeded
        self.new = self.min_new[:]
        # Why each group grows: (kind, text) -> count, in the order first seen.
        self.why: list[dict[tuple[DemandKind, str], int]] = [{} for _ in groups]
        self.capped: list[dict[str, None]] = [{} for _ in groups]
        self.speed_capped: set[int] = set()
        self.infeasible: list[Unplaced] = []
        self.waiting: list[Unplaced] = []
        self.next_gang = 0

    # -- conversions

    def vector(self, r: Resources) -> list[int]:
        """``r`` in fixed point, indexed by resource; every entry >= 0."""
        index = self.res
        v = [0] * len(index)
        for name, amount in r.items():
            if amount > 0:
                v[index[name]] = round(amount * _SCALE)
        return v

    def shape(self, r: Resources, selector: LabelSelector) -> Shape:
        scaled = sorted((self.res[name], round(a * _SCALE)) for name, a in r.items() if a > 0)
        return Shape(tuple((i, a) for i, a in scaled if a > 0), bool(accelerators_in(r)), selector)

    def intern_labels(self, labels: Mapping[str, str]) -> int:
        key = tuple(sorted(labels.items()))
        got = self.label_ids.get(key)
        if got is None:
            got = self.label_ids[key] = len(self.label_table)
            self.label_table.append(dict(labels))
        return got

    def node_labels(self, n: Node, gi: int | None) -> int:
        if n.labels is not None:
            return self.intern_labels(n.labels)
        return self.group_labels[gi] if gi is not None else self.intern_labels({})

    def size(self, items: Items) -> float:
        """A request's size relative to the largest node offering each resource (first-fit decreasing)."""
        return sum(a / self.biggest[i] for i, a in items)

    # -- capacity

    def build_pools(self) -> None:
        slots = len(self.caps)
        merged: dict[tuple[int, int, int, tuple[int, ...]], tuple[Bin, Bin]] = {}
        # Idle nodes in keep-first order (oldest, then least idle), so the nodes bins hand out first are the
        # ones a drain would take last.
        ordered = sorted(zip(self.live_nodes, self.live_total_vectors, strict=True),
                         key=lambda nt: (-nt[0].age_s, nt[0].idle_s, nt[0].name))
        for n, total in ordered:
            gi = self.gindex.get(n.group) if n.group is not None else None
            slot = gi if gi is not None else slots + (1 if accelerators_in(n.total) else 0)
            tier = IDLE if gi is not None and n.status is NodeStatus.IDLE else BUSY
            labels = self.node_labels(n, gi)
            # Never above the total (both vectors are >= 0): a conditional is cheaper than min() per resource.
            avail = [a if a <= t else t for a, t in zip(self.vector(n.available), total, strict=True)]
            key = (tier, slot, labels, tuple(avail + total))
            pair = merged.get(key)
            if pair is None:
                merged[key] = (self.demand_pool.add(tier, slot, avail, 1, [n.name], labels),
                               self.total_pool.add(tier, slot, total, 1, [n.name], labels))
            else:
                for b in pair:
                    b.mult += 1
                    b.names.append(n.name)
        for gi in range(slots):
            for tier, count in ((COMING, self.coming[gi]), (NEW, self.min_new[gi])):
                if count:
                    for pool in (self.demand_pool, self.total_pool):
                        pool.add(tier, gi, self.caps[gi][:], count, [], self.group_labels[gi])

    def candidates(self, shape: Shape, cap: int) -> list[tuple[int, int, int]]:
        """Groups a fresh node of which fits ``shape``: (group, requests per node, unrequested special
        resources). With conserve_gpu_nodes, work that asks for no accelerator gets accelerator groups (GPU, TPU,
        neuron_cores, HPU) only when no group without one fits it at all."""
        out: list[tuple[int, int, int]] = []
        asked = {i for i, _ in shape.items}
        for gi, cap_vec in enumerate(self.caps):
            per = per_node(cap_vec, shape.items, cap or 1 << 62)
            if per == 0 or (shape.selector and not shape.labels_ok(self.group_labels[gi], self.label_table)):
                continue
            out.append((gi, per, len(self.special[gi] - asked)))
        if self.settings.conserve_gpu_nodes and not shape.accel and any(not self.accel[gi] for gi, _, _ in out):
            out = [c for c in out if not self.accel[c[0]]]
        return out

    def feasible(self, shape: Shape, cands: list[tuple[int, int, int]]) -> bool:
        """Fits some group's node, or the total of some live node (the head, a node of a removed group)."""
        if cands:
            return True
        return any(all(t[i] >= a for i, a in shape.items)
                   and (not shape.selector or shape.labels_ok(labels, self.label_table))
                   for t, labels in self.live_totals)

    def open_nodes(self, shape: Shape, count: int, cands: list[tuple[int, int, int]], pool: Pool,
                   mirror: Pool | None, cap: int, gang: int, opened: list[tuple[int, int]]) -> int:
        """Open new nodes for up to ``count`` requests, best group first; returns how many were placed.

        The best group wastes least: no unrequested special resources (GPUs, custom), then the highest
        lowest utilisation of the resources asked, then fewer nodes, then the order of groups in the spec.
        ``mirror`` receives the same nodes empty (constraints reserve total capacity, not free room).
        ``opened`` collects (group, requests placed) for the reasons."""
        placed = 0
        items = shape.items
        while count > 0:
            best: tuple[tuple[int, float, int, int], int, int, int] | None = None
            for gi, per, waste in cands:
                if self.budget[gi] <= 0:
                    continue
                n = min(-(-count // per), self.budget[gi])
                got = min(count, n * per)
                util = min(got * a / (n * self.caps[gi][i]) for i, a in items)
                key = (-waste, util, -n, -gi)
                if best is None or key > best[0]:
                    best = (key, gi, n, got)
            if best is None:
                for gi, _, _ in cands:
                    self.note_cap(gi)
                break
            _, gi, n, got = best
            per = next(p for g, p, _ in cands if g == gi)
            full, rest = divmod(got, per)
            cap_vec = self.caps[gi]
            if full:
                pool.add(NEW, gi, minus(cap_vec, items, per), full, [], self.group_labels[gi], gang)
            if rest:
                pool.add(NEW, gi, minus(cap_vec, items, rest), 1, [], self.group_labels[gi], gang)
            if mirror is not None:
                mirror.add(NEW, gi, cap_vec[:], n, [], self.group_labels[gi])
            self.change_budget(gi, n)
            opened.append((gi, got))
            count -= got
            placed += got
        return placed

    def open_spread_nodes(self, shape: Shape, width: int, count: int, cands: list[tuple[int, int, int]],
                          pool: Pool, opened: list[tuple[int, int]]) -> int:
        """Up to ``count`` identical STRICT_SPREAD instances of ``width`` bundles of one shape, on new nodes of
        one group at once, laid round robin; returns how many were placed.

        One instance at a time would give each its own ``width`` fresh nodes once the earlier ones are full
        (5 instances of 3 GPU bundles on 4-GPU nodes: 6 nodes); round robin over ``max(width, ceil(bundles /
        per node))`` nodes keeps every instance on distinct nodes with fewer of them (4)."""
        items = shape.items
        best: tuple[tuple[int, int, int, int], int, int, int] | None = None
        for gi, _, waste in cands:
            budget = self.budget[gi]
            if budget < width:
                continue
            per = per_node(self.caps[gi], items, 1 << 62)  # bundles of other instances may share a node
            placed = min(count, budget * per // width)
            nodes = max(width, -(-placed * width // per))
            key = (-waste, placed, -nodes, -gi)
            if best is None or key > best[0]:
                best = (key, gi, nodes, placed)
        if best is None:
            for gi, _, _ in cands:
                self.note_cap(gi)
            return 0
        _, gi, nodes, placed = best
        if placed < count:
            self.note_cap(gi)
        q, r = divmod(placed * width, nodes)  # round robin: r nodes with q + 1 bundles, the others with q
        cap_vec = self.caps[gi]
        if r:
            pool.add(NEW, gi, minus(cap_vec, items, q + 1), r, [], self.group_labels[gi])
        pool.add(NEW, gi, minus(cap_vec, items, q), nodes - r, [], self.group_labels[gi])
        self.change_budget(gi, nodes)
        opened.append((gi, placed * width))
        return placed

    def change_budget(self, gi: int, n: int) -> None:
        self.budget[gi] -= n
        self.new[gi] += n
        journal = self.demand_pool.undo
        if journal is not None:
            journal.append(lambda: self.change_budget(gi, -n))

    def note_cap(self, gi: int) -> None:
        g = self.inp.groups[gi]
        if g.name in self.inp.unavailable:
            return
        if gi in self.held:
            kinds = "/".join(accelerators_in(g.resources))
            self.capped[gi][f"new {kinds} nodes held until the CPU groups have ramped up"] = None
            return
        grown = self.live[gi] + self.coming[gi] + self.new[gi]
        if grown >= g.max_replicas:
            self.capped[gi][f"capped by maxReplicas {g.max_replicas}"] = None
        else:
            self.capped[gi][f"capped by upscaling speed ({self.speed_cap[gi]} new nodes per decision)"] = None
            self.speed_capped.add(gi)

    def count_why(self, opened: list[tuple[int, int]], kind: DemandKind, text: str) -> None:
        for gi, got in opened:
            why = self.why[gi]
            why[(kind, text)] = why.get((kind, text), 0) + got


    def lift_speed_caps(self, groups: Iterable[int]) -> dict[int, int]:
        """Raise the budgets of speed-capped ``groups`` to their room under maxReplicas; returns what was added.

        A placement group needs all its nodes at once: one wider than the upscaling-speed cap would otherwise
        wait forever, since a decision only ever adds what the cap allows and an atomic gang takes all or none.
        So one gang instance per group and decision may go past the cap."""
        extra: dict[int, int] = {}
        for gi in groups:
            g = self.inp.groups[gi]
            room = g.max_replicas - self.live[gi] - self.coming[gi] - self.new[gi]
            if (gi not in self.held and gi not in self.lifted and g.name not in self.inp.unavailable
                    and room > self.budget[gi]):
                extra[gi] = room - self.budget[gi]
                self.budget[gi] = room
                self.lifted.add(gi)
        return extra

    def hold_accelerator_budgets(self) -> None:
        for gi in self.held:
            self.budget[gi] = 0

    def accelerator_nodes_to_hold(self) -> bool:
        """conserveGpuNodes: accelerator tasks open no accelerator nodes (GPU, TPU, neuron_cores, HPU) beyond the
        minimum while a group without accelerators still ramps up under the speed cap, and neither do placement
        groups while CPU-only ones wait. Ray puts CPU-only tasks on accelerator nodes when no other node has room,
        and its placement-group scheduler ignores accelerators altogether, so accelerator nodes that come up
        before the CPU capacity fill with the CPU backlog, and the accelerator work they are for waits for yet
        more of them. The hold lasts only while the ramp does (the cap doubles every decision). Accelerator
        placement groups behind no CPU-only ones are not held: they claim the accelerator nodes before tasks do."""
        return (self.settings.conserve_gpu_nodes and any(not self.accel[gi] for gi in self.speed_capped)
                and any(self.accel[gi] and self.new[gi] > self.min_new[gi] for gi in range(len(self.new))))
