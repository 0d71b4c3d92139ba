"""The operator's credentials, from the official `kubernetes` package's config loaders.

Everything a kubeconfig can say (exec credential plugins, auth-provider tokens, client
certificates, `proxy-url`, several files in KUBECONFIG, a chosen context) and the pod's
service account are read by `kubernetes.config`, never by code of ours. The loader runs in
a short-lived child process (`python -m swarm_operator.login`) that prints what it found as
one JSON document: importing `kubernetes` costs ~31 MiB of resident memory for the
process's whole life (its generated models), and an exec plugin may block for seconds; the
operator itself only keeps the result, renewed before it expires and after a 401.

Which source, in client-go's order: `--kubeconfig`/`--context` when given, else a KUBECONFIG
variable, else the pod's service account when in a pod, else ~/.kube/config.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kopf

from swarm_operator import __version__

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A service-account token is re-read this often: the kubelet rotates projected tokens at 80% of a
# life of at least 10 minutes, so a token read 5 minutes ago is always still valid.
IN_CLUSTER_RENEW_SECONDS = 300.0
# Renew this long before a credential's own expiry, so no request carries a token about to lapse.
EXPIRY_MARGIN_SECONDS = 30.0
HELPER_TIMEOUT_SECONDS = 60.0
SUPPORTED = ("token, tokenFile, client-certificate/client-key, exec credential plugins, "
             "auth-provider (oidc, gcp), username/password")


USER_AGENT = f"swarm-operator/{__version__} kopf/{version('kopf')} (python/{platform.python_version()})"


class ConnectionInfo(kopf.ConnectionInfo):
    """kopf's ConnectionInfo whose requests name swarm-operator: kopf builds its watches' session from
    these headers (and adds its own User-Agent only where none is given), kube.KubeClient its requests."""

    def as_http_headers(self) -> dict[str, str]:
        return {**super().as_http_headers(), "User-Agent": USER_AGENT}


@dataclass(frozen=True)
class LoginSource:
    """Where to log in from; both None: the default search (KUBECONFIG, service account, ~/.kube/config)."""

    kubeconfig: str | None = None
    context: str | None = None

    def args(self) -> list[str]:
        return [*(["--kubeconfig", self.kubeconfig] if self.kubeconfig else []),
                *(["--context", self.context] if self.context else [])]


# -- the operator's side ---------------------------------------------------------------------


def run_helper(source: LoginSource) -> dict[str, Any]:
    """Run the loader in a child process; its JSON answer. Raises kopf.LoginError with its message."""
    cmd = [sys.executable, "-m", "swarm_operator.login", *source.args()]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=HELPER_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        raise kopf.LoginError(f"logging in took over {HELPER_TIMEOUT_SECONDS:.0f}s (an exec credential plugin "
                              "waiting for input?)") from exc
    if done.returncode != 0:
        raise kopf.LoginError(done.stderr.strip() or f"the login helper exited with {done.returncode}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def connection_info(answer: Mapping[str, Any]) -> ConnectionInfo:
    """kopf's ConnectionInfo from the helper's answer (an Authorization header, TLS material as data)."""
    scheme, _, credential = str(answer.get("authorization") or "").partition(" ")
    token = username = password = None
    if scheme.lower() == "bearer":
        token = credential
    elif scheme.lower() == "basic":
        username, _, password = base64.b64decode(credential).decode().partition(":")
    expiration = answer.get("expiration")
    return ConnectionInfo(
        server=answer["server"],
        ca_data=answer.get("ca_data"),
        insecure=answer.get("insecure"),
        token=token,
        username=username,
        password=password,
        certificate_data=answer.get("certificate_data"),
        private_key_data=answer.get("private_key_data"),
        proxy_url=answer.get("proxy_url"),
        default_namespace=answer.get("default_namespace"),
        expiration=datetime.fromisoformat(expiration) if expiration else None,
    )


class Login:
    """The current credentials, shared by kopf's watches and kube.KubeClient; thread-safe.

    `current()` answers from memory until the credentials are about to expire; `renew()`
    (after a 401) logs in again unless someone else just did.
    """

    def __init__(self, source: LoginSource = LoginSource(),
                 helper: Callable[[LoginSource], Mapping[str, Any]] = run_helper,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self._helper = helper
        self._clock = clock
        self._lock = threading.Lock()
        self._info: kopf.ConnectionInfo | None = None
        self._renew_at = 0.0
        self._logged_in_at = 0.0

    def current(self) -> kopf.ConnectionInfo:
        with self._lock:
            if self._info is None or self._clock() >= self._renew_at:
                self._login()
            assert self._info is not None
            return self._info

    def renew(self, unless_newer_than: float = 2.0) -> kopf.ConnectionInfo:
        """Log in again (the server refused the credentials); a login within the last
        `unless_newer_than` seconds is reused, so a burst of 401s runs the loader once."""
        with self._lock:
            if self._info is None or self._clock() - self._logged_in_at >= unless_newer_than:
                self._login()
            assert self._info is not None
            return self._info

    def _login(self) -> None:
        answer = self._helper(self.source)
        info = connection_info(answer)
        now = self._clock()
        if info.expiration is not None:
            self._renew_at = info.expiration.timestamp() - EXPIRY_MARGIN_SECONDS
        elif answer.get("in_cluster"):
            self._renew_at = now + IN_CLUSTER_RENEW_SECONDS
        else:
            self._renew_at = float("inf")  # static credentials: renewed only after a 401
        if self._info is None:
            log.info("API server %s: %s", info.server, answer.get("source", "?"))
        self._info, self._logged_in_at = info, now


# -- the child process: the kubernetes package's loaders ---------------------------------------


class _Collected(logging.Handler):
    """The loader logs why a credential failed (e.g. an exec plugin's exit code) instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _read(path: str | None) -> str | None:
    return Path(path).read_text() if path else None


def _answer_from(configuration: Any, source: str, expiry: datetime | None, **extra: Any) -> dict[str, Any]:
    expiration = None
    if expiry is not None:
        expiration = (expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)).isoformat()
    return {
        "server": configuration.host,
        "ca_data": _read(configuration.ssl_ca_cert),
        "insecure": not configuration.verify_ssl,
        "authorization": configuration.api_key.get("BearerToken"),
        "certificate_data": _read(configuration.cert_file),
        "private_key_data": _read(configuration.key_file),
        "proxy_url": configuration.proxy,
        "expiration": expiration,
        "source": source,
        **extra,
    }


def load_in_cluster(service_account_dir: Path, env: Mapping[str, str]) -> dict[str, Any]:
    from kubernetes.client import Configuration
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = Configuration()
    InClusterConfigLoader(token_filename=str(service_account_dir / "token"),
                          cert_filename=str(service_account_dir / "ca.crt"),
                          environ=env).load_and_set(configuration)
    ns_path = service_account_dir / "namespace"
    return _answer_from(configuration, "in-cluster: the pod's service account", None, in_cluster=True,
                        default_namespace=ns_path.read_text().strip() if ns_path.exists() else None)


def _describe(key: str, value: Any) -> str:
    """A user entry's key for an error message, with the plugin or provider it names (never a secret)."""
    if key == "exec" and isinstance(value, dict):
        return f"exec {value.get('command', '?')!r}"
    if key == "auth-provider" and isinstance(value, dict):
        return f"auth-provider {value.get('name', '?')!r}"
    return key


def load_kubeconfig(paths: str, context: str | None) -> dict[str, Any]:
    """The kubeconfig's credentials for `context` (default: its current context).

    Raises kopf.LoginError naming the file, context and user when they yield no credentials:
    the operator must never go on as system:anonymous.
    """
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

    merged = KubeConfigMerger(paths)
    if merged.config is None:
        raise kopf.LoginError(f"no kubeconfig at {paths}: pass --kubeconfig, set KUBECONFIG, or run in a pod")
    collected = _Collected()
    logging.getLogger().addHandler(collected)
    where, user = f"kubeconfig {paths}", ""
    try:
        loader = KubeConfigLoader(config_dict=merged.config, active_context=context, config_base_path=None)
        user = loader.current_context["context"].get("user", "")
        where = f"kubeconfig {paths}, context {loader.current_context['name']!r}, user {user!r}"
        configuration = Configuration()
        loader.load_and_set(configuration)
    except (ConfigException, KeyError, ValueError, OSError) as exc:
        raise kopf.LoginError(f"{where}: {exc}") from exc
    finally:
        logging.getLogger().removeHandler(collected)
    answer = _answer_from(configuration, where, getattr(loader, "expiry", None))
    if not answer["authorization"] and not answer["certificate_data"]:
        users = [u for data in merged.config_files.values() for u in data.get("users") or []]
        user_entry = next((u.get("user") or {} for u in users if u.get("name") == user), {})
        given = ", ".join(_describe(k, v) for k, v in sorted(user_entry.items())) or "nothing"
        why = "; ".join(collected.messages) or "none of its entries is one the kubernetes client supports"
        raise kopf.LoginError(f"{where} yields no credentials (the user has: {given}; {why}). "
                              f"Supported: {SUPPORTED}. Not going on as system:anonymous.")
    return answer


def load(source: LoginSource, env: Mapping[str, str] = os.environ,
         service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> dict[str, Any]:
    explicit = source.kubeconfig or env.get("KUBECONFIG")
    in_pod = bool(env.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir / "token").exists()
    if explicit is None and source.context is None and in_pod:
        return load_in_cluster(service_account_dir, env)
    return load_kubeconfig(explicit or os.path.expanduser("~/.kube/config"), source.context)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m swarm_operator.login",
                                description="Print the operator's API credentials as JSON (for the operator).")
    p.add_argument("--kubeconfig")
    p.add_argument("--context")
    args = p.parse_args(argv)
    try:
        answer = load(LoginSource(args.kubeconfig, args.context))
    except kopf.LoginError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
