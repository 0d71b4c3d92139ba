"""kube.py's login and request handling, against files in a temp dir and a loopback HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import kopf
import pytest

from swarm_operator.kube import ApiError, Kube, _message, login


def service_account(tmp_path: Path, token: str = "tok-1") -> Path:
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "namespace").write_text("ops\n")
    return tmp_path


@pytest.mark.parametrize(("host", "port", "server"), [
    ("10.96.0.1", "443", "https://10.96.0.1:443"),
    ("fd00::1", "6443", "https://[fd00::1]:6443"),
])
def test_in_cluster_login_uses_the_service_env_and_account_files(tmp_path: Path, host: str, port: str,
                                                                 server: str) -> None:
    info = login(service_account(tmp_path), {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
    assert (info.server, info.token, info.default_namespace, info.ca_path) == (server, "tok-1", "ops", None)


def test_kubeconfig_login_when_not_in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
              "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
              "users": [{"name": "u", "user": {"token": "abc"}}]}
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    info = login(tmp_path / "no-service-account", {})
    assert (info.server, info.token) == ("https://127.0.0.1:6443", "abc")


def test_no_credentials_at_all_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError, match="KUBECONFIG"):
        login(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})


@pytest.mark.parametrize(("body", "message"), [
    (b'{"kind":"Status","message":"spec.workerGroups[0].replicas: Invalid value"}',
     "spec.workerGroups[0].replicas: Invalid value"),
    (b'{"kind":"Status","reason":"Conflict"}', "Conflict"),
    (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
    (b"[1, 2]", "[1, 2]"),
])
def test_error_message_is_the_servers_own(body: bytes, message: str) -> None:
    assert _message(body) == message


class FakeServer(BaseHTTPRequestHandler):
    """Answers 401 to any token but the current one; records method, path, content type and body."""

    token = "new"
    seen: ClassVar[list[tuple[str, str, str, Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        FakeServer.seen.append((self.command, self.path, self.headers.get("Content-Type", ""), body))
        if self.headers.get("Authorization") != f"Bearer {FakeServer.token}":
            status, reply = 401, {"kind": "Status", "message": "Unauthorized"}
        elif (body or {}).get("metadata", {}).get("name") == "taken":
            status, reply = 409, {"kind": "Status", "message": 'pods "taken" already exists'}
        else:
            status, reply = 200, {"kind": "Pod", "metadata": {"name": "p"}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    FakeServer.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_rotated_token_is_picked_up_on_401_and_the_call_retried_once(server: str) -> None:
    logins: list[str] = []

    def relogin() -> kopf.ConnectionInfo:
        logins.append("again")
        return kopf.ConnectionInfo(server=server, token="new")

    kube = Kube(kopf.ConnectionInfo(server=server, token="old"), relogin=relogin)
    assert kube.annotate_pod("ns", "p", {"a": "b"}) == {"kind": "Pod", "metadata": {"name": "p"}}
    assert logins == ["again"]
    assert [s[:3] for s in FakeServer.seen] == [("PATCH", "/api/v1/namespaces/ns/pods/p",
                                                  "application/merge-patch+json")] * 2
    assert FakeServer.seen[-1][3] == {"metadata": {"annotations": {"a": "b"}}}


def test_a_401_without_relogin_is_an_error_naming_the_status(server: str) -> None:
    kube = Kube(kopf.ConnectionInfo(server=server, token="old"))
    with pytest.raises(ApiError, match="401: Unauthorized"):
        kube.list_pods("ns", "a=b")
    assert FakeServer.seen[0][1] == "/api/v1/namespaces/ns/pods?labelSelector=a%3Db"


def test_409_on_create_means_it_exists_already(server: str) -> None:
    kube = Kube(kopf.ConnectionInfo(server=server, token="new"))
    assert kube.create_pod("ns", {"metadata": {"name": "taken"}}) is None
    assert kube.create_pod("ns", {"metadata": {"name": "free"}}) == {"kind": "Pod", "metadata": {"name": "p"}}
    with pytest.raises(ApiError, match="409"):
        kube.request("POST", "/api/v1/namespaces/ns/pods", {"metadata": {"name": "taken"}})
