"""Capacity in fixed point: resources numbered, nodes as bins of interchangeable ones, first-fit placement in
bulk. Pure.

A bin holds ``count`` identical nodes (same free resources, labels, tier and group); placing ``k`` requests
takes ``min over resources of free // need`` per node at once, and a bin is split only when part of it is
used. A journal lets a gang trial give back everything it took.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import IntEnum
from operator import itemgetter

from swarm_operator.autoscaler.policy.types import accelerators_in
from swarm_operator.autoscaler.snapshot import LabelSelector, Resources, selector_matches

_SCALE = 10_000  # Ray keeps resources as fixed-point 1/10000 units; rounding the same way agrees with it
Amounts = tuple[tuple[int, int], ...]  # (resource index, fixed-point amount) for each resource asked, amount > 0
Vector = list[int]  # a fixed-point amount for every resource index

# A shape that asks for nothing fits a node this many times: more than any count of requests.
ASKS_NOTHING_FITS = 1 << 62
# A shelf scanned with more misses than this has its bound tightened (see Pool.fill).
_MISSES_BEFORE_TIGHTENING = 16


class Tier(IntEnum):
    """The order free capacity is used in: busy nodes first so idle ones can reach their timeout, then idle
    ones (they are up already: using them beats waiting for a pod), then pods coming up, then new nodes."""

    BUSY = 0
    IDLE = 1
    COMING = 2
    NEW = 3


class LabelSets:
    """Node label sets interned to small numbers: bins and groups name theirs by number, shapes cache matches."""

    def __init__(self) -> None:
        self.by_number: list[Mapping[str, str]] = []
        self._numbers: dict[tuple[tuple[str, str], ...], int] = {}

    def number(self, labels: Mapping[str, str]) -> int:
        key = tuple(sorted(labels.items()))
        number = self._numbers.get(key)
        if number is None:
            number = self._numbers[key] = len(self.by_number)
            self.by_number.append(dict(labels))
        return number


class Shape:
    """One request shape in fixed point, with its label selector and a cache of selector matches."""

    __slots__ = ("_matches", "amounts", "asks_accelerator", "key", "selector")

    def __init__(self, amounts: Amounts, asks_accelerator: bool, selector: LabelSelector) -> None:
        self.amounts = amounts
        self.asks_accelerator = asks_accelerator  # GPU, TPU …
        self.selector = selector
        self.key = (amounts, selector)
        self._matches: dict[int, bool] = {}

    def matches(self, label_set: int, label_sets: LabelSets) -> bool:
        """The selector holds on nodes with label set number ``label_set``."""
        match = self._matches.get(label_set)
        if match is None:
            match = self._matches[label_set] = selector_matches(self.selector, label_sets.by_number[label_set])
        return match


class ResourceIndex:
    """Every resource name of one decision, numbered in name order; amounts as fixed-point vectors."""

    def __init__(self, names: Iterable[str]) -> None:
        self.number = {name: index for index, name in enumerate(sorted(set(names)))}

    def __len__(self) -> int:
        return len(self.number)

    def vector(self, resources: Resources) -> Vector:
        """``resources`` in fixed point, indexed by resource; every entry >= 0."""
        vector = [0] * len(self.number)
        for name, amount in resources.items():
            if amount > 0:
                vector[self.number[name]] = round(amount * _SCALE)
        return vector

    def shape(self, resources: Resources, selector: LabelSelector) -> Shape:
        scaled = sorted((self.number[name], round(amount * _SCALE)) for name, amount in resources.items()
                        if amount > 0)
        amounts = tuple((index, amount) for index, amount in scaled if amount > 0)
        return Shape(amounts, bool(accelerators_in(resources)), selector)


class Bin:
    """``count`` interchangeable nodes with the same free resources (and labels, tier and slot)."""

    __slots__ = ("count", "free", "label_set", "last_gang", "names", "used")

    def __init__(self, free: Vector, count: int, names: list[str], label_set: int, last_gang: int | None) -> None:
        self.free = free
        self.count = count
        self.names = names  # pod names of existing nodes (keep-first order); empty for coming and new nodes
        self.label_set = label_set
        self.last_gang = last_gang  # the gang instance last placed here; STRICT_SPREAD skips its own nodes
        self.used = False


class Shelf:
    """The bins of one (tier, slot), in first-fit order. ``most_free`` bounds every bin's free resources, so a
    shelf without room for a shape is skipped in one comparison per resource asked."""

    __slots__ = ("bins", "has_accelerators", "most_free")

    def __init__(self, resources: int, has_accelerators: bool) -> None:
        self.bins: list[Bin] = []
        self.has_accelerators = has_accelerators
        self.most_free = [0] * resources


class Journal:
    """How to undo each change of one gang trial, in the order they were made."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def record(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def roll_back(self) -> None:
        for undo in reversed(self._undo):
            undo()


def after_taking(free: Vector, amounts: Amounts, times: int) -> Vector:
    left = free[:]
    for index, need in amounts:
        left[index] -= need * times
    return left


def fits_per_node(free: Vector, amounts: Amounts, limit: int | None = None) -> int:
    """How many requests of ``amounts`` fit on a node with ``free`` resources, at most ``limit``."""
    fit = ASKS_NOTHING_FITS if limit is None else limit
    for index, need in amounts:
        room = free[index] // need
        if room < fit:
            fit = room
            if room == 0:
                break
    return fit


class Pool:
    """Capacity as ordered bins, with first-fit placement in bulk and an undo journal for gang trials.

    Slots are the group indices, then two for nodes outside any group (without and with accelerators)."""

    def __init__(self, resources: int, slot_has_accelerators: list[bool], label_sets: LabelSets) -> None:
        self.label_sets = label_sets
        self.slots = len(slot_has_accelerators)
        self.shelves = [Shelf(resources, accelerators) for _ in Tier for accelerators in slot_has_accelerators]
        self.accelerator_shelves = [shelf for shelf in self.shelves if shelf.has_accelerators]
        self.plain_shelves = [shelf for shelf in self.shelves if not shelf.has_accelerators]
        self.journal: Journal | None = None  # set during a gang trial

    def shelves_for(self, shape: Shape, conserve_accelerators: bool) -> list[Shelf]:
        """The shelves ``shape`` may use, in the order it uses them."""
        if shape.asks_accelerator:
            return self.accelerator_shelves
        if conserve_accelerators:  # other work fills capacity without accelerators first, all tiers, before theirs
            return self.plain_shelves + self.accelerator_shelves
        return self.shelves

    @contextlib.contextmanager
    def trial(self) -> Iterator[Journal]:
        """Journal every change made inside the block, for the caller to roll back if the trial fails."""
        self.journal = Journal()
        try:
            yield self.journal
        finally:
            self.journal = None

    def add(self, tier: Tier, slot: int, free: Vector, count: int, names: list[str], label_set: int,
            gang: int | None = None) -> Bin:
        shelf = self.shelves[tier * self.slots + slot]
        added = Bin(free, count, names, label_set, gang)
        shelf.bins.append(added)
        most_free = shelf.most_free
        for index, amount in enumerate(free):
            if amount > most_free[index]:
                most_free[index] = amount
        if self.journal is not None:
            self.journal.record(lambda: setattr(added, "count", 0))
        return added

    def fill(self, shape: Shape, count: int, shelves: list[Shelf], per_node_limit: int | None = None,
             gang: int | None = None) -> int:
        """First-fit ``count`` requests onto free capacity in shelf order; returns how many were placed.

        ``per_node_limit`` is 1 for spreading; ``gang`` skips nodes that already hold a bundle of that gang
        instance and tags the nodes used."""
        remaining = count
        amounts = shape.amounts
        selector = shape.selector
        for shelf in shelves:
            most_free = shelf.most_free
            if not shelf.bins or any(most_free[index] < need for index, need in amounts):
                continue
            bins = shelf.bins
            misses = 0
            for position in range(len(bins)):  # a split ends the scan (it only happens for the last take)
                node_bin = bins[position]
                if node_bin.count == 0 or (gang is not None and node_bin.last_gang == gang):
                    continue
                if selector and not shape.matches(node_bin.label_set, self.label_sets):
                    continue
                # fits_per_node, inlined: this loop is where the policy spends its time.
                free = node_bin.free
                fit = remaining if per_node_limit is None else min(per_node_limit, remaining)
                for index, need in amounts:
                    room = free[index] // need
                    if room < fit:
                        fit = room
                        if room == 0:
                            break
                if fit == 0:
                    misses += 1
                    continue
                take = min(remaining, fit * node_bin.count)
                self._take(shelf, position, amounts, fit, take, gang)
                remaining -= take
                if remaining == 0:
                    return count
            if misses > _MISSES_BEFORE_TIGHTENING and self.journal is None:
                # A whole shelf scanned with many misses: tighten its bound on the resources just asked (now
                # that room was taken), so later shapes that ask as much skip the shelf in one comparison.
                # Not during a gang trial: undoing it would give back room above the tightened bound.
                frees = [node_bin.free for node_bin in bins]
                for index, _ in amounts:
                    most_free[index] = max(map(itemgetter(index), frees))
        return count - remaining

    def _take(self, shelf: Shelf, position: int, amounts: Amounts, fit: int, take: int, gang: int | None) -> None:
        """``take`` requests from the bin at ``position``, ``fit`` on each node it uses."""
        taken_from = shelf.bins[position]
        full, rest = divmod(take, fit)
        if rest == 0 and full == taken_from.count:  # every node of the bin gets the same: update in place
            self._take_from_every_node(taken_from, amounts, fit, gang)
            return
        # Split: ``full`` nodes with ``fit`` requests each, maybe one node with the rest, the others untouched.
        names = taken_from.names
        nodes_used = full + (1 if rest else 0)
        split: list[Bin] = []
        if full:
            split.append(Bin(after_taking(taken_from.free, amounts, fit), full, names[:full],
                             taken_from.label_set, gang))
        if rest:
            split.append(Bin(after_taking(taken_from.free, amounts, rest), 1, names[full:nodes_used],
                             taken_from.label_set, gang))
        for used in split:
            used.used = True
        taken_from.count -= nodes_used
        taken_from.names = names[nodes_used:]
        # The used nodes go where the bin was, ahead of its untouched nodes: first fit then keeps filling
        # nodes already started before it opens untouched ones (packing, as node-by-node first fit would).
        shelf.bins[position:position] = split
        if self.journal is not None:
            self.journal.record(lambda: _unsplit(taken_from, nodes_used, names, split))

    def _take_from_every_node(self, taken_from: Bin, amounts: Amounts, fit: int, gang: int | None) -> None:
        if self.journal is not None:
            before = (taken_from.free, taken_from.used, taken_from.last_gang)
            self.journal.record(lambda: _restore(taken_from, *before))
        taken_from.free = after_taking(taken_from.free, amounts, fit)
        taken_from.used = True
        if gang is not None:
            taken_from.last_gang = gang

    def used_names(self) -> set[str]:
        """The existing nodes some demand was placed on."""
        return {name for shelf in self.shelves for node_bin in shelf.bins if node_bin.used and node_bin.count
                for name in node_bin.names}


def _restore(node_bin: Bin, free: Vector, used: bool, last_gang: int | None) -> None:
    node_bin.free, node_bin.used, node_bin.last_gang = free, used, last_gang


def _unsplit(node_bin: Bin, nodes_used: int, names: list[str], split: list[Bin]) -> None:
    node_bin.count += nodes_used
    node_bin.names = names
    for used in split:
        used.count = 0
