"""What keeps failing, turn after turn, as `cluster_status` computes it from the pods, the failures counted so far
and the stored status: a head (status.head.consecutiveFailures, HeadReady), a worker group (its lastFailure,
ReplicaFailure)."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.reconcile.backoff import GroupHealth, HeadBackoff
from swarm_operator.reconcile.failures import CRASH_LOOP, HEAD_FAILED, head_failures
from swarm_operator.reconcile.observe import PodState
from swarm_operator.status import Persisted, cluster_status, persisted_from_status
from swarm_operator.times import deadline_timestamp
from tests.unit.operator_fixtures import NOW, cluster, head, iso, worker, workers

C = cluster()
NOT_ON_PATH = 'unable to start container process: exec: "ray": executable file not found in $PATH'
START_ERROR = ("StartError", 128, NOT_ON_PATH)


def turn(pods: list[PodState], restarts: int, old: dict[str, Any], now: float = NOW,
         cpu: GroupHealth | None = None) -> dict[str, Any]:
    want = {g.name: g.initial_replicas() for g in C.worker_groups}
    return cluster_status(C, pods, Persisted({"cpu": cpu or GroupHealth()}, want, restarts), old, now, None)


def head_ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "HeadReady")


def test_a_head_that_cannot_start_is_a_crash_loop_that_says_why_until_a_head_is_ready() -> None:
    dead = head(C, phase="Failed", ready=False, terminated=START_ERROR, deleting=True)
    pending = head(C, phase="Pending", ready=False, node=None)
    # Turn 1: the first head failed (this turn deleted it and counted restart 1).
    s1 = turn([dead], 1, {})
    assert s1["head"]["consecutiveFailures"] == 1
    assert (head_ready(s1)["status"], head_ready(s1)["reason"]) == ("False", HEAD_FAILED)
    # Turn 2: its replacement is pending; the failed pod is gone. The words stay.
    s2 = turn([pending], 1, s1, NOW + 1)
    assert head_ready(s2) == head_ready(s1)
    # Turn 3: the replacement failed the same way.
    s3 = turn([dead], 2, s2, NOW + 2)
    cond = head_ready(s3)
    assert (cond["status"], cond["reason"], s3["head"]["consecutiveFailures"]) == ("False", CRASH_LOOP, 2)
    assert cond["message"] == (
        "head failed 2 times in a row, never ready: pod Failed: Ray container ended (StartError, exit code 128): "
        f"{NOT_ON_PATH}; is Ray installed in the image (spec.image) and on the container's PATH?")
    assert s3["phase"] != "Running"
    # A turn that counts nothing new (no write needed) computes the same status.
    assert turn([dead], 2, s3, NOW + 3) == s3
    # Turn 5: a head is ready at last: the count and the condition reset.
    s5 = turn([head(C), *workers(C, 2)], 2, s3, NOW + 4)
    assert s5["head"]["consecutiveFailures"] == 0
    assert (head_ready(s5)["status"], head_ready(s5)["reason"], s5["phase"]) == ("True", "HeadPodReady", "Running")


def test_a_head_that_ran_then_failed_gets_no_image_hint() -> None:
    dead = head(C, phase="Failed", ready=False, terminated=("Error", 1, "ray: GCS failed to start"), deleting=True)
    s = turn([dead], 4, {"head": {"restarts": 1, "consecutiveFailures": 1}})
    assert s["head"]["consecutiveFailures"] == 4
    assert head_ready(s)["message"] == ("head failed 4 times in a row, never ready: pod Failed: Ray container ended "
                                        "(Error, exit code 1): ray: GCS failed to start")


@pytest.mark.parametrize(("old", "restarts", "expected"), [
    pytest.param({}, 0, (0, "", ""), id="never-failed"),
    pytest.param({"head": {"restarts": 5}}, 5, (0, "", ""), id="restarts-from-before-the-count-existed"),
    pytest.param({"head": {"restarts": 1, "consecutiveFailures": 1}}, 1,
                 (1, HEAD_FAILED, "head failed once, never ready"), id="words-lost-count-kept"),
    pytest.param({"head": {"restarts": 1, "consecutiveFailures": 2}, "conditions": [
        {"type": "HeadReady", "status": "False", "reason": "HeadPodNotReady", "message": "head pod x is Pending"}]},
        1, (2, CRASH_LOOP, "head failed 2 times in a row, never ready"), id="other-words-are-not-kept"),
])
def test_head_failures_without_a_failed_pod_in_sight(old: dict[str, Any], restarts: int,
                                                     expected: tuple[int, str, str]) -> None:
    got = head_failures([head(C, phase="Pending", ready=False)], False, restarts, old)
    assert (got.consecutive, got.reason, got.message) == expected


def test_a_group_failing_to_start_says_why_in_replica_failure_until_it_recovers() -> None:
    dead = worker(C, "cpu", "dead1", phase="Failed", ready=False, terminated=START_ERROR, deleting=True)
    failing = GroupHealth(restarts=1, consecutive_failures=1, last_failure=NOW)
    s1 = turn([head(C), dead], 0, {}, cpu=failing)
    why = f"pod Failed: Ray container ended (StartError, exit code 128): {NOT_ON_PATH}"
    replica_failure = next(c for c in s1["conditions"] if c["type"] == "ReplicaFailure")
    assert replica_failure["message"] == f"cpu: 1 consecutive failures, the last: {why}"
    assert s1["workerGroups"][0]["lastFailure"] == why
    # The failed pod is gone, its replacement not up yet: the words stay while the group keeps failing.
    s2 = turn([head(C)], 0, s1, NOW + 1, cpu=failing)
    assert s2["workerGroups"][0]["lastFailure"] == why and s2["conditions"] == s1["conditions"]
    # Recovered: no failures counted, nothing to say.
    s3 = turn([head(C), *workers(C, 2)], 0, s2, NOW + 2)
    assert "lastFailure" not in s3["workerGroups"][0]
    assert next(c for c in s3["conditions"] if c["type"] == "ReplicaFailure")["status"] == "False"


def test_suspending_ends_the_crash_loop() -> None:
    crash_looping = {"head": {"restarts": 3, "consecutiveFailures": 3}}
    suspended = cluster_status(cluster({"suspend": True}), [], Persisted({"cpu": GroupHealth()}, {"cpu": 0}, 3),
                               crash_looping, NOW, None)
    assert suspended["head"]["consecutiveFailures"] == 0 and head_ready(suspended)["reason"] == "HeadPodNotReady"


def test_a_crash_loop_backoff_is_kept_in_status_and_said_in_head_ready() -> None:
    dead = head(C, phase="Failed", ready=False, terminated=START_ERROR, deleting=True)
    want = {g.name: g.initial_replicas() for g in C.worker_groups}
    backoff = HeadBackoff(NOW + 20, "abc123")
    s = cluster_status(C, [dead], Persisted({}, want, 3, head_backoff=backoff), {"head": {"restarts": 2,
                       "consecutiveFailures": 2}}, NOW, None)
    assert (s["head"]["backoffUntil"], s["head"]["backoffRevision"]) == (deadline_timestamp(NOW + 20), "abc123")
    assert head_ready(s)["message"].endswith(f"; the next head starts at {iso(NOW + 20)} (crash-loop backoff; "
                                             "a changed head template starts at once)")
    kept = persisted_from_status(s)
    assert (kept.head_backoff, kept.head_failures) == (backoff, 3)
    # Once it has run out, status says nothing of it.
    later = cluster_status(C, [], Persisted({}, want, 3, head_backoff=backoff), s, NOW + 20, None)
    assert "backoffUntil" not in later["head"] and "next head" not in head_ready(later)["message"]
