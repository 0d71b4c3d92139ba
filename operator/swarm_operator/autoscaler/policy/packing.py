"""Capacity as bins of interchangeable nodes, in fixed point, with first-fit placement in bulk. Pure.

A bin holds ``mult`` identical nodes (same free resources, labels, tier and group); placing ``k`` requests
takes ``min over resources of free // need`` per node at once, and a bin is split only when part of it is
used. An undo journal lets a gang trial give back everything it took.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter

from swarm_operator.autoscaler.snapshot import LabelSelector, selector_matches

Items = tuple[tuple[int, int], ...]  # (resource index, fixed-point amount) for each resource asked, amount > 0

# Tiers, in the order free capacity is used: busy nodes first so idle ones can reach their timeout, then
# idle ones (they are up already: using them beats waiting for a pod), then pods coming up, then new nodes.
BUSY, IDLE, COMING, NEW = range(4)


class Shape:
    """One request shape in fixed point, with its label selector and a cache of selector matches."""

    __slots__ = ("_ok", "accel", "items", "key", "selector")

    def __init__(self, items: Items, accel: bool, selector: LabelSelector) -> None:
        self.items = items
        self.accel = accel  # asks for an accelerator (GPU, TPU …)
        self.selector = selector
        self.key = (items, selector)
        self._ok: dict[int, bool] = {}

    def labels_ok(self, labels_id: int, table: list[Mapping[str, str]]) -> bool:
        ok = self._ok.get(labels_id)
        if ok is None:
            ok = self._ok[labels_id] = selector_matches(self.selector, table[labels_id])
        return ok


class Bin:
    """``mult`` interchangeable nodes with the same free resources (and labels, tier and slot)."""

    __slots__ = ("avail", "gang", "labels", "mult", "names", "used")

    def __init__(self, avail: list[int], mult: int, names: list[str], labels: int, gang: int) -> None:
        self.avail = avail
        self.mult = mult
        self.names = names  # pod names of existing nodes (keep-first order); empty for coming and new nodes
        self.labels = labels
        self.gang = gang  # the gang instance last placed here; STRICT_SPREAD skips its own nodes
        self.used = False


class BinList:
    """The bins of one (tier, slot); ``ub`` bounds every bin's free resources, so a list is skipped cheaply."""

    __slots__ = ("accel", "bins", "ub")

    def __init__(self, nres: int, accel: bool) -> None:
        self.bins: list[Bin] = []
        self.accel = accel
        self.ub = [0] * nres


def minus(avail: list[int], items: Items, times: int) -> list[int]:
    out = avail[:]
    for i, a in items:
        out[i] -= a * times
    return out


def per_node(free: list[int], items: Items, limit: int) -> int:
    """How many requests of ``items`` fit on a node with ``free`` resources, at most ``limit``."""
    fit = limit
    for i, a in items:
        f = free[i] // a
        if f < fit:
            fit = f
            if f == 0:
                break
    return fit


class Pool:
    """Capacity as ordered bins, with first-fit placement in bulk and an undo journal for gang trials.

    Slots are the group indices, then two for nodes outside any group (without and with accelerators)."""

    def __init__(self, nres: int, slot_accel: list[bool], labels: list[Mapping[str, str]]) -> None:
        self.nres = nres
        self.labels = labels
        self.slots = len(slot_accel)
        self.lists = [BinList(nres, accel) for _ in range(4) for accel in slot_accel]
        self.accel_order = [lst for lst in self.lists if lst.accel]
        self.plain_order = [lst for lst in self.lists if not lst.accel]
        self.undo: list[Callable[[], None]] | None = None

    def order(self, shape: Shape, conserve_accel: bool) -> list[BinList]:
        if shape.accel:
            return self.accel_order
        if conserve_accel:  # other work fills capacity without accelerators first, all tiers, before touching theirs
            return self.plain_order + self.accel_order
        return self.lists

    def add(self, tier: int, slot: int, avail: list[int], mult: int, names: list[str], labels: int,
            gang: int = -1) -> Bin:
        lst = self.lists[tier * self.slots + slot]
        b = Bin(avail, mult, names, labels, gang)
        lst.bins.append(b)
        ub = lst.ub
        for i, v in enumerate(avail):
            if v > ub[i]:
                ub[i] = v
        if self.undo is not None:
            self.undo.append(lambda: setattr(b, "mult", 0))
        return b

    def fill(self, shape: Shape, count: int, lists: list[BinList], cap: int = 0, gang: int = -1) -> int:
        """First-fit ``count`` requests onto free capacity in list order; returns how many were placed.

        ``cap`` limits requests per node (1 for spreading); ``gang`` >= 0 skips nodes that already hold a
        bundle of that gang instance and tags the nodes used."""
        remaining = count
        items = shape.items
        selector = shape.selector
        for lst in lists:
            ub = lst.ub
            if not lst.bins or any(ub[i] < a for i, a in items):
                continue
            bins = lst.bins
            misses = 0
            for k in range(len(bins)):  # a split ends the scan (it only happens for the last take)
                b = bins[k]
                if b.mult == 0 or (gang >= 0 and b.gang == gang):
                    continue
                if selector and not shape.labels_ok(b.labels, self.labels):
                    continue
                # per_node, inlined: this loop is where the policy spends its time.
                av = b.avail
                fit = min(cap, remaining) if cap else remaining
                for i, a in items:
                    f = av[i] // a
                    if f < fit:
                        fit = f
                        if f == 0:
                            break
                if fit == 0:
                    misses += 1
                    continue
                take = min(remaining, fit * b.mult)
                self._take(lst, k, items, fit, take, gang)
                remaining -= take
                if remaining == 0:
                    return count
            if misses > 16 and self.undo is None:
                # A whole list scanned with many misses: tighten its bound on the resources just asked (now
                # that room was taken), so later shapes that ask as much skip the list in one comparison.
                # Not during a gang trial: undoing it would give back room above the tightened bound.
                avails = [b.avail for b in bins]
                for i, _ in items:
                    ub[i] = max(map(itemgetter(i), avails))
        return count - remaining

    def _take(self, lst: BinList, at: int, items: Items, fit: int, take: int, gang: int) -> None:
        b = lst.bins[at]
        full, rest = divmod(take, fit)
        if rest == 0 and full == b.mult:  # every node of the bin gets the same: update in place
            if self.undo is not None:
                old = (b.avail, b.used, b.gang)
                self.undo.append(lambda: _restore(b, *old))
            b.avail = minus(b.avail, items, fit)
            b.used = True
            if gang >= 0:
                b.gang = gang
            return
        # Split: ``full`` nodes with ``fit`` requests each, maybe one node with the rest, the others untouched.
        names = b.names
        taken = full + (1 if rest else 0)
        split: list[Bin] = []
        if full:
            split.append(Bin(minus(b.avail, items, fit), full, names[:full], b.labels, gang))
        if rest:
            split.append(Bin(minus(b.avail, items, rest), 1, names[full:taken], b.labels, gang))
        for s in split:
            s.used = True
        b.mult -= taken
        b.names = names[taken:]
        # The used nodes go where the bin was, ahead of its untouched nodes: first fit then keeps filling
        # nodes already started before it opens untouched ones (packing, as node-by-node first fit would).
        lst.bins[at:at] = split
        if self.undo is not None:
            self.undo.append(lambda: _unsplit(b, taken, names, split))


def _restore(b: Bin, avail: list[int], used: bool, gang: int) -> None:
    b.avail, b.used, b.gang = avail, used, gang


def _unsplit(b: Bin, taken: int, names: list[str], split: list[Bin]) -> None:
    b.mult += taken
    b.names = names
    for s in split:
        s.mult = 0
