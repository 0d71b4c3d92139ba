"""SwarmCluster's control loop on the kit: the kit's Loop serves the SwarmClusters (kopf's watch → cache and
queue → a turn, turn.py); the pods and services they own come from our reflectors (kit/watch.py) into the
same cache, and queue their cluster.

Why not kopf daemons: kopf puts a finalizer on every object a daemon serves, and a
namespace deletion would then hang whenever the operator is down. Children are owned
by the SwarmCluster, so nothing needs a finalizer; watch handlers add none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from swarm_operator import metrics
from swarm_operator.autoscaler.runner import Autoscaler
from swarm_operator.config import OperatorConfig
from swarm_operator.gauges import set_cluster_phases
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, WatchCache, owner_key
from swarm_operator.kit.loop import Loop, LoopSettings
from swarm_operator.kube import SWARMCLUSTER, Kube
from swarm_operator.nodes import NodeCache
from swarm_operator.reconcile.observe import slim_pod
from swarm_operator.resources import labels
from swarm_operator.turn import Turns

POD_EVENT_SETTLE_SECONDS = 0.5
PHASE_GAUGE_SECONDS = 5.0


class Controller:
    def __init__(self, kube: Kube, config: OperatorConfig, blocking: Blocking | None = None,
                 active: asyncio.Event | None = None) -> None:
        self.kube = kube
        self.config = config
        self.blocking = blocking or Blocking(config.api_threads)
        self.cache = WatchCache(labels.CLUSTER, slim_pod)
        self.nodes = NodeCache()
        self.active = active or asyncio.Event()  # set while this replica may act (always, without election)
        self.autoscaler = Autoscaler(self.blocking)
        self.ray_jobs = RayJobsClient()  # shared with SwarmJob's controller (handlers.py)
        self.turns = Turns(kube, self.blocking, config, self.cache, self.nodes, self.autoscaler, self._gone,
                           self.ray_jobs)
        settings = LoopSettings(config.workers, config.resync_seconds, config.relist_seconds, config.namespaces)
        self.loop = Loop(SWARMCLUSTER, kube, self.blocking, self.cache.objects, self.turns, settings, self.active,
                         relist_children=self._relist_children, on_depth=metrics.QUEUE_DEPTH.set)

    # -- watch inputs ---------------------------------------------------------------------------

    def on_cluster(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.loop.on_event(event_type, body)

    def forget(self, key: Key) -> None:
        """The SwarmCluster is gone: stop serving it (the garbage collector removes its children)."""
        self.loop.forget(key)

    def _gone(self, key: Key, stored: dict[str, Any] | None) -> None:
        self.loop.gone(key, stored)

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            self._pod_deleted(body)
        # Pods of a cluster change in bursts (scheduled, running, ready …): one turn for the burst.
        self.loop.on_child(self.cache.pods, event_type, body, POD_EVENT_SETTLE_SECONDS)

    def _pod_deleted(self, body: Mapping[str, Any]) -> None:
        """A served cluster's pod that the cache still holds is gone: its last state goes to the cluster's next turn,
        which may not have seen it end (the Eviction API deletes in one go). One the cache no longer holds left it
        through the operator's own delete (removed at once, or already gone), which a turn saw, or a re-list."""
        key = owner_key(body, labels.CLUSTER)
        meta = body.get("metadata") or {}
        if key is None or self.cache.objects.get(key) is None:
            return
        held = self.cache.pods.get(key, meta.get("name") or "")
        if held is not None and (held.get("metadata") or {}).get("uid") == meta.get("uid"):
            self.turns.pod_vanished(key, slim_pod(body))

    def on_node(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A Node event: the clusters with a pod on it get a turn when it was deleted or its readiness changed."""
        if self.nodes.apply(event_type, body):
            self._queue_pods_on({(body.get("metadata") or {}).get("name") or ""})

    def _queue_pods_on(self, node_names: set[str]) -> None:
        served = self.cache.objects.keys()
        for key in served:
            if any((p.get("spec") or {}).get("nodeName") in node_names for p in self.cache.pods.objects(key)):
                self.loop.queue.add(key)

    def on_service(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.loop.on_child(self.cache.services, event_type, body)

    def on_budget(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A PodDisruptionBudget event: one deleted by someone else is made again."""
        self.loop.on_child(self.cache.budgets, event_type, body)

    def seed(self) -> dict[str | None, str]:
        """Fill the pod and service cache from the API before acting (blocking; runs at startup).
        Returns each scope's pod list resourceVersion: the pod watches start from there, with no gap."""
        listed_at = {}
        for ns in self.loop.settings.scopes():
            pods, listed_at[ns] = self.kube.list_pods(ns, labels.CLUSTER)
            for pod in pods:
                self.cache.pods.apply(None, pod)
            for svc in self.kube.list_services(ns, labels.CLUSTER):
                self.cache.services.apply(None, svc)
            for budget in self.kube.list_budgets(ns, labels.CLUSTER):
                self.cache.budgets.apply(None, budget)
        return listed_at

    async def _relist_children(self) -> None:
        pods: list[dict[str, Any]] = []
        services: list[dict[str, Any]] = []
        budgets: list[dict[str, Any]] = []
        listed_at: dict[str | None, str] = {}  # each pod list's resourceVersion, by scope
        for ns in self.loop.settings.scopes():
            items, listed_at[ns] = await self.blocking(self.kube.list_pods, ns, labels.CLUSTER)
            pods.extend(items)
            services.extend(await self.blocking(self.kube.list_services, ns, labels.CLUSTER))
            budgets.extend(await self.blocking(self.kube.list_budgets, ns, labels.CLUSTER))
        changed = (self.cache.pods.merge_list(pods, listed_at) | self.cache.services.merge_list(services, listed_at)
                   | self.cache.budgets.merge_list(budgets, listed_at))
        for key in changed:
            if self.cache.objects.get(key) is not None:
                self.loop.queue.add(key)
        # Nodes deleted while the node watch was down are never reported: a full list shows them gone.
        self._queue_pods_on(self.nodes.replace_all(*await self.blocking(self.kube.list_nodes)))

    async def relist(self) -> None:
        """Merge fresh lists into the cache: catches deletions a broken watch never reported."""
        await self.loop.relist()

    async def _phase_gauge_loop(self) -> None:
        while True:
            set_cluster_phases(self.cache.objects.bodies())
            await asyncio.sleep(PHASE_GAUGE_SECONDS)

    def start(self) -> None:
        self.loop.start(self._phase_gauge_loop)

    async def stop(self) -> None:
        await self.loop.stop()

    async def reconcile(self, key: Key) -> float | None:
        """One turn of the cluster; the workers call it for each key they take."""
        return await self.turns.run(key)
