"""A keyed work queue with client-go's contract (workqueue.TypedRateLimitingInterface), on asyncio.

- A key is queued at most once: adding a queued key again does nothing (events coalesce).
- A key is handed to one worker at a time: added while being processed, it is marked dirty and
  queued again only when that worker calls `done`, so it then runs once more, never in parallel.
- `add_after` schedules an add; of several pending delays for a key the earliest wins.
- `add_rate_limited` schedules an add after a per-key exponential backoff (base doubling to a
  cap); `forget` resets it once the key succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, *, backoff_base: float = 0.5, backoff_cap: float = 60.0,
                 on_depth: Callable[[int], None] = lambda depth: None) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()  # never holds a key twice: see _dirty
        self._dirty: set[K] = set()  # wants a turn: queued, or re-added while processing
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._on_depth = on_depth  # a metric gauge, kept out of here

    def __len__(self) -> int:
        return self._queue.qsize()

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._put(key)

    def _put(self, key: K) -> None:
        self._queue.put_nowait(key)
        self._on_depth(self._queue.qsize())

    async def get(self) -> K:
        """The next key; the caller owns it until `done(key)`."""
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        self._on_depth(self._queue.qsize())
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._put(key)

    def processing(self, key: K) -> bool:
        return key in self._processing

    def waiting(self, key: K) -> bool:
        """Whether the key will be handed out (again): queued, or re-added while processing."""
        return key in self._dirty

    # -- delays ------------------------------------------------------------------------------------

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        old = self._timers.get(key)
        if old is not None and old.when() <= when:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def due_in(self, key: K) -> float | None:
        """Seconds until the key's delayed add, None when none is pending."""
        timer = self._timers.get(key)
        return None if timer is None else timer.when() - asyncio.get_running_loop().time()

    def add_rate_limited(self, key: K) -> float:
        """Schedule the key again after its next backoff step; returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = float(min(self._backoff_cap, self._backoff_base * 2 ** min(failures, 40)))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts from the first backoff step."""
        self._failures.pop(key, None)

    def cancel(self, key: K) -> None:
        """Drop the key's pending delayed add and backoff (its object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    def shut_down(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
