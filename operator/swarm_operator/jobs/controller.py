"""SwarmJob's control loop on the kit: kopf's watch of SwarmJobs → its cache and queue → a turn (jobs/turn.py).

A job reads its clusters from SwarmCluster's cache (no second watch of them); a SwarmCluster's watch event
queues the jobs it concerns: its owner, and the jobs that select it by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from swarm_operator.config import OperatorConfig
from swarm_operator.jobs.cluster import JOB_KIND
from swarm_operator.jobs.names import JOB_LABEL
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.jobs.turn import JobTurns
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, ObjectStore, WatchCache
from swarm_operator.kit.loop import Loop, LoopSettings
from swarm_operator.kube import SWARMJOB, Kube


class JobController:
    def __init__(self, kube: Kube, config: OperatorConfig, blocking: Blocking, active: asyncio.Event,
                 clusters: ObjectStore, ray: RayJobsClient | None = None) -> None:
        self.cache = WatchCache(JOB_LABEL)
        self.turns = JobTurns(kube, blocking, self.cache, clusters, ray or RayJobsClient(), self._gone,
                              config.cluster_domain)
        settings = LoopSettings(config.workers, config.resync_seconds, config.relist_seconds, config.namespaces)
        self.loop = Loop(SWARMJOB, kube, blocking, self.cache.objects, self.turns, settings, active)

    def on_job(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.loop.on_event(event_type, body)

    def on_cluster(self, body: Mapping[str, Any]) -> None:
        """A SwarmCluster changed (or went): give the jobs it concerns a turn."""
        for key in jobs_of_cluster(body, self.cache.objects):
            self.loop.queue.add(key)

    def _gone(self, key: Key, stored: dict[str, Any] | None) -> None:
        self.loop.gone(key, stored)

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()


def jobs_of_cluster(cluster: Mapping[str, Any], jobs: ObjectStore) -> set[Key]:
    """The jobs a SwarmCluster concerns: the one that owns it, and those whose clusterSelector names it."""
    meta = cluster.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    keys = {(ns, ref["name"]) for ref in meta.get("ownerReferences") or [] if ref.get("kind") == JOB_KIND}
    for job in jobs.bodies():
        job_meta = job.get("metadata") or {}
        selector = (job.get("spec") or {}).get("clusterSelector") or {}
        if job_meta.get("namespace") == ns and isinstance(selector, Mapping) and selector.get("name") == name:
            keys.add((ns, str(job_meta.get("name"))))
    return {k for k in keys if jobs.get(k) is not None}
