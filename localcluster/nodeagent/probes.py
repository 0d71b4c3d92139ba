"""Readiness, liveness and startup probes, with a kubelet's timing and thresholds.

httpGet and tcpSocket run from the host against the pod IP (the bridge makes it
reachable); exec runs inside the container's namespaces through ``nsenter``. grpc probes
are not implemented: they count as passing, and the pod's log says so once.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localcluster.nodeagent.podspec import container_port

USER_AGENT = "kube-probe/1.36"
UNSUPPORTED = "not supported: counted as passing"
_TIMING = {"initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold",
           "terminationGracePeriodSeconds"}


@dataclass
class Probe:
    """One probe of one container run. ``verdict`` follows the thresholds: readiness starts
    failing (not ready until proven), liveness starts passing, startup starts undecided."""

    kind: str  # "readiness" | "liveness" | "startup"
    spec: Mapping[str, Any]
    started: float  # monotonic time the container started
    verdict: bool | None = None
    successes: int = 0
    failures: int = 0
    next_due: float = 0.0

    def __post_init__(self) -> None:
        self.verdict = {"readiness": False, "liveness": True}.get(self.kind)

    def _int(self, key: str, default: int) -> int:
        return int(self.spec.get(key) or default)

    @property
    def timeout(self) -> float:
        return float(self._int("timeoutSeconds", 1))

    def due(self, now: float) -> bool:
        return now >= max(self.started + self._int("initialDelaySeconds", 0), self.next_due)

    def record(self, ok: bool, now: float) -> bool:
        """Count one result; True when the verdict changed."""
        self.next_due = now + self._int("periodSeconds", 10)
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            # Liveness and startup need one success (the API forces successThreshold=1 for them).
            threshold = self._int("successThreshold", 1) if self.kind == "readiness" else 1
            new = True if self.successes >= threshold else self.verdict
        else:
            self.successes, self.failures = 0, self.failures + 1
            new = False if self.failures >= self._int("failureThreshold", 3) else self.verdict
        changed = new != self.verdict
        self.verdict = new
        return changed


def check(spec: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, main_pid: int,
          env: Mapping[str, str], timeout: float) -> tuple[bool, str]:
    """Run the probe once: (passed, what happened)."""
    try:
        if "httpGet" in spec:
            return _http(spec["httpGet"], container, pod_ip, timeout)
        if "tcpSocket" in spec:
            port = container_port(container, spec["tcpSocket"]["port"])
            with socket.create_connection((spec["tcpSocket"].get("host") or pod_ip, port), timeout=timeout):
                return True, f"tcp :{port} open"
        if "exec" in spec:
            return _exec(spec["exec"]["command"], main_pid, env, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"probe type {sorted(k for k in spec if k not in _TIMING)} {UNSUPPORTED}"


def _http(get: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, timeout: float) -> tuple[bool, str]:
    port = container_port(container, get["port"])
    host = get.get("host") or pod_ip
    conn: http.client.HTTPConnection
    if get.get("scheme", "HTTP").upper() == "HTTPS":
        # A kubelet does not verify probe certificates either.
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": USER_AGENT, **{h["name"]: h["value"] for h in get.get("httpHeaders") or []}}
    try:
        conn.request("GET", get.get("path") or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    return 200 <= status < 400, f"HTTP {status} from {host}:{port}{get.get('path') or '/'}"


def _exec(command: list[str], main_pid: int, env: Mapping[str, str], timeout: float) -> tuple[bool, str]:
    nsenter = shutil.which("nsenter", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if nsenter is None:
        return False, "nsenter is not installed"
    # Enter the container's mount (its /tmp, /etc/hosts), UTS and network namespaces.
    try:
        proc = subprocess.run([nsenter, "-t", str(main_pid), "-m", "-u", "-n", "--", *command], env=dict(env),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"exec {command} timed out after {timeout:.0f}s"
    return proc.returncode == 0, f"exec {command} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-200:]}"
