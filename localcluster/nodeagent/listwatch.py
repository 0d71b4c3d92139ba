"""List, then watch, with plain dicts: what each of the agent's watch threads runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from localcluster.nodeagent.agentlog import log

WATCH_SECONDS = 60  # one watch request; then it is re-opened from the last resourceVersion


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def list_watch(list_fn: Callable[..., Any], stop: threading.Event, on_list: Callable[[list[dict[str, Any]]], None],
               on_event: Callable[[str, dict[str, Any]], None], what: str, **kwargs: Any) -> None:
    """List, then watch from the list's resourceVersion, forever, with plain dicts.

    (The client's own Watch deserialises into models, and with deserialize=False it neither
    tracks resourceVersions nor handles error events.)
    """
    while not stop.is_set():
        try:
            resp = list_fn(_preload_content=False, **kwargs)
            body = json.loads(resp.data)
            rv = body["metadata"]["resourceVersion"]
            on_list(body["items"])
            while not stop.is_set():
                resp = list_fn(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                               timeout_seconds=WATCH_SECONDS, _preload_content=False,
                               _request_timeout=(10, WATCH_SECONDS + 15), **kwargs)
                try:
                    for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            if obj.get("code") == 410:
                                raise _Expired
                            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], obj)
                        if stop.is_set():
                            break
                finally:
                    resp.release_conn()
        except _Expired:
            continue
        except (ApiException, HTTPError, OSError, ValueError, KeyError) as exc:
            if not stop.is_set():
                log(f"{what} watch: {type(exc).__name__}: {exc}; retrying")
                stop.wait(1.0)
