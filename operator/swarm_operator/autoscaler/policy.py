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

With ``conserve_gpu_nodes``, CPU-only demand never opens GPU nodes while a non-GPU group fits it, and GPU
tasks (and gangs, while CPU-only gangs wait) open no GPU nodes beyond the minimum while a non-GPU group is
still ramping up under the upscaling speed: Ray places CPU-only work on GPU nodes when nothing else has
room (its placement-group scheduler does not look at GPUs at all), so GPU nodes that came up first would
fill with the CPU backlog and the GPU work would wait for yet more of them (the decision is re-run with
the GPU groups' budgets at zero after ``request_resources``, which asks for capacity outright).

Resources are compared in fixed point (1/10000 of a unit, Ray's own resolution), so ``0.1 + 0.2`` CPUs
fit where ``0.3`` are free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter

Resources = Mapping[str, float]

_SCALE = 10_000  # Ray keeps resources as fixed-point 1/10000 units; rounding the same way agrees with it
# Resources whose waste does not matter when choosing a group: every node has them and tasks rarely ask.
_COMMON_RESOURCES = frozenset({"CPU", "memory", "object_store_memory"})
GPU = "GPU"


class NodeStatus(StrEnum):
    """A Ray node's state as the GCS reports it (``autoscaler.NodeStatus``)."""

    RUNNING = "RUNNING"  # has work (or resources in use)
    IDLE = "IDLE"  # nothing in use, for ``idle_s`` seconds
    DRAINING = "DRAINING"  # accepted a drain: neither capacity nor a candidate
    DEAD = "DEAD"


class Strategy(StrEnum):
    """Placement-group strategies."""

    PACK = "PACK"  # best effort onto few nodes
    STRICT_PACK = "STRICT_PACK"  # all bundles on one node
    SPREAD = "SPREAD"  # best effort onto distinct nodes
    STRICT_SPREAD = "STRICT_SPREAD"  # each bundle on a distinct node


class LabelOp(StrEnum):
    """Ray's label-selector operators (``LABEL_OPERATOR_IN`` / ``LABEL_OPERATOR_NOT_IN``)."""

    IN = "in"
    NOT_IN = "notin"


class DemandKind(StrEnum):
    TASK = "task"  # tasks and actors
    GANG = "gang"  # placement groups
    CONSTRAINT = "constraint"  # ray.autoscaler.sdk.request_resources


@dataclass(frozen=True)
class LabelRequirement:
    """One term of a label selector. A node without the key is outside every value set (Ray's rule)."""

    key: str
    op: LabelOp
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        inside = labels.get(self.key) in self.values
        return inside if self.op is LabelOp.IN else not inside


LabelSelector = tuple[LabelRequirement, ...]  # all terms must hold; () matches every node


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    return all(term.matches(labels) for term in selector)


@dataclass(frozen=True)
class WorkerGroup:
    """A worker group as the policy sees it.

    ``replicas`` is the current target (``status.workerGroups[].desiredReplicas``). ``pending_pods``
    counts pods created but not yet Ray nodes. Together they say what capacity is coming: pods that exist
    and pods the reconciler is about to create for the current target, ``max(pending_pods, replicas -
    live nodes)``, all with the group's full ``resources``.
    """

    name: str
    resources: Resources  # Ray resources of one node: {"CPU": 8, "GPU": 1, "memory": 3.2e10, "custom": 1}
    min_replicas: int
    max_replicas: int
    replicas: int
    pending_pods: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)  # Ray node labels the group's nodes start with


@dataclass(frozen=True)
class RayNode:
    """A Ray node from the GCS snapshot.

    ``group`` None (or a name no group has) marks a node the policy never scales: the head, or a node of a
    group removed from the spec. Its free capacity still counts. ``labels`` None means the group's labels;
    per-node unique labels (``ray.io/node-id``) should be left out: they only defeat aggregation.
    """

    name: str  # the pod name (Ray's instance_id, from RAY_CLOUD_INSTANCE_ID)
    group: str | None
    status: NodeStatus
    total: Resources
    available: Resources
    idle_s: float = 0.0
    age_s: float = 0.0  # since the pod was created; newer idle nodes are drained first
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Demand:
    """``count`` pending requests of one shape (tasks/actors, or one ``request_resources`` bundle)."""

    shape: Resources
    count: int
    selector: LabelSelector = ()


@dataclass(frozen=True)
class Gang:
    """``count`` identical pending placement groups."""

    bundles: tuple[Resources, ...]
    strategy: Strategy
    count: int = 1
    selector: LabelSelector = ()  # applies to every bundle


@dataclass(frozen=True)
class Settings:
    # New nodes per group per decision: at most max(5, ceil(upscaling_speed × its live and coming nodes)),
    # so a group at least doubles per decision at speed 1. math.inf: no limit but maxReplicas.
    upscaling_speed: float = 1.0
    idle_timeout_s: float = 60.0
    conserve_gpu_nodes: bool = True
    scale_down_stabilization_s: float = 30.0


@dataclass(frozen=True)
class PolicyInput:
    groups: tuple[WorkerGroup, ...]
    nodes: tuple[RayNode, ...] = ()
    demands: tuple[Demand, ...] = ()
    gangs: tuple[Gang, ...] = ()
    constraints: tuple[Demand, ...] = ()  # request_resources bundles, packed against total capacity
    unavailable: frozenset[str] = frozenset()  # groups backed off: their pods stay unschedulable
    settings: Settings = Settings()
    now: float = 0.0  # seconds, same clock as last_scale_up
    last_scale_up: Mapping[str, float] = field(default_factory=dict)  # group -> time of its last scale-up


@dataclass(frozen=True)
class Drain:
    node: str  # pod name
    group: str
    reason: str


@dataclass(frozen=True)
class Unplaced:
    """Demand left over: infeasible (fits no group) or waiting (max, upscaling speed or backoff)."""

    kind: DemandKind
    bundles: tuple[Resources, ...]  # one bundle for tasks and constraints
    count: int
    strategy: Strategy | None = None
    selector: LabelSelector = ()

    def describe(self) -> str:
        if self.kind is DemandKind.GANG:
            return f"{self.count}× placement group {self.strategy} {_format_bundles(self.bundles)}"
        what = "request_resources " if self.kind is DemandKind.CONSTRAINT else ""
        return f"{self.count}× {what}{format_resources(self.bundles[0])}"


@dataclass(frozen=True)
class Decision:
    """``targets`` has every group, clamped to [min, max]. Lowering a target below the group's live plus
    pending pods means: the listed ``drains`` (each an idle Ray node, drained with IDLE_TERMINATION, its pod
    deleted once DEAD), then pods that are not Ray nodes yet. The policy never asks to remove a busy node."""

    targets: Mapping[str, int]
    drains: tuple[Drain, ...]
    infeasible: tuple[Unplaced, ...]
    waiting: tuple[Unplaced, ...]
    reasons: Mapping[str, str]  # changed groups only: "gpu 2→5: 12 pending {GPU:1}"


def format_resources(shape: Resources) -> str:
    """{CPU:1, GPU:1, memory:4G}: sorted, integers without decimals, large amounts with SI suffixes."""
    return "{" + ", ".join(f"{k}:{_format_amount(v)}" for k, v in sorted(shape.items()) if v > 0) + "}"


def _format_amount(v: float) -> str:
    for suffix, unit in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if v >= unit:
            return f"{v / unit:.3g}{suffix}"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _format_bundles(bundles: Iterable[Resources]) -> str:
    counts: dict[str, int] = {}
    for b in bundles:
        text = format_resources(b)
        counts[text] = counts.get(text, 0) + 1
    return "[" + ", ".join(f"{n}×{text}" if n > 1 else text for text, n in counts.items()) + "]"


def decide(inp: PolicyInput) -> Decision:
    """Targets, drains and leftover demand for one snapshot; see the module docstring for the rules."""
    run = _Run(inp)
    decision = run.decide()
    if run.gpu_nodes_to_hold():
        return _Run(inp, hold_gpu_nodes=True).decide()
    return decision


# ---- internals -------------------------------------------------------------------------------------------

Items = tuple[tuple[int, int], ...]  # (resource index, fixed-point amount) for each resource asked, amount > 0

# Tiers, in the order free capacity is used: busy nodes first so idle ones can reach their timeout, then
# idle ones (they are up already: using them beats waiting for a pod), then pods coming up, then new nodes.
_BUSY, _IDLE, _COMING, _NEW = range(4)


class _Shape:
    """One request shape in fixed point, with its label selector and a cache of selector matches."""

    __slots__ = ("_ok", "gpu", "items", "key", "selector")

    def __init__(self, items: Items, gpu: bool, selector: LabelSelector) -> None:
        self.items = items
        self.gpu = gpu
        self.selector = selector
        self.key = (items, selector)
        self._ok: dict[int, bool] = {}

    def labels_ok(self, labels_id: int, table: list[Mapping[str, str]]) -> bool:
        ok = self._ok.get(labels_id)
        if ok is None:
            ok = self._ok[labels_id] = selector_matches(self.selector, table[labels_id])
        return ok


class _Bin:
    """``mult`` interchangeable nodes with the same free resources (and labels, tier and slot)."""

    __slots__ = ("avail", "gang", "labels", "mult", "names", "used")

    def __init__(self, avail: list[int], mult: int, names: list[str], labels: int, gang: int) -> None:
        self.avail = avail
        self.mult = mult
        self.names = names  # pod names of existing nodes (keep-first order); empty for coming and new nodes
        self.labels = labels
        self.gang = gang  # the gang instance last placed here; STRICT_SPREAD skips its own nodes
        self.used = False


class _List:
    """The bins of one (tier, slot); ``ub`` bounds every bin's free resources, so a list is skipped cheaply."""

    __slots__ = ("bins", "gpu", "ub")

    def __init__(self, nres: int, gpu: bool) -> None:
        self.bins: list[_Bin] = []
        self.gpu = gpu
        self.ub = [0] * nres


def _minus(avail: list[int], items: Items, times: int) -> list[int]:
    out = avail[:]
    for i, a in items:
        out[i] -= a * times
    return out


def _per_node(free: list[int], items: Items, limit: int) -> int:
    """How many requests of ``items`` fit on a node with ``free`` resources, at most ``limit``."""
    fit = limit
    for i, a in items:
        f = free[i] // a
        if f < fit:
            fit = f
            if f == 0:
                break
    return fit


class _Pool:
    """Capacity as ordered bins, with first-fit placement in bulk and an undo journal for gang trials.

    Slots are the group indices, then two for nodes outside any group (without and with GPUs)."""

    def __init__(self, nres: int, slot_gpu: list[bool], labels: list[Mapping[str, str]]) -> None:
        self.nres = nres
        self.labels = labels
        self.slots = len(slot_gpu)
        self.lists = [_List(nres, gpu) for _ in range(4) for gpu in slot_gpu]
        self.gpu_order = [lst for lst in self.lists if lst.gpu]
        self.cpu_order = [lst for lst in self.lists if not lst.gpu]
        self.undo: list[Callable[[], None]] | None = None

    def order(self, shape: _Shape, conserve_gpu: bool) -> list[_List]:
        if shape.gpu:
            return self.gpu_order
        if conserve_gpu:  # CPU-only work fills non-GPU capacity first, all tiers, before touching GPU nodes
            return self.cpu_order + self.gpu_order
        return self.lists

    def add(self, tier: int, slot: int, avail: list[int], mult: int, names: list[str], labels: int,
            gang: int = -1) -> _Bin:
        lst = self.lists[tier * self.slots + slot]
        b = _Bin(avail, mult, names, labels, gang)
        lst.bins.append(b)
        ub = lst.ub
        for i, v in enumerate(avail):
            if v > ub[i]:
                ub[i] = v
        if self.undo is not None:
            self.undo.append(lambda: setattr(b, "mult", 0))
        return b

    def fill(self, shape: _Shape, count: int, lists: list[_List], cap: int = 0, gang: int = -1) -> int:
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
                # _per_node, inlined: this loop is where the policy spends its time.
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

    def _take(self, lst: _List, at: int, items: Items, fit: int, take: int, gang: int) -> None:
        b = lst.bins[at]
        full, rest = divmod(take, fit)
        if rest == 0 and full == b.mult:  # every node of the bin gets the same: update in place
            if self.undo is not None:
                old = (b.avail, b.used, b.gang)
                self.undo.append(lambda: _restore(b, *old))
            b.avail = _minus(b.avail, items, fit)
            b.used = True
            if gang >= 0:
                b.gang = gang
            return
        # Split: ``full`` nodes with ``fit`` requests each, maybe one node with the rest, the others untouched.
        names = b.names
        taken = full + (1 if rest else 0)
        split: list[_Bin] = []
        if full:
            split.append(_Bin(_minus(b.avail, items, fit), full, names[:full], b.labels, gang))
        if rest:
            split.append(_Bin(_minus(b.avail, items, rest), 1, names[full:taken], b.labels, gang))
        for s in split:
            s.used = True
        b.mult -= taken
        b.names = names[taken:]
        # The used nodes go where the bin was, ahead of its untouched nodes: first fit then keeps filling
        # nodes already started before it opens untouched ones (packing, as node-by-node first fit would).
        lst.bins[at:at] = split
        if self.undo is not None:
            self.undo.append(lambda: _unsplit(b, taken, names, split))


def _restore(b: _Bin, avail: list[int], used: bool, gang: int) -> None:
    b.avail, b.used, b.gang = avail, used, gang


def _unsplit(b: _Bin, taken: int, names: list[str], split: list[_Bin]) -> None:
    b.mult += taken
    b.names = names
    for s in split:
        s.mult = 0


class _Run:
    """State of one decision. Built from the input, mutated phase by phase, then read into a Decision."""

    def __init__(self, inp: PolicyInput, hold_gpu_nodes: bool = False) -> None:
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
        for gang in inp.gangs:
            for bundle in gang.bundles:
                names.update(bundle)
        self.res = {name: i for i, name in enumerate(sorted(names))}
        nres = len(self.res)

        self.label_table: list[Mapping[str, str]] = []
        self.label_ids: dict[tuple[tuple[str, str], ...], int] = {}
        self.caps = [self.vector(g.resources) for g in groups]
        self.group_labels = [self.intern_labels(g.labels) for g in groups]
        self.gpu = [g.resources.get(GPU, 0) > 0 for g in groups]
        self.special = [{i for name, i in self.res.items() if cap[i] > 0 and name not in _COMMON_RESOURCES}
                        for cap in self.caps]
        slot_gpu = [*self.gpu, False, True]  # groups, then unmanaged nodes without and with GPUs
        self.demand_pool = _Pool(nres, slot_gpu, self.label_table)
        self.total_pool = _Pool(nres, slot_gpu, self.label_table)

        self.live = [0] * len(groups)  # RUNNING or IDLE Ray nodes
        live_totals: dict[tuple[tuple[int, ...], int], None] = {}
        self.live_nodes: list[RayNode] = []
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
        self.held = {gi for gi in range(len(groups)) if hold_gpu_nodes and self.gpu[gi]}
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

    def shape(self, r: Resources, selector: LabelSelector) -> _Shape:
        scaled = sorted((self.res[name], round(a * _SCALE)) for name, a in r.items() if a > 0)
        return _Shape(tuple((i, a) for i, a in scaled if a > 0), r.get(GPU, 0) > 0, selector)

    def intern_labels(self, labels: Mapping[str, str]) -> int:
        key = tuple(sorted(labels.items()))
        got = self.label_ids.get(key)
        if got is None:
            got = self.label_ids[key] = len(self.label_table)
            self.label_table.append(dict(labels))
        return got

    def node_labels(self, n: RayNode, gi: int | None) -> int:
        if n.labels is not None:
            return self.intern_labels(n.labels)
        return self.group_labels[gi] if gi is not None else self.intern_labels({})

    def size(self, items: Items) -> float:
        """A request's size relative to the largest node offering each resource (first-fit decreasing)."""
        return sum(a / self.biggest[i] for i, a in items)

    # -- capacity

    def build_pools(self) -> None:
        slots = len(self.caps)
        merged: dict[tuple[int, int, int, tuple[int, ...]], tuple[_Bin, _Bin]] = {}
        # Idle nodes in keep-first order (oldest, then least idle), so the nodes bins hand out first are the
        # ones a drain would take last.
        ordered = sorted(zip(self.live_nodes, self.live_total_vectors, strict=True),
                         key=lambda nt: (-nt[0].age_s, nt[0].idle_s, nt[0].name))
        for n, total in ordered:
            gi = self.gindex.get(n.group) if n.group is not None else None
            slot = gi if gi is not None else slots + (1 if n.total.get(GPU, 0) > 0 else 0)
            tier = _IDLE if gi is not None and n.status is NodeStatus.IDLE else _BUSY
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
            for tier, count in ((_COMING, self.coming[gi]), (_NEW, self.min_new[gi])):
                if count:
                    for pool in (self.demand_pool, self.total_pool):
                        pool.add(tier, gi, self.caps[gi][:], count, [], self.group_labels[gi])

    def candidates(self, shape: _Shape, cap: int) -> list[tuple[int, int, int]]:
        """Groups a fresh node of which fits ``shape``: (group, requests per node, unrequested special
        resources). With conserve_gpu_nodes, GPU groups only when no non-GPU group fits at all."""
        out: list[tuple[int, int, int]] = []
        asked = {i for i, _ in shape.items}
        for gi, cap_vec in enumerate(self.caps):
            per = _per_node(cap_vec, shape.items, cap or 1 << 62)
            if per == 0 or (shape.selector and not shape.labels_ok(self.group_labels[gi], self.label_table)):
                continue
            out.append((gi, per, len(self.special[gi] - asked)))
        if self.settings.conserve_gpu_nodes and not shape.gpu and any(not self.gpu[gi] for gi, _, _ in out):
            out = [c for c in out if not self.gpu[c[0]]]
        return out

    def feasible(self, shape: _Shape, cands: list[tuple[int, int, int]]) -> bool:
        """Fits some group's node, or the total of some live node (the head, a node of a removed group)."""
        if cands:
            return True
        return any(all(t[i] >= a for i, a in shape.items)
                   and (not shape.selector or shape.labels_ok(labels, self.label_table))
                   for t, labels in self.live_totals)

    def open_nodes(self, shape: _Shape, count: int, cands: list[tuple[int, int, int]], pool: _Pool,
                   mirror: _Pool | None, cap: int, gang: int, opened: list[tuple[int, int]]) -> int:
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
                pool.add(_NEW, gi, _minus(cap_vec, items, per), full, [], self.group_labels[gi], gang)
            if rest:
                pool.add(_NEW, gi, _minus(cap_vec, items, rest), 1, [], self.group_labels[gi], gang)
            if mirror is not None:
                mirror.add(_NEW, gi, cap_vec[:], n, [], self.group_labels[gi])
            self.change_budget(gi, n)
            opened.append((gi, got))
            count -= got
            placed += got
        return placed

    def open_spread_nodes(self, shape: _Shape, width: int, count: int, cands: list[tuple[int, int, int]],
                          pool: _Pool, opened: list[tuple[int, int]]) -> int:
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
            per = _per_node(self.caps[gi], items, 1 << 62)  # bundles of other instances may share a node
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
            pool.add(_NEW, gi, _minus(cap_vec, items, q + 1), r, [], self.group_labels[gi])
        pool.add(_NEW, gi, _minus(cap_vec, items, q), nodes - r, [], self.group_labels[gi])
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
            self.capped[gi]["new GPU nodes held until the CPU groups have ramped up"] = None
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

    # -- phases

    def place_constraints(self) -> None:
        conserve = self.settings.conserve_gpu_nodes
        for shape, count, demand in self.sorted_demands(self.inp.constraints):
            cands = self.candidates(shape, 0)
            if not self.feasible(shape, cands):
                self.infeasible.append(Unplaced(DemandKind.CONSTRAINT, (demand.shape,), count,
                                                selector=demand.selector))
                continue
            placed = self.total_pool.fill(shape, count, self.total_pool.order(shape, conserve))
            opened: list[tuple[int, int]] = []
            placed += self.open_nodes(shape, count - placed, cands, self.total_pool, self.demand_pool, 0, -1,
                                      opened)
            self.count_why(opened, DemandKind.CONSTRAINT, format_resources(demand.shape))
            if placed < count:
                self.waiting.append(Unplaced(DemandKind.CONSTRAINT, (demand.shape,), count - placed,
                                             selector=demand.selector))

    def place_gangs(self) -> None:
        pool = self.demand_pool
        conserve = self.settings.conserve_gpu_nodes

        def strictness(g: Gang) -> int:
            return 0 if g.strategy in (Strategy.STRICT_PACK, Strategy.STRICT_SPREAD) else 1

        gangs = sorted(self.merge_gangs(), key=lambda g: (
            strictness(g), -sum(self.size(self.shape(b, ()).items) for b in g.bundles)))
        for gang in gangs:
            text = f"{gang.strategy} {_format_bundles(gang.bundles)}"
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
                               key=lambda p: (-p[0].gpu, -self.size(p[0].items)))
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
        for g in self.inp.gangs:
            if g.count <= 0:
                continue
            key = (g.strategy, g.selector, tuple(tuple(sorted(b.items())) for b in g.bundles))
            prev = merged.get(key)
            merged[key] = g if prev is None else Gang(g.bundles, g.strategy, prev.count + g.count, g.selector)
        return list(merged.values())

    def sorted_demands(self, demands: Iterable[Demand]) -> list[tuple[_Shape, int, Demand]]:
        """Identical requests merged; GPU first, label-constrained first, then largest first (FFD)."""
        merged: dict[tuple[Items, LabelSelector], tuple[_Shape, int, Demand]] = {}
        for d in demands:
            if d.count <= 0:
                continue
            shape = self.shape(d.shape, d.selector)
            if not shape.items:  # asks for nothing: fits anywhere, never a reason to scale
                continue
            prev = merged.get(shape.key)
            merged[shape.key] = (shape, d.count + (prev[1] if prev else 0), d)
        return sorted(merged.values(), key=lambda e: (not e[0].gpu, not e[0].selector, -self.size(e[0].items),
                                                      e[0].items))

    def place_tasks(self) -> None:
        pool = self.demand_pool
        conserve = self.settings.conserve_gpu_nodes
        for shape, count, demand in self.sorted_demands(self.inp.demands):
            cands = self.candidates(shape, 0)
            if not self.feasible(shape, cands):
                self.infeasible.append(Unplaced(DemandKind.TASK, (demand.shape,), count, selector=demand.selector))
                continue
            placed = pool.fill(shape, count, pool.order(shape, conserve))
            if placed < count:
                opened: list[tuple[int, int]] = []
                placed += self.open_nodes(shape, count - placed, cands, pool, None, 0, -1, opened)
                self.count_why(opened, DemandKind.TASK, format_resources(demand.shape))
            if placed < count:
                self.waiting.append(Unplaced(DemandKind.TASK, (demand.shape,), count - placed,
                                             selector=demand.selector))

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
        if any(all(b.get(GPU, 0) <= 0 for b in g.bundles) for g in self.inp.gangs):
            self.hold_gpu_budgets()  # CPU-only placement groups wait: GPU ones are held too
        self.place_gangs()
        self.hold_gpu_budgets()
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

    def hold_gpu_budgets(self) -> None:
        for gi in self.held:
            self.budget[gi] = 0

    def gpu_nodes_to_hold(self) -> bool:
        """conserveGpuNodes: GPU tasks open no GPU nodes beyond the minimum while a non-GPU group still ramps up
        under the speed cap, and neither do placement groups while CPU-only ones wait. Ray puts CPU-only tasks on
        GPU nodes when no other node has room, and its placement-group scheduler ignores GPUs altogether, so GPU
        nodes that come up before the CPU capacity fill with the CPU backlog, and the GPU work they are for
        waits for yet more GPU nodes. The hold lasts only while the ramp does (the cap doubles every decision).
        GPU placement groups behind no CPU-only ones are not held: they claim the GPU nodes before tasks do."""
        return (self.settings.conserve_gpu_nodes and any(not self.gpu[gi] for gi in self.speed_capped)
                and any(self.gpu[gi] and self.new[gi] > self.min_new[gi] for gi in range(len(self.new))))

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
