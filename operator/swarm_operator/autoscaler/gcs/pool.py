"""Many clusters' reads at once, each on a pool thread with a deadline and its own backoff."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from swarm_operator.autoscaler.gcs.wire import RayStateError
from swarm_operator.autoscaler.snapshot import ClusterSnapshot
from swarm_operator.reconcile.backoff import backoff_delay

log = logging.getLogger(__name__)


class ClusterClient(Protocol):
    """What the pool needs of a client (:class:`RayStateClient`, or a fake in tests)."""

    def read(self) -> ClusterSnapshot: ...

    def close(self) -> None: ...


_C = TypeVar("_C", bound=ClusterClient)
Submit = Callable[[Callable[[], ClusterSnapshot]], "concurrent.futures.Future[ClusterSnapshot]"]


@dataclass(frozen=True)
class ReadResult:
    key: Hashable
    snapshot: ClusterSnapshot | None = None
    error: str | None = None
    failures: int = 0  # consecutive failed reads, this one included
    retry_in_s: float = 0.0  # after a failure: how long the cluster is left alone
    started: bool = True  # False: skipped, because of the backoff or a previous read still running


@dataclass
class _Entry(Generic[_C]):
    client: _C
    address: str
    token: str | None
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    inflight: concurrent.futures.Future[ClusterSnapshot] | None = None
    inflight_since: float = 0.0


class RayStatePool(Generic[_C]):
    """Reads many clusters at once, each read on a pool thread with a deadline.

    The threads are the operator's one blocking pool (`submit`: kit/blocking.py's). One slow or dead
    cluster never delays the others: the caller waits at
    most ``read_timeout_s``, a cluster whose previous read still runs is skipped rather than given a
    second thread, and a cluster that fails is left alone for a doubling backoff
    (``backoff_initial_s`` … ``backoff_max_s``). Connect and RPC deadlines bound how long a thread can be
    held, so the threads (at most one per cluster at a time) always come back.
    """

    def __init__(
        self,
        client_factory: Callable[[str, str | None], _C],
        submit: Submit,
        *,
        read_timeout_s: float = 5.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._submit = submit
        self.read_timeout_s = read_timeout_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry[_C]] = {}

    def set_cluster(self, key: Hashable, address: str, token: str | None = None) -> None:
        """Add a cluster, or point it elsewhere; unchanged settings keep the client and its backoff."""
        with self._lock:
            old = self._entries.get(key)
            if old is not None and (old.address, old.token) == (address, token):
                return
            self._entries[key] = _Entry(self._factory(address, token), address, token)
        if old is not None:
            old.client.close()

    def remove_cluster(self, key: Hashable) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
        if old is not None:
            old.client.close()

    def client(self, key: Hashable) -> _C:
        with self._lock:
            return self._entries[key].client

    def _start(self, key: Hashable) -> tuple[_Entry[_C], concurrent.futures.Future[ClusterSnapshot]] | ReadResult:
        with self._lock:
            entry = self._entries[key]
            now = self._clock()
            if entry.inflight is not None and not entry.inflight.done():
                return ReadResult(
                    key, error=f"previous read still running after {now - entry.inflight_since:.1f}s",
                    failures=entry.failures, started=False,
                )
            if now < entry.retry_at:
                return ReadResult(
                    key, error=entry.last_error, failures=entry.failures, retry_in_s=entry.retry_at - now,
                    started=False,
                )
            entry.inflight = self._submit(entry.client.read)
            entry.inflight_since = now
            return entry, entry.inflight

    def _finish(
        self, key: Hashable, entry: _Entry[_C], future: concurrent.futures.Future[ClusterSnapshot], timeout_s: float
    ) -> ReadResult:
        with self._lock:
            if self._entries.get(key) is not entry:
                return ReadResult(key, error="cluster removed or re-pointed during the read")
            error: str
            if not future.done():
                error = f"no answer within {timeout_s:g}s"
            elif (exc := future.exception()) is None:
                entry.failures, entry.retry_at, entry.last_error = 0, 0.0, ""
                return ReadResult(key, snapshot=future.result())
            elif isinstance(exc, RayStateError):
                error = str(exc)
            else:  # a bug, not a cluster problem: keep the traceback
                log.error("reading cluster %s failed unexpectedly", key, exc_info=exc)
                error = f"{type(exc).__name__}: {exc}"
            entry.failures += 1
            delay = backoff_delay(entry.failures, *self._backoff)
            entry.retry_at = self._clock() + delay
            entry.last_error = error
            return ReadResult(key, error=error, failures=entry.failures, retry_in_s=delay)

    async def aread(self, key: Hashable, timeout_s: float | None = None) -> ReadResult:
        """Read one cluster, waiting at most ``timeout_s`` without blocking the event loop.

        A cluster in backoff, or whose previous read still runs, is not read (``started=False``)."""
        timeout = self.read_timeout_s if timeout_s is None else timeout_s
        outcome = self._start(key)
        if isinstance(outcome, ReadResult):
            return outcome
        entry, future = outcome
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def wake(_: concurrent.futures.Future[ClusterSnapshot]) -> None:
            # RuntimeError: the loop closed while the read ran late, so nobody waits for it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finished.set)

        # Not asyncio.wrap_future: a read that fails after the timeout would leave an exception nobody
        # retrieves. On timeout the read keeps running and the pool remembers it as in flight.
        future.add_done_callback(wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout)
        return self._finish(key, entry, future, timeout)

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.client.close()
