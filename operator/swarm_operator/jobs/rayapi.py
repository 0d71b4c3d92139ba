"""The one module that talks to Ray's Jobs API: HTTP to the head's dashboard (port 8265), as `ray job submit`
does, with `Authorization: Bearer <token>` on a token-auth cluster. SwarmJobs submit, read and stop their jobs
through it; a suspended SwarmCluster's turn lists the jobs its head still runs (reconcile/suspend.py).

Blocking (urllib3); the turn runs each call off the event loop. Short timeouts: an unreachable head must not
hold a worker, the state machine has its own deadline for "the status cannot be read".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import urllib3

from swarm_operator.jobs.machine import TERMINAL_RAY, RayJob, RayJobMissing, RayUnreachable, RayView
from swarm_operator.jobs.spec import JobSpec
from swarm_operator.jobs.status import log_tail
from swarm_operator.reconcile.suspend import HeadJobs, JobsUnreadable
from swarm_operator.resources.pods import DASHBOARD_PORT

log = logging.getLogger(__name__)
TIMEOUT = urllib3.Timeout(connect=3.0, read=15.0)
# Listing a suspended cluster's jobs is a read inside a SwarmCluster's turn: a head that does not answer must
# not hold the turn (the caller counts it unreadable and looks again).
LIST_TIMEOUT = urllib3.Timeout(connect=1.0, read=3.0)


class JobsApiError(Exception):
    """The Jobs API answered with an error (status ≥ 400 other than the ones a caller expects)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:500]}")
        self.status = status
        self.text = text


def submission_body(job: JobSpec, submission_id: str) -> dict[str, Any]:
    """The POST /api/jobs/ request for one attempt (Ray's JobSubmitRequest)."""
    body: dict[str, Any] = {"entrypoint": job.entrypoint, "submission_id": submission_id,
                            "metadata": {**job.metadata, "swarm.io/job": job.name, "swarm.io/job-uid": job.uid}}
    if job.runtime_env:
        body["runtime_env"] = dict(job.runtime_env)
    res = job.entrypoint_resources
    if res.num_cpus:
        body["entrypoint_num_cpus"] = res.num_cpus
    if res.num_gpus:
        body["entrypoint_num_gpus"] = res.num_gpus
    if res.resources:
        body["entrypoint_resources"] = dict(res.resources)
    return body


def submitted_at(info: Mapping[str, Any]) -> float:
    """Ray's start_time of a job (ms since the epoch, set when it took the submission) in seconds; 0 if absent."""
    try:
        return float(info.get("start_time") or 0) / 1000.0
    except (TypeError, ValueError):
        return 0.0


class RayJobsClient:
    def __init__(self, pool_size: int = 8) -> None:
        self._http = urllib3.PoolManager(num_pools=64, maxsize=pool_size, block=False, retries=False,
                                         timeout=TIMEOUT)

    def _request(self, method: str, head_ip: str, path: str, token: str | None,
                 body: Mapping[str, Any] | None = None, timeout: urllib3.Timeout = TIMEOUT) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        resp = self._http.request(method, f"http://{head_ip}:{DASHBOARD_PORT}/api/jobs/{path}", headers=headers,
                                  body=json.dumps(body).encode() if body is not None else None, timeout=timeout)
        return resp.status, resp.data

    def info(self, head_ip: str, job_id: str, token: str | None) -> dict[str, Any] | None:
        """The job's details; None when Ray knows no such job. Raises on anything else."""
        status, data = self._request("GET", head_ip, quote(job_id), token)
        if status == 404:
            return None
        if status >= 400:
            raise JobsApiError(status, data.decode(errors="replace"))
        return dict(json.loads(data))

    def unended_submissions(self, head_ip: str, token: str | None) -> HeadJobs:
        """The submission ids of the jobs the Jobs API lists as not ended (PENDING, RUNNING): their drivers run
        on the head. Jobs of type DRIVER (`ray.init` from a shell, a notebook, Ray Client) are not counted: the Jobs
        API keeps no result of theirs, and a session left connected would hold every suspension to its bound."""
        try:
            status, data = self._request("GET", head_ip, "", token, timeout=LIST_TIMEOUT)
            if status >= 400:
                raise JobsApiError(status, data.decode(errors="replace"))
            listed = json.loads(data)
            if not isinstance(listed, list):
                raise ValueError(f"the Jobs API listed no jobs: {data[:200]!r}")
            return tuple(sorted(str(j.get("submission_id")) for j in listed if isinstance(j, dict)
                                and j.get("type") == "SUBMISSION" and j.get("status") not in TERMINAL_RAY))
        except (JobsApiError, urllib3.exceptions.HTTPError, ValueError) as exc:
            return JobsUnreadable(str(exc) or type(exc).__name__)

    def logs(self, head_ip: str, job_id: str, token: str | None) -> str:
        status, data = self._request("GET", head_ip, f"{quote(job_id)}/logs", token)
        if status >= 400:
            raise JobsApiError(status, data.decode(errors="replace"))
        return str(json.loads(data).get("logs") or "")

    def observe(self, head_ip: str, job_id: str, token: str | None) -> RayView:
        """The attempt's Ray job as the machine reads it; with the driver's last lines once it ended badly."""
        try:
            info = self.info(head_ip, job_id, token)
            if info is None:
                return RayJobMissing()
            status = str(info.get("status") or "")
            tail = ""
            if status in TERMINAL_RAY and status != "SUCCEEDED":
                try:
                    tail = log_tail(self.logs(head_ip, job_id, token))
                except (JobsApiError, urllib3.exceptions.HTTPError, ValueError) as exc:
                    tail = f"(the driver's log could not be read: {exc})"
            return RayJob(status, str(info.get("message") or ""), tail, submitted_at(info))
        except (JobsApiError, urllib3.exceptions.HTTPError, ValueError) as exc:
            return RayUnreachable(str(exc))

    def submit_once(self, head_ip: str, body: Mapping[str, Any], token: str | None) -> bool:
        """Submit unless Ray knows the submission id already (looked up first: an operator restarted between
        the POST and its status write finds its job). True when this call submitted it."""
        job_id = str(body["submission_id"])
        if self.info(head_ip, job_id, token) is not None:
            return False
        status, data = self._request("POST", head_ip, "", token, body)
        text = data.decode(errors="replace")
        if status == 400 and "already exists" in text:
            return False  # submitted meanwhile: Ray refuses a repeated submission id
        if status >= 400:
            raise JobsApiError(status, text)
        return True

    def stop(self, head_ip: str, job_id: str, token: str | None) -> None:
        """Ask Ray to stop the job; one that is gone already is success."""
        status, data = self._request("POST", head_ip, f"{quote(job_id)}/stop", token, {})
        if status >= 400 and status != 404:
            raise JobsApiError(status, data.decode(errors="replace"))
