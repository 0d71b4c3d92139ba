"""Per-group replacement backoff: ~1 s doubling to a cap, reset after a healthy period. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class GroupHealth:
    """What the operator remembers about a group's failures (kept in status, so it survives restarts)."""

    restarts: int = 0
    consecutive_failures: int = 0
    last_failure: float = 0.0  # epoch seconds
    backoff_until: float = 0.0


def backoff_delay(consecutive_failures: int, initial: float, cap: float) -> float:
    """Delay before replacing after the n-th consecutive failure: initial, 2×, 4× … up to cap."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(cap, initial * 2 ** min(consecutive_failures - 1, 40)))


def healthy_reset_seconds(cap: float) -> float:
    """A group that has not failed for this long starts again from the initial delay."""
    return max(60.0, 2 * cap)


def record_failures(health: GroupHealth, failures: int, now: float, initial: float, cap: float) -> GroupHealth:
    if failures <= 0:
        return health
    consecutive = health.consecutive_failures
    if consecutive and now - health.last_failure > healthy_reset_seconds(cap):
        consecutive = 0
    consecutive += failures
    return GroupHealth(
        restarts=health.restarts + failures,
        consecutive_failures=consecutive,
        last_failure=now,
        backoff_until=now + backoff_delay(consecutive, initial, cap),
    )


def settle(health: GroupHealth, now: float, cap: float) -> GroupHealth:
    """Forget old failures once the group has been healthy long enough.

    Status may have been written by someone else: a backoff never outlasts the cap after the last
    failure, and there is none without consecutive failures (else a planted date blocks the group)."""
    limit = health.last_failure + cap if health.consecutive_failures else 0.0
    if health.backoff_until > limit:
        health = replace(health, backoff_until=limit)
    if health.consecutive_failures and now - health.last_failure > healthy_reset_seconds(cap):
        return replace(health, consecutive_failures=0, backoff_until=0.0)
    return health


# A head that keeps failing waits before its next attempt, as the kubelet's CrashLoopBackOff does: without it a
# head that cannot start is made again about once a second, forever. The first failure is replaced at once (a
# head that died once should be back fast); from the second in a row (CrashLoop) 10 s doubling to 5 min.
HEAD_BACKOFF_INITIAL_SECONDS = 10.0
HEAD_BACKOFF_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class HeadBackoff:
    """When the next head may start, kept in status (status.head.backoffUntil). It holds only for the head template
    that failed (`revision`): a changed template may be the fix, and starts at once."""

    until: float  # epoch seconds
    revision: str  # the template hash of the head that failed


def head_backoff_delay(consecutive_failures: int) -> float:
    """Delay before the next head after the n-th failure in a row (n counts this one)."""
    return backoff_delay(consecutive_failures - 1, HEAD_BACKOFF_INITIAL_SECONDS, HEAD_BACKOFF_MAX_SECONDS)
