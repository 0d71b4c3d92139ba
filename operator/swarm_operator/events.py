"""Which Event a new occurrence updates, as client-go's EventCorrelator decides it. Pure.

The same type and reason on the same object within `window` seconds of the last one
updates that Event (count + 1, lastTimestamp, the newest message) instead of creating
another: a crash-looping worker group leaves one "Replacing" Event with a count, not
thousands of objects in etcd. Remembered in memory only: after a restart the next
occurrence starts a new Event, as client-go's does.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

COMBINED = "(combined from similar events): "


@dataclass(frozen=True)
class EventKey:
    namespace: str
    name: str
    uid: str
    type: str
    reason: str


@dataclass(frozen=True)
class Posted:
    """An Event as the API server stored it, and when this operator last posted it."""

    event_name: str
    count: int
    message: str
    last_seen: float


@dataclass(frozen=True)
class Update:
    """Patch the existing Event `event_name` to this count and message."""

    event_name: str
    count: int
    message: str


class EventAggregator:
    """Remembers the last Event per (object, type, reason); bounded, the oldest forgotten first."""

    def __init__(self, window: float = 600.0, max_keys: int = 4096) -> None:
        self.window = window
        self.max_keys = max_keys
        self._posted: OrderedDict[EventKey, Posted] = OrderedDict()

    def update_for(self, key: EventKey, message: str, now: float) -> Update | None:
        """The update to make instead of a new Event; None: create one."""
        last = self._posted.get(key)
        if last is None or now - last.last_seen > self.window:
            return None
        shown = last.message if last.message in (message, COMBINED + message) else COMBINED + message
        return Update(last.event_name, last.count + 1, shown)

    def remember(self, key: EventKey, posted: Posted) -> None:
        self._posted[key] = posted
        self._posted.move_to_end(key)
        while len(self._posted) > self.max_keys:
            self._posted.popitem(last=False)

    def forget(self, key: EventKey) -> None:
        """The Event is gone (expired by the API server's TTL): the next occurrence creates one."""
        self._posted.pop(key, None)
