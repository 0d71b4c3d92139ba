"""When a suspended cluster's head may go, once no worker is left running: not while a Ray job submitted through
the Jobs API has not ended (PENDING or RUNNING), because its driver runs on the head and the job would never report
its result; for at most updateStrategy.drainTimeoutSeconds counted from when the suspension began. Pure.

What the head's Jobs API says comes in as plain data (the I/O is jobs/rayapi.py, read by turn.py): the submission
ids of the jobs that have not ended, or `JobsUnreadable`. An unreadable Jobs API on a live head keeps the head
too (a transient error must not drop a running driver), within the same bound; a head started with its dashboard
switched off serves no Jobs API and is never kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import Note
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.times import timestamp

# While the head is kept, its Jobs API is read again this often (a job's end is what lets the head go).
JOBS_POLL_SECONDS = 2.0
# `ray start --include-dashboard` is a boolean flag: these values switch the dashboard, and its Jobs API, off.
DASHBOARD_OFF = frozenset({"false", "0", "f", "n", "no", "off"})
SHOWN_JOBS = 5  # job ids quoted in a note; more are counted


@dataclass(frozen=True)
class JobsUnreadable:
    """The head's Jobs API could not be read (unreachable, timed out, an error answered): whether a driver still
    runs there is unknown."""

    error: str


# The submission ids of the jobs that have not ended, sorted; or why they could not be read.
HeadJobs = tuple[str, ...] | JobsUnreadable


@dataclass(frozen=True)
class HeadStays:
    """The head stays this turn, and why (the same while the wait is the same: its note is posted once)."""

    why: str
    recheck: float  # seconds until the Jobs API is read again

    @property
    def note(self) -> Note:
        return EventReason.SUSPEND_WAITING, f"cluster is suspended: {self.why}"


@dataclass(frozen=True)
class HeadGoes:
    """The head goes; `note` (a Warning) when jobs may be cut off at the bound, None when none was running."""

    note: Note | None = None


def serves_jobs_api(cluster: ClusterSpec) -> bool:
    """Whether the head runs its dashboard, which serves the Jobs API (off with rayStartParams include-dashboard)."""
    value = cluster.head.ray_start_params.get("include-dashboard")
    return value is None or value.strip().lower() not in DASHBOARD_OFF


def _jobs_text(ids: tuple[str, ...]) -> str:
    shown = ", ".join(ids[:SHOWN_JOBS])
    return shown + (f" and {len(ids) - SHOWN_JOBS} more" if len(ids) > SHOWN_JOBS else "")


def head_for_jobs(jobs: HeadJobs, suspended_since: float, now: float, bound: int) -> HeadStays | HeadGoes:
    """Whether the live head of a suspended cluster with no worker left running stays for its Ray jobs (`jobs`),
    `bound` seconds at most from `suspended_since`."""
    until = suspended_since + bound
    if not jobs:
        return HeadGoes()
    if isinstance(jobs, JobsUnreadable):
        if now >= until:
            return HeadGoes((EventReason.SUSPEND_TIMED_OUT,
                             f"cluster is suspended: the head goes at the bound (updateStrategy.drainTimeoutSeconds "
                             f"{bound}s) though its Jobs API could not be read ({jobs.error}); a Ray job's driver "
                             "may have been running there"))
        return HeadStays("the head stays while its Jobs API cannot be read (a Ray job's driver may run there), at "
                         f"most until {timestamp(until)}", min(JOBS_POLL_SECONDS, until - now))
    if now >= until:
        return HeadGoes((EventReason.SUSPEND_TIMED_OUT,
                         f"cluster is suspended: the head goes at the bound (updateStrategy.drainTimeoutSeconds "
                         f"{bound}s) while Ray job(s) {_jobs_text(jobs)} still run; their drivers end with it"))
    return HeadStays(f"the head stays while Ray job(s) {_jobs_text(jobs)} run, at most until {timestamp(until)}",
                     min(JOBS_POLL_SECONDS, until - now))
