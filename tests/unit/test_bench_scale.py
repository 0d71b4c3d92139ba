"""bench/scale.py's pure parts: the run order, medians and spreads, and the target checks."""

from __future__ import annotations

import math

import pytest

from bench.scale import Result, Spread, check_targets, run_order, spread, summarize


def test_pairs_alternate_who_goes_first_and_each_has_a_baseline() -> None:
    assert run_order(3) == ["baseline", "swarm", "kuberay", "baseline", "kuberay", "swarm",
                            "baseline", "swarm", "kuberay"]
    assert run_order(2, with_kuberay=False) == ["baseline", "swarm", "baseline", "swarm"]


@pytest.mark.parametrize(("a", "b", "overlap"), [
    (Spread(5, 4, 6), Spread(7, 6, 8), True),   # touching ends overlap
    (Spread(5, 4, 5.9), Spread(7, 6, 8), False),
    (Spread(7, 6, 8), Spread(5, 4, 5.9), False),
    (Spread(5, 1, 9), Spread(5, 4, 6), True),   # one inside the other
])
def test_spreads_overlap(a: Spread, b: Spread, overlap: bool) -> None:
    assert a.overlaps(b) is overlap


def test_spread_is_median_min_max() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == Spread(2.5, 1.0, 10.0)


def run(operator: str, clusters: int, seconds: float, cpu: float, rss: float, done: bool = True) -> Result:
    pods = clusters * 4
    return Result(operator=operator, clusters=clusters, pods=pods, running=pods if done else 0,
                  all_running_s=seconds if done else math.nan, peak_rss_mib=rss, cpu_s=cpu)


def test_summary_leaves_out_runs_that_did_not_finish_and_is_per_cluster() -> None:
    summary = summarize([run("swarm", 100, 10, 50, 120), run("swarm", 100, 30, 70, 130),
                         run("swarm", 100, 99, 99, 999, done=False)])
    row = summary[(100, "swarm")]
    assert row["all Running s"] == Spread(20, 10, 30)
    assert row["CPU s/cluster"] == Spread(0.6, 0.5, 0.7)
    assert row["peak RSS MiB"] == Spread(125, 120, 130)


@pytest.mark.parametrize(("ours", "theirs", "expected"), [
    pytest.param((90, 70, 150), (100, 100, 250), [True, True, True], id="all-met"),
    pytest.param((90, 81, 150), (100, 100, 250), [False, True, True], id="cpu-above-0.8"),
    pytest.param((101, 70, 150), (100, 100, 250), [True, False, True], id="slower"),
    pytest.param((90, 70, 180), (100, 100, 250), [True, True, False], id="rss-above-0.7"),
])
def test_targets_at_1000_clusters(ours: tuple[float, float, float], theirs: tuple[float, float, float],
                                  expected: list[bool]) -> None:
    checks = check_targets(summarize([run("swarm", 1000, *ours), run("kuberay", 1000, *theirs)]))
    assert [met for _, met in checks] == expected


def test_the_memory_target_applies_from_1000_clusters_and_needs_both_operators() -> None:
    checks = check_targets(summarize([run("swarm", 250, 10, 10, 999), run("kuberay", 250, 20, 20, 100),
                                      run("swarm", 1000, 10, 10, 10)]))
    assert [what.split(":")[1].strip().split(" ours")[0] for what, _ in checks] == ["CPU s/cluster", "all Running s"]
    assert all(met for _, met in checks)
