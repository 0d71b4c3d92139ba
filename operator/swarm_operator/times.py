"""Kubernetes' time formats, each defined once: RFC 3339 text from epoch seconds and back. Pure."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def timestamp(epoch: float) -> str:
    """A ``Time`` (whole seconds), as status conditions and annotations carry it."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(epoch: float) -> str:
    """A ``MicroTime`` (microseconds), as Leases and Events want it."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def deadline_timestamp(epoch: float) -> str:
    """Milliseconds, rounded up: a deadline read back from status must not end early (a second's
    rounding would turn the first 1 s backoff into anything from 0 to 2 s)."""
    seconds, millis = divmod(math.ceil(epoch * 1000 - 1e-6), 1000)  # the epsilon: re-reads round-trip
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def parse_time(text: str | None) -> float:
    """Epoch seconds from any of the above (or an offset form); 0.0 for none."""
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
