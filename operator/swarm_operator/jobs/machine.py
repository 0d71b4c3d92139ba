"""The SwarmJob state machine: (spec, what status kept, the observed clusters, the observed Ray job) → the
next state and the actions to take, each with its reason. Pure; tests/unit/test_job_machine.py walks every
transition.

Deployment statuses: Initializing (the attempt's cluster comes up, the job is being submitted) → Running
(Ray knows the job) → Complete or Failed; Retrying (a failed attempt, the next one on its way); Suspended.

The job is submitted as soon as its cluster's head pod is Ready and the Jobs API answers, not once every worker
is: the driver waits for the workers its tasks need (Ray queues them), so the cluster's start-up overlaps the
driver's.

Two rules keep submission exactly-once across restarts: the submission id is derived from the uid and the
attempt (names.submission_id), and a decision that starts a new attempt only records it (no submission, no
cluster in the same turn), so nothing of an attempt exists before status says which attempt it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from swarm_operator.autoscaler.policy import format_resources
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
from swarm_operator.jobs.names import cluster_name, submission_id, submitter_pod_name
from swarm_operator.jobs.spec import EntrypointResources, JobSpec, OwnCluster
from swarm_operator.reasons import EventReason
from swarm_operator.times import timestamp

TERMINAL_RAY = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
FINISHED = frozenset({"Complete", "Failed"})
NEXT_TURN_SECONDS = 0.05  # a recorded attempt is acted on at once (0 would mean "at the resync" to the kit's loop)
ACTIVE_POLL_SECONDS = 2.0  # how often a running job's status is read from Ray
# A PENDING job (submitted, its driver starting) is read sooner, so RUNNING is seen soon after Ray says it: every
# 0.5 s for its first 5 s, then every 1 s up to 15 s (at most 20 reads), then as a running job. Counted from Ray's
# own submission time, so a restarted operator keeps the pace.
PENDING_POLLS = ((5.0, 0.5), (15.0, 1.0))
CLOCK_SKEW_SECONDS = 2.0  # a submission time this far ahead of ours: the head's clock differs; read at the slow pace
JOBS_API_RETRY_SECONDS = 0.5  # the head is Ready, nothing submitted, and its Jobs API does not answer yet
WAIT_POLL_SECONDS = 5.0  # waiting for a cluster: its watch events come first, this is the fallback
STATUS_UNREADABLE_SECONDS = 120.0  # the Ray job's status cannot be read this long: the attempt fails
STOP_WAIT_SECONDS = 30.0  # a deleted clusterSelector job waits this long for its Ray job to stop
SUBMITTER_GRACE_SECONDS = 30.0  # a finished job's submitter pod may follow the log this long before the cluster goes


@dataclass(frozen=True)
class JobState:
    """What the job keeps in status between turns (it survives restarts; nothing here lives only in memory)."""

    deployment: str = ""  # "" before the first turn
    attempt: int = 0
    failed_attempts: int = 0
    job_status: str = ""  # Ray's, of the current attempt
    reason: str = ""
    message: str = ""
    start_time: float = 0.0  # of the first attempt, or of the last resume: activeDeadlineSeconds counts from it
    end_time: float = 0.0
    attempt_start: float = 0.0
    unreadable_since: float = 0.0
    infeasible_since: float = 0.0  # since when the job's demand fits no group of its cluster
    dashboard_url: str = ""


@dataclass(frozen=True)
class ClusterView:
    """One SwarmCluster as the job sees it."""

    name: str
    owned: bool  # by this job (an ownerReference with its uid)
    deleting: bool
    head_ip: str | None  # the head pod's IP while the head is Ready (workers may still be starting)
    phase: str
    dashboard_url: str = ""
    workers_zero: bool = False  # every worker group scaled to 0 (DeleteWorkers done)
    node_shapes: tuple[Mapping[str, float], ...] = ()  # Ray resources of the head and of each group's node; ():
    # not known (its spec unreadable)
    infeasible_demand: str = ""  # the cluster's autoscaler: Ray demand that fits no group ("" when none or no report)

    @property
    def running(self) -> bool:
        """Its head Ready and its workers too (phase Running, or Degraded: failing ones being replaced). Not needed
        to submit or follow a job (the head is enough); it is what a queued job's Kueue PodsReady says."""
        return self.head_ip is not None and self.phase in ("Running", "Degraded")


@dataclass(frozen=True)
class RayJob:
    """The attempt's Ray job as the Jobs API reports it."""

    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED
    message: str = ""
    log_tail: str = ""  # the driver's last lines, read only once it ended
    submitted_at: float = 0.0  # when Ray took the submission (its start_time, the head's clock); 0: not said


@dataclass(frozen=True)
class RayJobMissing:
    """The Jobs API answered, and knows no job of this id."""


@dataclass(frozen=True)
class RayUnreachable:
    """The Jobs API did not answer (the head restarting, the network)."""

    error: str


RayView = RayJob | RayJobMissing | RayUnreachable | None  # None: not asked (no running head to ask)


@dataclass(frozen=True)
class Event:
    reason: EventReason  # it says Normal or Warning
    message: str


@dataclass(frozen=True)
class Decision:
    state: JobState
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None  # None: the resync period (watch events of the cluster come first)


@dataclass(frozen=True)
class Observed:
    clusters: tuple[ClusterView, ...]  # the job's own clusters (every attempt's), or the selected one
    ray: RayView  # the current attempt's Ray job, asked at the current cluster's head
    submitter: str | None = None  # the attempt's submitter pod's phase; None: there is none (or HTTP mode)


def current_cluster(job: JobSpec, state: JobState) -> str:
    """The name of the cluster the current attempt runs on."""
    if isinstance(job.cluster, OwnCluster):
        return cluster_name(job.name, max(state.attempt, 1))
    return job.cluster.name


def job_id(job: JobSpec, state: JobState) -> str:
    return submission_id(job.name, job.uid, state.attempt) if state.attempt else ""


def decide(job: JobSpec, state: JobState, seen: Observed, now: float) -> Decision:
    """The whole state machine: one call per turn."""
    cluster = _find(seen, current_cluster(job, state))
    if state.deployment in FINISHED:
        return _finished(job, state, seen, now)
    if job.suspend:
        return _suspend(job, state, seen, cluster)
    if state.deployment in ("", "Suspended"):
        return _new_attempt(job, state, now, EventReason.JOB_RESUMED if state.deployment
                            else EventReason.JOB_INITIALIZING, counts=False)
    if job.active_deadline_seconds is not None and now >= state.start_time + job.active_deadline_seconds:
        return _fail(job, state, seen, cluster, now, EventReason.DEADLINE_EXCEEDED,
                     f"activeDeadlineSeconds ({job.active_deadline_seconds}s) passed", retry=False)
    return _attempt(job, state, seen, cluster, now)


def _find(seen: Observed, name: str) -> ClusterView | None:
    return next((c for c in seen.clusters if c.name == name), None)


def _earlier_clusters(job: JobSpec, seen: Observed, current: str) -> tuple[Action, ...]:
    """An own cluster of an earlier attempt is never kept (the last attempt's follows the deletion policy)."""
    if not isinstance(job.cluster, OwnCluster):
        return ()
    return tuple(DeleteCluster(c.name, "a cluster of an earlier attempt") for c in seen.clusters
                 if c.owned and not c.deleting and c.name != current)


def _new_attempt(job: JobSpec, state: JobState, now: float, reason: EventReason, counts: bool,
                 message: str = "") -> Decision:
    """Record the next attempt, nothing else: its cluster and submission wait until status holds it."""
    attempt = state.attempt + 1
    retrying = reason == EventReason.JOB_RETRYING
    fresh = replace(state, deployment="Retrying" if retrying else "Initializing", attempt=attempt,
                    failed_attempts=state.failed_attempts + (1 if counts else 0), job_status="", reason=reason,
                    message=message or f"attempt {attempt}: starting", end_time=0.0, attempt_start=now,
                    unreadable_since=0.0, infeasible_since=0.0, dashboard_url="",
                    start_time=state.start_time if retrying else now)
    event = Event(reason, f"attempt {attempt} on cluster {current_cluster(job, fresh)}"
                  + (f" after: {message}" if message else ""))
    return Decision(fresh, (), (event,), requeue_after=NEXT_TURN_SECONDS)


def _attempt(job: JobSpec, state: JobState, seen: Observed, cluster: ClusterView | None, now: float) -> Decision:
    """The current attempt, Initializing, Retrying or Running: its cluster, its submission, its Ray job."""
    name = current_cluster(job, state)
    own = isinstance(job.cluster, OwnCluster)
    actions = _earlier_clusters(job, seen, name)
    submitted = state.deployment == "Running"
    if cluster is None or cluster.deleting or (own and not cluster.owned):
        if submitted:
            return _fail(job, state, seen, cluster, now, EventReason.CLUSTER_LOST, f"SwarmCluster {name} is gone")
        if cluster is None and own:
            # The message is the one of the turns that wait for its head: no status write in between (the Created
            # Event says it was made).
            return _wait(state, (*actions, CreateCluster(name, state.attempt)), _waiting_for_head(name, ""))
        why = ("is being deleted" if cluster is not None and cluster.deleting
               else "is held by an object not this job's" if cluster is not None else "does not exist")
        return _wait(state, actions, f"SwarmCluster {name} {why}; waiting")
    driver = unplaced_driver(job.entrypoint_resources, cluster.node_shapes)
    infeasible = (f"the driver's entrypointResources {driver} fit no node of SwarmCluster {name}" if driver
                  else f"Ray's demand {cluster.infeasible_demand} fits no worker group of SwarmCluster {name} (its "
                  "autoscaler's report)" if own and cluster.infeasible_demand else "")
    ended = isinstance(seen.ray, RayJob) and seen.ray.status in TERMINAL_RAY  # its end is what counts then
    if not infeasible or ended:
        return _follow(job, replace(state, infeasible_since=0.0), seen, cluster, now, actions, hold="")
    since = state.infeasible_since or now
    grace = job.unschedulable_grace_seconds  # spec.unschedulableGracePeriodSeconds
    if now - since >= grace:
        return _fail(job, state, seen, cluster, now, EventReason.JOB_UNSCHEDULABLE,
                     f"{infeasible} for {now - since:.0f}s (unschedulableGracePeriodSeconds {grace})", retry=False)
    # Said in status, with the time it fails at; a driver that fits nowhere is not submitted meanwhile.
    note = (f"{infeasible}; the attempt fails ({EventReason.JOB_UNSCHEDULABLE}) at "
            f"{timestamp(since + grace)} unless it fits by then")
    step = _follow(job, replace(state, infeasible_since=since), seen, cluster, now, actions,
                   hold=note if driver else "")
    if step.state.attempt != state.attempt or step.state.deployment in FINISHED:
        return step
    left = since + grace - now
    return replace(step, state=replace(step.state, message=note),
                   requeue_after=min(step.requeue_after or left, left))


def unplaced_driver(driver: EntrypointResources, shapes: tuple[Mapping[str, float], ...]) -> str:
    """The driver's reservation when no node of the cluster (the head, or one of a group's) can ever hold it, else
    "". Ray's demand on a shared cluster is not tagged by job: this is the one part of it known to be the job's."""
    need = {k: v for k, v in {"CPU": driver.num_cpus, "GPU": driver.num_gpus, **driver.resources}.items() if v > 0}
    if not need or not shapes or any(all(shape.get(k, 0.0) >= v for k, v in need.items()) for shape in shapes):
        return ""
    return format_resources(need)


def _follow(job: JobSpec, state: JobState, seen: Observed, cluster: ClusterView, now: float,
            actions: tuple[Action, ...], hold: str) -> Decision:
    """The attempt on its cluster: submit (unless `hold` says why not), then follow the Ray job."""
    name = cluster.name
    submitted = state.deployment == "Running"
    url = cluster.dashboard_url or state.dashboard_url
    if cluster.head_ip is None:
        if submitted:  # the head is being replaced: the status read below has its deadline
            return _unreadable(job, replace(state, dashboard_url=url), seen, cluster, now, actions,
                               f"the head of SwarmCluster {name} is not running")
        return _wait(replace(state, dashboard_url=url), actions, _waiting_for_head(name, cluster.phase))
    ray = seen.ray
    jid = job_id(job, state)
    if isinstance(ray, RayUnreachable) or ray is None:
        why = ray.error if isinstance(ray, RayUnreachable) else "not asked"
        # Not submitted yet: a head just Ready, whose Jobs API (a dashboard module of its own) answers a moment later.
        return _unreadable(job, replace(state, dashboard_url=url), seen, cluster, now, actions,
                           f"the Jobs API at {name} does not answer: {why}",
                           every=ACTIVE_POLL_SECONDS if submitted else JOBS_API_RETRY_SECONDS)
    state = replace(state, dashboard_url=url, unreadable_since=0.0)
    if isinstance(ray, RayJobMissing):
        if submitted:
            return _fail(job, state, seen, cluster, now, EventReason.RAY_JOB_LOST,
                         f"the Ray job {jid} is gone from SwarmCluster {name} (its head restarted without GCS "
                         "fault tolerance?)")
        if hold:
            return _wait(state, actions, hold)
        if job.submission_mode == "SubmitterPod":
            return _through_submitter(job, state, seen, cluster, now, actions)
        return Decision(replace(state, message=f"submitting Ray job {jid} to SwarmCluster {name}"),
                        (*actions, Submit(jid, cluster.head_ip)), requeue_after=PENDING_POLLS[0][1])
    if ray.status == "SUCCEEDED":
        done = replace(state, deployment="Complete", job_status=ray.status, reason=EventReason.JOB_COMPLETE,
                       end_time=now, message=f"Ray job {jid} succeeded")
        finish = _finished(job, done, seen, now)
        return replace(finish, actions=actions + finish.actions,
                       events=(Event(EventReason.JOB_COMPLETE, done.message), *finish.events))
    if ray.status in TERMINAL_RAY:
        why = f"Ray job {jid} {ray.status}" + (f": {ray.message}" if ray.message else "")
        return _fail(job, replace(state, job_status=ray.status), seen, cluster, now, EventReason.RAY_JOB_FAILED,
                     why + (f"\n{ray.log_tail}" if ray.log_tail else ""))
    running = replace(state, deployment="Running", job_status=ray.status, reason=EventReason.JOB_RUNNING,
                      message=f"Ray job {jid} {ray.status}")
    events = (Event(EventReason.JOB_RUNNING, f"Ray job {jid} {ray.status} on SwarmCluster {name}"),) if (
        not submitted) else ()
    return Decision(running, actions, events, requeue_after=poll_interval(ray, now))


def poll_interval(ray: RayJob, now: float) -> float:
    """When to read a submitted, unfinished Ray job again: soon while it is PENDING and young, else every
    ACTIVE_POLL_SECONDS."""
    pending_for = now - ray.submitted_at
    if ray.status != "PENDING" or not ray.submitted_at or pending_for < -CLOCK_SKEW_SECONDS:
        return ACTIVE_POLL_SECONDS
    return next((every for until, every in PENDING_POLLS if pending_for < until), ACTIVE_POLL_SECONDS)


def _waiting_for_head(cluster: str, phase: str) -> str:
    """One message from the cluster's creation to its head's readiness (each change is a status write); the
    phase only when it explains the wait (Suspended, Invalid)."""
    return f"waiting for the head of SwarmCluster {cluster}" + (f" ({phase})" if phase not in ("", "Pending") else "")


def _through_submitter(job: JobSpec, state: JobState, seen: Observed, cluster: ClusterView, now: float,
                       actions: tuple[Action, ...]) -> Decision:
    """SubmitterPod mode, before Ray knows the job: the attempt's pod submits it (once; it looks the id up first)."""
    pod, jid = submitter_pod_name(job.name, state.attempt), job_id(job, state)
    if seen.submitter is None:
        return Decision(replace(state, message=f"starting submitter pod {pod} for Ray job {jid}"),
                        (*actions, CreateSubmitter(pod, state.attempt, jid)), requeue_after=1.0)
    if seen.submitter in ("Succeeded", "Failed"):
        return _fail(job, state, seen, cluster, now, EventReason.SUBMIT_FAILED,
                     f"submitter pod {pod} ended ({seen.submitter}) before Ray knew job {jid}; see its log")
    return Decision(replace(state, message=f"submitter pod {pod} is {seen.submitter}; waiting for Ray job {jid}"),
                    actions, requeue_after=1.0)


def _wait(state: JobState, actions: tuple[Action, ...], message: str) -> Decision:
    return Decision(replace(state, message=message), actions, requeue_after=WAIT_POLL_SECONDS)


def _unreadable(job: JobSpec, state: JobState, seen: Observed, cluster: ClusterView | None, now: float,
                actions: tuple[Action, ...], why: str, every: float = ACTIVE_POLL_SECONDS) -> Decision:
    """The Ray job's status cannot be read: wait (asking again `every` seconds), but never forever."""
    since = state.unreadable_since or now
    if now - since >= STATUS_UNREADABLE_SECONDS:
        return _fail(job, state, seen, cluster, now, EventReason.STATUS_UNREADABLE,
                     f"{why} for {STATUS_UNREADABLE_SECONDS:.0f}s")
    # The deadline is said in status (and unreadableSince kept there): a reader knows what happens when.
    message = (f"{why}; the attempt fails ({EventReason.STATUS_UNREADABLE}) at "
               f"{timestamp(since + STATUS_UNREADABLE_SECONDS)} unless the job's status can be read by then")
    return Decision(replace(state, unreadable_since=since, message=message), actions, requeue_after=every)


def _fail(job: JobSpec, state: JobState, seen: Observed, cluster: ClusterView | None, now: float,
          reason: EventReason, message: str, retry: bool = True) -> Decision:
    """The attempt failed: stop its Ray job if it may still run, then retry (up to backoffLimit) or finish."""
    stop = _stop(job, state, cluster, seen.ray, reason)
    failed = state.failed_attempts + 1
    if retry and failed <= job.backoff_limit:
        # The failed attempt's reason stays in status (the deployment's reason becomes Retrying).
        step = _new_attempt(job, state, now, EventReason.JOB_RETRYING, counts=True,
                            message=f"attempt {state.attempt} failed ({reason}): {message}")
        old = DeleteCluster(cluster.name, f"attempt {state.attempt} failed") if (
            cluster is not None and cluster.owned and not cluster.deleting and isinstance(job.cluster, OwnCluster)
        ) else None
        return replace(step, actions=stop + ((old,) if old else ()))
    if retry and job.backoff_limit:
        reason, message = EventReason.BACKOFF_LIMIT_EXCEEDED, f"{failed} attempts failed; the last: {message}"
    done = replace(state, deployment="Failed", failed_attempts=failed, reason=reason, message=message, end_time=now,
                   job_status="STOPPED" if stop else state.job_status)
    finish = _finished(job, done, seen, now)
    return replace(finish, actions=stop + finish.actions,
                   events=(Event(reason, message.split("\n")[0]), *finish.events))


def _stop(job: JobSpec, state: JobState, cluster: ClusterView | None, ray: RayView,
          reason: str) -> tuple[Action, ...]:
    """Stop the attempt's Ray job where it may still be running (on a shared cluster it would outlive us): as
    Ray reports it this turn, or as status last saw it when Ray was not asked."""
    if cluster is None or cluster.head_ip is None or not state.attempt:
        return ()
    running = ray.status not in TERMINAL_RAY if isinstance(ray, RayJob) else (
        ray is None and state.job_status not in TERMINAL_RAY and bool(state.job_status))
    return (StopRayJob(job_id(job, state), cluster.head_ip, reason),) if running else ()


def _suspend(job: JobSpec, state: JobState, seen: Observed, cluster: ClusterView | None) -> Decision:
    """Nothing runs while suspended: the Ray job is stopped, the job's own clusters deleted."""
    actions: list[Action] = []
    if state.deployment not in ("", "Suspended"):
        actions += _stop(job, state, cluster, seen.ray, "suspended")
    if isinstance(job.cluster, OwnCluster):
        actions += [DeleteCluster(c.name, "the job is suspended") for c in seen.clusters if c.owned and not c.deleting]
    if state.deployment == "Suspended":
        return Decision(state, tuple(actions))
    # activeDeadlineSeconds counts again from the resume, as a Kubernetes Job's does.
    held = replace(state, deployment="Suspended", reason=EventReason.JOB_SUSPENDED, start_time=0.0,
                   unreadable_since=0.0, message="suspended: nothing runs until spec.suspend is false",
                   job_status="STOPPED" if state.job_status and state.job_status not in TERMINAL_RAY
                   else state.job_status)
    return Decision(held, tuple(actions), (Event(EventReason.JOB_SUSPENDED, held.message),))


def _finished(job: JobSpec, state: JobState, seen: Observed, now: float) -> Decision:
    """A finished job: its own cluster follows the deletion policy, then the TTL deletes the SwarmJob."""
    current = current_cluster(job, state)
    actions = list(_earlier_clusters(job, seen, current))
    cluster = _find(seen, current)
    if seen.submitter in ("Pending", "Running") and now < state.end_time + SUBMITTER_GRACE_SECONDS:
        # Its submitter pod still prints the driver's last lines from the head: the cluster waits for it.
        return Decision(state, tuple(actions), requeue_after=1.0)
    if isinstance(job.cluster, OwnCluster) and cluster is not None and cluster.owned and not cluster.deleting:
        policy = job.on_success if state.deployment == "Complete" else job.on_failure
        if policy == "DeleteCluster":
            actions.append(DeleteCluster(current, f"the job is {state.deployment} (deletionPolicy DeleteCluster)"))
        elif policy == "DeleteWorkers" and not cluster.workers_zero:
            actions.append(ScaleWorkersToZero(current, f"the job is {state.deployment} (deletionPolicy DeleteWorkers)"))
    if job.ttl_seconds_after_finished is None:
        return Decision(state, tuple(actions))
    expires = state.end_time + job.ttl_seconds_after_finished
    if now >= expires:
        actions.append(DeleteJob(f"ttlSecondsAfterFinished ({job.ttl_seconds_after_finished}s) passed"))
        return Decision(state, tuple(actions))
    return Decision(state, tuple(actions), requeue_after=expires - now)


def holds_finalizer(state: JobState) -> bool:
    """A job carries the stop finalizer until it is Complete or Failed, while its Ray job may run: deleting it then
    stops that job first. On a shared cluster the Ray job would outlive the SwarmJob; on its own cluster it gets a
    graceful stop before the cluster goes. A finished job has nothing to stop, so deleting it never waits."""
    return state.deployment not in FINISHED


def deleting(job: JobSpec, state: JobState, clusters: tuple[ClusterView, ...], ray: RayView, waited: float) -> tuple[
        tuple[Action, ...], bool]:
    """A deleted job that still carries the finalizer: stop its Ray job for at most STOP_WAIT_SECONDS, then delete
    the job's own clusters (the garbage collector would, but only once the SwarmJob is gone). Returns the actions
    and whether the finalizer may go. A shared cluster's head that is down or not answering may come back with the
    job (GCS fault tolerance): that is waited for too; the job's own cluster is deleted at once then."""
    current = current_cluster(job, state)
    cluster = next((c for c in clusters if c.name == current), None)
    own = isinstance(job.cluster, OwnCluster)
    if state.attempt and cluster is not None and waited < STOP_WAIT_SECONDS:
        if isinstance(ray, RayJob) and ray.status not in TERMINAL_RAY and cluster.head_ip is not None:
            return (StopRayJob(job_id(job, state), cluster.head_ip, "the SwarmJob is being deleted"),), False
        if not own and not isinstance(ray, RayJob | RayJobMissing):
            return (), False
    return tuple(DeleteCluster(c.name, "the SwarmJob is being deleted") for c in clusters
                 if own and c.owned and not c.deleting), True
