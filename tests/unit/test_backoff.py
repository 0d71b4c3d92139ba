"""Per-group replacement backoff: ~1 s doubling to a cap, reset after a healthy period."""

from __future__ import annotations

import pytest

from swarm_operator.reconcile.backoff import (
    GroupHealth,
    backoff_delay,
    healthy_reset_seconds,
    record_failures,
    settle,
)

NOW = 10_000.0
CAP = 300.0


@pytest.mark.parametrize(
    ("failures", "initial", "cap", "expected"),
    [
        pytest.param(-1, 1.0, CAP, 0.0, id="negative"),
        pytest.param(0, 1.0, CAP, 0.0, id="no-failures"),
        pytest.param(1, 1.0, CAP, 1.0, id="first"),
        pytest.param(2, 1.0, CAP, 2.0, id="second-doubles"),
        pytest.param(3, 1.0, CAP, 4.0, id="third"),
        pytest.param(9, 1.0, CAP, 256.0, id="just-under-cap"),
        pytest.param(10, 1.0, CAP, CAP, id="capped"),
        pytest.param(10_000, 1.0, CAP, CAP, id="huge-count-no-overflow"),
        pytest.param(3, 0.5, CAP, 2.0, id="custom-initial"),
        pytest.param(5, 0.0, CAP, 0.0, id="zero-initial-never-waits"),
        pytest.param(4, 10.0, 30.0, 30.0, id="small-cap"),
    ],
)
def test_backoff_delay(failures: int, initial: float, cap: float, expected: float) -> None:
    assert backoff_delay(failures, initial, cap) == expected


@pytest.mark.parametrize(
    ("cap", "expected"),
    [pytest.param(1.0, 60.0, id="floor-one-minute"), pytest.param(300.0, 600.0, id="twice-the-cap")],
)
def test_healthy_reset_seconds(cap: float, expected: float) -> None:
    assert healthy_reset_seconds(cap) == expected


RECENT = GroupHealth(restarts=5, consecutive_failures=3, last_failure=NOW - 10, backoff_until=NOW - 6)
LONG_AGO = GroupHealth(restarts=5, consecutive_failures=3, last_failure=NOW - 601, backoff_until=NOW - 597)


@pytest.mark.parametrize(
    ("health", "failures", "expected"),
    [
        pytest.param(GroupHealth(), 1, GroupHealth(1, 1, NOW, NOW + 1), id="first-failure-waits-initial"),
        pytest.param(GroupHealth(), 3, GroupHealth(3, 3, NOW, NOW + 4), id="three-at-once"),
        pytest.param(RECENT, 1, GroupHealth(6, 4, NOW, NOW + 8), id="crash-loop-doubles"),
        pytest.param(LONG_AGO, 1, GroupHealth(6, 1, NOW, NOW + 1), id="healthy-period-resets-delay-not-restarts"),
        pytest.param(GroupHealth(restarts=2, consecutive_failures=0, last_failure=NOW - 1), 1,
                     GroupHealth(3, 1, NOW, NOW + 1), id="settled-group-starts-over"),
        pytest.param(GroupHealth(restarts=50, consecutive_failures=50, last_failure=NOW - 1), 1,
                     GroupHealth(51, 51, NOW, NOW + CAP), id="capped"),
    ],
)
def test_record_failures(health: GroupHealth, failures: int, expected: GroupHealth) -> None:
    assert record_failures(health, failures, NOW, 1.0, CAP) == expected


@pytest.mark.parametrize("failures", [pytest.param(0, id="zero"), pytest.param(-2, id="negative")])
def test_record_no_failures_changes_nothing(failures: int) -> None:
    assert record_failures(RECENT, failures, NOW, 1.0, CAP) is RECENT


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        pytest.param(GroupHealth(), GroupHealth(), id="never-failed"),
        pytest.param(RECENT, RECENT, id="recent-failures-kept"),
        pytest.param(LONG_AGO, GroupHealth(restarts=5, consecutive_failures=0, last_failure=NOW - 601,
                                           backoff_until=0.0), id="old-failures-forgotten-restarts-kept"),
        pytest.param(GroupHealth(1, 1, NOW - 600, NOW - 599), GroupHealth(1, 1, NOW - 600, NOW - 599),
                     id="exactly-at-reset-boundary-kept"),
        pytest.param(GroupHealth(0, 0, 0.0, 32503680000.0), GroupHealth(), id="planted-backoff-without-failures"),
        pytest.param(GroupHealth(3, 2, NOW - 10, 32503680000.0), GroupHealth(3, 2, NOW - 10, NOW - 10 + CAP),
                     id="planted-backoff-beyond-the-cap"),
    ],
)
def test_settle(health: GroupHealth, expected: GroupHealth) -> None:
    assert settle(health, NOW, CAP) == expected
