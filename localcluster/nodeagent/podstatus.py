"""A pod's status as a kubelet reports it: its phase, the conditions this node owns (each with the time it
last changed), its containers' statuses and its IPs."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from typing import Any

from localcluster.nodeagent.containers import Container
from swarm_operator.times import timestamp

TERMINAL = ("Succeeded", "Failed")


def phase(init_failed: bool, containers: Sequence[Container]) -> str:
    if init_failed:
        return "Failed"
    if all(c.done for c in containers):
        # A container stopped before it ever ran has no exit code: that is a failure too.
        codes = [c.state.get("terminated", {}).get("exitCode") for c in containers]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    if any(c.proc is not None or c.restart_count for c in containers):
        return "Running"
    return "Pending"


class Conditions:
    """The pod conditions this node sets, each with its last transition time."""

    def __init__(self) -> None:
        self._by_type: dict[str, tuple[str, str]] = {}  # type → (status, lastTransitionTime)

    def set(self, kind: str, value: bool) -> None:
        status = "True" if value else "False"
        old = self._by_type.get(kind)
        if old is None or old[0] != status:
            self._by_type[kind] = (status, timestamp(time.time()))

    def merged(self, current: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``current`` (the pod's stored conditions) with ours in place of theirs; others' kept."""
        kept = [c for c in current if c.get("type") not in self._by_type]
        return kept + [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": at}
                       for t, (s, at) in sorted(self._by_type.items())]


def pod_status(phase: str, host_ip: str, conditions: list[dict[str, Any]], containers: Sequence[Container],
               init_containers: Sequence[Container], start_time: str | None,
               address: ipaddress.IPv4Address | None, reason: str | None = None,
               message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "conditions": conditions,
        "containerStatuses": [c.status() for c in containers],
    }
    if init_containers:
        status["initContainerStatuses"] = [c.status() for c in init_containers]
    if start_time:
        status["startTime"] = start_time
    if address is not None:
        status["podIP"] = str(address)
        status["podIPs"] = [{"ip": str(address)}]
    if reason:
        status.update(reason=reason, message=message or reason)
    return status


def ran_before(status: dict[str, Any]) -> bool:
    """Whether a container of the pod was started before (by an earlier agent of this node)."""
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return any("containerID" in st or {"running", "terminated"} & set(st.get("state") or {}) for st in statuses)


def ip_of(status: dict[str, Any]) -> ipaddress.IPv4Address | None:
    text = status.get("podIP")
    return ipaddress.IPv4Address(text) if text else None
