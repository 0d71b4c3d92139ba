"""kit/workqueue.py: client-go's contract, through the public API. asyncio.run per test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from swarm_operator.kit.workqueue import WorkQueue


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=10))


async def next_key(q: WorkQueue[str], wait: float = 0.05) -> str | None:
    try:
        return await asyncio.wait_for(q.get(), wait)
    except TimeoutError:
        return None


def test_adds_of_a_queued_key_coalesce_and_order_is_kept() -> None:
    async def body() -> None:
        depths: list[int] = []
        q: WorkQueue[str] = WorkQueue(on_depth=depths.append)
        for key in ("a", "b", "a", "a", "c"):
            q.add(key)
        assert len(q) == 3
        assert [await q.get() for _ in range(3)] == ["a", "b", "c"]
        assert await next_key(q) is None
        assert depths[-1] == 0 and max(depths) == 3

    run(body)


def test_a_key_added_while_processing_runs_again_after_done_never_in_parallel() -> None:
    async def body() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        assert await q.get() == "a"
        assert q.processing("a") and not q.waiting("a")
        for _ in range(3):
            q.add("a")
        assert q.waiting("a") and len(q) == 0, "not handed to a second worker while the first has it"
        assert await next_key(q) is None
        q.done("a")
        assert not q.processing("a")
        assert await q.get() == "a", "once more afterwards"
        q.done("a")
        assert await next_key(q) is None, "and only once"

    run(body)


def test_done_without_a_re_add_does_not_requeue() -> None:
    async def body() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        q.done(await q.get())
        assert len(q) == 0 and not q.waiting("a")

    run(body)


def test_a_waiting_worker_wakes_on_add() -> None:
    async def body() -> None:
        q: WorkQueue[str] = WorkQueue()
        getter = asyncio.ensure_future(q.get())
        await asyncio.sleep(0.01)
        assert not getter.done()
        q.add("a")
        assert await asyncio.wait_for(getter, 1) == "a"

    run(body)


@pytest.mark.parametrize(
    ("delays", "expected"),
    [
        pytest.param([10.0, 1.0], 1.0, id="sooner-replaces-later"),
        pytest.param([1.0, 10.0], 1.0, id="later-does-not-postpone"),
        pytest.param([5.0, 5.0], 5.0, id="same"),
    ],
)
def test_add_after_keeps_the_earliest(delays: list[float], expected: float) -> None:
    async def body() -> None:
        q: WorkQueue[str] = WorkQueue()
        assert q.due_in("a") is None
        for d in delays:
            q.add_after("a", d)
        assert q.due_in("a") == pytest.approx(expected, abs=0.05)
        q.cancel("a")
        assert q.due_in("a") is None

    run(body)


def test_add_after_fires_and_zero_adds_at_once() -> None:
    async def body() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add_after("now", 0)
        assert len(q) == 1
        q.add_after("soon", 0.02)
        assert await q.get() == "now"
        assert await next_key(q, 1) == "soon"
        assert q.due_in("soon") is None

    run(body)


def test_rate_limited_adds_back_off_per_key_until_forgotten() -> None:
    async def body() -> None:
        q: WorkQueue[str] = WorkQueue(backoff_base=0.5, backoff_cap=5.0)
        assert [q.add_rate_limited("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
        assert q.add_rate_limited("b") == 1.0, "per key"
        q.forget("a")
        q.cancel("a")
        assert q.add_rate_limited("a") == 1.0
        assert q.due_in("a") == pytest.approx(1.0, abs=0.05)
        q.shut_down()
        assert q.due_in("a") is None and q.due_in("b") is None

    run(body)
