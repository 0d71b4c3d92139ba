"""Which Event an occurrence creates or updates, as client-go's EventCorrelator decides it. Pure.

- The same message of the same type and reason on the same object within `window` seconds
  updates that Event (count + 1, lastTimestamp) instead of creating another.
- More than `max_similar` occurrences of one type and reason on one object within `window`,
  whatever their messages, go to one Event "(combined from similar events): <newest message>"
  with a count: a crash-looping worker group leaves a handful of "Replacing" Events, not
  thousands of objects in etcd, while distinct decisions (each `Autoscaled` reason) stay
  readable one by one as long as they are few.

Remembered in memory only: after a restart the next occurrence starts a new Event, as with
client-go.
"""

from __future__ import annotations

from collections import OrderedDict, deque
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
    last_seen: float


@dataclass(frozen=True)
class Decision:
    """Post `message`: as an update of `update_of` (its name) to `count`, or as a new Event when None.
    `slot` identifies the Event among those of its key: the message, or COMBINED."""

    slot: str
    message: str
    update_of: str | None = None
    count: int = 1


class EventAggregator:
    """Remembers recent Events per (object, type, reason); bounded, the oldest forgotten first."""

    def __init__(self, window: float = 600.0, max_similar: int = 10, max_keys: int = 4096) -> None:
        self.window = window
        self.max_similar = max_similar
        self.max_keys = max_keys
        self._posted: OrderedDict[tuple[EventKey, str], Posted] = OrderedDict()
        self._seen: OrderedDict[EventKey, deque[float]] = OrderedDict()

    def decide(self, key: EventKey, message: str, now: float) -> Decision:
        seen = self._seen.setdefault(key, deque())
        self._seen.move_to_end(key)
        while seen and now - seen[0] > self.window:
            seen.popleft()
        seen.append(now)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        slot, shown = (COMBINED, COMBINED + message) if len(seen) > self.max_similar else (message, message)
        last = self._posted.get((key, slot))
        if last is None or now - last.last_seen > self.window:
            return Decision(slot, shown)
        return Decision(slot, shown, last.event_name, last.count + 1)

    def remember(self, key: EventKey, slot: str, posted: Posted) -> None:
        self._posted[(key, slot)] = posted
        self._posted.move_to_end((key, slot))
        while len(self._posted) > self.max_keys:
            self._posted.popitem(last=False)

    def forget(self, key: EventKey, slot: str) -> None:
        """The Event is gone (expired by the API server's TTL): the next occurrence creates one."""
        self._posted.pop((key, slot), None)
