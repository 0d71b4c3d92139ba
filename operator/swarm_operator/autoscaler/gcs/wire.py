"""One connection to one GCS, two ways: Ray's own GcsClient, or plain gRPC with Ray's generated stubs.

Facts about Ray 2.60 this is built on (measured against real ``ray start`` processes):

- ``ray._raylet.GcsClient(address)`` takes its connect timeouts from Ray's process-wide config, which
  reads ``RAY_py_gcs_connect_timeout_s`` / ``RAY_gcs_rpc_server_connect_timeout_s`` when ``ray._raylet``
  is imported: setting the variables later has no effect. ``ray._raylet.Config.initialize(json)``
  changes them at any time, so that is what is used. A refused address still costs the sum of three
  waits (channel, pubsub channel, cluster id), hence a plain TCP probe first.
- The GcsClient takes a token only process-wide: Ray's auth mode and token loader are C++ singletons and
  every call sends whatever token the loader holds at that moment, so two clusters with different tokens
  cannot be read concurrently through it. With ``RAY_AUTH_MODE=token`` and no token anywhere, creating a
  GcsClient aborts the whole process (a C++ RAY_CHECK). Hence two transports: the GcsClient (default; a
  token, if any, comes from the operator's environment) and plain gRPC with Ray's generated stubs and the
  metadata ``authorization: Bearer <token>`` per call (used when a per-cluster token is given).
- A GcsClient whose GCS was replaced fails every call with ``WrongClusterID``; it must be recreated.
  One whose GCS died fails each call at its deadline and does not exit the process (watched for 80 s,
  past Ray's 60 s reconnect timeout).
"""

from __future__ import annotations

import importlib
import json
import socket
import threading
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple, Protocol

import grpc
import ray
import ray.exceptions
from google.protobuf.message import DecodeError

# The compiled extension and the generated protobuf modules carry no type information mypy can use.
_raylet: Any = importlib.import_module("ray._raylet")
_autoscaler_pb2: Any = importlib.import_module("ray.core.generated.autoscaler_pb2")
_autoscaler_grpc: Any = importlib.import_module("ray.core.generated.autoscaler_pb2_grpc")
_gcs_service_pb2: Any = importlib.import_module("ray.core.generated.gcs_service_pb2")
_gcs_service_grpc: Any = importlib.import_module("ray.core.generated.gcs_service_pb2_grpc")

_KV_NOT_FOUND = 17  # ray::StatusCode::NotFound in a GcsStatus

# Ray's own connect waits, set process-wide for the GcsClient transport (see the module docstring).
# Worst case for an address that accepts TCP but does not answer: 1 + 1 + 2 s.
_RAY_CHANNEL_WAIT_S = 1
_RAY_CLUSTER_ID_WAIT_S = 2
_GRPC_OPTIONS = (
    # Large clusters report every node ever seen (dead ones too): allow big replies, as Ray does.
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    # gRPC's default reconnect backoff grows to 120 s; a head that comes back must be read at once.
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class DrainReason(IntEnum):
    """``autoscaler.DrainNodeReason``. The raylet may refuse IDLE_TERMINATION (the node got work), never
    PREEMPTION."""

    IDLE_TERMINATION = 1
    PREEMPTION = 2


class Transport(StrEnum):
    AUTO = "auto"  # GRPC when a per-cluster token is given, else GCS_CLIENT
    GCS_CLIENT = "gcs_client"  # ray._raylet.GcsClient; a token comes from the process environment
    GRPC = "grpc"  # grpcio with Ray's generated stubs; the token travels as call metadata


class DrainResult(NamedTuple):
    accepted: bool
    why: str  # Ray's rejection message, or ours when the drain was never sent; "" when accepted


class RayStateError(Exception):
    """Reading or draining a cluster failed; the caller should back off and retry."""


class GcsUnavailable(RayStateError):
    """The GCS cannot be reached, did not answer in time, or sent something unreadable."""


class GcsAuthError(RayStateError):
    """Token authentication failed: missing or wrong token."""


class GcsReplaced(GcsUnavailable):
    """The GcsClient's GCS was replaced by a new one (WrongClusterID): reconnect."""


class Wire(Protocol):
    """The three calls the client needs, on one connection to one GCS."""

    def resource_state(self, timeout_s: float) -> Any: ...  # a ray.rpc.autoscaler.ClusterResourceState

    def kv_get(self, key: bytes, namespace: bytes, timeout_s: float) -> bytes | None: ...

    def drain(self, node_id_hex: str, reason: int, message: str, deadline_ms: int, timeout_s: float) -> DrainResult: ...

    def close(self) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"GCS address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast on a dead address: a refused or unroutable port costs at most ``timeout_s`` here, where
    the GcsClient would spend several fixed waits."""
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise GcsUnavailable(f"cannot connect to GCS at {address}: {e}") from e


_ray_config_lock = threading.Lock()
_ray_config_done = False


def _configure_ray_connect_waits() -> None:
    global _ray_config_done
    with _ray_config_lock:
        if not _ray_config_done:
            _raylet.Config.initialize(json.dumps({
                "gcs_rpc_server_connect_timeout_s": _RAY_CHANNEL_WAIT_S,
                "py_gcs_connect_timeout_s": _RAY_CLUSTER_ID_WAIT_S,
            }))
            _ray_config_done = True


def _ray_error(address: str, e: Exception) -> RayStateError:
    text = str(e)
    if isinstance(e, ray.exceptions.AuthenticationError):
        if "WrongClusterID" in text:
            return GcsReplaced(f"GCS at {address} was replaced: {text}")
        return GcsAuthError(f"GCS at {address} refused the token: {text}")
    return GcsUnavailable(f"GCS at {address}: {type(e).__name__}: {text}")


def _parse_reply(address: str, raw: bytes) -> Any:
    reply = _autoscaler_pb2.GetClusterResourceStateReply()
    try:
        reply.ParseFromString(raw)
    except DecodeError as e:
        raise GcsUnavailable(f"GCS at {address} sent an unreadable resource state: {e}") from e
    return reply


class GcsClientWire:
    def __init__(self, address: str, connect_timeout_s: float) -> None:
        self.address = address
        _probe(address, connect_timeout_s)
        _configure_ray_connect_waits()
        try:
            # With RAY_AUTH_MODE=token and no token anywhere, the GcsClient would abort the process.
            _raylet.AuthenticationTokenLoader.instance().has_token()
            self.gcs = _raylet.GcsClient(address=address)
        except ray.exceptions.RayError as e:
            raise _ray_error(address, e) from e

    def resource_state(self, timeout_s: float) -> Any:
        # What ray.autoscaler.v2.sdk.get_cluster_resource_state does, but with a deadline.
        try:
            raw = self.gcs.get_cluster_resource_state(timeout_s=timeout_s)
        except ray.exceptions.RayError as e:
            raise _ray_error(self.address, e) from e
        return _parse_reply(self.address, raw).cluster_resource_state

    def kv_get(self, key: bytes, namespace: bytes, timeout_s: float) -> bytes | None:
        try:
            value: bytes | None = self.gcs.internal_kv_get(key, namespace or None, timeout=timeout_s)
        except ray.exceptions.RayError as e:
            raise _ray_error(self.address, e) from e
        return value

    def drain(self, node_id_hex: str, reason: int, message: str, deadline_ms: int, timeout_s: float) -> DrainResult:
        try:
            accepted, why = self.gcs.drain_node(node_id_hex, reason, message, deadline_ms, timeout=timeout_s)
        except ray.exceptions.RayError as e:
            raise _ray_error(self.address, e) from e
        return DrainResult(bool(accepted), str(why))

    def close(self) -> None:
        """The GcsClient has no close; dropping the reference releases it."""


class GrpcWire:
    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        split_address(address)
        self.channel = grpc.insecure_channel(address, options=_GRPC_OPTIONS)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.autoscaler = _autoscaler_grpc.AutoscalerStateServiceStub(self.channel)
        self.kv = _gcs_service_grpc.InternalKVGcsServiceStub(self.channel)

    def _call(self, method: Any, request: Any, timeout_s: float) -> Any:
        try:
            return method(request, timeout=timeout_s, metadata=self.metadata)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise GcsAuthError(f"GCS at {self.address} refused the token: {details}") from e
            raise GcsUnavailable(f"GCS at {self.address}: {code.name}: {details}") from e

    def resource_state(self, timeout_s: float) -> Any:
        request = _autoscaler_pb2.GetClusterResourceStateRequest()
        return self._call(self.autoscaler.GetClusterResourceState, request, timeout_s).cluster_resource_state

    def kv_get(self, key: bytes, namespace: bytes, timeout_s: float) -> bytes | None:
        reply = self._call(
            self.kv.InternalKVGet, _gcs_service_pb2.InternalKVGetRequest(key=key, namespace=namespace), timeout_s
        )
        if reply.status.code == _KV_NOT_FOUND:
            return None
        if reply.status.code:
            raise GcsUnavailable(f"GCS at {self.address}: KV get {key!r}: {reply.status.message}")
        value: bytes = reply.value
        return value

    def drain(self, node_id_hex: str, reason: int, message: str, deadline_ms: int, timeout_s: float) -> DrainResult:
        request = _autoscaler_pb2.DrainNodeRequest(
            node_id=bytes.fromhex(node_id_hex), reason=reason, reason_message=message,
            deadline_timestamp_ms=deadline_ms,
        )
        reply = self._call(self.autoscaler.DrainNode, request, timeout_s)
        return DrainResult(bool(reply.is_accepted), str(reply.rejection_reason_message))

    def close(self) -> None:
        self.channel.close()


