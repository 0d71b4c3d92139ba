"""Our clusters' pods and services, watched as client-go's reflector does: list once, then watch from
that list's resourceVersion, resuming after each watch ends; on 410 Gone, list again.

Why not kopf's watch, which still serves SwarmClusters: kopf passes every event through its handler
machinery (about a third of the operator's CPU at 250 clusters, py-spy) and filters labels on our
side, so it decodes every pod of a namespace. Here the API server selects by label, each event costs
a JSON decode (orjson) and a call.

Each reflector runs in a daemon thread (the watch is a blocking read) and hands events to the event
loop with `call_soon_threadsafe`, where the controller's handlers run as kopf's did.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from swarm_operator.kube_http import WatchExpired

log = logging.getLogger(__name__)

# A watch is ended by the server after this long and resumed: no connection lives forever.
WATCH_SECONDS = 300
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0

Deliver = Callable[[str | None, Mapping[str, Any]], None]  # (event type, object); None: from a list


class Watching(Protocol):
    def list_objects(self, path: str, selector: str) -> tuple[list[dict[str, Any]], str]: ...

    def watch(self, path: str, selector: str, resource_version: str,
              timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]: ...


class Reflector:
    """One collection (pods or services of one namespace, or of all) kept flowing into `deliver`."""

    def __init__(self, kube: Watching, path: str, selector: str, deliver: Deliver,
                 loop: asyncio.AbstractEventLoop, resource_version: str | None = None,
                 sleep: Callable[[float], bool] | None = None) -> None:
        self.kube = kube
        self.path = path
        self.selector = selector
        self.deliver = deliver
        self.loop = loop
        self.resource_version = resource_version or None  # None: list first
        self.stopped = threading.Event()
        self._sleep = sleep or self.stopped.wait
        self.thread = threading.Thread(target=self.run, name=f"watch {path}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """The thread ends when its current read returns (at the latest after WATCH_SECONDS)."""
        self.stopped.set()

    def _hand_over(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.deliver, event_type, obj)

    def run(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while not self.stopped.is_set():
            try:
                self.step()
                delay = RETRY_FIRST_SECONDS
            except WatchExpired:
                log.info("watch of %s expired (410 Gone): listing again", self.path)
                self.resource_version = None
            except Exception as exc:  # the API server restarting, a network fault: retry with backoff
                log.warning("watch of %s failed (retry in %.1fs): %s", self.path, delay, exc)
                if self._sleep(delay):
                    return
                delay = min(RETRY_MAX_SECONDS, delay * 2)

    def step(self) -> None:
        """A list if there is no resourceVersion to start from, then one watch until the server ends it."""
        if self.resource_version is None:
            items, self.resource_version = self.kube.list_objects(self.path, self.selector)
            for obj in items:
                self._hand_over(None, obj)  # listed, as kopf reports it: the controller then relists its cache
        for event_type, obj in self.kube.watch(self.path, self.selector, self.resource_version, WATCH_SECONDS):
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = version
            if event_type != "BOOKMARK":
                self._hand_over(event_type, obj)
            if self.stopped.is_set():
                return
