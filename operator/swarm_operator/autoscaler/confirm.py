"""Whether a scale-up could be Ray counting the same tasks twice, and so waits for a second read. Pure.

Ray's GCS assembles its cluster state from each raylet's latest answer to a poll it sends every second, node by
node. A task the head's raylet has just spilled to a worker may then show twice for up to a second: still in the
head's queue (pending demand) and already taken from the worker's available resources. Measured on real Ray (bench
autoscale_real, two-waves and burst): a read 5 s after two 8-CPU workers were created for 16 one-CPU tasks saw
one of them join with one CPU taken and all 16 tasks still pending, and a third worker was started that ran nothing.

So when everything a scale-up opens new nodes for is pending tasks, and no more than the live nodes' resources
taken since the previous read (all of a node's taken resources when it joined since), the same tasks may be
counted twice: the runner reads Ray again after the GCS's next poll. Demand larger than what was taken, placement
groups, request_resources and minReplicas scale up at once. That cures the short double count, not every one: in 2 of
4 burst runs (bench/README.md, session 12) the phantom task outlived the second read.

The longer double count came right after new nodes had joined and taken their tasks (gpu-after-cpu and burst; why
is not established: docs/architecture.md). So a hold goes on, read after read, while the tasks are no more than what
nodes that joined since the read before the hold have taken, for at most MAX_HOLD_S; what older nodes took gets the
one second read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from swarm_operator.autoscaler.snapshot import RayNode, Resources

# Past the GCS's one-second poll of every raylet, so the second read sees fresh answers from all of them.
SECOND_READ_AFTER_S = 1.5
# How long a task still pending beside newly joined nodes may be their double count before it counts as real demand.
MAX_HOLD_S = 10.0


@dataclass(frozen=True)
class Hold:
    """A scale-up held back for another read."""

    since: float  # epoch seconds of the read that first held it
    baseline: Mapping[str, Resources]  # the live nodes' available resources at the read before that one


def available_by_node(nodes: Iterable[RayNode]) -> dict[str, Resources]:
    """The live nodes' available resources, by node id: what the next read compares against."""
    return {node.node_id: dict(node.available) for node in nodes if node.alive}


def taken_since(previous: Mapping[str, Resources], nodes: Iterable[RayNode]) -> dict[str, float]:
    """Resources the live nodes took since the previous read: a known node's fall in available resources, and
    everything a node that joined since has taken (its total less its available)."""
    taken: dict[str, float] = {}
    for node in nodes:
        if not node.alive:
            continue
        before = previous.get(node.node_id, node.total)
        for name, amount in before.items():
            fall = amount - node.available.get(name, 0.0)
            if fall > 0:
                taken[name] = taken.get(name, 0.0) + fall
    return taken


def may_be_counted_twice(tasks_on_new_nodes: Resources, more_than_tasks: bool,
                         previous: Mapping[str, Resources] | None, nodes: Iterable[RayNode]) -> bool:
    """True when the scale-up should wait for a second read. `tasks_on_new_nodes`: the pending tasks' resources the
    decision placed on new nodes; `more_than_tasks`: it opened nodes for anything else too; `previous`: the live
    nodes' available resources at the previous read (None: this is the first read, with nothing to compare)."""
    if not tasks_on_new_nodes or more_than_tasks or previous is None:
        return False
    taken = taken_since(previous, nodes)
    return all(amount <= taken.get(name, 0.0) + 1e-9 for name, amount in tasks_on_new_nodes.items())


def next_hold(hold: Hold | None, previous: Mapping[str, Resources] | None, tasks_on_new_nodes: Resources,
              more_than_tasks: bool, nodes: Sequence[RayNode], now: float) -> Hold | None:
    """The hold after this read, or None: the decision goes ahead. A first hold when the scale-up may be the same
    tasks counted twice against the previous read; then held on while, for at most MAX_HOLD_S, its tasks are no more
    than what the nodes that joined since the hold's baseline have taken."""
    if hold is None:
        if previous is not None and may_be_counted_twice(tasks_on_new_nodes, more_than_tasks, previous, nodes):
            return Hold(now, dict(previous))
        return None
    joined = [node for node in nodes if node.node_id not in hold.baseline]
    if now - hold.since < MAX_HOLD_S and may_be_counted_twice(tasks_on_new_nodes, more_than_tasks, hold.baseline,
                                                              joined):
        return hold
    return None
