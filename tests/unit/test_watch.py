"""watch.Reflector: list, then watch from the list's resourceVersion; resume, relist on 410, back off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from swarm_operator.kit.watch import Reflector
from swarm_operator.kube_http import ApiError, WatchExpired


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}}


class FakeApi:
    """Scripted answers: each watch call pops the next script (events, then how it ends)."""

    def __init__(self, listed: list[dict[str, Any]], list_rv: str, watches: list[list[Any]]) -> None:
        self.listed, self.list_rv, self.watches = listed, list_rv, watches
        self.calls: list[tuple[str, str]] = []

    def list_objects(self, path: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", ""))
        return list(self.listed), self.list_rv

    def watch(self, path: str, selector: str, resource_version: str,
              timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        self.calls.append(("watch", resource_version))
        for item in self.watches.pop(0):
            if isinstance(item, Exception):
                raise item
            yield item


def drive(api: FakeApi, start_rv: str | None = None) -> list[tuple[Any, str]]:
    """Run the reflector until its scripted watches are used up; what it delivered, in order."""
    loop = asyncio.new_event_loop()
    got: list[tuple[Any, str]] = []
    api.watches.append([RuntimeError("script used up")])

    def deliver(event_type: str | None, o: Any) -> None:
        got.append((event_type, o["metadata"]["name"]))

    def sleep(seconds: float) -> bool:
        return not api.watches  # stop once the last script has run

    Reflector(api, "/api/v1/namespaces/ns/pods", "swarm.io/cluster", deliver, loop, start_rv, sleep=sleep).run()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    return got


def test_lists_then_watches_from_the_lists_version_and_resumes_from_the_last_event() -> None:
    api = FakeApi([obj("a", "5")], "10", [[("ADDED", obj("b", "11")), ("MODIFIED", obj("a", "12"))],
                                           [("DELETED", obj("b", "13"))]])
    got = drive(api)
    assert got == [(None, "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert api.calls == [("list", ""), ("watch", "10"), ("watch", "12"), ("watch", "13")]  # the last: used up


def test_starts_from_a_given_version_without_listing() -> None:
    api = FakeApi([obj("a", "5")], "10", [[("ADDED", obj("b", "21"))]])
    got = drive(api, start_rv="20")
    assert got == [("ADDED", "b")]
    assert api.calls[0] == ("watch", "20")


def test_a_bookmark_moves_the_version_and_is_not_delivered() -> None:
    api = FakeApi([], "10", [[("BOOKMARK", obj("", "30"))], []])
    got = drive(api, start_rv="10")
    assert got == []
    assert [c for c in api.calls if c[0] == "watch"][:2] == [("watch", "10"), ("watch", "30")]


def test_410_gone_lists_again() -> None:
    api = FakeApi([obj("a", "40")], "40", [[("ADDED", obj("b", "11")), WatchExpired("too old")], []])
    got = drive(api, start_rv="10")
    assert got == [("ADDED", "b"), (None, "a")]
    assert api.calls == [("watch", "10"), ("list", ""), ("watch", "40"), ("watch", "40")]  # the last: used up


def test_run_backs_off_on_errors_and_stops_when_told() -> None:
    loop = asyncio.new_event_loop()
    api = FakeApi([], "1", [[ApiError(503, "restarting")], [ApiError(503, "restarting")], [ApiError(503, "x")]])
    slept: list[float] = []
    r: Reflector

    def sleep(seconds: float) -> bool:
        slept.append(seconds)
        if len(slept) == 3:
            r.stop()
            return True
        return False

    r = Reflector(api, "/p", "s", lambda *_: None, loop, "1", sleep=sleep)
    r.run()  # returns once stopped
    loop.close()
    assert slept == [0.5, 1.0, 2.0]
