"""The state one decision works on: its resources and groups, the capacity pools, the demand left over; new
nodes are opened here, within each group's budget. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from swarm_operator.autoscaler.policy.groups import Candidate, GroupPlan, Opening
from swarm_operator.autoscaler.policy.packing import (
    Amounts,
    Bin,
    LabelSets,
    Pool,
    ResourceIndex,
    Shape,
    Tier,
    Vector,
    after_taking,
    fits_per_node,
)
from swarm_operator.autoscaler.policy.types import Node, PolicyInput, Unplaced, WorkerGroup, accelerators_in
from swarm_operator.autoscaler.snapshot import LabelSelector, NodeStatus, Resources

# Resources whose waste does not matter when choosing a group: every node has them and tasks rarely ask.
_COMMON_RESOURCES = frozenset({"CPU", "memory", "object_store_memory"})
_LIVE = (NodeStatus.RUNNING, NodeStatus.IDLE)


def _resource_names(inp: PolicyInput) -> Iterator[str]:
    for group in inp.groups:
        yield from group.resources
    for node in inp.nodes:
        yield from node.total
        yield from node.available
    for demand in (*inp.demands, *inp.constraints):
        yield from demand.shape
    for gang in inp.gangs:
        for bundle in gang.bundles:
            yield from bundle.shape


class LimitNotes(NamedTuple):
    """Every group's limit notes at one moment, to go back to when a retry makes them untrue."""

    limits: list[dict[str, None]]
    speed_capped: list[bool]


class DecisionState:
    """Everything one decision works on. Built from the input, then changed by the placement phases."""

    def __init__(self, inp: PolicyInput, hold_accelerator_nodes: bool = False) -> None:
        self.inp = inp
        self.settings = inp.settings
        self.resources = ResourceIndex(_resource_names(inp))
        self.label_sets = LabelSets()
        self.groups = [self._plan(index, group, hold_accelerator_nodes) for index, group in enumerate(inp.groups)]
        self.group_by_name = {group.name: group for group in self.groups}
        # Groups, then nodes of no group without and with accelerators.
        slot_has_accelerators = [*(group.has_accelerators for group in self.groups), False, True]
        self.demand_pool = Pool(len(self.resources), slot_has_accelerators, self.label_sets)  # free room
        self.total_pool = Pool(len(self.resources), slot_has_accelerators, self.label_sets)  # for constraints
        self.live_nodes = [node for node in inp.nodes if node.status in _LIVE]
        self.live_totals = [self.resources.vector(node.total) for node in self.live_nodes]  # never changed
        for node in self.live_nodes:
            group = self.group_of(node)
            if group is not None:
                group.live += 1
        # The distinct (total, label set) of live nodes: what demand fitting no group may still fit.
        self.live_node_kinds = list(dict.fromkeys(
            (tuple(total), self.node_label_set(node)) for node, total in zip(self.live_nodes, self.live_totals,
                                                                               strict=True)))
        self.biggest = [max([1] + [group.node_resources[index] for group in self.groups]
                            + [total[index] for total, _ in self.live_node_kinds])
                        for index in range(len(self.resources))]
        for group in self.groups:
            group.set_budget(self.settings)
        self.infeasible: list[Unplaced] = []
        self.tasks_on_new_nodes: dict[str, float] = {}  # the pending tasks' resources placed on new nodes
        self.waiting: list[Unplaced] = []
        self._gang_instances = 0

    def _plan(self, index: int, group: WorkerGroup, hold_accelerator_nodes: bool) -> GroupPlan:
        node_resources = self.resources.vector(group.resources)
        scarce = frozenset(number for name, number in self.resources.number.items()
                           if node_resources[number] > 0 and name not in _COMMON_RESOURCES)
        has_accelerators = bool(accelerators_in(group.resources))
        return GroupPlan(index, group, node_resources, self.label_sets.number(group.labels), has_accelerators,
                         scarce, unavailable=group.name in self.inp.unavailable,
                         held=hold_accelerator_nodes and has_accelerators)

    # -- reading the input

    def group_of(self, node: Node) -> GroupPlan | None:
        """The node's group; None for the head, or a node of a group no longer in the spec."""
        return self.group_by_name.get(node.group) if node.group is not None else None

    def node_label_set(self, node: Node) -> int:
        if node.labels is not None:
            return self.label_sets.number(node.labels)
        group = self.group_of(node)
        return group.label_set if group is not None else self.label_sets.number({})

    def shape(self, resources: Resources, selector: LabelSelector) -> Shape:
        return self.resources.shape(resources, selector)

    def size(self, amounts: Amounts) -> float:
        """A request's size relative to the largest node offering each resource (first-fit decreasing)."""
        return sum(amount / self.biggest[index] for index, amount in amounts)

    def new_gang_instance(self) -> int:
        self._gang_instances += 1
        return self._gang_instances - 1

    # -- capacity there is

    def build_pools(self) -> None:
        """Live nodes as bins (identical ones merged), then each group's coming pods and nodes for its minimum."""
        merged: dict[tuple[Tier, int, int, tuple[int, ...]], tuple[Bin, Bin]] = {}
        for node, total in self._keep_first(self.live_nodes, self.live_totals):
            group = self.group_of(node)
            slot = group.index if group is not None else len(self.groups) + (1 if accelerators_in(node.total) else 0)
            tier = Tier.IDLE if group is not None and node.status is NodeStatus.IDLE else Tier.BUSY
            label_set = self.node_label_set(node)
            # Never above the total (both vectors are >= 0): a conditional is cheaper than min() per resource.
            free = [amount if amount <= most else most
                    for amount, most in zip(self.resources.vector(node.available), total, strict=True)]
            key = (tier, slot, label_set, tuple(free + total))
            bins = merged.get(key)
            if bins is None:
                merged[key] = (self.demand_pool.add(tier, slot, free, 1, [node.name], label_set),
                               self.total_pool.add(tier, slot, total, 1, [node.name], label_set))
                continue
            for same in bins:
                same.count += 1
                same.names.append(node.name)
        for group in self.groups:
            for tier, count in ((Tier.COMING, group.coming), (Tier.NEW, group.minimum_new)):
                if count:
                    for pool in (self.demand_pool, self.total_pool):
                        pool.add(tier, group.index, group.node_resources[:], count, [], group.label_set)

    @staticmethod
    def _keep_first(nodes: list[Node], totals: list[Vector]) -> list[tuple[Node, Vector]]:
        """Oldest, then least idle: the nodes bins hand out first are the ones a drain would take last."""
        return sorted(zip(nodes, totals, strict=True),
                      key=lambda pair: (-pair[0].age_s, pair[0].idle_s, pair[0].name))

    def candidates(self, shape: Shape, per_node_limit: int | None = None) -> list[Candidate]:
        """Groups a fresh node of which fits ``shape``. With conserve_gpu_nodes, work that asks for no
        accelerator gets accelerator groups (GPU, TPU, neuron_cores, HPU) only when no group without one fits
        it at all."""
        found: list[Candidate] = []
        asked = {index for index, _ in shape.amounts}
        a_plain_group_fits = False
        for group in self.groups:
            per_node = fits_per_node(group.node_resources, shape.amounts, per_node_limit)
            if per_node == 0 or (shape.selector and not shape.matches(group.label_set, self.label_sets)):
                continue
            found.append((group, per_node, len(group.scarce_resources - asked)))
            a_plain_group_fits = a_plain_group_fits or not group.has_accelerators
        if self.settings.conserve_gpu_nodes and not shape.asks_accelerator and a_plain_group_fits:
            found = [candidate for candidate in found if not candidate[0].has_accelerators]
        return found

    def feasible(self, shape: Shape, candidates: list[Candidate]) -> bool:
        """Fits some group's node, or the total of some live node (the head, a node of a removed group)."""
        if candidates:
            return True
        return any(all(total[index] >= need for index, need in shape.amounts)
                   and (not shape.selector or shape.matches(label_set, self.label_sets))
                   for total, label_set in self.live_node_kinds)

    # -- new nodes

    def open_nodes(self, shape: Shape, count: int, candidates: list[Candidate], pool: Pool,
                   also_in: Pool | None = None, gang: int | None = None) -> list[Opening]:
        """New nodes for up to ``count`` requests, best group first; each group opened, with the requests
        placed on its new nodes.

        The best group wastes least: no unasked scarce resources (GPUs, custom), then the highest lowest
        utilisation of the resources asked, then fewer nodes, then the order of groups in the spec. ``also_in``
        receives the same nodes empty (constraints reserve total capacity, not free room). ``gang`` tags the
        new nodes (STRICT_SPREAD keeps an instance's bundles apart)."""
        openings: list[Opening] = []
        while count > 0:
            best = self._best_group(shape, count, candidates)
            if best is None:
                for group, _, _ in candidates:
                    group.note_limit()
                break
            group, per_node, nodes, placed = best
            full, rest = divmod(placed, per_node)
            if full:
                pool.add(Tier.NEW, group.index, after_taking(group.node_resources, shape.amounts, per_node), full,
                         [], group.label_set, gang)
            if rest:
                pool.add(Tier.NEW, group.index, after_taking(group.node_resources, shape.amounts, rest), 1, [],
                         group.label_set, gang)
            if also_in is not None:
                also_in.add(Tier.NEW, group.index, group.node_resources[:], nodes, [], group.label_set)
            self.spend_budget(group, nodes)
            openings.append(Opening(group, placed))
            count -= placed
        return openings

    @staticmethod
    def _best_group(shape: Shape, count: int,
                    candidates: list[Candidate]) -> tuple[GroupPlan, int, int, int] | None:
        """The candidate that wastes least with budget left: its group, requests per node, the nodes it would
        open and the requests they would hold."""
        best: tuple[tuple[int, float, int, int], GroupPlan, int, int, int] | None = None
        for group, per_node, unasked_scarce in candidates:
            if group.budget <= 0:
                continue
            nodes = min(-(-count // per_node), group.budget)
            placed = min(count, nodes * per_node)
            utilisation = min(placed * need / (nodes * group.node_resources[index]) for index, need in shape.amounts)
            preference = (-unasked_scarce, utilisation, -nodes, -group.index)
            if best is None or preference > best[0]:
                best = (preference, group, per_node, nodes, placed)
        if best is None:
            return None
        _, group, per_node, nodes, placed = best
        return group, per_node, nodes, placed

    def open_spread_nodes(self, shape: Shape, width: int, count: int, candidates: list[Candidate],
                          pool: Pool) -> tuple[int, GroupPlan | None]:
        """Up to ``count`` identical STRICT_SPREAD instances of ``width`` bundles of one shape, on new nodes of
        one group at once, laid round robin; returns how many were placed, and in which group.

        One instance at a time would give each its own ``width`` fresh nodes once the earlier ones are full
        (5 instances of 3 GPU bundles on 4-GPU nodes: 6 nodes); round robin over ``max(width, ceil(bundles /
        per node))`` nodes keeps every instance on distinct nodes with fewer of them (4)."""
        best: tuple[tuple[int, int, int, int], GroupPlan, int, int] | None = None
        for group, _, unasked_scarce in candidates:
            if group.budget < width:
                continue
            per_node = fits_per_node(group.node_resources, shape.amounts)  # other instances' bundles may share
            instances = min(count, group.budget * per_node // width)
            nodes = max(width, -(-instances * width // per_node))
            preference = (-unasked_scarce, instances, -nodes, -group.index)
            if best is None or preference > best[0]:
                best = (preference, group, nodes, instances)
        if best is None:
            for group, _, _ in candidates:
                group.note_limit()
            return 0, None
        _, group, nodes, instances = best
        if instances < count:
            group.note_limit()
        per_node_low, nodes_with_one_more = divmod(instances * width, nodes)  # round robin
        if nodes_with_one_more:
            pool.add(Tier.NEW, group.index, after_taking(group.node_resources, shape.amounts, per_node_low + 1),
                     nodes_with_one_more, [], group.label_set)
        pool.add(Tier.NEW, group.index, after_taking(group.node_resources, shape.amounts, per_node_low),
                 nodes - nodes_with_one_more, [], group.label_set)
        self.spend_budget(group, nodes)
        return instances, group

    def spend_budget(self, group: GroupPlan, nodes: int) -> None:
        group.budget -= nodes
        group.new += nodes
        journal = self.demand_pool.journal
        if journal is not None:
            journal.record(lambda: self.spend_budget(group, -nodes))

    # -- the upscaling speed

    def limit_notes(self) -> LimitNotes:
        return LimitNotes([dict(group.limits) for group in self.groups], [group.speed_capped for group in self.groups])

    def restore_limit_notes(self, notes: LimitNotes) -> None:
        for group, limits, speed_capped in zip(self.groups, notes.limits, notes.speed_capped, strict=True):
            group.limits, group.speed_capped = limits, speed_capped

    def lift_speed_caps(self, groups: Iterable[GroupPlan]) -> dict[GroupPlan, int]:
        """Raise the budgets of speed-capped ``groups`` to their room under maxReplicas; returns what was added.

        A placement group needs all its nodes at once: one wider than the upscaling-speed cap would otherwise
        wait forever, since a decision only ever adds what the cap allows and an atomic gang takes all or none.
        So one gang instance per group and decision may go past the cap."""
        added: dict[GroupPlan, int] = {}
        for group in groups:
            room = group.room_under_max()
            if not group.held and not group.lifted and not group.unavailable and room > group.budget:
                added[group] = room - group.budget
                group.budget = room
                group.lifted = True
        return added

    def hold_accelerator_budgets(self) -> None:
        for group in self.groups:
            if group.held:
                group.budget = 0

    def accelerator_nodes_to_hold(self) -> bool:
        """conserveGpuNodes: accelerator tasks open no accelerator nodes (GPU, TPU, neuron_cores, HPU) beyond the
        minimum while a group without accelerators still ramps up under the speed cap, and neither do placement
        groups while CPU-only ones wait. Ray puts CPU-only tasks on accelerator nodes when no other node has room,
        and its placement-group scheduler ignores accelerators altogether, so accelerator nodes that come up
        before the CPU capacity fill with the CPU backlog, and the accelerator work they are for waits for yet
        more of them. The hold lasts only while the ramp does (the cap doubles every decision). Accelerator
        placement groups behind no CPU-only ones are not held: they claim the accelerator nodes before tasks do."""
        return (self.settings.conserve_gpu_nodes
                and any(group.speed_capped and not group.has_accelerators for group in self.groups)
                and any(group.has_accelerators and group.new > group.minimum_new for group in self.groups))
