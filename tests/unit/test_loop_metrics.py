"""The kit's loop counts and times each turn under the kind it serves, so SwarmCluster's and SwarmJob's
reconciles can be told apart in /metrics."""

from __future__ import annotations

import asyncio
from typing import cast

from prometheus_client import REGISTRY

from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key, ObjectStore
from swarm_operator.kit.loop import Loop, LoopSettings
from swarm_operator.kube import SWARMCLUSTER, SWARMJOB, Kube, Resource

KEY: Key = ("ns", "one")


class OneTurn:
    """A reconciler whose turns succeed, or raise `error`; `turned` is set after the first."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.turned = asyncio.Event()

    async def run(self, key: Key) -> float | None:
        self.turned.set()
        if self.error is not None:
            raise self.error
        return None

    def forget(self, key: Key) -> None:
        pass


async def one_turn(resource: Resource, reconciler: OneTurn) -> None:
    blocking = Blocking(1)
    objects = ObjectStore()
    objects.put(KEY, {"metadata": {"namespace": KEY[0], "name": KEY[1], "resourceVersion": "1"}})
    active = asyncio.Event()
    active.set()
    # No turn here lists or calls the API: the loop is given no client.
    loop = Loop(resource, cast(Kube, None), blocking, objects, reconciler,
                LoopSettings(workers=1, resync_seconds=60, relist_seconds=3600), active)
    loop.start()
    loop.queue.add(KEY)
    try:
        await asyncio.wait_for(reconciler.turned.wait(), 5)
        await asyncio.sleep(0.01)  # the worker records the turn once it has returned; let it run that far
    finally:
        await loop.stop()
        blocking.shutdown()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counts(kind: str) -> dict[str, float]:
    return {
        "ok": sample("swarm_reconcile_total", kind=kind, result="ok"),
        "error": sample("swarm_reconcile_total", kind=kind, result="error"),
        "errors_by_type": sample("swarm_reconcile_errors_total", kind=kind, error="RuntimeError"),
        "timed": sample("swarm_reconcile_duration_seconds_count", kind=kind),
    }


def test_a_turn_is_counted_and_timed_under_its_kind_only() -> None:
    before = {kind: counts(kind) for kind in (SWARMCLUSTER.kind, SWARMJOB.kind)}
    asyncio.run(one_turn(SWARMJOB, OneTurn()))
    job, cluster = counts(SWARMJOB.kind), counts(SWARMCLUSTER.kind)
    assert job["ok"] == before[SWARMJOB.kind]["ok"] + 1
    assert job["timed"] == before[SWARMJOB.kind]["timed"] + 1
    assert job["error"] == before[SWARMJOB.kind]["error"]
    assert cluster == before[SWARMCLUSTER.kind]


def test_a_failed_turn_is_counted_under_its_kind_and_exception_type() -> None:
    before = counts(SWARMCLUSTER.kind)
    asyncio.run(one_turn(SWARMCLUSTER, OneTurn(RuntimeError("boom"))))
    after = counts(SWARMCLUSTER.kind)
    assert after["error"] == before["error"] + 1
    assert after["errors_by_type"] == before["errors_by_type"] + 1
    assert after["timed"] == before["timed"] + 1
    assert after["ok"] == before["ok"]
