"""The HTTP under kube.py: one API request with retries and a renewed login after a 401, one watch stream, the
connection pool. kube.py builds every call of the operator on these.

429 and 5xx answers, and refused or reset connections, are retried with bounded exponential backoff honouring
Retry-After; writes carry our fieldManager; every request names us (User-Agent).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import kopf
import orjson
import urllib3

from swarm_operator.login import USER_AGENT
from swarm_operator.metrics import API_REQUESTS

log = logging.getLogger(__name__)

FIELD_MANAGER = "swarm-operator"
WRITES = frozenset({"POST", "PUT", "PATCH"})
# The API server sheds load with 429 (priority and fairness) and answers 5xx while it restarts;
# a create retried after a 5xx that did land answers 409, which callers already treat as success.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# Refused or reset: the server may be restarting. A read timeout is not retried: the server is
# working on it, and asking again would only add to its load.
RETRIED_ERRORS = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                  urllib3.exceptions.ProtocolError)
ATTEMPTS = 5
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
RETRY_AFTER_MAX_SECONDS = 10.0

class WatchExpired(Exception):
    """410 Gone: the resourceVersion a watch started from is older than the API server keeps; list again."""


class ApiError(Exception):
    """A response with status ≥ 400; `reason` is the API server's message (it names the field)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class Credentials(Protocol):
    """What Kube needs of login.Login: the current credentials, and new ones after a 401."""

    def current(self) -> kopf.ConnectionInfo: ...

    def renew(self) -> kopf.ConnectionInfo: ...


def retry_delay(attempt: int, retry_after: str | None, jitter: float) -> float:
    """Seconds to wait before retry number `attempt` (0-based): the server's Retry-After when it
    gives one (seconds or an HTTP date, capped), else exponential backoff scaled by `jitter` in [0.5, 1]."""
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(retry_after) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                seconds = 0.0
        if seconds > 0:
            return min(seconds, RETRY_AFTER_MAX_SECONDS)
    return min(BACKOFF_FIRST_SECONDS * 2.0 ** attempt, BACKOFF_MAX_SECONDS) * jitter


def _tls_of(info: kopf.ConnectionInfo) -> tuple[Any, ...]:
    """What the connection pool is built from: a change here needs a new pool."""
    return (info.server, info.ca_path, info.ca_data, info.insecure, info.certificate_path, info.certificate_data,
            info.private_key_path, info.private_key_data, info.proxy_url)


def _pool(info: kopf.ConnectionInfo, size: int) -> urllib3.PoolManager:
    # Fail fast enough that one slow request cannot stall a cluster's turn for long.
    options: dict[str, Any] = dict(num_pools=2, maxsize=size, block=False, ssl_context=info.as_ssl_context(),
                                   retries=False, timeout=urllib3.Timeout(connect=15, read=60))
    if info.proxy_url:
        return urllib3.ProxyManager(info.proxy_url, **options)
    return urllib3.PoolManager(**options)


class HttpClient:
    def __init__(self, credentials: Credentials, pool_size: int = 32,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.credentials = credentials
        self.pool_size = pool_size
        self.sleep = sleep
        self._lock = threading.Lock()
        self._info: kopf.ConnectionInfo | None = None
        self._headers: dict[str, str] = {}
        self._http: urllib3.PoolManager | None = None

    def _session(self, info: kopf.ConnectionInfo) -> tuple[str, dict[str, str], urllib3.PoolManager]:
        """Server, headers and pool for these credentials; rebuilt when they changed (a renewed token)."""
        with self._lock:
            if info is not self._info or self._http is None:
                if self._http is None or self._info is None or _tls_of(info) != _tls_of(self._info):
                    if self._http is not None:
                        self._http.clear()
                    self._http = _pool(info, self.pool_size)
                # login.ConnectionInfo's headers name us already; a plain one (tests, other callers) gets it here.
                self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **info.as_http_headers()}
                self._info = info
            return info.server.rstrip("/"), self._headers, self._http

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                query: Mapping[str, str] | None = None, content_type: str = "application/json") -> dict[str, Any]:
        """One API call; the decoded JSON body. Raises ApiError for a status ≥ 400 (after retries)."""
        if method in WRITES:
            query = {**(query or {}), "fieldManager": FIELD_MANAGER}
        target = path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        info, renewed = self.credentials.current(), False
        attempt = 0
        while True:
            server, headers, http = self._session(info)
            if data is not None:
                headers = {**headers, "Content-Type": content_type}
            try:
                resp = http.request(method, server + target, body=data, headers=headers)
            except RETRIED_ERRORS as exc:
                if attempt + 1 >= ATTEMPTS:
                    raise
                log.debug("%s %s failed (%s), retrying", method, path, exc)
                self.sleep(retry_delay(attempt, None, random.uniform(0.5, 1.0)))
                attempt += 1
                continue
            if resp.status == 401 and not renewed:
                # Tokens rotate (service accounts) and expire (exec plugins): log in again, once.
                info, renewed = self.credentials.renew(), True
                continue
            if resp.status in RETRIED_STATUSES and attempt + 1 < ATTEMPTS:
                delay = retry_delay(attempt, resp.headers.get("Retry-After"), random.uniform(0.5, 1.0))
                log.debug("%s %s answered %s, retrying in %.2fs", method, path, resp.status, delay)
                self.sleep(delay)
                attempt += 1
                continue
            break
        if resp.status >= 400:
            raise ApiError(resp.status, _message(resp.data))
        parsed: dict[str, Any] = orjson.loads(resp.data) if resp.data else {}
        return parsed

    def watch(self, path: str, selector: str, resource_version: str,
              timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request from `resource_version`: (type, object) per event, bookmarks included, until
        the server ends it (after `timeout_seconds`). Raises WatchExpired on 410 Gone."""
        query = {"watch": "1", "labelSelector": selector, "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        API_REQUESTS.labels("watch", path.rsplit("/", 1)[-1]).inc()
        info = self.credentials.current()
        for renewed in (False, True):
            server, headers, http = self._session(info)
            resp = http.request("GET", f"{server}{path}?{urlencode(query)}", headers=headers, preload_content=False,
                                timeout=urllib3.Timeout(connect=15, read=timeout_seconds + 30))
            if resp.status != 401 or renewed:
                break
            resp.release_conn()
            info = self.credentials.renew()  # tokens rotate and expire: log in again, once
        finished = False
        try:
            if resp.status == 410:
                raise WatchExpired(_message(resp.data))
            if resp.status >= 400:
                raise ApiError(resp.status, _message(resp.data))
            for line in resp:  # one JSON event per line
                event = orjson.loads(line)
                kind, obj = event.get("type", ""), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(obj.get("message", "410 Gone"))
                    raise ApiError(int(obj.get("code") or 500), obj.get("message", "watch error"))
                yield kind, obj
            finished = True
        finally:
            if not finished:
                resp.close()  # left mid-stream: the connection cannot serve another request
            resp.release_conn()


def _message(data: bytes) -> str:
    """The API server's Status message (it names the field at fault), else the start of the body."""
    try:
        status = json.loads(data)
    except ValueError:
        return data[:300].decode(errors="replace")
    return str(status.get("message") or status.get("reason") or "") if isinstance(status, dict) else str(status)
