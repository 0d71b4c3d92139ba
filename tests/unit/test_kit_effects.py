"""kit/effects.py and kit/memory.py: every answer of the API goes into the cache at once; one record per object."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import WatchCache
from swarm_operator.kit.effects import Effects
from swarm_operator.kit.memory import Memories
from swarm_operator.kube import SWARMCLUSTER, ObjectRef
from swarm_operator.reasons import EventReason
from swarm_operator.resources import labels
from tests.unit.operator_fixtures import NAMESPACE, UID, FakeKube, as_kube, cluster, manifest, worker_pod

KEY = (NAMESPACE, "demo")


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    pool = Blocking(2)
    yield pool
    pool.shutdown()


def effects(kube: FakeKube, blocking: Blocking) -> tuple[Effects, WatchCache]:
    cache = WatchCache(labels.CLUSTER)
    cache.objects.put(KEY, manifest())
    return Effects(as_kube(kube), blocking, cache, ObjectRef(SWARMCLUSTER, *KEY, UID)), cache


def test_a_created_pod_is_in_the_cache_and_a_deleted_one_never_comes_back(blocking: Blocking) -> None:
    kube = FakeKube()
    fx, cache = effects(kube, blocking)
    pod = worker_pod(cluster())
    name = pod["metadata"]["name"]

    async def body() -> None:
        assert await fx.create_pod(pod) is not None
        assert cache.pods.names(KEY) == {name}
        await fx.delete_pod(name)  # answered with the pod being deleted (a grace period)
        assert (cache.pods.get(KEY, name) or {})["metadata"].get("deletionTimestamp")
        kube.pods.clear()
        await fx.delete_pod(name)  # 404: gone, whatever the cache said
        assert cache.pods.names(KEY) == set()

    asyncio.run(body())
    created = kube.calls[0]
    assert created == ("create_pod", name)
    late_added = {**pod, "metadata": {**pod["metadata"], "uid": f"pod-{name}", "resourceVersion": "101"}}
    assert cache.pods.apply("ADDED", late_added) is None, "a late event of the deleted pod stays buried"


def test_a_patch_of_a_gone_pod_puts_nothing_in_the_cache(blocking: Blocking) -> None:
    fx, cache = effects(FakeKube(), blocking)
    assert asyncio.run(fx.patch_pod("demo-cpu-gone", {"metadata": {"annotations": {"a": "b"}}})) is None
    assert cache.pods.names(KEY) == set()


def test_status_events_and_finalizers_are_bound_to_the_object(blocking: Blocking) -> None:
    kube = FakeKube()
    fx, cache = effects(kube, blocking)

    async def body() -> None:
        assert not await fx.write_status({"phase": "Running"}), "not stored at the API server: gone"
        kube.swarmclusters[KEY] = manifest()
        assert await fx.write_status({"phase": "Running"})
        assert (cache.objects.get(KEY) or {})["status"] == {"phase": "Running"}, "the next turn compares with it"
        await fx.event(EventReason.REPLACING, "worker demo-cpu-a failed")
        stored = await fx.set_finalizers(["x"], "1")
        assert stored is not None

    asyncio.run(body())
    assert (cache.objects.get(KEY) or {})["metadata"]["finalizers"] == ["x"], "the stored object, written through"
    assert kube.events == [("demo", "Warning", "Replacing", "worker demo-cpu-a failed")]


@dataclass
class Record:
    seen: list[str] = field(default_factory=list)


def test_memories_make_a_record_on_first_use_and_forget_hands_it_back() -> None:
    memories: Memories[Record] = Memories(Record)
    memories[KEY].seen.append("x")
    assert KEY in memories and memories[KEY].seen == ["x"]
    assert memories.forget(KEY) == Record(["x"])
    assert KEY not in memories and memories.forget(KEY) is None
    assert memories[KEY] == Record()
