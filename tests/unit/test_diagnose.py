"""localcluster/diagnose.py: what `make demo` prints when the Ray cluster does not come up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from localcluster import diagnose

STATUS = {"phase": "Pending", "conditions": [
    {"type": "Valid", "status": "True", "reason": "SpecValid", "message": "spec accepted"},
    {"type": "HeadReady", "status": "False", "reason": "CrashLoop", "message": "head failed 3 times in a row"},
    {"type": "ReplicaFailure", "status": "False", "reason": "NoFailures", "message": "no recent worker failures"},
    {"type": "Suspended", "status": "False", "reason": "Active", "message": "cluster is active"},
]}


def event(name: str, at: str, reason: str, message: str, count: int = 1, kind: str = "Pod") -> dict[str, Any]:
    return {"involvedObject": {"kind": kind, "name": name}, "lastTimestamp": at, "type": "Warning",
            "reason": reason, "message": message, "count": count}


def test_only_troubled_conditions() -> None:
    assert diagnose.troubled_conditions(STATUS) == ["HeadReady=False CrashLoop: head failed 3 times in a row"]


def test_last_events_of_the_cluster_and_its_pods_oldest_first() -> None:
    events = [event("demo-head", "2026-12-06T10:00:02Z", "Failed", "exec failed", count=3),
              event("other-head", "2026-12-06T10:00:09Z", "Failed", "not ours"),
              event("demo", "2026-12-06T10:00:01Z", "Replacing", "head demo-head: …", kind="SwarmCluster"),
              event("demo-cpu-x", "2026-12-06T10:00:05Z", "Started", "Started container ray")]
    assert diagnose.last_events(events, "demo", limit=2) == [
        "2026-12-06T10:00:02Z Warning Failed Pod/demo-head: exec failed (×3)",
        "2026-12-06T10:00:05Z Warning Started Pod/demo-cpu-x: Started container ray"]


def write_log(root: Path, pod_dir: str, text: str, mtime: float) -> Path:
    log = root / "node-a" / "pods" / pod_dir / "logs" / "ray.log"
    log.parent.mkdir(parents=True)
    log.write_text(text)
    os.utime(log, (mtime, mtime))
    return log


def test_the_failing_pods_newest_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose.paths, "nodes_root", lambda: tmp_path)
    old = write_log(tmp_path, "ns_demo-head_aaaaaaaa", "old failure\n", 1000)
    write_log(tmp_path, "ns_demo-head_bbbbbbbb", "", 3000)  # just started, wrote nothing yet
    write_log(tmp_path, "ns_demo-cpu-x_cccccccc", "healthy worker\n", 4000)
    write_log(tmp_path, "ns_other-head_dddddddd", "another cluster\n", 5000)
    newest = write_log(tmp_path, "ns_demo-head_eeeeeeee", "line\n" * 30 + "cannot exec ray\n", 2000)
    assert diagnose.failing_pod_log("ns", "demo", ["cccccccc-1234"]) == newest
    assert diagnose.tail(newest)[-1] == "cannot exec ray" and len(diagnose.tail(newest)) == diagnose.LOG_LINES
    assert diagnose.failing_pod_log("ns", "demo", ["cccccccc-1234", "eeeeeeee-5678"]) == old
    report = diagnose.report(STATUS, [], "ns", "demo", ["cccccccc-1234"])
    assert report.splitlines()[:4] == ["SwarmCluster ns/demo: phase Pending",
                                       "  HeadReady=False CrashLoop: head failed 3 times in a row",
                                       "its last events (newest last, at most 12):", "  none"]
    assert report.endswith("  cannot exec ray")
