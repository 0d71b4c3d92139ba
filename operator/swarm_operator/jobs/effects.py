"""JobEffects: the kit's Effects for one SwarmJob, plus its own writes (its clusters, itself) and its Ray job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm_operator.jobs.machine import RayView
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import WatchCache
from swarm_operator.kit.effects import Effects
from swarm_operator.kube import SWARMCLUSTER, Kube, ObjectRef


class JobEffects(Effects):
    """The job's writes: its own clusters, itself (the TTL), and its Ray job through the Jobs API."""

    def __init__(self, kube: Kube, blocking: Blocking, cache: WatchCache, ref: ObjectRef, ray: RayJobsClient) -> None:
        super().__init__(kube, blocking, cache, ref)
        self.ray = ray

    async def create_cluster(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created SwarmCluster; None when its name is taken (ours from an earlier turn, or another's).
        Not written into SwarmCluster's cache: its watch event must find it new, to give it a turn."""
        return await self.call(self.kube.create_resource, SWARMCLUSTER, self.ref.namespace, body)

    async def delete_cluster(self, name: str) -> None:
        await self.call(self.kube.delete_resource, SWARMCLUSTER, self.ref.namespace, name)

    async def patch_cluster(self, name: str, patch: Mapping[str, Any]) -> None:
        await self.call(self.kube.patch_resource, SWARMCLUSTER, self.ref.namespace, name, patch)

    async def delete_self(self) -> None:
        await self.call(self.kube.delete_resource, self.ref.resource, self.ref.namespace, self.ref.name)

    async def observe(self, head_ip: str, submission: str, token: str | None) -> RayView:
        return await self.call(self.ray.observe, head_ip, submission, token)

    async def submit(self, head_ip: str, body: Mapping[str, Any], token: str | None) -> bool:
        return await self.call(self.ray.submit_once, head_ip, body, token)

    async def stop(self, head_ip: str, submission: str, token: str | None) -> None:
        await self.call(self.ray.stop, head_ip, submission, token)
