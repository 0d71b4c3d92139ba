"""A Ray cluster on process nodes, seen from the host: the GCS's node states and the Jobs API.

The host reaches every pod IP over the process nodes' bridge, so the demo and the
end-to-end tests talk to the head pod directly: the GCS (what the operator's autoscaler reads)
and the dashboard's Jobs API (plain HTTP, as `ray job submit` does), on the ports the operator's
head pod declares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swarm_operator.resources.pods import DASHBOARD_PORT, GCS_PORT

TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")

# Runs in a child process: importing ray here would leave its threads (and ~75 MiB) in the
# demo's or pytest's process for good. Argument: the GCS's host:port. On kind it runs inside the head's pod.
GCS_PROBE = """
import json, sys
from ray._raylet import GcsClient
from ray.autoscaler.v2.sdk import get_cluster_resource_state
from ray.core.generated.autoscaler_pb2 import NodeStatus
state = get_cluster_resource_state(GcsClient(address=sys.argv[1]))
print(json.dumps([{
    "instance_id": n.instance_id, "node_type": n.ray_node_type_name, "ip": n.node_ip_address,
    "node_id": n.node_id.hex(), "status": NodeStatus.Name(n.status),
    "total": dict(n.total_resources), "available": dict(n.available_resources),
} for n in state.node_states]))
"""


@dataclass(frozen=True)
class RayNode:
    """One node as the GCS reports it (``instance_id`` is the pod's name: RAY_CLOUD_INSTANCE_ID)."""

    instance_id: str
    node_type: str
    ip: str
    node_id: str
    status: str  # RUNNING, IDLE, DRAINING or DEAD
    total: dict[str, float]
    available: dict[str, float]

    @property
    def alive(self) -> bool:
        return self.status != "DEAD"


def ray_nodes(head_ip: str, timeout: float = 30.0) -> list[RayNode]:
    """Every node the GCS of the head at ``head_ip`` knows, dead ones included.

    Raises ``subprocess.CalledProcessError`` when the GCS does not answer (not up yet, gone).
    """
    env = {**os.environ,
           # An unreachable GCS would otherwise block the client for 40 s before failing.
           "RAY_py_gcs_connect_timeout_s": "5", "RAY_gcs_rpc_server_connect_timeout_s": "5"}
    out = subprocess.run([sys.executable, "-c", GCS_PROBE, f"{head_ip}:{GCS_PORT}"], env=env, capture_output=True,
                         text=True, timeout=timeout, check=True).stdout
    return parse_nodes(out)


def parse_nodes(probe_output: str) -> list[RayNode]:
    """What GCS_PROBE printed, as RayNodes."""
    return [RayNode(**n) for n in json.loads(probe_output)]


def _jobs_url(head: str, path: str = "") -> str:
    """``head``: the head pod's IP (its dashboard port is the operator's), or host:port of a port-forward to it."""
    address = head if ":" in head else f"{head}:{DASHBOARD_PORT}"
    return f"http://{address}/api/jobs/{path}"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def submit_job(head_ip: str, entrypoint: str, metadata: dict[str, str] | None = None) -> str:
    """POST a job (what ``ray job submit`` does); returns its submission id."""
    body: dict[str, Any] = {"entrypoint": entrypoint}
    if metadata:
        body["metadata"] = metadata
    req = urllib.request.Request(_jobs_url(head_ip), data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.load(resp)["submission_id"])


def stop_job(head_ip: str, job_id: str) -> None:
    """Ask Ray to stop the job (what ``ray job stop`` does)."""
    req = urllib.request.Request(_jobs_url(head_ip, f"{job_id}/stop"), data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30):
        pass


def list_jobs(head_ip: str) -> list[dict[str, Any]]:
    """Every job the head's Jobs API knows (its history lives in the GCS)."""
    return list(_get(_jobs_url(head_ip)))


def job_info(head_ip: str, job_id: str) -> dict[str, Any]:
    """The job's details: status, message, start/end times, driver exit code, …"""
    return dict(_get(_jobs_url(head_ip, job_id)))


def job_logs(head_ip: str, job_id: str) -> str:
    """Everything the job's driver wrote so far."""
    return str(_get(_jobs_url(head_ip, f"{job_id}/logs"))["logs"])


def wait_job(head_ip: str, job_id: str, timeout: float = 120.0,
             on_status: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Poll the job until it ends; ``on_status(status, elapsed)`` hears every change. Returns job_info.

    Raises TimeoutError if it has not ended after ``timeout`` seconds.
    """
    start = time.monotonic()
    last = ""
    while True:
        info = job_info(head_ip, job_id)
        if info["status"] != last:
            last = info["status"]
            if on_status is not None:
                on_status(last, time.monotonic() - start)
        if last in TERMINAL_JOB_STATES:
            return info
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"job {job_id} still {last} after {timeout:.0f}s")
        time.sleep(0.5)
