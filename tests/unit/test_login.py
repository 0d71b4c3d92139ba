"""login.py: the kubernetes package's loaders on real kubeconfig files and exec plugins (in temp
dirs), the helper run as a child process, and the operator's credential cache."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from swarm_operator import __version__
from swarm_operator.login import (
    EXPIRY_MARGIN_SECONDS,
    IN_CLUSTER_RENEW_SECONDS,
    USER_AGENT,
    Login,
    LoginSource,
    connection_info,
    load,
    run_helper,
)

SERVER = "https://127.0.0.1:6443"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(tmp_path: Path, users: dict[str, dict[str, Any]], current: str | None = None,
               cluster: dict[str, Any] | None = None) -> Path:
    """A kubeconfig with one context per user (named after it), all on one cluster."""
    config = {
        "apiVersion": "v1", "kind": "Config",
        "current-context": current or next(iter(users)),
        "clusters": [{"name": "k", "cluster": cluster or {"server": SERVER}}],
        "contexts": [{"name": u, "context": {"cluster": "k", "user": u}} for u in users],
        "users": [{"name": u, "user": entry} for u, entry in users.items()],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


def exec_plugin(tmp_path: Path, status: dict[str, Any] | None, exit_code: int = 0) -> dict[str, Any]:
    """A kubeconfig `exec` entry running a script that prints an ExecCredential (as EKS/GKE/AKS plugins do)."""
    script = tmp_path / "plugin.py"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}
    script.write_text(f"import sys\nprint({json.dumps(json.dumps(credential))})\n"
                      f"print('token service unavailable', file=sys.stderr)\nsys.exit({exit_code})\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}


def test_a_token_user(tmp_path: Path) -> None:
    answer = load(LoginSource(str(kubeconfig(tmp_path, {"u": {"token": "abc"}}))), {})
    info = connection_info(answer)
    assert (info.server, info.token, info.expiration) == (SERVER, "abc", None)
    assert "user 'u'" in answer["source"]
    # kopf's watches take their headers from here: they name swarm-operator too.
    assert info.as_http_headers() == {"Authorization": "Bearer abc", "User-Agent": USER_AGENT}
    assert USER_AGENT.startswith(f"swarm-operator/{__version__} kopf/")


def test_an_exec_plugin_token_and_its_expiry(tmp_path: Path) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=15)
    user = exec_plugin(tmp_path, {"token": "from-plugin", "expirationTimestamp": expires.isoformat()})
    info = connection_info(load(LoginSource(str(kubeconfig(tmp_path, {"eks": user}))), {}))
    assert (info.token, info.expiration) == ("from-plugin", expires)


def test_an_exec_plugin_client_certificate(tmp_path: Path) -> None:
    user = exec_plugin(tmp_path, {"clientCertificateData": PEM, "clientKeyData": "KEY"})
    info = connection_info(load(LoginSource(str(kubeconfig(tmp_path, {"u": user}))), {}))
    assert (info.token, info.certificate_data, info.private_key_data) == (None, PEM, "KEY")


def test_a_failing_exec_plugin_names_the_user_and_why(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"aws-user": exec_plugin(tmp_path, {"token": "x"}, exit_code=1)})
    with pytest.raises(kopf.LoginError) as caught:
        load(LoginSource(str(path)), {})
    message = str(caught.value)
    for part in ("user 'aws-user'", "the user has: exec", "returned 1", "token service unavailable",
                 "system:anonymous", "Supported:"):
        assert part in message, message


@pytest.mark.parametrize(("entry", "why"), [
    pytest.param({}, "user 'bad' yields no credentials", id="empty-user"),
    pytest.param({"auth-provider": {"name": "no-such-provider", "config": {}}}, "user 'bad' yields no credentials",
                 id="unknown-auth-provider"),
    pytest.param({"client-certificate": "/nonexistent/cert.pem"}, "user 'bad': File does not exist",
                 id="missing-certificate-file"),
])
def test_a_user_without_usable_credentials_fails_instead_of_going_anonymous(tmp_path: Path, entry: dict[str, Any],
                                                                            why: str) -> None:
    with pytest.raises(kopf.LoginError, match=why):
        load(LoginSource(str(kubeconfig(tmp_path, {"bad": entry}))), {})


def test_context_picks_another_user(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"first": {"token": "one"}, "second": {"token": "two"}})
    assert connection_info(load(LoginSource(str(path)), {})).token == "one"
    assert connection_info(load(LoginSource(str(path), "second"), {})).token == "two"
    with pytest.raises(kopf.LoginError, match="third"):
        load(LoginSource(str(path), "third"), {})


def test_client_certificates_ca_and_proxy_come_as_data(tmp_path: Path) -> None:
    b64 = base64.b64encode(PEM.encode()).decode()
    path = kubeconfig(tmp_path, {"u": {"client-certificate-data": b64, "client-key-data": b64}},
                      cluster={"server": SERVER, "certificate-authority-data": b64,
                               "proxy-url": "http://proxy.corp:3128"})
    info = connection_info(load(LoginSource(str(path)), {}))
    assert (info.ca_data, info.certificate_data, info.private_key_data) == (PEM, PEM, PEM)
    assert (info.proxy_url, info.insecure) == ("http://proxy.corp:3128", False)


def test_username_and_password(tmp_path: Path) -> None:
    info = connection_info(load(LoginSource(str(kubeconfig(tmp_path, {"u": {"username": "al", "password": "p:w"}}))),
                                {}))
    assert (info.username, info.password, info.token) == ("al", "p:w", None)


def service_account(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text(PEM)
    (sa / "namespace").write_text("ops\n")
    return sa


@pytest.mark.parametrize(("host", "server"), [("10.96.0.1", "https://10.96.0.1:443"),
                                              ("fd00::1", "https://[fd00::1]:443")])
def test_in_a_pod_the_service_account(tmp_path: Path, host: str, server: str) -> None:
    answer = load(LoginSource(), {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "443"},
                  service_account(tmp_path))
    info = connection_info(answer)
    assert (info.server, info.token, info.ca_data, info.default_namespace) == (server, "sa-token", PEM, "ops")
    assert answer["in_cluster"] is True


def test_an_explicit_kubeconfig_wins_over_the_service_account(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"u": {"token": "abc"}})
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert connection_info(load(LoginSource(str(path)), env, service_account(tmp_path))).token == "abc"
    assert connection_info(load(LoginSource(), {**env, "KUBECONFIG": str(path)}, tmp_path / "sa")).token == "abc"


def test_nowhere_to_log_in_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(kopf.LoginError, match="--kubeconfig"):
        load(LoginSource(str(tmp_path / "missing")), {})


def test_the_helper_runs_as_a_child_process(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"u": {"token": "abc"}, "bad": {}})
    assert connection_info(run_helper(LoginSource(str(path)))).token == "abc"
    with pytest.raises(kopf.LoginError, match="user 'bad' yields no credentials"):
        run_helper(LoginSource(str(path), "bad"))


class Helper:
    """Stands in for the child process: answers tokens t1, t2, … with the given expiry."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra
        self.calls = 0

    def __call__(self, source: LoginSource) -> dict[str, Any]:
        self.calls += 1
        return {"server": SERVER, "authorization": f"Bearer t{self.calls}", **self.extra}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_static_credentials_are_read_once_and_renewed_after_a_401() -> None:
    helper, clock = Helper(), Clock()
    login = Login(helper=helper, clock=clock)
    assert [login.current().token for _ in range(3)] == ["t1"] * 3
    clock.now += 10
    assert login.renew().token == "t2"
    assert login.renew().token == "t2"  # a burst of 401s logs in once
    clock.now += 10
    assert (login.current().token, helper.calls) == ("t2", 2)


def test_expiring_credentials_are_renewed_before_they_expire() -> None:
    clock = Clock()
    expires = datetime.fromtimestamp(clock.now + 900, UTC)
    helper = Helper(expiration=expires.isoformat())
    login = Login(helper=helper, clock=clock)
    assert login.current().token == "t1"
    clock.now += 900 - EXPIRY_MARGIN_SECONDS - 1
    assert login.current().token == "t1"
    clock.now += 1
    assert login.current().token == "t2"


def test_in_cluster_tokens_are_re_read_periodically() -> None:
    clock = Clock()
    login = Login(helper=Helper(in_cluster=True), clock=clock)
    assert login.current().token == "t1"
    clock.now += IN_CLUSTER_RENEW_SECONDS
    assert login.current().token == "t2"

