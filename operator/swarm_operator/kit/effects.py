"""Every write one turn makes for one served object, bound to that object as client-go's EventRecorder is.

Creates, deletes and patches of its children, its status, its finalizers and its Events go through here, and
each answer is written into the cache at once (write-through: two quick turns never create the same pod
twice, and the next turn never writes the same status again). Every call crosses to the blocking pool here,
and only here, for a turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, WatchCache
from swarm_operator.kube import Kube, ObjectRef
from swarm_operator.reasons import EventReason

P = ParamSpec("P")
T = TypeVar("T")


class Effects:
    def __init__(self, kube: Kube, blocking: Blocking, cache: WatchCache, ref: ObjectRef) -> None:
        self.kube = kube
        self.blocking = blocking
        self.cache = cache
        self.ref = ref

    @property
    def key(self) -> Key:
        return self.ref.key

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Any other blocking call of the turn (reads: a Secret, a Job; a Ray drain)."""
        return await self.blocking(fn, *args, **kwargs)

    # -- the object itself ---------------------------------------------------------------------------

    async def event(self, reason: EventReason, message: str) -> None:
        await self.call(self.kube.post_event, self.ref, reason.event_type, reason, message)

    async def read_back(self) -> dict[str, Any] | None:
        """The object as stored now (not as cached); None when it is gone."""
        return await self.call(self.kube.get_resource, self.ref.resource, self.ref.namespace, self.ref.name)

    async def write_status(self, status: Mapping[str, Any]) -> bool:
        """Merge-patch status; False when the object is gone."""
        if not await self.call(self.kube.patch_status, self.ref.resource, self.ref.namespace, self.ref.name, status):
            return False
        self.cache.objects.record_status(self.key, status)
        return True

    async def set_finalizers(self, finalizers: list[str], resource_version: str) -> dict[str, Any] | None:
        """Replace the finalizers if the object is still at `resource_version` (a conflict raises ApiError 409);
        the stored object, or None when it is gone."""
        stored = await self.call(self.kube.set_finalizers, self.ref.resource, self.ref.namespace, self.ref.name,
                                 finalizers, resource_version)
        if stored is not None:
            self.cache.objects.put(self.key, stored)
        return stored

    # -- its children ----------------------------------------------------------------------------------

    async def create_pod(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created pod; None when its name is taken (409)."""
        created = await self.call(self.kube.create_pod, self.ref.namespace, pod)
        if created is not None:
            self.cache.pods.apply(None, created)
        return created

    async def delete_pod(self, name: str) -> None:
        """Delete a pod; one already gone (404) is success."""
        uid = ((self.cache.pods.get(self.key, name) or {}).get("metadata") or {}).get("uid") or ""
        answer = await self.call(self.kube.delete_pod, self.ref.namespace, name)
        if answer is not None and (answer.get("metadata") or {}).get("resourceVersion"):
            self.cache.pods.apply(None, answer)  # being deleted (a grace period)
        else:
            # 404, or removed at once (a Failed pod gets no grace period): the API server then answers with
            # the pod as it was, without a resourceVersion, which no tombstone could be compared with. Either
            # way it is gone, whatever the cache says.
            self.cache.pods.gone(self.key, name, uid)

    async def patch_pod(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch; the patched pod, or None when it is gone."""
        patched = await self.call(self.kube.patch_pod, self.ref.namespace, name, patch)
        if patched is not None:
            self.cache.pods.apply(None, patched)
        return patched

    async def create_service(self, service: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created service; None when its name is taken (409, or one still terminating)."""
        created = await self.call(self.kube.create_service, self.ref.namespace, service)
        if created is not None:
            self.cache.services.apply(None, created)
        return created

    async def delete_service(self, name: str, uid: str) -> None:
        await self.call(self.kube.delete_service, self.ref.namespace, name)
        self.cache.services.gone(self.key, name, uid)

    async def patch_service(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        patched = await self.call(self.kube.patch_service, self.ref.namespace, name, patch)
        if patched is not None:
            self.cache.services.apply(None, patched)
        return patched
