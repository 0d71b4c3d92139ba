"""What keeps failing, and why, for status: the head (HeadReady's HeadFailed/CrashLoop) and each worker
group's last failure (ReplicaFailure). Pure.

Every head has `restartPolicy: Never`, so a head that cannot start is a different pod each time
(usually of the same name: reconcile/head.py), failed, deleted and made again by the planner. Nothing in the pods
says "again": the count lives in status (`status.head.consecutiveFailures`, reset once a head is
ready), and the last failure's words in the HeadReady condition, so both survive the dead pod
and an operator restart. A worker group's failures are counted by the planner (reconcile/backoff.py);
its last failure's words live in `status.workerGroups[].lastFailure` for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarm_operator.reasons import ConditionType
from swarm_operator.reconcile.observe import PodState
from swarm_operator.resources import labels

HEAD_FAILED = "HeadFailed"  # the head failed once and is being replaced
CRASH_LOOP = "CrashLoop"  # it failed again and again, never ready in between
CRASH_LOOP_AFTER = 2  # consecutive failures
START_HINT = "is Ray installed in the image (spec.image) and on the container's PATH?"
# status.py adds this to HeadReady's message while a crash-loop backoff runs; words carried over drop it.
NEXT_HEAD = "; the next head starts at "


@dataclass(frozen=True)
class HeadFailures:
    consecutive: int  # head pods that failed since a head was last ready
    reason: str = ""  # HEAD_FAILED or CRASH_LOOP; empty while consecutive is 0
    message: str = ""


def head_failures(heads: Sequence[PodState], ready: bool, restarts: int, old: Mapping[str, Any]) -> HeadFailures:
    """``heads``: this turn's head pods (a failed one is still there, being deleted); ``restarts``: the head
    replacements counted so far, this turn's included; ``old``: the stored status."""
    if ready:
        return HeadFailures(0)
    old_head = old.get("head") or {}
    new = max(0, restarts - int(old_head.get("restarts") or 0))
    count = int(old_head.get("consecutiveFailures") or 0) + new
    if count == 0:
        return HeadFailures(0)
    reason = CRASH_LOOP if count >= CRASH_LOOP_AFTER else HEAD_FAILED
    times = "once" if count == 1 else f"{count} times in a row"
    dead = [p for p in heads if p.failure is not None]
    if dead:
        last = max(dead, key=lambda p: p.created)
        message = f"head failed {times}, never ready: {last.failure}"
        if last.start_failed:
            message += f"; {START_HINT}"
        return HeadFailures(count, reason, message)
    said: Mapping[str, Any] = next(
        (c for c in old.get("conditions") or [] if c.get("type") == ConditionType.HEAD_READY), {})
    if said.get("reason") in (HEAD_FAILED, CRASH_LOOP) and new == 0:
        # The failed pod is gone and its replacement not ready yet: the last words still hold.
        return HeadFailures(count, reason, str(said.get("message") or "").split(NEXT_HEAD)[0])
    return HeadFailures(count, reason, f"head failed {times}, never ready")


def group_last_failure(pods: Sequence[PodState], group: str, stored: Mapping[str, Any]) -> str:
    """Why the group's newest failed worker in sight failed; else what ``stored`` (the group's entry in the
    stored status) said; "" when neither knows."""
    dead = [p for p in pods if p.node_type == labels.WORKER and p.group == group and p.failure is not None]
    if dead:
        return str(max(dead, key=lambda p: p.created).failure)
    return str(stored.get("lastFailure") or "")
