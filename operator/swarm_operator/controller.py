"""The control loop: watch events fill the cache (reconcile/cache.py) and add cluster keys to the work
queue (reconcile/workqueue.py); workers take keys one at a time and run a turn (turn.py).

Why not kopf daemons: kopf puts a finalizer on every object a daemon serves, and a
namespace deletion would then hang whenever the operator is down. Children are owned
by the SwarmCluster, so nothing needs a finalizer; watch handlers add none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from swarm_operator import metrics
from swarm_operator.autoscaler.runner import Autoscaler
from swarm_operator.config import OperatorConfig
from swarm_operator.gauges import PodGauges, set_cluster_phases
from swarm_operator.kube import Kube
from swarm_operator.reconcile.cache import Key, WatchCache
from swarm_operator.reconcile.observe import slim_pod
from swarm_operator.reconcile.workqueue import WorkQueue
from swarm_operator.resources import labels
from swarm_operator.turn import Turns

log = logging.getLogger(__name__)
ERROR_BACKOFF_CAP = 60.0
POD_EVENT_SETTLE_SECONDS = 0.5
RELIST_AFTER_LISTING_SECONDS = 2.0  # once a (re)listing of a resource has gone quiet
PHASE_GAUGE_SECONDS = 5.0


class Controller:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self.cache = WatchCache(slim_pod)
        self.queue: WorkQueue[Key] = WorkQueue(backoff_cap=min(ERROR_BACKOFF_CAP, config.resync_seconds),
                                               on_depth=metrics.QUEUE_DEPTH.set)
        self.autoscaler = Autoscaler(kube)
        self.pod_gauges = PodGauges()
        self.turns = Turns(kube, config, self.cache, self.autoscaler, self.pod_gauges.update, self._gone)
        self.active = asyncio.Event()  # set while this replica may act (always, without leader election)
        self._tasks: list[asyncio.Task[None]] = []
        self._relist_timer: asyncio.TimerHandle | None = None

    # -- watch inputs ---------------------------------------------------------------------------

    def _listed(self) -> None:
        """A watch (re)listed a resource (events of type None): at startup, or after a watch that could
        not be resumed (410 Gone, an API server restart). Objects deleted meanwhile are never reported, so once the
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

    def on_cluster(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type is None:
            self._listed()
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.forget(key)
            return
        if self.cache.put_cluster(key, body):
            self.queue.add(key)  # not when it only echoes our own status write: that turn saw it all

    def forget(self, key: Key) -> None:
        """The SwarmCluster is gone: stop serving it (the garbage collector removes its children)."""
        self.cache.drop_cluster(key)
        self.queue.cancel(key)
        self.pod_gauges.forget(key)
        self.turns.forget(key)
        self.autoscaler.forget("/".join(key))

    def _gone(self, key: Key, stored: dict[str, Any] | None) -> None:
        """A turn found the cluster deleted though no watch said so (and maybe made again)."""
        self.forget(key)
        if stored is not None:
            self.on_cluster("ADDED", stored)

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type is None:
            self._listed()
        key = self.cache.pods.apply(event_type, body)
        if key is not None and self.cache.cluster(key) is not None:
            # Pods of a cluster change in bursts (scheduled, running, ready …): one turn for the burst.
            self.queue.add_after(key, POD_EVENT_SETTLE_SECONDS)

    def on_service(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type is None:
            self._listed()
        key = self.cache.services.apply(event_type, body)
        if key is not None and self.cache.cluster(key) is not None:
            self.queue.add(key)

    def _scopes(self) -> list[str | None]:
        """Namespaces to list in; None means all of them."""
        return list(self.config.namespaces) or [None]

    def seed(self) -> dict[str | None, str]:
        """Fill the pod and service cache from the API before acting (blocking; runs at startup).
        Returns each scope's pod list resourceVersion: the pod watches start from there, with no gap."""
        listed_at = {}
        for ns in self._scopes():
            pods, listed_at[ns] = self.kube.list_pods(ns, labels.CLUSTER)
            for pod in pods:
                self.cache.pods.apply(None, pod)
            for svc in self.kube.list_services(ns, labels.CLUSTER):
                self.cache.services.apply(None, svc)
        return listed_at

    async def _relist_clusters(self) -> None:
        """A watch resumed after an API server restart re-lists without reporting the objects deleted
        meanwhile (kopf emits no DELETED for them): forget those, and serve any the watch missed."""
        for ns in self._scopes():
            items, rv = await asyncio.to_thread(self.kube.list_swarmclusters, ns)
            gone, unknown = self.cache.clusters_gone_from_list(ns, items, rv)
            for key in gone:
                self.forget(key)
            for body in unknown:
                self.on_cluster("ADDED", body)

    async def relist(self) -> None:
        """Merge a fresh list into the cache: catches deletions a broken watch never reported."""
        await self._relist_clusters()
        pods: list[dict[str, Any]] = []
        services: list[dict[str, Any]] = []
        listed_at: dict[str | None, str] = {}  # each pod list's resourceVersion, by scope
        for ns in self._scopes():
            items, listed_at[ns] = await asyncio.to_thread(self.kube.list_pods, ns, labels.CLUSTER)
            pods.extend(items)
            services.extend(await asyncio.to_thread(self.kube.list_services, ns, labels.CLUSTER))
        for key in self.cache.pods.merge_list(pods, listed_at) | self.cache.services.merge_list(services, listed_at):
            if self.cache.cluster(key) is not None:
                self.queue.add(key)

    # -- workers ---------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            await self.active.wait()
            started = time.monotonic()
            try:
                requeue = await self.reconcile(key)
            except Exception as exc:
                requeue = None
                delay = self.queue.add_rate_limited(key)
                metrics.RECONCILES.labels("error").inc()
                metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
                log.warning("reconcile of %s/%s failed (retry in %.1fs): %s", *key, delay, exc)
            else:
                self.queue.forget(key)
                metrics.RECONCILES.labels("ok").inc()
                # Every cluster is looked at again within the resync period, even when nothing happens.
                self.queue.add_after(key, min(requeue, self.config.resync_seconds) if requeue
                                     else self.config.resync_seconds * random.uniform(0.9, 1.1))
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
                self.queue.done(key)
            if self.cache.cluster(key) is None:
                self.queue.cancel(key)  # deleted during the turn

    async def _relist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.relist_seconds)
            try:
                await self.relist()
            except Exception as exc:
                log.warning("periodic re-list failed: %s", exc)

    async def _phase_gauge_loop(self) -> None:
        while True:
            set_cluster_phases(self.cache.clusters())
            await asyncio.sleep(PHASE_GAUGE_SECONDS)

    def start(self) -> None:
        for _ in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker()))
        self._tasks.append(asyncio.create_task(self._relist_loop()))
        self._tasks.append(asyncio.create_task(self._phase_gauge_loop()))

    async def stop(self) -> None:
        if self._relist_timer is not None:
            self._relist_timer.cancel()
        self.queue.shut_down()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def reconcile(self, key: Key) -> float | None:
        """One turn of the cluster; the workers call it for each key they take."""
        return await self.turns.run(key)
