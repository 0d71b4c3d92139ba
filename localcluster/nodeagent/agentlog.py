"""The node agent's own log lines, and the error it stops with."""

from __future__ import annotations

from datetime import UTC, datetime


class AgentError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"{datetime.now(UTC).strftime('%H:%M:%S.%f')[:-3]} [nodeagent] {msg}", flush=True)
