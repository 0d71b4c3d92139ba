"""One served kind's control loop: its watch events fill its ObjectStore and queue keys; workers take a key
at a time and run the kind's turn (the `Reconciler`); a periodic re-list catches what a watch never said.

The kind brings only its `Reconciler` (and, if it owns children, a re-list of them); the queue's contract,
the retries with backoff, the resync and the deletions no watch reported are the kit's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from swarm_operator import metrics
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import ChildStore, Key, ObjectStore
from swarm_operator.kit.workqueue import WorkQueue
from swarm_operator.kube import Kube, Resource

log = logging.getLogger(__name__)
ERROR_BACKOFF_CAP = 60.0
RELIST_AFTER_LISTING_SECONDS = 2.0  # once a (re)listing of a resource has gone quiet


class Reconciler(Protocol):
    """The turn protocol: what a kind gives the kit."""

    async def run(self, key: Key) -> float | None:
        """One turn of the object; seconds until it wants the next one, None for the resync period.
        Raising makes the kit retry it with a per-key backoff."""

    def forget(self, key: Key) -> None:
        """The object is gone: drop what is kept in memory about it."""


@dataclass(frozen=True)
class LoopSettings:
    workers: int
    resync_seconds: float
    relist_seconds: float
    namespaces: Sequence[str] = ()  # empty: all

    def scopes(self) -> list[str | None]:
        """Namespaces to list in; None means all of them."""
        return list(self.namespaces) or [None]


class Loop:
    def __init__(self, resource: Resource, kube: Kube, blocking: Blocking, objects: ObjectStore,
                 reconciler: Reconciler, settings: LoopSettings, active: asyncio.Event,
                 relist_children: Callable[[], Awaitable[None]] | None = None,
                 on_depth: Callable[[int], None] = lambda depth: None) -> None:
        self.resource = resource
        self.kube = kube
        self.blocking = blocking
        self.objects = objects
        self.reconciler = reconciler
        self.settings = settings
        self.active = active  # set while this replica may act (the leader, or always without election)
        self.queue: WorkQueue[Key] = WorkQueue(backoff_cap=min(ERROR_BACKOFF_CAP, settings.resync_seconds),
                                               on_depth=on_depth)
        self._relist_children = relist_children
        self._tasks: list[asyncio.Task[None]] = []
        self._relist_timer: asyncio.TimerHandle | None = None

    # -- watch inputs -------------------------------------------------------------------------------

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of the kind (kopf's `on.event`; type None: from a list)."""
        if event_type is None:
            self.listed()
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.forget(key)
            return
        if self.objects.put(key, body):
            self.queue.add(key)  # not when it only echoes our own status write: that turn saw it all

    def on_child(self, store: ChildStore, event_type: str | None, body: Mapping[str, Any],
                 settle_seconds: float = 0.0) -> None:
        """A watch event of a child (a reflector's): into its store, and its owner gets a turn, after
        `settle_seconds` when its children change in bursts (pods: scheduled, running, ready …)."""
        if event_type is None:
            self.listed()
        key = store.apply(event_type, body)
        if key is None or self.objects.get(key) is None:
            return
        if settle_seconds:
            self.queue.add_after(key, settle_seconds)
        else:
            self.queue.add(key)

    def forget(self, key: Key) -> None:
        """The object is gone: stop serving it (the garbage collector removes its children)."""
        self.objects.drop(key)
        self.queue.cancel(key)
        self.reconciler.forget(key)

    def gone(self, key: Key, stored: dict[str, Any] | None) -> None:
        """A turn found the object deleted though no watch said so (and maybe made again: `stored`)."""
        self.forget(key)
        if stored is not None:
            self.on_event("ADDED", stored)

    def listed(self) -> None:
        """A watch (re)listed (events of type None): at startup, or after a watch that could not be resumed
        (410 Gone, an API server restart). Objects deleted meanwhile are never reported, so once the
        listing has gone quiet, re-list everything ourselves and drop what is gone."""
        if self._relist_timer is not None:
            self._relist_timer.cancel()
        self._relist_timer = asyncio.get_running_loop().call_later(
            RELIST_AFTER_LISTING_SECONDS, lambda: self._tasks.append(asyncio.ensure_future(self._relist_once())))

    async def _relist_once(self) -> None:
        self._tasks[:] = [t for t in self._tasks if not t.done()]
        try:
            await self.relist()
        except Exception as exc:
            log.warning("re-list after a watch restart failed: %s", exc)

    async def relist(self) -> None:
        """Merge fresh lists into the cache: catches deletions a broken watch never reported (kopf emits no
        DELETED for objects deleted while its watch was down), and objects the watch missed."""
        for ns in self.settings.scopes():
            items, rv = await self.blocking(self.kube.list_resource, self.resource, ns)
            gone, unknown = self.objects.gone_from_list(ns, items, rv)
            for key in gone:
                self.forget(key)
            for body in unknown:
                self.on_event("ADDED", body)
        if self._relist_children is not None:
            await self._relist_children()

    # -- workers -------------------------------------------------------------------------------------

    async def _worker(self) -> None:
        kind = self.resource.kind
        while True:
            key = await self.queue.get()
            await self.active.wait()
            started = time.monotonic()
            try:
                requeue = await self.reconciler.run(key)
            except Exception as exc:
                requeue = None
                delay = self.queue.add_rate_limited(key)
                metrics.RECONCILES.labels(kind, "error").inc()
                metrics.RECONCILE_ERRORS.labels(kind, type(exc).__name__).inc()
                log.warning("reconcile of %s %s/%s failed (retry in %.1fs): %s", self.resource.kind, *key, delay,
                            exc)
            else:
                self.queue.forget(key)
                metrics.RECONCILES.labels(kind, "ok").inc()
                # Every object is looked at again within the resync period, even when nothing happens.
                resync = self.settings.resync_seconds
                self.queue.add_after(key, min(requeue, resync) if requeue else resync * random.uniform(0.9, 1.1))
            finally:
                metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)
                self.queue.done(key)
            if self.objects.get(key) is None:
                self.queue.cancel(key)  # deleted during the turn

    async def _relist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.relist_seconds)
            try:
                await self.relist()
            except Exception as exc:
                log.warning("periodic re-list failed: %s", exc)

    def start(self, *others: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """The workers and the periodic re-list; `others`: the kind's own background loops (gauges)."""
        for _ in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._worker()))
        self._tasks.append(asyncio.create_task(self._relist_loop()))
        self._tasks.extend(asyncio.create_task(other()) for other in others)

    async def stop(self) -> None:
        if self._relist_timer is not None:
            self._relist_timer.cancel()
        self.queue.shut_down()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
