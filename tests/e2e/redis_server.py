"""A real Redis for GCS fault tolerance: Debian's `redis-server` (.ci/run installs it) on the pod network's gateway
(10.250.0.1, on the host: every pod's network namespace routes there), TLS only (a CA and a server certificate made
with openssl), an ACL user and a password, so a cluster's spec goes through rediss://, redisCA, redisUsername and
redisPasswordSecret. The `redis` fixture (tests/e2e/conftest.py) runs one per module that asks for it."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster.nodeagent import network
from tests.integration.helpers import wait_for

REDIS_USER = "ray-gcs"
REDIS_PASSWORD = "s5d-e2e-password"
PASSWORD_SECRET = "redis-auth"
CA_CONFIG_MAP = "redis-ca"


@dataclass(frozen=True)
class Redis:
    address: str  # host:port
    ca_file: Path

    def cli(self, *args: str) -> str:
        host, port = self.address.split(":")
        out = subprocess.run(["redis-cli", "--tls", "--cacert", str(self.ca_file), "-h", host, "-p", port,
                              "--user", REDIS_USER, "--pass", REDIS_PASSWORD, "--no-auth-warning", *args],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return out

    def answers(self) -> bool:
        try:
            return self.cli("PING").strip() == "PONG"
        except subprocess.CalledProcessError:
            return False  # not listening yet

    def keys(self, namespace: str) -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", f"RAY{namespace}@*").splitlines() if k]

    def gcs_spec(self, cleanup_timeout_seconds: int = 240) -> dict[str, Any]:
        """spec.faultTolerance.gcs of a cluster on this Redis (its Secret and ConfigMap: `add_credentials`)."""
        return {"redisAddress": f"rediss://{self.address}", "redisUsername": REDIS_USER,
                "redisPasswordSecret": {"name": PASSWORD_SECRET, "key": "password"},
                "redisCA": {"configMapName": CA_CONFIG_MAP, "key": "ca.pem"},
                "cleanupTimeoutSeconds": cleanup_timeout_seconds}

    def add_credentials(self, core: Any, namespace: str) -> None:
        """The password Secret and the CA ConfigMap that `gcs_spec` names, in `namespace`."""
        core.create_namespaced_secret(namespace, {"metadata": {"name": PASSWORD_SECRET}, "data": {
            "password": base64.b64encode(REDIS_PASSWORD.encode()).decode()}})
        core.create_namespaced_config_map(namespace, {"metadata": {"name": CA_CONFIG_MAP},
                                                      "data": {"ca.pem": self.ca_file.read_text()}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((str(network.GATEWAY.ip), 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@contextmanager
def running_redis(d: Path) -> Iterator[Redis]:
    """redis-server with TLS only, on the pod network's gateway (the bridge exists once process nodes run)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs Debian's redis-server (apt-get install redis-server; .ci/run installs it)")
    if shutil.which("openssl") is None or shutil.which("redis-cli") is None:
        pytest.skip("needs openssl and redis-cli (Debian packages openssl, redis-tools)")
    gateway = str(network.GATEWAY.ip)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=swarm-e2e-redis-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=redis", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=IP:{gateway}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf", cwd=d)
    port = _free_port()
    (d / "redis.conf").write_text("\n".join([
        "port 0", f"tls-port {port}", f"bind {gateway}", f"tls-cert-file {d / 'server.crt'}",
        f"tls-key-file {d / 'server.key'}", f"tls-ca-cert-file {d / 'ca.crt'}", "tls-auth-clients no",
        'save ""', "appendonly no", f"dir {d}", "user default off",
        f"user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all", ""]))
    log = (d / "redis.log").open("wb")
    proc = subprocess.Popen([binary, str(d / "redis.conf")], stdout=log, stderr=subprocess.STDOUT)
    server = Redis(f"{gateway}:{port}", d / "ca.crt")
    try:
        wait_for("redis-server answering over TLS", server.answers, timeout=20)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
