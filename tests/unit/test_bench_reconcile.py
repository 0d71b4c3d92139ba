"""bench/reconcile.py's targets at its largest size: each one missed fails the run."""

from __future__ import annotations

from typing import Any

import pytest

from bench.reconcile import check_targets

MET = {"n": 500, "pods": 2000, "running": 2000, "all_running_s": 39.5, "rss_mib": 143.0, "op_req_per_cluster": 8.5}


@pytest.mark.parametrize(("change", "expected"), [
    pytest.param({}, [True, True, True], id="all-met"),
    pytest.param({"all_running_s": 60.0}, [False, True, True], id="too-slow"),
    pytest.param({"running": 1999}, [False, True, True], id="a-pod-never-ran"),
    pytest.param({"rss_mib": 150.0}, [True, False, True], id="too-much-memory"),
    pytest.param({"op_req_per_cluster": 10.1}, [True, True, False], id="too-many-requests"),
])
def test_check_targets(change: dict[str, Any], expected: list[bool]) -> None:
    assert [met for _, met in check_targets(MET | change)] == expected
