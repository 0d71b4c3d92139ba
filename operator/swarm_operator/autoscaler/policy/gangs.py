"""Placement groups: every instance of a gang is placed whole (all its bundles) or not at all. Pure.

Strict gangs go first, then larger ones. A STRICT_PACK instance is one bundle (the sum of its bundles), so its
instances go in bulk like tasks. The others are placed an instance at a time, each a trial that is rolled back
if any bundle finds no room; identical STRICT_SPREAD instances that fit no node there is get new nodes at once,
round robin (``DecisionState.open_spread_nodes``). When an instance fails, the speed caps of its groups are
lifted once and it is tried again: a gang wider than the cap would otherwise never start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from swarm_operator.autoscaler.policy.capacity import DecisionState
from swarm_operator.autoscaler.policy.groups import Candidate, GroupPlan, count_growth, requests_placed
from swarm_operator.autoscaler.policy.packing import Shape
from swarm_operator.autoscaler.policy.types import DemandKind, Unplaced, accelerators_in, format_bundles
from swarm_operator.autoscaler.snapshot import GangDemand, LabelSelector, Resources, Strategy

_STRICT = (Strategy.STRICT_PACK, Strategy.STRICT_SPREAD)
_SPREAD = (Strategy.SPREAD, Strategy.STRICT_SPREAD)


@dataclass(frozen=True, slots=True)
class Gang:
    """Pending placement groups as the placement works on them: bundle shapes and one selector."""

    bundles: tuple[Resources, ...]
    strategy: Strategy
    count: int
    selector: LabelSelector

    @property
    def cpu_only(self) -> bool:
        return not any(accelerators_in(bundle) for bundle in self.bundles)

    def describe(self) -> str:
        return f"{self.strategy} {format_bundles(self.bundles)}"

    def unplaced(self, count: int) -> Unplaced:
        return Unplaced(DemandKind.GANG, self.bundles, count, self.strategy, self.selector)


def as_gang(demand: GangDemand) -> Gang:
    # The first bundle's selector stands for every bundle: it is what a new node of the gang must satisfy.
    return Gang(tuple(bundle.shape for bundle in demand.bundles), demand.strategy, demand.count,
                demand.bundles[0].label_selector if demand.bundles else ())


@dataclass(frozen=True)
class _Part:
    """Bundles of one shape in a gang instance, and the groups a new node of which fits one."""

    shape: Shape
    bundles: int
    candidates: list[Candidate]


def place_gangs(state: DecisionState, gangs: Iterable[Gang]) -> None:
    def order(gang: Gang) -> tuple[bool, float]:
        size = sum(state.size(state.shape(bundle, ()).amounts) for bundle in gang.bundles)
        return gang.strategy not in _STRICT, -size

    for gang in sorted(_merged(gangs), key=order):
        _place(state, gang)


def _merged(gangs: Iterable[Gang]) -> list[Gang]:
    """Identical gangs as one, with their counts added."""
    merged: dict[tuple[object, ...], Gang] = {}
    for gang in gangs:
        if gang.count <= 0:
            continue
        key = (gang.strategy, gang.selector, tuple(tuple(sorted(bundle.items())) for bundle in gang.bundles))
        earlier = merged.get(key)
        merged[key] = gang if earlier is None else replace(gang, count=earlier.count + gang.count)
    return list(merged.values())


def _place(state: DecisionState, gang: Gang) -> None:
    parts = _parts(state, gang)
    if not all(state.feasible(part.shape, part.candidates) for part in parts):
        state.infeasible.append(gang.unplaced(gang.count))
    elif gang.strategy is Strategy.STRICT_PACK:
        _place_in_bulk(state, gang, parts[0])
    else:
        _place_one_by_one(state, gang, parts)


def _parts(state: DecisionState, gang: Gang) -> list[_Part]:
    """STRICT_PACK: one part, the bundles' sum. Otherwise one part per distinct bundle, accelerators and larger
    ones first."""
    if gang.strategy is Strategy.STRICT_PACK:
        combined: dict[str, float] = {}
        for bundle in gang.bundles:
            for name, amount in bundle.items():
                combined[name] = combined.get(name, 0.0) + amount
        shapes = [(state.shape(combined, gang.selector), 1)]
    else:
        counts: dict[tuple[tuple[str, float], ...], int] = {}
        for bundle in gang.bundles:
            key = tuple(sorted((name, amount) for name, amount in bundle.items() if amount > 0))
            counts[key] = counts.get(key, 0) + 1
        shapes = sorted(((state.shape(dict(key), gang.selector), count) for key, count in counts.items()),
                        key=lambda part: (-part[0].asks_accelerator, -state.size(part[0].amounts)))
    per_node_limit = 1 if gang.strategy is Strategy.STRICT_SPREAD else None
    return [_Part(shape, count, state.candidates(shape, per_node_limit)) for shape, count in shapes]


def _place_in_bulk(state: DecisionState, gang: Gang, part: _Part) -> None:
    pool = state.demand_pool
    placed = pool.fill(part.shape, gang.count, pool.shelves_for(part.shape, state.settings.conserve_gpu_nodes))
    openings = state.open_nodes(part.shape, gang.count - placed, part.candidates, pool)
    count_growth(openings, DemandKind.GANG, gang.describe())
    placed += requests_placed(openings)
    if placed < gang.count:
        state.waiting.append(gang.unplaced(gang.count - placed))


def _place_one_by_one(state: DecisionState, gang: Gang, parts: list[_Part]) -> None:
    """Instance after instance until one fails; the first failure retries once past the speed caps."""
    placed = 0
    lift_tried = False
    lifted: dict[GroupPlan, int] = {}  # budget added past the speed cap, until an instance has used it
    while placed < gang.count:
        notes = None if lift_tried else state.limit_notes()
        instances = _try(state, gang, parts, gang.count - placed)
        if instances == 0:
            if notes is not None:
                lift_tried = True
                lifted = state.lift_speed_caps(_groups_that_fit(parts))
                if lifted:
                    state.restore_limit_notes(notes)  # the retry may not be capped where the failed trial was
                    continue
            else:  # the retry past the cap failed too: give the lifted budget back
                _take_back(lifted, lift_again=True)
            state.waiting.append(gang.unplaced(gang.count - placed))
            return
        _take_back(lifted, lift_again=False)  # that one instance may exceed the speed cap, the ones after it not
        lifted = {}
        placed += instances


def _groups_that_fit(parts: list[_Part]) -> list[GroupPlan]:
    return list(dict.fromkeys(group for part in parts for group, _, _ in part.candidates))


def _take_back(lifted: dict[GroupPlan, int], lift_again: bool) -> None:
    for group, added in lifted.items():
        group.budget = max(0, group.budget - added)
        if lift_again:
            group.lifted = False


def _try(state: DecisionState, gang: Gang, parts: list[_Part], remaining: int) -> int:
    """One trial: returns how many instances were placed (more than one for identical STRICT_SPREAD ones on new
    nodes), or 0 after giving back everything the trial took: identical instances would fail the same."""
    with state.demand_pool.trial() as journal:
        instances, groups = _place_instance(state, gang, parts, remaining)
    if instances == 0:
        journal.roll_back()
        return 0
    for group in groups:
        group.count_growth(DemandKind.GANG, gang.describe(), instances)
    return instances


def _place_instance(state: DecisionState, gang: Gang, parts: list[_Part],
                    remaining: int) -> tuple[int, list[GroupPlan]]:
    """Instances placed (0 or 1, or up to ``remaining`` for STRICT_SPREAD on new nodes) and the groups that
    opened nodes for them."""
    pool = state.demand_pool
    instance = state.new_gang_instance()
    spread = gang.strategy in _SPREAD
    strict_spread = gang.strategy is Strategy.STRICT_SPREAD
    opened: dict[GroupPlan, None] = {}
    for part in parts:
        shelves = pool.shelves_for(part.shape, state.settings.conserve_gpu_nodes)
        placed = pool.fill(part.shape, part.bundles, shelves, per_node_limit=1 if spread else None,
                           gang=instance if spread else None)
        if gang.strategy is Strategy.SPREAD and placed < part.bundles:  # best effort: share nodes after all
            placed += pool.fill(part.shape, part.bundles - placed, shelves)
        if placed == 0 and strict_spread and len(parts) == 1:  # fits no node there is, nor will the rest
            instances, group = state.open_spread_nodes(part.shape, part.bundles, remaining, part.candidates, pool)
            return instances, [] if group is None else [group]
        # New nodes for STRICT_SPREAD take one bundle each and are tagged so the instance's other bundles go
        # elsewhere; for PACK and SPREAD they are packed.
        openings = state.open_nodes(part.shape, part.bundles - placed, part.candidates, pool,
                                    gang=instance if strict_spread else None)
        opened.update(dict.fromkeys(opening.group for opening in openings))
        if placed + requests_placed(openings) < part.bundles:
            return 0, []
    return 1, list(opened)
