"""The autoscaling policy's decisions on fixed traces, written as text and digested, for a golden file.

A trace is a sequence of (input, decision) steps:

- ``autosim/<family>/<seed>``: bench/autosim.py's quick trace set (one episode per family and seed) replayed in
  its simulated cluster, driven by ``decide``; every tick's decision is a step. The loop is closed (each decision
  shapes the next input), so the first step that differs is where the policy changed.
- ``cases/<size>/<seed>/<speed>``: bench/autoscaler.py's decision-time cases (``make_case``), one decision each,
  at its unlimited upscaling speed and at the default one.
- ``random/<seed>``: seeded random inputs that reach what the two above do not: label selectors, node labels,
  request_resources constraints, every accelerator kind, groups backed off, nodes of no group, every node status.

tests/unit/test_policy_replay.py compares each trace's steps with tests/golden/policy-decisions.json.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path

from bench.autoscaler import Size, make_case
from bench.autosim import FAMILIES, OursDriver, make_trace, simulate
from swarm_operator.autoscaler.policy import Decision, Node, PolicyInput, Settings, WorkerGroup, decide
from swarm_operator.autoscaler.snapshot import (
    Bundle,
    GangDemand,
    LabelConstraint,
    LabelOp,
    LabelSelector,
    NodeStatus,
    ResourceDemand,
    Strategy,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy-decisions.json"
AUTOSIM_SEEDS = range(1, 11)  # bench/autoscaler.py --quick: seeds 1-10, one episode
CASE_SIZES = (Size(10, 1_000, 0), Size(50, 5_000, 0), Size(200, 100_000, 0),
              Size(10, 1_000, 100), Size(50, 5_000, 250), Size(100, 20_000, 500))
CASE_SEEDS = (7, 1, 2)  # 7 is the benchmark's own
RANDOM_SEEDS = range(1, 11)
RANDOM_STEPS = 150  # inputs per random trace


@dataclass(frozen=True)
class Step:
    input: PolicyInput
    decision: Decision


def canonical(value: object) -> str:
    """``value`` as text that is the same in every process: dataclasses field by field, mappings in their
    order, sets sorted (a frozenset's order follows string hashing, which changes from run to run)."""
    if is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={canonical(getattr(value, f.name))}" for f in fields(value))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{canonical(k)}: {canonical(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(canonical(v) for v in value)) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(canonical(v) for v in value) + ")"
    return repr(value)


def decision_text(d: Decision) -> str:
    """Every part of a decision, one per line."""
    return "\n".join(f"{f.name}: {canonical(getattr(d, f.name))}" for f in fields(d))


def input_summary(inp: PolicyInput) -> str:
    """The parts of an input a reader needs to follow a decision (the full input is in the trace)."""
    live: dict[str, int] = {}
    for n in inp.nodes:
        key = f"{n.group}/{n.status.value}"
        live[key] = live.get(key, 0) + 1
    lines = [
        "groups: " + ", ".join(f"{g.name} (replicas {g.replicas}, pending pods {g.pending_pods}, "
                               f"min {g.min_replicas}, max {g.max_replicas})" for g in inp.groups),
        "nodes: " + (", ".join(f"{n}× {key}" for key, n in sorted(live.items())) or "none"),
        f"demands: {canonical(inp.demands)}",
        f"gangs: {canonical(inp.gangs)}",
        f"constraints: {canonical(inp.constraints)}",
        f"unavailable: {canonical(inp.unavailable)}; now {inp.now:g}; last scale-up {canonical(inp.last_scale_up)}",
    ]
    return "\n".join(lines)


def step_digest(d: Decision) -> str:
    return hashlib.sha256(decision_text(d).encode()).hexdigest()[:6]


def trace_digest(steps: list[Step]) -> str:
    return hashlib.sha256("\n\n".join(decision_text(s.decision) for s in steps).encode()).hexdigest()[:16]


def run_length(digests: list[str]) -> str:
    """``a*3 b`` for ``a a a b``: steady clusters repeat one decision for many ticks."""
    out: list[str] = []
    k = 0
    while k < len(digests):
        end = k
        while end < len(digests) and digests[end] == digests[k]:
            end += 1
        out.append(digests[k] if end - k == 1 else f"{digests[k]}*{end - k}")
        k = end
    return " ".join(out)


def expand(encoded: str) -> list[str]:
    out: list[str] = []
    for part in encoded.split():
        digest, _, times = part.partition("*")
        out += [digest] * int(times or 1)
    return out


# ---- the traces ------------------------------------------------------------------------------------------------


def autosim_trace(family_name: str, seed: int) -> list[Step]:
    family = next(f for f in FAMILIES if f.name == family_name)
    steps: list[Step] = []
    simulate(make_trace(family, 1, seed), OursDriver(observe=lambda inp, d: steps.append(Step(inp, d))))
    return steps


def case_trace(size: Size, seed: int, speed: float) -> list[Step]:
    case = make_case(size, seed)
    inp = replace(case, settings=replace(case.settings, upscaling_speed=speed))
    return [Step(inp, decide(inp))]


RESOURCE_KINDS = ({"CPU": 4.0, "memory": 16e9}, {"CPU": 8.0, "memory": 32e9, "highmem": 1.0},
                  {"CPU": 8.0, "GPU": 1.0, "memory": 32e9}, {"CPU": 16.0, "GPU": 4.0, "memory": 64e9},
                  {"CPU": 8.0, "TPU": 4.0}, {"CPU": 8.0, "neuron_cores": 2.0}, {"CPU": 4.0, "HPU": 1.0},
                  {"CPU": 2.0})
LABELS: tuple[dict[str, str], ...] = ({}, {}, {"zone": "a"}, {"zone": "b"}, {"zone": "a", "tier": "spot"})


def _random_selector(rng: random.Random) -> LabelSelector:
    roll = rng.random()
    if roll < 0.7:
        return ()
    op = LabelOp.IN if roll < 0.9 else LabelOp.NOT_IN
    values = frozenset(rng.sample(["a", "b", "c"], rng.randint(1, 2)))
    selector: LabelSelector = (LabelConstraint("zone", op, values),)
    if rng.random() < 0.3:
        selector += (LabelConstraint("tier", LabelOp.IN, frozenset({"spot"})),)
    return selector


def _random_shape(rng: random.Random) -> dict[str, float]:
    shape = {"CPU": rng.choice((0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 1.0, 2.0, 4.0, 8.0, 16.0))}
    roll = rng.random()
    if roll < 0.2:
        shape["GPU"] = rng.choice((1.0, 1.0, 2.0, 4.0))
    elif roll < 0.25:
        shape["TPU"] = rng.choice((1.0, 4.0))
    elif roll < 0.28:
        shape["neuron_cores"] = 1.0
    elif roll < 0.3:
        shape["highmem"] = 0.5
    if rng.random() < 0.4:
        shape["memory"] = rng.choice((0.0, 1e9, 4e9, 16e9))
    return shape


def random_input(rng: random.Random) -> PolicyInput:
    groups = []
    for k in range(rng.randint(1, 4)):
        low = rng.choice((0, 0, 0, 1, 2))
        high = rng.randint(low, low + 10)
        groups.append(WorkerGroup(f"g{k}", rng.choice(RESOURCE_KINDS), low, high, rng.randint(0, 12),
                                  rng.randint(0, 4), rng.choice(LABELS)))
    nodes = []
    for k in range(rng.randint(0, 14)):
        group = rng.choice([*groups, None, None])
        total = dict(group.resources) if group is not None else dict(rng.choice(RESOURCE_KINDS))
        status = rng.choice(list(NodeStatus))
        share = rng.choice((0.0, 0.25, 0.5, 1.0)) if status is NodeStatus.RUNNING else 1.0
        name = group.name if group is not None else rng.choice((None, "removed"))
        labels = rng.choice((None, None, None, *LABELS))
        nodes.append(Node(f"n{k}", name, status, total, {r: v * share for r, v in total.items()},
                          idle_s=rng.choice((0.0, 10.0, 61.0, 300.0)), age_s=rng.choice((5.0, 100.0, 5000.0)),
                          labels=labels))
    demands = tuple(ResourceDemand(_random_shape(rng), rng.randint(0, 80),
                                   tuple(_random_selector(rng) for _ in range(rng.choice((0, 1, 1, 2)))))
                    for _ in range(rng.randint(0, 6)))
    gangs = tuple(GangDemand(tuple(Bundle(_random_shape(rng), selector) for _ in range(rng.randint(1, 5))),
                             rng.choice(list(Strategy)), rng.randint(0, 4))
                  for selector in (_random_selector(rng) for _ in range(rng.randint(0, 3))))
    constraints = tuple(ResourceDemand(_random_shape(rng), rng.randint(1, 6)) for _ in range(rng.choice((0, 0, 1, 2))))
    settings = Settings(upscaling_speed=rng.choice((0.5, 1.0, 2.0, math.inf)),
                        idle_timeout_s=rng.choice((0.0, 30.0, 60.0, 120.0)), conserve_gpu_nodes=rng.random() < 0.7,
                        scale_down_stabilization_s=rng.choice((0.0, 30.0, 600.0)))
    unavailable = frozenset(g.name for g in groups if rng.random() < 0.15)
    last_up = {g.name: rng.uniform(0, 1000) for g in groups if rng.random() < 0.4}
    return PolicyInput(tuple(groups), tuple(nodes), demands, gangs, constraints, unavailable, settings, 1000.0,
                       last_up)


def random_trace(seed: int) -> list[Step]:
    rng = random.Random(f"policy-replay/{seed}")
    return [Step(inp, decide(inp)) for inp in (random_input(rng) for _ in range(RANDOM_STEPS))]


def traces() -> Iterator[tuple[str, list[Step]]]:
    """Every trace, by name, in a fixed order."""
    for family in FAMILIES:
        for seed in AUTOSIM_SEEDS:
            yield f"autosim/{family.name}/{seed}", autosim_trace(family.name, seed)
    for size in CASE_SIZES:
        for seed in CASE_SEEDS:
            for speed in (math.inf, 1.0):
                yield f"cases/{size.tasks}x{size.shapes}/{size.nodes}n/{seed}/speed-{speed:g}", \
                    case_trace(size, seed, speed)
    for seed in RANDOM_SEEDS:
        yield f"random/{seed}", random_trace(seed)
