"""bench/autoscaler.py's whole-turn case: the GCS reply it builds reads back, through the operator's own
snapshot and input translation, as the case it was made from."""

from __future__ import annotations

from bench.autoscaler import Size, make_case, make_turn, turn_input, turn_snapshot
from swarm_operator.autoscaler.policy import decide
from swarm_operator.autoscaler.snapshot import GangDemand


def gang_key(g: GangDemand) -> tuple[str, int, list[list[tuple[str, float]]]]:
    return g.strategy.value, g.count, [sorted((k, float(v)) for k, v in b.shape.items()) for b in g.bundles]


def test_the_turn_reads_back_as_its_case() -> None:
    case = make_case(Size(20, 2_000, 60))
    turn = make_turn(case)
    inp = turn_input(turn, turn_snapshot(turn))
    assert {tuple(sorted(d.shape.items())): d.count for d in inp.demands} \
        == {tuple(sorted(d.shape.items())): d.count for d in case.demands}
    assert sorted(map(gang_key, inp.gangs)) == sorted(map(gang_key, case.gangs))
    assert [(c.shape, c.count) for c in inp.constraints] == [(c.shape, c.count) for c in case.constraints]
    assert [(g.name, g.replicas, g.pending_pods) for g in inp.groups] \
        == [(g.name, g.replicas, g.pending_pods) for g in case.groups]
    # Every case node, plus the head (no group); each with the CPUs it had free.
    free = {n.name: n.available["CPU"] for n in inp.nodes if n.group is not None}
    assert free == {n.name: n.available["CPU"] for n in case.nodes}
    assert [n.group for n in inp.nodes if n.name not in free] == [None]
    assert decide(inp).targets.keys() == {g.name for g in case.groups}
