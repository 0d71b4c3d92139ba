"""The autoscaling policy decides exactly as it did when tests/golden/policy-decisions.json was recorded.

Every decision of every trace in tests/unit/policy_replay.py (the benchmark's quick traces replayed in its
simulated cluster, its decision-time cases, seeded random inputs) is compared, step by step, with the
recorded one. A refactoring of the policy must leave this file unchanged. After an intended change of
behaviour:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_policy_replay.py

and say in the commit why the decisions changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from tests.unit.policy_replay import (
    GOLDEN,
    Step,
    decision_text,
    expand,
    input_summary,
    run_length,
    step_digest,
    trace_digest,
    traces,
)

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CLOSED_LOOP = "autosim/"
Record = dict[str, int | str]


def record(steps: list[Step]) -> Record:
    """A trace as the golden file keeps it: its digest, a short digest per step (run-length encoded) and counts
    that show the trace exercises the policy (scale changes, drains, demand left waiting or infeasible)."""
    decisions = [s.decision for s in steps]
    return {
        "decisions": len(steps),
        "digest": trace_digest(steps),
        "changes": sum(1 for d in decisions if d.reasons),
        "drains": sum(len(d.drains) for d in decisions),
        "waiting": sum(len(d.waiting) for d in decisions),
        "infeasible": sum(len(d.infeasible) for d in decisions),
        "steps": run_length([step_digest(d) for d in decisions]),
    }


def first_difference(name: str, steps: list[Step], want: Record) -> str:
    """Where a trace first departs from its recording, with that step's input and the decision made now."""
    recorded = expand(str(want["steps"]))
    for k, step in enumerate(steps):
        if k >= len(recorded):
            return f"{name}: {len(steps)} decisions, {len(recorded)} recorded"
        if step_digest(step.decision) != recorded[k]:
            # In a closed loop (autosim) the decision before shaped this input; elsewhere it is unrelated.
            before = (f"decision {k - 1} (as recorded):\n{decision_text(steps[k - 1].decision)}\n"
                      if k and name.startswith(CLOSED_LOOP) else "")
            return (f"{name}: decision {k} of {len(steps)} differs from the recorded one "
                    f"(digest {step_digest(step.decision)}, recorded {recorded[k]}).\n{before}"
                    f"input of decision {k}:\n{input_summary(step.input)}\n"
                    f"decision {k} now:\n{decision_text(step.decision)}")
    if len(steps) < len(recorded):
        return f"{name}: {len(steps)} decisions, {len(recorded)} recorded"
    return f"{name}: every decision matches, but the record differs: {record(steps)} != {want}"


@pytest.fixture(scope="module")
def replayed() -> dict[str, list[Step]]:
    return dict(traces())


def test_every_decision_is_the_recorded_one(replayed: dict[str, list[Step]]) -> None:
    got = {name: record(steps) for name, steps in replayed.items()}
    if UPDATE:
        GOLDEN.write_text(json.dumps({"traces": got}, indent=1, ensure_ascii=False) + "\n")
    want: dict[str, Record] = json.loads(GOLDEN.read_text())["traces"]
    assert sorted(got) == sorted(want), "the set of traces changed: UPDATE_GOLDEN=1 to record the new set"
    differ = [name for name in got if got[name] != want[name]]
    if differ:
        shown = "\n\n".join(first_difference(name, replayed[name], want[name]) for name in differ[:3])
        pytest.fail(f"{len(differ)} of {len(got)} traces decide differently: {', '.join(differ[:10])}\n\n{shown}")


def test_the_traces_exercise_every_part_of_a_decision(replayed: dict[str, list[Step]]) -> None:
    """A recording where nothing scales, drains or waits would prove little."""
    decisions = [s.decision for steps in replayed.values() for s in steps]
    assert len(decisions) > 10_000
    assert sum(1 for d in decisions if d.reasons) > 1_000
    assert sum(len(d.drains) for d in decisions) > 500
    assert sum(len(d.waiting) for d in decisions) > 500
    assert sum(len(d.infeasible) for d in decisions) > 100


def test_one_changed_decision_is_found_and_shown(replayed: dict[str, list[Step]]) -> None:
    name = "autosim/placement-groups/3"
    steps = replayed[name]
    want = record(steps)
    k = next(k for k, s in enumerate(steps) if s.decision.reasons)
    changed = [*steps]
    targets = {g: t + 1 for g, t in steps[k].decision.targets.items()}
    changed[k] = Step(steps[k].input, replace(steps[k].decision, targets=targets))
    assert record(changed) != want
    message = first_difference(name, changed, want)
    assert f"decision {k} of {len(steps)} differs" in message
    assert f"targets: {{{', '.join(f'{g!r}: {t}' for g, t in targets.items())}}}" in message


def test_run_length_round_trips() -> None:
    digests = ["a", "a", "a", "b", "a", "c", "c"]
    assert run_length(digests) == "a*3 b a c*2"
    assert expand(run_length(digests)) == digests
    assert expand(run_length([])) == []
