"""The whole suite: on CI (CI=true), a test of the tiers that need root, `ip` and real processes may not skip.

Those tiers (e2e, chaos, packaging, kind; tests/ray is marked e2e) skip when their machine lacks something. On a
developer's machine that is a convenience; on CI it would make a green run that tested nothing, so the run
fails instead, naming each skipped test and its reason.
"""

from __future__ import annotations

import itertools
import os
from pathlib import PurePosixPath

import pytest

GATED_TIERS = ("e2e", "chaos", "packaging", "kind")

_skipped: list[tuple[str, str]] = []  # (test id, reason)


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _gated(report: pytest.TestReport) -> bool:
    parts = PurePosixPath(report.nodeid.split("::", 1)[0]).parts
    in_tier = any(a == "tests" and b in GATED_TIERS for a, b in itertools.pairwise(parts))
    return in_tier or any(tier in report.keywords for tier in GATED_TIERS)


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and _on_ci() and _gated(report):
        _skipped.append((report.nodeid, _reason(report)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        terminalreporter.section("skipped on CI (CI=true): these tiers must run", red=True)
        for nodeid, reason in _skipped:
            terminalreporter.line(f"{nodeid}: {reason}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
