"""Leader election on a coordination.k8s.io Lease: with several replicas exactly one acts.

The others keep their watches and caches warm, so a takeover needs no re-listing.
A leader that cannot renew in time stops itself (SIGTERM) rather than risk two actors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from swarm_operator.kit.blocking import Blocking
from swarm_operator.kube import KubeClient
from swarm_operator.times import micro_time, parse_time

log = logging.getLogger(__name__)


def may_take(lease_spec: Mapping[str, Any], identity: str, now: float) -> bool:
    """Pure: this identity may hold the lease if it holds it already, or the holder's lease expired."""
    holder = lease_spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    renewed = parse_time(lease_spec.get("renewTime"))
    duration = float(lease_spec.get("leaseDurationSeconds") or 15)
    return now > renewed + duration


class LeaderElector:
    def __init__(self, kube: KubeClient, blocking: Blocking, namespace: str, name: str, active: asyncio.Event,
                 lease_seconds: int = 15, renew_seconds: float = 5.0) -> None:
        self.kube = kube
        self.blocking = blocking
        self.namespace = namespace
        self.name = name
        self.active = active
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None
        self._last_renew = 0.0

    def try_acquire(self) -> bool:
        """One round: read the lease, take or renew it if allowed. Blocking (runs on the blocking pool)."""
        now = time.time()
        lease = self.kube.read_lease(self.namespace, self.name)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                "renewTime": micro_time(now)}
        if lease is None:
            return self.kube.create_lease(self.namespace, self.name, {**spec, "acquireTime": micro_time(now)})
        current = lease.get("spec") or {}
        if not may_take(current, self.identity, now):
            return False
        if current.get("holderIdentity") != self.identity:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        return self.kube.replace_lease(self.namespace, self.name, lease, {**current, **spec})

    async def _loop(self) -> None:
        while True:
            try:
                leader = await self.blocking(self.try_acquire)
            except Exception as exc:
                log.warning("leader election: %s", exc)
                leader = False
            now = time.monotonic()
            if leader:
                self._last_renew = now
                if not self.active.is_set():
                    log.info("leader election: %s now leads (%s/%s)", self.identity, self.namespace, self.name)
                    self.active.set()
            elif self.active.is_set() and now - self._last_renew > self.lease_seconds - self.renew_seconds:
                log.error("leader election: lost the lease; stopping so that only one operator acts")
                self.active.clear()
                os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(self.renew_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
