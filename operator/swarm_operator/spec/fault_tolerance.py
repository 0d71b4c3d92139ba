"""spec.faultTolerance: worker replacement backoff, and GCS fault tolerance with an external Redis
(address, password Secret, user, the CA of a rediss:// server, the key cleanup's timeout)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm_operator.spec.reader import Reader, show
from swarm_operator.spec.rules import (
    DEFAULT_REDIS_CLEANUP_TIMEOUT,
    REDIS_ADDRESS,
    REDIS_USERNAME,
    SECRET_KEY,
    SECRET_NAME,
)
from swarm_operator.spec.types import FaultToleranceSpec, GcsFaultTolerance, KeyRef


def read_fault_tolerance(r: Reader, spec: Mapping[str, Any]) -> FaultToleranceSpec:
    raw = r.mapping(spec, "faultTolerance", "spec")
    p = "spec.faultTolerance"
    initial = r.number(raw, "workerBackoffInitialSeconds", p, 1.0, 0, 3600)
    cap = r.number(raw, "workerBackoffMaxSeconds", p, 300.0, 1, 86400)
    if initial > cap:
        r.fail(f"{p}.workerBackoffInitialSeconds", f"must not exceed workerBackoffMaxSeconds ({initial:g} > {cap:g})")
    gcs = None
    if raw.get("gcs") is not None:
        g = r.mapping(raw, "gcs", p)
        gp = f"{p}.gcs"
        address = r.string(g, "redisAddress", gp, None)
        if address is None:
            r.fail(f"{gp}.redisAddress", "is required when gcs fault tolerance is set")
        elif not REDIS_ADDRESS.fullmatch(address):
            r.fail(f"{gp}.redisAddress", f"must be host:port, redis://host:port or rediss://host:port (TLS), "
                   f"got {show(address)}")
        secret = r.mapping(g, "redisPasswordSecret", gp)
        sname = r.string(secret, "name", f"{gp}.redisPasswordSecret", None)
        skey = r.string(secret, "key", f"{gp}.redisPasswordSecret", None)
        if secret and (not sname or not skey):
            r.fail(f"{gp}.redisPasswordSecret", "needs both name and key")
        if sname and not (SECRET_NAME.fullmatch(sname) and len(sname) <= 253):
            r.fail(f"{gp}.redisPasswordSecret.name", f"must be a Secret name, got {show(sname)}")
        if skey and not (SECRET_KEY.fullmatch(skey) and len(skey) <= 253):
            r.fail(f"{gp}.redisPasswordSecret.key", f"must be a Secret key, got {show(skey)}")
        gcs = GcsFaultTolerance(redis_address=address or "", password_secret_name=sname, password_secret_key=skey,
                                **_gcs_redis_options(r, g, gp, address or ""))
    return FaultToleranceSpec(backoff_initial_seconds=initial, backoff_max_seconds=cap, gcs=gcs)


def _gcs_redis_options(r: Reader, g: Mapping[str, Any], gp: str, address: str) -> dict[str, Any]:
    """The Redis user, the CA of a rediss:// server, and how long deletion waits for the key cleanup."""
    username = r.string(g, "redisUsername", gp, None)
    if username is not None and not (REDIS_USERNAME.fullmatch(username) and len(username) <= 256):
        r.fail(f"{gp}.redisUsername", f"must be a Redis user name (printable, no spaces, at most 256), "
               f"got {show(username)}")
    ca = None
    raw_ca = r.mapping(g, "redisCA", gp)
    if g.get("redisCA") is not None:
        cpath = f"{gp}.redisCA"
        secret = r.string(raw_ca, "secretName", cpath, None)
        config_map = r.string(raw_ca, "configMapName", cpath, None)
        key = r.string(raw_ca, "key", cpath, "ca.crt") or ""
        if (secret is None) == (config_map is None):
            r.fail(cpath, "needs exactly one of secretName and configMapName")
        name = secret or config_map or ""
        if name and not (SECRET_NAME.fullmatch(name) and len(name) <= 253):
            r.fail(f"{cpath}.{'secretName' if secret else 'configMapName'}", f"must be an object name, "
                   f"got {show(name)}")
        if not (SECRET_KEY.fullmatch(key) and len(key) <= 253):
            r.fail(f"{cpath}.key", f"must be a key name, got {show(key)}")
        if address and not address.startswith("rediss://"):
            r.fail(cpath, "is only used with TLS: redisAddress must start with rediss://")
        ca = KeyRef("Secret" if secret else "ConfigMap", name, key)
    timeout = r.integer(g, "cleanupTimeoutSeconds", gp, DEFAULT_REDIS_CLEANUP_TIMEOUT, 10, 3600)
    return {"redis_username": username, "redis_ca": ca,
            "cleanup_timeout_seconds": DEFAULT_REDIS_CLEANUP_TIMEOUT if timeout is None else timeout}
