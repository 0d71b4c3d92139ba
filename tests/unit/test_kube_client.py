"""kube.py's requests against a loopback HTTP server: credentials, User-Agent and fieldManager,
retries with Retry-After, and Event aggregation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import kopf
import pytest

from swarm_operator import kube_http as kube_module
from swarm_operator.kube import SWARMCLUSTER, KubeClient, ObjectRef
from swarm_operator.kube_http import (
    ATTEMPTS,
    FIELD_MANAGER,
    RETRY_AFTER_MAX_SECONDS,
    USER_AGENT,
    ApiError,
    _message,
    retry_delay,
)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"kind":"Status","message":"spec.workerGroups[0].replicas: Invalid value"}',
     "spec.workerGroups[0].replicas: Invalid value"),
    (b'{"kind":"Status","reason":"Conflict"}', "Conflict"),
    (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
    (b"[1, 2]", "[1, 2]"),
])
def test_error_message_is_the_servers_own(body: bytes, message: str) -> None:
    assert _message(body) == message


@pytest.mark.parametrize(("attempt", "retry_after", "jitter", "delay"), [
    pytest.param(0, None, 1.0, 0.2, id="first-backoff"),
    pytest.param(3, None, 1.0, 1.6, id="doubles"),
    pytest.param(9, None, 1.0, 5.0, id="capped"),
    pytest.param(1, None, 0.5, 0.2, id="jittered"),
    pytest.param(0, "3", 1.0, 3.0, id="retry-after-seconds"),
    pytest.param(0, "3600", 1.0, RETRY_AFTER_MAX_SECONDS, id="retry-after-capped"),
    pytest.param(2, "0", 1.0, 0.8, id="retry-after-zero-backs-off"),
    pytest.param(2, "soon", 1.0, 0.8, id="retry-after-garbage-backs-off"),
])
def test_retry_delay(attempt: int, retry_after: str | None, jitter: float, delay: float) -> None:
    assert retry_delay(attempt, retry_after, jitter) == pytest.approx(delay)


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    assert 2.5 < retry_delay(0, when, 1.0) <= 4.0


class FakeServer(BaseHTTPRequestHandler):
    """Answers 401 to any token but the current one, then any scripted answers in order, then 200
    (409 for a pod named "taken"); records method, path, headers and body of every request."""

    token = "new"
    script: ClassVar[list[tuple[int, dict[str, str]]]] = []  # (status, headers)
    seen: ClassVar[list[tuple[str, str, dict[str, str], Any]]] = []
    next_name = 0

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        FakeServer.seen.append((self.command, self.path, dict(self.headers), body))
        extra: dict[str, str] = {}
        if self.headers.get("Authorization") != f"Bearer {FakeServer.token}":
            status, reply = 401, {"kind": "Status", "message": "Unauthorized"}
        elif FakeServer.script:
            status, extra = FakeServer.script.pop(0)
            reply = {"kind": "Status", "message": f"scripted {status}"}
        elif (body or {}).get("metadata", {}).get("name") == "taken":
            status, reply = 409, {"kind": "Status", "message": 'pods "taken" already exists'}
        elif self.command == "POST" and "/events" in self.path:
            FakeServer.next_name += 1
            status, reply = 201, {"kind": "Event", "metadata": {"name": f"ev{FakeServer.next_name}"}}
        else:
            status, reply = 200, {"kind": "Pod", "metadata": {"name": "p"}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **extra}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    FakeServer.seen, FakeServer.script, FakeServer.token, FakeServer.next_name = [], [], "new", 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class Credentials:
    """login.Login's interface: `token` until renewed, then `renewed`."""

    def __init__(self, server: str, token: str = "new", renewed: str = "new") -> None:
        self.info = kopf.ConnectionInfo(server=server, token=token)
        self.fresh = kopf.ConnectionInfo(server=server, token=renewed)
        self.renewals = 0

    def current(self) -> kopf.ConnectionInfo:
        return self.info

    def renew(self) -> kopf.ConnectionInfo:
        self.renewals += 1
        self.info = self.fresh
        return self.info


def kube_for(server: str, sleeps: list[float] | None = None, **credentials: str) -> KubeClient:
    record = sleeps if sleeps is not None else []
    return KubeClient(Credentials(server, **credentials), sleep=record.append)


def test_a_rotated_token_is_picked_up_on_401_and_the_call_retried_once(server: str) -> None:
    kube = kube_for(server, token="old", renewed="new")
    patched = kube.patch_pod("ns", "p", {"metadata": {"annotations": {"a": "b"}}})
    assert patched == {"kind": "Pod", "metadata": {"name": "p"}}
    assert isinstance(kube.credentials, Credentials) and kube.credentials.renewals == 1
    assert [(m, p.split("?")[0], h["Content-Type"]) for m, p, h, _ in FakeServer.seen] == [
        ("PATCH", "/api/v1/namespaces/ns/pods/p", "application/merge-patch+json")] * 2
    assert FakeServer.seen[-1][3] == {"metadata": {"annotations": {"a": "b"}}}


def test_a_401_after_renewing_is_an_error_naming_the_status(server: str) -> None:
    kube = kube_for(server, token="old", renewed="still-old")
    with pytest.raises(ApiError, match="401: Unauthorized"):
        kube.list_pods("ns", "a=b")
    assert [p for _, p, _, _ in FakeServer.seen] == ["/api/v1/namespaces/ns/pods?labelSelector=a%3Db"] * 2


def test_409_on_create_means_it_exists_already(server: str) -> None:
    kube = kube_for(server)
    assert kube.create_pod("ns", {"metadata": {"name": "taken"}}) is None
    assert kube.create_pod("ns", {"metadata": {"name": "free"}}) == {"kind": "Pod", "metadata": {"name": "p"}}
    with pytest.raises(ApiError, match="409"):
        kube.request("POST", "/api/v1/namespaces/ns/pods", {"metadata": {"name": "taken"}})


def test_every_request_names_us_and_writes_name_their_field_manager(server: str) -> None:
    kube = kube_for(server)
    kube.list_pods("ns", "a=b")
    kube.create_pod("ns", {"metadata": {"name": "free"}})
    kube.patch_status(SWARMCLUSTER, "ns", "c", {"phase": "Running"})
    agents = {h["User-Agent"] for _, _, h, _ in FakeServer.seen}
    assert agents == {USER_AGENT} and USER_AGENT.startswith("swarm-operator/")
    managers = [f"fieldManager={FIELD_MANAGER}" in p for _, p, _, _ in FakeServer.seen]
    assert managers == [False, True, True]


def test_429_waits_as_long_as_retry_after_says(server: str) -> None:
    FakeServer.script = [(429, {"Retry-After": "2"}), (429, {"Retry-After": "1"})]
    sleeps: list[float] = []
    assert kube_for(server, sleeps).get_resource(SWARMCLUSTER, "ns", "c") == {"kind": "Pod", "metadata": {"name": "p"}}
    assert sleeps == [2.0, 1.0]
    assert len(FakeServer.seen) == 3


def test_5xx_backs_off_exponentially_and_gives_up_after_a_bound(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_module.random, "uniform", lambda low, high: high)  # no jitter
    FakeServer.script = [(503, {})] * (ATTEMPTS + 2)
    sleeps: list[float] = []
    with pytest.raises(ApiError, match="503: scripted 503"):
        kube_for(server, sleeps).list_services("ns", "a=b")
    assert len(FakeServer.seen) == ATTEMPTS
    assert sleeps == pytest.approx([0.2, 0.4, 0.8, 1.6][:ATTEMPTS - 1])


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_client_errors_are_not_retried(server: str, status: int) -> None:
    FakeServer.script = [(status, {})]
    sleeps: list[float] = []
    with pytest.raises(ApiError, match=str(status)):
        kube_for(server, sleeps).request("GET", "/api/v1/namespaces/ns/pods")
    assert (len(FakeServer.seen), sleeps) == (1, [])


def test_a_refused_connection_is_retried_then_raised() -> None:
    sleeps: list[float] = []
    kube = kube_for("http://127.0.0.1:9", sleeps)  # discard port: nothing listens
    with pytest.raises(kube_module.urllib3.exceptions.HTTPError):
        kube.list_pods("ns", "a=b")
    assert len(sleeps) == ATTEMPTS - 1


def ref(name: str, uid: str) -> ObjectRef:
    return ObjectRef(SWARMCLUSTER, "ns", name, uid)


def events_seen() -> list[tuple[str, str, Any]]:
    return [(m, p.split("?")[0], b) for m, p, _, b in FakeServer.seen if "/events" in p]


def test_a_repeated_event_updates_one_event_with_a_count(server: str) -> None:
    kube = kube_for(server)
    for _ in range(3):
        kube.post_event(ref("c", "uid-1"), "Warning", "Replacing", "worker c-cpu-0 failed")
    kube.post_event(ref("c", "uid-1"), "Normal", "Created", "head")
    kube.post_event(ref("other", "uid-2"), "Warning", "Replacing", "worker c-cpu-0 failed")
    seen = events_seen()
    assert [(m, p, (b or {}).get("count")) for m, p, b in seen] == [
        ("POST", "/api/v1/namespaces/ns/events", 1),
        ("PATCH", "/api/v1/namespaces/ns/events/ev1", 2),
        ("PATCH", "/api/v1/namespaces/ns/events/ev1", 3),
        ("POST", "/api/v1/namespaces/ns/events", 1),
        ("POST", "/api/v1/namespaces/ns/events", 1),
    ]
    assert seen[0][2]["involvedObject"] == {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster",
                                            "name": "c", "namespace": "ns", "uid": "uid-1"}


def test_a_storm_of_different_messages_ends_in_one_combined_event(server: str) -> None:
    kube = kube_for(server)
    for i in range(14):
        kube.post_event(ref("c", "uid-1"), "Warning", "Replacing", f"worker c-cpu-{i} failed")
    seen = events_seen()
    posts = [b for m, _, b in seen if m == "POST"]
    assert len(posts) == 11  # ten distinct, then the combined one
    assert posts[-1]["message"] == "(combined from similar events): worker c-cpu-10 failed"
    patches = [(p, b["count"], b["message"]) for m, p, b in seen if m == "PATCH"]
    assert patches[-1] == ("/api/v1/namespaces/ns/events/ev11", 4,
                           "(combined from similar events): worker c-cpu-13 failed")


def test_an_event_the_server_expired_is_created_anew(server: str) -> None:
    kube = kube_for(server)
    kube.post_event(ref("c", "u"), "Warning", "Replacing", "m")
    FakeServer.script = [(404, {})]
    kube.post_event(ref("c", "u"), "Warning", "Replacing", "m")
    kube.post_event(ref("c", "u"), "Warning", "Replacing", "m")
    assert [(m, p, (b or {}).get("count")) for m, p, b in events_seen()] == [
        ("POST", "/api/v1/namespaces/ns/events", 1),
        ("PATCH", "/api/v1/namespaces/ns/events/ev1", 2),
        ("POST", "/api/v1/namespaces/ns/events", 1),
        ("PATCH", "/api/v1/namespaces/ns/events/ev2", 2),
    ]


def test_a_failed_event_post_is_logged_not_raised(server: str, caplog: pytest.LogCaptureFixture) -> None:
    FakeServer.script = [(403, {})]
    kube_for(server).post_event(ref("c", "u"), "Normal", "Created", "m")
    assert "could not post event Created on ns/c: scripted 403" in caplog.text


def test_a_kubeconfig_proxy_url_carries_every_request(server: str) -> None:
    # The API server's name does not resolve: only the proxy (the fake server here) can answer.
    creds = Credentials("http://apiserver.invalid:6443")
    creds.info = kopf.ConnectionInfo(server="http://apiserver.invalid:6443", token="new", proxy_url=server)
    assert KubeClient(creds).get_resource(SWARMCLUSTER, "ns", "c") == {"kind": "Pod", "metadata": {"name": "p"}}
    assert FakeServer.seen[0][1] == ("http://apiserver.invalid:6443/apis/swarm.io/v1alpha1/namespaces/ns/"
                                     "swarmclusters/c")
