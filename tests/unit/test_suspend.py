"""A suspended cluster's head and its Ray jobs: the decision (reconcile/suspend.py), when the suspension began
(status.py), what the Suspended condition says, and the Jobs API read (jobs/rayapi.py) against a real HTTP server
on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from swarm_operator.jobs import rayapi
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.reasons import ConditionType, EventReason
from swarm_operator.reconcile.suspend import (
    JOBS_POLL_SECONDS,
    HeadGoes,
    HeadJobs,
    HeadStays,
    JobsUnreadable,
    head_for_jobs,
    serves_jobs_api,
)
from swarm_operator.status import Persisted, cluster_status, suspended_since
from tests.unit.operator_fixtures import NOW, cluster, head, iso, workers

BOUND = 600


@pytest.mark.parametrize(
    ("jobs", "since", "expected"),
    [
        pytest.param((), NOW - 10, HeadGoes(), id="no-job"),
        pytest.param((), NOW - 10_000, HeadGoes(), id="no-job-long-after"),
        pytest.param(("a",), NOW - 10, HeadStays(f"the head stays while Ray job(s) a run, at most until "
                                                 f"{iso(NOW + 590)}", JOBS_POLL_SECONDS), id="one-job"),
        pytest.param(("a", "b"), NOW, HeadStays(f"the head stays while Ray job(s) a, b run, at most until "
                                                f"{iso(NOW + 600)}", JOBS_POLL_SECONDS), id="just-suspended"),
        pytest.param(tuple("abcdefg"), NOW - 10, HeadStays(f"the head stays while Ray job(s) a, b, c, d, e and 2 more "
                                                           f"run, at most until {iso(NOW + 590)}", JOBS_POLL_SECONDS),
                     id="many-jobs-counted"),
        pytest.param(("a",), NOW - 599, HeadStays(f"the head stays while Ray job(s) a run, at most until "
                                                  f"{iso(NOW + 1)}", 1.0), id="read-again-at-the-bound"),
        pytest.param(("a",), NOW - 600, HeadGoes((EventReason.SUSPEND_TIMED_OUT, "cluster is suspended: the head goes "
                                                  "at the bound (updateStrategy.drainTimeoutSeconds 600s) while Ray "
                                                  "job(s) a still run; their drivers end with it")), id="at-the-bound"),
        pytest.param(JobsUnreadable("refused"), NOW - 10,
                     HeadStays("the head stays while its Jobs API cannot be read (a Ray job's driver may run there), "
                               f"at most until {iso(NOW + 590)}", JOBS_POLL_SECONDS), id="unreadable"),
        pytest.param(JobsUnreadable("refused"), NOW - 700,
                     HeadGoes((EventReason.SUSPEND_TIMED_OUT, "cluster is suspended: the head goes at the bound "
                               "(updateStrategy.drainTimeoutSeconds 600s) though its Jobs API could not be read "
                               "(refused); a Ray job's driver may have been running there")),
                     id="unreadable-past-the-bound"),
    ],
)
def test_head_for_jobs(jobs: HeadJobs, since: float, expected: HeadStays | HeadGoes) -> None:
    assert head_for_jobs(jobs, since, NOW, BOUND) == expected


def test_the_wait_note_is_the_same_every_turn_whatever_the_error() -> None:
    """Posted once while it holds (turn.py posts a note when the plan's notes change)."""
    first = head_for_jobs(JobsUnreadable("timed out"), NOW - 10, NOW, BOUND)
    later = head_for_jobs(JobsUnreadable("connection refused"), NOW - 10, NOW + 7, BOUND)
    assert isinstance(first, HeadStays) and isinstance(later, HeadStays) and first.note == later.note
    assert first.note[0] is EventReason.SUSPEND_WAITING and first.note[0].event_type == "Normal"
    assert EventReason.SUSPEND_TIMED_OUT.event_type == "Warning"


@pytest.mark.parametrize(
    ("params", "served"),
    [
        pytest.param({}, True, id="default"),
        pytest.param({"include-dashboard": "true"}, True, id="true"),
        pytest.param({"include-dashboard": "false"}, False, id="false"),
        pytest.param({"include-dashboard": " False "}, False, id="False"),
        pytest.param({"include-dashboard": "0"}, False, id="zero"),
        pytest.param({"object-store-memory": "100000000"}, True, id="other-flags"),
    ],
)
def test_serves_jobs_api(params: dict[str, str], served: bool) -> None:
    c = cluster({"head": {"resources": {"cpu": "1", "memory": "2Gi"}, "rayStartParams": params}})
    assert serves_jobs_api(c) is served


def _suspended(status: str, when: str | None) -> dict[str, Any]:
    c: dict[str, Any] = {"type": ConditionType.SUSPENDED.value, "status": status}
    if when is not None:
        c["lastTransitionTime"] = when
    return {"conditions": [{"type": "Valid", "status": "True", "lastTransitionTime": iso(NOW - 5000)}, c]}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({}, NOW, id="no-status-begins-now"),
        pytest.param(_suspended("False", iso(NOW - 300)), NOW, id="active-until-now"),
        pytest.param(_suspended("True", iso(NOW - 300)), NOW - 300, id="suspended-since"),
        pytest.param(_suspended("True", None), NOW, id="no-time"),
        pytest.param(_suspended("True", "yesterday"), NOW, id="unreadable-time"),
    ],
)
def test_suspended_since(status: dict[str, Any], expected: float) -> None:
    assert suspended_since(status, NOW) == expected


def test_the_suspended_condition_says_why_the_head_stays() -> None:
    c = cluster({"suspend": True})
    kept = Persisted(targets={"cpu": 0})
    why = f"the head stays while Ray job(s) a run, at most until {iso(NOW + 600)}"

    def message(pods: list[Any], head_kept: str) -> str:
        status = cluster_status(c, pods, kept, {}, NOW, None, head_kept=head_kept)
        (cond,) = [x for x in status["conditions"] if x["type"] == ConditionType.SUSPENDED.value]
        return str(cond["message"])

    assert message([head(c)], why) == f"spec.suspend is true; {why}"
    assert message([head(c)], "") == "spec.suspend is true"
    assert message([head(c), *workers(c, 2)], "") == ("spec.suspend is true; 2 worker(s) still running (0 draining "
                                                      "in Ray), then the head goes")


# -- the Jobs API read, over real HTTP on loopback ---------------------------------------------------------------

class JobsApi(BaseHTTPRequestHandler):
    """GET /api/jobs/ answers `answer` (status, body); the token it was sent is kept."""

    answer: ClassVar[tuple[int, bytes]] = (200, b"[]")
    seen_auth: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization"))
        assert self.path == "/api/jobs/", self.path
        status, body = type(self).answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def jobs_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[JobsApi]]:
    """A Jobs API on 127.0.0.1 at a free port, which the client is pointed at (it dials DASHBOARD_PORT)."""
    handler = type("Handler", (JobsApi,), {"seen_auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    monkeypatch.setattr(rayapi, "DASHBOARD_PORT", server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()
    thread.join()


def _job(sid: str | None, status: str, kind: str = "SUBMISSION") -> dict[str, Any]:
    return {"type": kind, "submission_id": sid, "job_id": "02000000", "status": status, "entrypoint": "python x.py"}


LISTED = [_job("raysubmit_b", "RUNNING"), _job("raysubmit_a", "PENDING"), _job("done", "SUCCEEDED"),
          _job("failed", "FAILED"), _job("stopped", "STOPPED"), _job(None, "RUNNING", kind="DRIVER")]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param((200, json.dumps(LISTED).encode()), ("raysubmit_a", "raysubmit_b"), id="unended-submissions"),
        pytest.param((200, b"[]"), (), id="none"),
        pytest.param((200, json.dumps(LISTED[2:]).encode()), (), id="all-ended-or-drivers"),
        pytest.param((500, b"boom"), JobsUnreadable("500: boom"), id="server-error"),
        pytest.param((200, b"<html>"), "Expecting value", id="not-json"),
        pytest.param((200, b"{}"), "the Jobs API listed no jobs", id="not-a-list"),
    ],
)
def test_unended_submissions(jobs_api: type[JobsApi], answer: tuple[int, bytes], expected: HeadJobs | str) -> None:
    jobs_api.answer = answer
    got = RayJobsClient().unended_submissions("127.0.0.1", "tok")
    if isinstance(expected, str):
        assert isinstance(got, JobsUnreadable) and expected in got.error, got
    else:
        assert got == expected
    assert jobs_api.seen_auth == ["Bearer tok"]


def test_unended_submissions_of_a_head_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setattr(rayapi, "DASHBOARD_PORT", sock.getsockname()[1])
        got = RayJobsClient().unended_submissions("127.0.0.1", None)
    assert isinstance(got, JobsUnreadable) and got.error, got
