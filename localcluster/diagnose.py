"""What a SwarmCluster that did not come up shows, for `make demo` to print when it gives up: its conditions
that are not True, the last Events of it and its pods, and the last lines a failing pod wrote on this host's
process nodes (their logs outlive the pods, which the operator replaces)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from localcluster.nodeagent import paths

EVENTS = 12
LOG_LINES = 20


# The status of each condition that says something is wrong.
TROUBLE = {"Valid": "False", "HeadReady": "False", "WorkersReady": "False", "ReplicaFailure": "True"}


def troubled_conditions(status: Mapping[str, Any]) -> list[str]:
    return [f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
            for c in status.get("conditions") or [] if TROUBLE.get(str(c.get("type"))) == c.get("status")]


def _when(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def last_events(events: Iterable[Mapping[str, Any]], cluster: str, limit: int = EVENTS) -> list[str]:
    """The newest ``limit`` Events about the cluster or its pods (named ``<cluster>-…``), oldest first."""
    mine = [e for e in events if (name := str((e.get("involvedObject") or {}).get("name") or "")) == cluster
            or name.startswith(f"{cluster}-")]
    mine.sort(key=_when)
    return [f"{_when(e)} {e.get('type')} {e.get('reason')} {e['involvedObject'].get('kind')}/"
            f"{e['involvedObject'].get('name')}: {e.get('message')}" + _repeats(e) for e in mine[-limit:]]


def _repeats(event: Mapping[str, Any]) -> str:
    count = int(event.get("count") or 1)
    return f" (×{count})" if count > 1 else ""


def failing_pod_log(namespace: str, cluster: str, healthy_uids: Iterable[str]) -> Path | None:
    """The newest non-empty container log of a pod of ``cluster`` on this host that is not healthy now."""
    healthy = {uid[:8] for uid in healthy_uids}
    logs = [log for log in paths.nodes_root().glob(f"*/pods/{namespace}_{cluster}-*_*/logs/*.log")
            if log.parent.parent.name.rsplit("_", 1)[-1] not in healthy and log.stat().st_size > 0]
    return max(logs, key=lambda p: p.stat().st_mtime, default=None)


def tail(path: Path, lines: int = LOG_LINES) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]


def report(status: Mapping[str, Any], events: Iterable[Mapping[str, Any]], namespace: str, cluster: str,
           healthy_uids: Iterable[str]) -> str:
    out = [f"SwarmCluster {namespace}/{cluster}: phase {status.get('phase') or 'unknown'}"]
    out += [f"  {line}" for line in troubled_conditions(status)]
    out.append(f"its last events (newest last, at most {EVENTS}):")
    out += [f"  {line}" for line in last_events(events, cluster)] or ["  none"]
    log = failing_pod_log(namespace, cluster, healthy_uids)
    if log is None:
        out.append("no pod of it that is not ready has written anything on this host")
    else:
        out.append(f"the last lines of {log}:")
        out += [f"  {line}" for line in tail(log)]
    return "\n".join(out)
