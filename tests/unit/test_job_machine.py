"""The SwarmJob state machine (jobs/machine.py), transition by transition."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from swarm_operator.jobs.actions import (
    Action,
    CreateCluster,
    CreateSubmitter,
    DeleteCluster,
    DeleteJob,
    ScaleWorkersToZero,
    StopRayJob,
    Submit,
)
from swarm_operator.jobs.machine import (
    ACTIVE_POLL_SECONDS,
    CLOCK_SKEW_SECONDS,
    JOBS_API_RETRY_SECONDS,
    NEXT_TURN_SECONDS,
    PENDING_POLLS,
    STATUS_UNREADABLE_SECONDS,
    STOP_WAIT_SECONDS,
    SUBMITTER_GRACE_SECONDS,
    ClusterView,
    JobState,
    Observed,
    RayJob,
    RayJobMissing,
    RayUnreachable,
    RayView,
    decide,
    deleting,
    holds_finalizer,
    poll_interval,
    unplaced_driver,
)
from swarm_operator.jobs.spec import DEFAULT_UNSCHEDULABLE_GRACE_SECONDS, JobSpec, parse_job
from swarm_operator.times import timestamp

NOW = 10_000.0
UID = "u1"
JID1 = f"pi-{UID}-1"


def job(**spec: Any) -> JobSpec:
    body: dict[str, Any] = {"entrypoint": "python pi.py", "clusterSpec": {"head": {}}}
    if "clusterSelector" in spec:
        body.pop("clusterSpec")
    body.update(spec)
    return parse_job({"metadata": {"name": "pi", "namespace": "ns", "uid": UID, "generation": 1}, "spec": body})


def cluster(name: str = "pi-1", ready: bool = True, owned: bool = True, deleting: bool = False,
            workers_zero: bool = False) -> ClusterView:
    return ClusterView(name=name, owned=owned, deleting=deleting, head_ip="10.0.0.5" if ready else None,
                       phase="Running" if ready else "Pending", dashboard_url=f"http://{name}-head-svc:8265",
                       workers_zero=workers_zero)


def seen(*clusters: ClusterView, ray: RayView = None) -> Observed:
    return Observed(tuple(clusters), ray)


RUNNING = JobState(deployment="Running", attempt=1, job_status="RUNNING", start_time=NOW - 60,
                   attempt_start=NOW - 60)
INITIALIZING = JobState(deployment="Initializing", attempt=1, start_time=NOW - 5, attempt_start=NOW - 5)


def kinds(actions: tuple[Action, ...]) -> list[str]:
    return [type(a).__name__ for a in actions]


# -- starting -------------------------------------------------------------------------------------------

def test_a_new_job_records_its_first_attempt_and_nothing_else() -> None:
    d = decide(job(), JobState(), seen(), NOW)
    assert d.state.deployment == "Initializing" and d.state.attempt == 1 and d.state.start_time == NOW
    assert d.actions == () and d.requeue_after == NEXT_TURN_SECONDS  # status first: no cluster, no submission
    assert [e.reason for e in d.events] == ["Initializing"]


def test_the_recorded_attempt_creates_its_own_cluster() -> None:
    d = decide(job(), INITIALIZING, seen(), NOW)
    assert d.actions == (CreateCluster("pi-1", 1),)
    assert d.state.message == "waiting for the head of SwarmCluster pi-1"  # as until the head is Ready: one write


@pytest.mark.parametrize("view, why", [
    (cluster(ready=False), "waiting for the head of SwarmCluster pi-1"),
    (replace(cluster(ready=False), phase="Invalid"), "waiting for the head of SwarmCluster pi-1 (Invalid)"),
    (cluster(deleting=True), "is being deleted"),
    (cluster(owned=False), "held by an object not this job's"),
])
def test_waiting_for_the_cluster(view: ClusterView, why: str) -> None:
    d = decide(job(), INITIALIZING, seen(view), NOW)
    assert d.actions == () and why in d.state.message and d.state.deployment == "Initializing"


def test_a_shared_cluster_is_never_created() -> None:
    d = decide(job(clusterSelector={"name": "shared"}), INITIALIZING, seen(), NOW)
    assert d.actions == () and "SwarmCluster shared does not exist" in d.state.message


def test_a_ready_cluster_without_the_job_gets_it_submitted() -> None:
    d = decide(job(), INITIALIZING, seen(cluster(), ray=RayJobMissing()), NOW)
    assert d.actions == (Submit(JID1, "10.0.0.5"),)
    assert d.state.dashboard_url == "http://pi-1-head-svc:8265"
    assert d.requeue_after == PENDING_POLLS[0][1]  # the new job is read back at the PENDING pace


def test_a_ready_head_whose_workers_still_start_gets_the_job_submitted() -> None:
    """The driver waits for its workers itself: the head's readiness is enough (the view's head_ip says it)."""
    starting = replace(cluster(), phase="Pending")
    d = decide(job(), INITIALIZING, seen(starting, ray=RayJobMissing()), NOW)
    assert d.actions == (Submit(JID1, "10.0.0.5"),)


@pytest.mark.parametrize("state, every", [
    (INITIALIZING, JOBS_API_RETRY_SECONDS),  # a head just Ready: its Jobs API comes up a moment later
    (RUNNING, ACTIVE_POLL_SECONDS),  # a submitted job's head stopped answering: the usual pace, and the deadline
])
def test_a_jobs_api_not_answering_is_asked_again_sooner_before_submission(state: JobState, every: float) -> None:
    d = decide(job(), state, seen(cluster(), ray=RayUnreachable("503")), NOW)
    assert d.actions == () and d.requeue_after == every and d.state.unreadable_since == NOW


@pytest.mark.parametrize("status, pending_for, every", [
    ("PENDING", 0.0, 0.5),
    ("PENDING", 4.9, 0.5),
    ("PENDING", 5.0, 1.0),
    ("PENDING", 14.9, 1.0),
    ("PENDING", 15.0, ACTIVE_POLL_SECONDS),  # a driver slow to start is not read faster forever
    ("PENDING", 600.0, ACTIVE_POLL_SECONDS),
    ("PENDING", -CLOCK_SKEW_SECONDS + 0.1, 0.5),  # the head's clock a little ahead
    ("PENDING", -CLOCK_SKEW_SECONDS - 0.1, ACTIVE_POLL_SECONDS),  # far ahead: the slow pace, not fast forever
    ("PENDING", None, ACTIVE_POLL_SECONDS),  # Ray did not say when it took the job
    ("RUNNING", 0.0, ACTIVE_POLL_SECONDS),
    ("RUNNING", 600.0, ACTIVE_POLL_SECONDS),
])
def test_a_pending_job_is_read_sooner_for_a_while(status: str, pending_for: float | None, every: float) -> None:
    ray = RayJob(status, submitted_at=0.0 if pending_for is None else NOW - pending_for)
    assert poll_interval(ray, NOW) == every
    d = decide(job(), INITIALIZING, seen(cluster(), ray=ray), NOW)
    assert d.state.deployment == "Running" and d.requeue_after == every


def test_a_job_ray_knows_is_running() -> None:
    d = decide(job(), INITIALIZING, seen(cluster(), ray=RayJob("PENDING")), NOW)
    assert d.state.deployment == "Running" and d.state.job_status == "PENDING" and d.actions == ()
    assert [e.reason for e in d.events] == ["Running"]
    again = decide(job(), d.state, seen(cluster(), ray=RayJob("RUNNING")), NOW)
    assert again.events == () and again.state.job_status == "RUNNING"


def test_the_shared_cluster_job_id_depends_on_uid_and_attempt() -> None:
    d = decide(job(clusterSelector={"name": "shared"}), replace(INITIALIZING, attempt=3),
               seen(cluster("shared", owned=False), ray=RayJobMissing()), NOW)
    assert d.actions == (Submit(f"pi-{UID}-3", "10.0.0.5"),)


# -- finishing ------------------------------------------------------------------------------------------

def test_success_completes_and_deletes_the_cluster_by_default() -> None:
    d = decide(job(), RUNNING, seen(cluster(), ray=RayJob("SUCCEEDED")), NOW)
    assert d.state.deployment == "Complete" and d.state.end_time == NOW and d.state.job_status == "SUCCEEDED"
    assert kinds(d.actions) == ["DeleteCluster"]
    assert [e.reason for e in d.events] == ["Complete"]


@pytest.mark.parametrize("policy, view, expected", [
    ("DeleteCluster", cluster(), ["DeleteCluster"]),
    ("DeleteWorkers", cluster(), ["ScaleWorkersToZero"]),
    ("DeleteWorkers", cluster(workers_zero=True), []),
    ("DeleteNone", cluster(), []),
    ("DeleteCluster", cluster(deleting=True), []),
])
def test_deletion_policy_on_success(policy: str, view: ClusterView, expected: list[str]) -> None:
    j = job(deletionPolicy={"onSuccess": policy, "onFailure": "DeleteNone"})
    d = decide(j, replace(RUNNING, deployment="Complete", end_time=NOW), seen(view), NOW)
    assert kinds(d.actions) == expected


def test_deletion_policy_on_failure_is_its_own() -> None:
    j = job(deletionPolicy={"onSuccess": "DeleteCluster", "onFailure": "DeleteWorkers"})
    d = decide(j, replace(RUNNING, deployment="Failed", end_time=NOW), seen(cluster()), NOW)
    assert d.actions == (ScaleWorkersToZero("pi-1", "the job is Failed (deletionPolicy DeleteWorkers)"),)


def test_a_finished_job_deletes_clusters_of_earlier_attempts_even_with_delete_none() -> None:
    j = job(deletionPolicy={"onFailure": "DeleteNone"})
    d = decide(j, replace(RUNNING, deployment="Failed", attempt=2, end_time=NOW), seen(cluster("pi-1"),
                                                                                     cluster("pi-2")), NOW)
    assert d.actions == (DeleteCluster("pi-1", "a cluster of an earlier attempt"),)


def test_a_shared_cluster_is_never_deleted() -> None:
    j = job(clusterSelector={"name": "shared"})
    d = decide(j, replace(RUNNING, deployment="Complete", end_time=NOW), seen(cluster("shared", owned=False)), NOW)
    assert d.actions == ()


def test_ttl_waits_then_deletes_the_job() -> None:
    j = job(ttlSecondsAfterFinished=30)
    done = replace(RUNNING, deployment="Complete", end_time=NOW)
    early = decide(j, done, seen(), NOW + 10)
    assert early.actions == () and early.requeue_after == pytest.approx(20)
    late = decide(j, done, seen(), NOW + 30)
    assert kinds(late.actions) == ["DeleteJob"]


def test_without_ttl_a_finished_job_stays() -> None:
    d = decide(job(), replace(RUNNING, deployment="Complete", end_time=NOW - 10**6), seen(), NOW)
    assert d.actions == () and d.requeue_after is None


# -- failing and retrying -------------------------------------------------------------------------------

def test_a_failed_job_without_retries_fails_with_ray_reason_and_log_tail() -> None:
    ray = RayJob("FAILED", "Job entrypoint command failed with exit code 1", "Traceback\nValueError: boom")
    d = decide(job(), RUNNING, seen(cluster(), ray=ray), NOW)
    assert d.state.deployment == "Failed" and d.state.reason == "RayJobFailed" and d.state.failed_attempts == 1
    assert "exit code 1" in d.state.message and d.state.message.endswith("ValueError: boom")
    assert kinds(d.actions) == ["DeleteCluster"]  # onFailure DeleteCluster; no stop: Ray ended it
    assert d.events[0].reason.event_type == "Warning"


def test_a_failed_attempt_is_retried_on_a_fresh_cluster() -> None:
    j = job(backoffLimit=2)
    d = decide(j, RUNNING, seen(cluster(), ray=RayJob("FAILED", "exit code 1")), NOW)
    assert d.state.deployment == "Retrying" and d.state.attempt == 2 and d.state.failed_attempts == 1
    assert d.state.start_time == RUNNING.start_time and d.state.attempt_start == NOW
    assert d.actions == (DeleteCluster("pi-1", "attempt 1 failed"),)  # no create: the attempt is recorded first
    assert d.requeue_after == NEXT_TURN_SECONDS
    nxt = decide(j, d.state, seen(cluster("pi-1", deleting=True)), NOW)
    assert nxt.actions == (CreateCluster("pi-2", 2),) and nxt.state.deployment == "Retrying"


def test_the_last_allowed_failure_exceeds_the_backoff_limit() -> None:
    j = job(backoffLimit=2)
    state = replace(RUNNING, attempt=3, failed_attempts=2)
    d = decide(j, state, seen(cluster("pi-3"), ray=RayJob("FAILED", "exit code 1")), NOW)
    assert d.state.deployment == "Failed" and d.state.reason == "BackoffLimitExceeded"
    assert d.state.failed_attempts == 3 and d.state.message.startswith("3 attempts failed")


def test_a_stopped_ray_job_counts_as_a_failure() -> None:
    d = decide(job(), RUNNING, seen(cluster(), ray=RayJob("STOPPED")), NOW)
    assert d.state.deployment == "Failed" and d.state.job_status == "STOPPED"


def test_a_job_gone_from_ray_after_a_head_restart_fails_the_attempt() -> None:
    retried = decide(job(backoffLimit=1), RUNNING, seen(cluster(), ray=RayJobMissing()), NOW)
    assert retried.state.deployment == "Retrying" and retried.state.reason == "Retrying"
    assert retried.state.message.startswith("attempt 1 failed (RayJobLost): the Ray job pi-u1-1 is gone from "
                                            "SwarmCluster pi-1"), retried.state.message
    failed = decide(job(), RUNNING, seen(cluster(), ray=RayJobMissing()), NOW)
    assert failed.state.deployment == "Failed" and failed.state.reason == "RayJobLost"


def test_the_cluster_gone_under_a_running_job_fails_the_attempt() -> None:
    d = decide(job(), RUNNING, seen(), NOW)
    assert d.state.deployment == "Failed" and d.state.reason == "ClusterLost"


@pytest.mark.parametrize("view, why", [
    (cluster(ready=False), "the head of SwarmCluster pi-1 is not running"),
    (cluster(), "the Jobs API at pi-1 does not answer: connection refused"),
])
def test_an_unreadable_status_waits_within_the_deadline_and_says_it(view: ClusterView, why: str) -> None:
    ray = None if view.head_ip is None else RayUnreachable("connection refused")
    d = decide(job(), RUNNING, seen(view, ray=ray), NOW)
    assert d.state.deployment == "Running" and d.state.unreadable_since == NOW and d.actions == ()
    assert d.state.message == (f"{why}; the attempt fails (StatusUnreadable) at "
                               f"{timestamp(NOW + STATUS_UNREADABLE_SECONDS)} unless the job's status can be read "
                               "by then")
    later = decide(job(), d.state, seen(view, ray=ray), NOW + STATUS_UNREADABLE_SECONDS - 1)
    assert later.state.deployment == "Running" and later.state.unreadable_since == NOW


def test_an_unreadable_status_past_the_deadline_fails_the_attempt() -> None:
    state = replace(RUNNING, unreadable_since=NOW - STATUS_UNREADABLE_SECONDS)
    d = decide(job(), state, seen(cluster(), ray=RayUnreachable("timed out")), NOW)
    assert d.state.deployment == "Failed" and d.state.reason == "StatusUnreadable"
    retried = decide(job(backoffLimit=1), state, seen(cluster(ready=False)), NOW)
    assert retried.state.deployment == "Retrying" and retried.state.attempt == 2
    assert retried.state.message.startswith("attempt 1 failed (StatusUnreadable): the head of SwarmCluster pi-1 is "
                                            "not running for 120s"), retried.state.message


def test_a_readable_status_clears_the_unreadable_clock() -> None:
    state = replace(RUNNING, unreadable_since=NOW - 50)
    d = decide(job(), state, seen(cluster(), ray=RayJob("RUNNING")), NOW)
    assert d.state.unreadable_since == 0.0


# -- deadline -------------------------------------------------------------------------------------------

def test_the_active_deadline_stops_the_job_and_never_retries() -> None:
    j = job(activeDeadlineSeconds=30, backoffLimit=3)
    d = decide(j, RUNNING, seen(cluster(), ray=RayJob("RUNNING")), NOW)
    assert d.state.deployment == "Failed" and d.state.reason == "DeadlineExceeded" and d.state.job_status == "STOPPED"
    assert d.actions[0] == StopRayJob(JID1, "10.0.0.5", "DeadlineExceeded")
    assert kinds(d.actions) == ["StopRayJob", "DeleteCluster"]


def test_before_the_deadline_nothing_happens() -> None:
    d = decide(job(activeDeadlineSeconds=61), RUNNING, seen(cluster(), ray=RayJob("RUNNING")), NOW)
    assert d.state.deployment == "Running"


# -- suspend --------------------------------------------------------------------------------------------

def test_a_job_created_suspended_creates_nothing() -> None:
    d = decide(job(suspend=True), JobState(), seen(), NOW)
    assert d.state.deployment == "Suspended" and d.state.attempt == 0 and d.actions == ()


def test_suspending_a_running_job_stops_it_and_deletes_its_cluster() -> None:
    d = decide(job(suspend=True), RUNNING, seen(cluster(), ray=RayJob("RUNNING")), NOW)
    assert d.state.deployment == "Suspended" and d.state.start_time == 0.0 and d.state.job_status == "STOPPED"
    assert kinds(d.actions) == ["StopRayJob", "DeleteCluster"]


@pytest.mark.parametrize("ray, stops", [
    (RayJob("RUNNING"), True), (RayJob("SUCCEEDED"), False), (RayJobMissing(), False),
    (RayUnreachable("refused"), False), (None, True),  # not asked: status said RUNNING
])
def test_only_a_ray_job_that_may_run_is_stopped(ray: RayView, stops: bool) -> None:
    d = decide(job(suspend=True), RUNNING, seen(cluster(), ray=ray), NOW)
    assert ("StopRayJob" in kinds(d.actions)) is stops
    assert "DeleteCluster" in kinds(d.actions)


def test_suspending_a_shared_cluster_job_stops_it_only() -> None:
    j = job(suspend=True, clusterSelector={"name": "shared"})
    d = decide(j, RUNNING, seen(cluster("shared", owned=False), ray=RayJob("RUNNING")), NOW)
    assert kinds(d.actions) == ["StopRayJob"]


def test_a_suspended_job_keeps_deleting_what_is_left() -> None:
    state = replace(RUNNING, deployment="Suspended")
    d = decide(job(suspend=True), state, seen(cluster()), NOW)
    assert kinds(d.actions) == ["DeleteCluster"] and d.events == ()


def test_resuming_starts_a_new_attempt_not_counted_as_a_failure() -> None:
    state = replace(RUNNING, deployment="Suspended", start_time=0.0)
    d = decide(job(), state, seen(), NOW)
    assert d.state.deployment == "Initializing" and d.state.attempt == 2 and d.state.failed_attempts == 0
    assert d.state.start_time == NOW and [e.reason for e in d.events] == ["Resumed"] and d.actions == ()


def test_suspend_is_ignored_once_finished() -> None:
    d = decide(job(suspend=True), replace(RUNNING, deployment="Complete", end_time=NOW), seen(), NOW)
    assert d.state.deployment == "Complete"


# -- deleting a job that is not finished (it carries the finalizer) ------------------------------------------

SHARED = job(clusterSelector={"name": "shared"})


@pytest.mark.parametrize("deployment, holds", [
    ("", True), ("Initializing", True), ("Running", True), ("Retrying", True), ("Suspended", True),
    ("Complete", False), ("Failed", False),
])
def test_a_job_holds_the_finalizer_until_it_finishes(deployment: str, holds: bool) -> None:
    assert holds_finalizer(replace(RUNNING, deployment=deployment)) is holds


@pytest.mark.parametrize("ray, waited, expected_actions, may_go", [
    (RayJob("RUNNING"), 0.0, ["StopRayJob"], False),
    (RayJob("RUNNING"), STOP_WAIT_SECONDS, [], True),
    (RayJob("STOPPED"), 1.0, [], True),
    (RayJobMissing(), 1.0, [], True),
    (RayUnreachable("refused"), 1.0, [], False),
    (RayUnreachable("refused"), STOP_WAIT_SECONDS, [], True),
])
def test_a_deleted_shared_cluster_job_stops_its_ray_job_first(ray: RayView, waited: float,
                                                               expected_actions: list[str], may_go: bool) -> None:
    actions, go = deleting(SHARED, RUNNING, (cluster("shared", owned=False),), ray, waited)
    assert kinds(actions) == expected_actions and go is may_go


@pytest.mark.parametrize("ray, waited, expected_actions, may_go", [
    (RayJob("RUNNING"), 0.0, ["StopRayJob"], False),  # stopped first, the cluster stays until it ended
    (RayJob("PENDING"), 1.0, ["StopRayJob"], False),
    (RayJob("RUNNING"), STOP_WAIT_SECONDS, ["DeleteCluster"], True),  # but only so long
    (RayJob("STOPPED"), 1.0, ["DeleteCluster"], True),
    (RayJobMissing(), 1.0, ["DeleteCluster"], True),
    (RayUnreachable("refused"), 1.0, ["DeleteCluster"], True),  # nothing to stop gracefully: the cluster goes
])
def test_a_deleted_job_stops_its_ray_job_then_deletes_its_own_cluster(ray: RayView, waited: float,
                                                                      expected_actions: list[str],
                                                                      may_go: bool) -> None:
    actions, go = deleting(job(), RUNNING, (cluster(),), ray, waited)
    assert kinds(actions) == expected_actions and go is may_go
    if go:
        assert actions == (DeleteCluster("pi-1", "the SwarmJob is being deleted"),)


def test_a_deleted_job_deletes_every_own_cluster_but_none_being_deleted_or_not_its_own() -> None:
    views = (cluster("pi-1", deleting=True), cluster("pi-2", ready=False), cluster("pi-3", owned=False))
    actions, go = deleting(job(), replace(RUNNING, attempt=2), views, None, 0.0)
    assert actions == (DeleteCluster("pi-2", "the SwarmJob is being deleted"),) and go


def test_a_deleted_job_that_never_started_lets_go_at_once() -> None:
    assert deleting(SHARED, JobState(), (), None, 0.0) == ((), True)
    assert deleting(job(), JobState(), (), None, 0.0) == ((), True)


def test_a_deleted_job_waits_for_a_shared_head_that_is_down_but_only_so_long() -> None:
    down = cluster("shared", ready=False, owned=False)
    assert deleting(SHARED, RUNNING, (down,), None, 1.0) == ((), False)
    assert deleting(SHARED, RUNNING, (down,), None, STOP_WAIT_SECONDS) == ((), True)
    assert deleting(SHARED, RUNNING, (), None, 1.0) == ((), True)  # the shared cluster itself is gone
    never = cluster("shared", owned=True)  # even one the job happens to own is never deleted by it
    assert deleting(SHARED, RUNNING, (never,), RayJobMissing(), 1.0) == ((), True)


def test_only_the_last_attempt_is_ever_created() -> None:
    d = decide(job(), replace(INITIALIZING, attempt=2), seen(cluster("pi-1")), NOW)
    assert d.actions == (DeleteCluster("pi-1", "a cluster of an earlier attempt"), CreateCluster("pi-2", 2))
    assert not any(isinstance(a, DeleteJob) for a in d.actions)


# -- submissionMode SubmitterPod ------------------------------------------------------------------------

POD_MODE = job(submissionMode="SubmitterPod", backoffLimit=1)


def test_the_submitter_pod_is_made_once_the_cluster_is_up() -> None:
    d = decide(POD_MODE, INITIALIZING, seen(cluster(), ray=RayJobMissing()), NOW)
    assert d.actions == (CreateSubmitter("pi-1-submitter", 1, JID1),)
    waiting = decide(POD_MODE, INITIALIZING, Observed((cluster(),), RayJobMissing(), "Running"), NOW)
    assert waiting.actions == () and "submitter pod pi-1-submitter is Running" in waiting.state.message
    assert decide(POD_MODE, INITIALIZING, seen(cluster(ready=False)), NOW).actions == ()


@pytest.mark.parametrize("phase", ["Failed", "Succeeded"])
def test_a_submitter_that_ended_before_ray_knew_the_job_fails_the_attempt(phase: str) -> None:
    d = decide(POD_MODE, INITIALIZING, Observed((cluster(),), RayJobMissing(), phase), NOW)
    assert d.state.deployment == "Retrying" and "submitter pod pi-1-submitter ended" in d.state.message


def test_a_finished_jobs_cluster_waits_for_its_submitter_to_print_the_end_but_not_forever() -> None:
    done = replace(RUNNING, deployment="Complete", end_time=NOW)
    waits = decide(POD_MODE, done, Observed((cluster(),), None, "Running"), NOW + 5)
    assert waits.actions == () and waits.requeue_after == 1.0
    ended = decide(POD_MODE, done, Observed((cluster(),), None, "Succeeded"), NOW + 5)
    late = decide(POD_MODE, done, Observed((cluster(),), None, "Running"), NOW + SUBMITTER_GRACE_SECONDS)
    assert kinds(ended.actions) == kinds(late.actions) == ["DeleteCluster"]


def test_with_a_submitter_ray_is_followed_as_in_http_mode() -> None:
    d = decide(POD_MODE, INITIALIZING, Observed((cluster(),), RayJob("RUNNING"), "Running"), NOW)
    assert d.state.deployment == "Running" and d.actions == ()


# -- demand that fits no group ----------------------------------------------------------------------------

HEAD_SHAPE = {"CPU": 1.0, "memory": 2e9}
GPU_SHAPE = {"CPU": 2.0, "memory": 4e9, "GPU": 1.0}


@pytest.mark.parametrize("driver, shapes, unplaced", [
    ({}, (HEAD_SHAPE,), ""),  # reserves nothing
    ({"numCpus": 1}, (HEAD_SHAPE,), ""),
    ({"numCpus": 2}, (HEAD_SHAPE,), "{CPU:2}"),
    ({"numCpus": 2}, (HEAD_SHAPE, GPU_SHAPE), ""),  # a group's node holds it
    ({"numGpus": 1, "numCpus": 1}, (HEAD_SHAPE, GPU_SHAPE), ""),
    ({"numGpus": 2}, (HEAD_SHAPE, GPU_SHAPE), "{GPU:2}"),
    ({"resources": {"driver": 1}}, (HEAD_SHAPE, {**HEAD_SHAPE, "driver": 1.0}), ""),
    ({"resources": {"driver": 1}, "numGpus": 1}, (GPU_SHAPE, {**HEAD_SHAPE, "driver": 1.0}), "{GPU:1, driver:1}"),
    ({"numGpus": 8}, (), ""),  # the cluster's shapes are not known: never judged
])
def test_a_driver_is_placed_where_one_node_holds_all_it_reserves(driver: dict[str, Any], shapes: Any,
                                                                 unplaced: str) -> None:
    assert unplaced_driver(job(entrypointResources=driver).entrypoint_resources, shapes) == unplaced


def shaped(view: ClusterView, demand: str = "") -> ClusterView:
    return replace(view, node_shapes=(HEAD_SHAPE,), infeasible_demand=demand)


BIG_DRIVER = {"entrypointResources": {"numCpus": 4}}


@pytest.mark.parametrize("spec, view, state, ray, reason_in_message", [
    (BIG_DRIVER, shaped(cluster()), INITIALIZING, RayJobMissing(), "entrypointResources {CPU:4} fit no node"),
    ({**BIG_DRIVER, "clusterSelector": {"name": "shared"}}, shaped(cluster("shared", owned=False)), INITIALIZING,
     RayJobMissing(), "entrypointResources {CPU:4} fit no node of SwarmCluster shared"),
    ({}, shaped(cluster(), "3×{GPU: 8}"), RUNNING, RayJob("RUNNING"), "Ray's demand 3×{GPU: 8} fits no worker group"),
])
def test_demand_that_fits_no_group_is_said_in_status_then_fails_after_the_grace_period(
        spec: dict[str, Any], view: ClusterView, state: JobState, ray: RayView, reason_in_message: str) -> None:
    j = job(backoffLimit=3, **spec)
    first = decide(j, state, seen(view, ray=ray), NOW)
    assert first.state.infeasible_since == NOW and first.state.deployment == state.deployment
    assert reason_in_message in first.state.message
    assert f"fails (Unschedulable) at {timestamp(NOW + DEFAULT_UNSCHEDULABLE_GRACE_SECONDS)}" in first.state.message
    assert not any(isinstance(a, Submit) for a in first.actions), "a driver that fits nowhere is not submitted"
    assert first.requeue_after is not None and first.requeue_after <= DEFAULT_UNSCHEDULABLE_GRACE_SECONDS
    late = decide(j, first.state, seen(view, ray=ray), NOW + DEFAULT_UNSCHEDULABLE_GRACE_SECONDS)
    assert late.state.deployment == "Failed" and late.state.reason == "Unschedulable"  # no retries: it would not fit
    assert late.state.failed_attempts == 1 and reason_in_message in late.state.message
    assert [e.reason for e in late.events][:1] == ["Unschedulable"]
    assert ("StopRayJob" in kinds(late.actions)) is isinstance(ray, RayJob)


@pytest.mark.parametrize("grace", [0, 5, 600])
def test_the_grace_period_is_the_jobs_unschedulable_grace_period_seconds(grace: int) -> None:
    j = job(unschedulableGracePeriodSeconds=grace, **BIG_DRIVER)
    first = decide(j, INITIALIZING, seen(shaped(cluster()), ray=RayJobMissing()), NOW)
    if grace == 0:  # no grace: it fails on the first look
        assert first.state.deployment == "Failed" and first.state.reason == "Unschedulable"
        return
    assert f"fails (Unschedulable) at {timestamp(NOW + grace)}" in first.state.message
    assert first.requeue_after is not None and first.requeue_after <= grace
    early = decide(j, first.state, seen(shaped(cluster()), ray=RayJobMissing()), NOW + grace - 1)
    assert early.state.deployment == "Initializing" and early.state.infeasible_since == NOW
    late = decide(j, early.state, seen(shaped(cluster()), ray=RayJobMissing()), NOW + grace)
    assert late.state.deployment == "Failed" and late.state.reason == "Unschedulable"
    assert f"(unschedulableGracePeriodSeconds {grace})" in late.state.message


def test_the_autoscaler_report_counts_only_on_the_jobs_own_cluster() -> None:
    j = job(clusterSelector={"name": "shared"})
    d = decide(j, RUNNING, seen(shaped(cluster("shared", owned=False), "1×{GPU: 8}"), ray=RayJob("RUNNING")), NOW)
    assert d.state.infeasible_since == 0.0 and d.state.message == f"Ray job {JID1} RUNNING"


def test_demand_that_fits_again_clears_the_clock() -> None:
    state = replace(RUNNING, infeasible_since=NOW - 30)
    d = decide(job(), state, seen(shaped(cluster()), ray=RayJob("RUNNING")), NOW)
    assert d.state.infeasible_since == 0.0 and d.state.deployment == "Running"


def test_a_ray_job_that_ended_is_judged_by_its_end_not_by_a_stale_report() -> None:
    state = replace(RUNNING, infeasible_since=NOW - DEFAULT_UNSCHEDULABLE_GRACE_SECONDS)
    d = decide(job(), state, seen(shaped(cluster(), "1×{GPU: 8}"), ray=RayJob("SUCCEEDED")), NOW)
    assert d.state.deployment == "Complete"
