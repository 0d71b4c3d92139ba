"""The one module that talks to Ray: read a cluster's resource state from its GCS, and drain nodes.

Per cluster, :class:`RayStateClient` reads what Ray's own v2 autoscaler reads —
``AutoscalerStateService.GetClusterResourceState`` — and turns the protobuf reply into the frozen
dataclasses below (:class:`ClusterSnapshot`), with demand aggregated as shape × count. It also drains
nodes through ``DrainNode``. :class:`RayStatePool` reads many clusters concurrently so that one slow or
dead cluster never delays the others.

Facts about Ray 2.60 this module is built on (measured against real ``ray start`` processes):

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
- ``DrainNode`` accepts drains of unknown and dead nodes, and a node id of the wrong length is accepted
  too (logged by the C++ client as an error): an accept only means something for a node that was alive
  in the snapshot the decision came from, and ids are checked here.
- ``pending_resource_requests`` mixes queued and infeasible demand, and includes tasks waiting for a
  placement group (shapes of ``CPU_group_<pg id>``-style resources): those are counted apart, the
  gang itself is what needs capacity. The GCS also lists an empty gang entry for every placement group
  already placed; those are skipped.
- On a head without ``RAY_enable_autoscaler_v2=1``, ``ray.autoscaler.sdk.request_resources`` writes a
  JSON list of resource dicts to internal-KV key ``autoscaler_resource_request`` instead of a GCS
  constraint; both are read and merged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import grpc
import ray
import ray.exceptions
from google.protobuf.message import DecodeError

from swarm_operator.reconcile.backoff import backoff_delay

log = logging.getLogger(__name__)

# The compiled extension and the generated protobuf modules carry no type information mypy can use.
_raylet: Any = importlib.import_module("ray._raylet")
_autoscaler_pb2: Any = importlib.import_module("ray.core.generated.autoscaler_pb2")
_autoscaler_grpc: Any = importlib.import_module("ray.core.generated.autoscaler_pb2_grpc")
_gcs_service_pb2: Any = importlib.import_module("ray.core.generated.gcs_service_pb2")
_gcs_service_grpc: Any = importlib.import_module("ray.core.generated.gcs_service_pb2_grpc")

OPERATOR_RAY_VERSION: str = ray.__version__

Resources = Mapping[str, float]
_T = TypeVar("_T")

# Internal-KV keys (ray/_private/ray_constants.py, ray/_common/usage/usage_lib.py, ray/_raylet).
V1_REQUEST_KEY = b"autoscaler_resource_request"  # namespace "" (what ray's _internal_kv_put uses)
CLUSTER_METADATA_KEY, CLUSTER_METADATA_NS = b"CLUSTER_METADATA", b"cluster"
V2_ENABLED_KEY, V2_ENABLED_NS = b"__autoscaler_v2_enabled", b"__autoscaler"
HEAD_RESOURCE = "node:__internal_head__"
_KV_NOT_FOUND = 17  # ray::StatusCode::NotFound in a GcsStatus

# Ray names a placement group's reserved resources "<resource>_group_<pg id>" and
# "<resource>_group_<bundle index>_<pg id>"; a pg id is 18 bytes (36 hex digits).
_PG_RESOURCE = re.compile(r".+_group_(?:\d+_)?[0-9a-f]{36}")
_NODE_ID_HEX = re.compile(r"[0-9a-f]{56}")  # NodeID is 28 bytes
_STRATEGY_IN_DETAILS = re.compile(r":(STRICT_PACK|STRICT_SPREAD|PACK|SPREAD)\|")

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


# ---------------------------------------------------------------------------------------------- data


class NodeStatus(StrEnum):
    """``autoscaler.NodeStatus``; the values match the policy's own enum."""

    RUNNING = "RUNNING"
    IDLE = "IDLE"
    DRAINING = "DRAINING"
    DEAD = "DEAD"
    UNKNOWN = "UNKNOWN"  # UNSPECIFIED on the wire


class Strategy(StrEnum):
    """Placement-group strategies."""

    PACK = "PACK"
    SPREAD = "SPREAD"
    STRICT_PACK = "STRICT_PACK"
    STRICT_SPREAD = "STRICT_SPREAD"


class LabelOp(StrEnum):
    IN = "in"
    NOT_IN = "notin"


class DrainReason(IntEnum):
    """``autoscaler.DrainNodeReason``. The raylet may refuse IDLE_TERMINATION (the node got work), never
    PREEMPTION."""

    IDLE_TERMINATION = 1
    PREEMPTION = 2


class Transport(StrEnum):
    AUTO = "auto"  # GRPC when a per-cluster token is given, else GCS_CLIENT
    GCS_CLIENT = "gcs_client"  # ray._raylet.GcsClient; a token comes from the process environment
    GRPC = "grpc"  # grpcio with Ray's generated stubs; the token travels as call metadata


@dataclass(frozen=True)
class LabelConstraint:
    """One term of a label selector: the node's label ``key`` is (not) one of ``values``."""

    key: str
    op: LabelOp
    values: frozenset[str]


LabelSelector = tuple[LabelConstraint, ...]  # all terms must hold; () matches every node


@dataclass(frozen=True)
class ResourceDemand:
    """``count`` requests of one shape.

    ``label_selectors`` are alternatives in Ray's fallback order (the first that some node can satisfy
    wins); () means any node.
    """

    shape: Resources
    count: int
    label_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True)
class Bundle:
    shape: Resources
    label_selector: LabelSelector = ()


@dataclass(frozen=True)
class GangDemand:
    """``count`` identical pending placement groups: all bundles of one are placed, or none.

    ``fallbacks`` are alternative bundle lists Ray may try after ``bundles`` (none in Ray 2.60, which
    sends one). For a placement group being rescheduled, only its unplaced bundles are listed.
    """

    bundles: tuple[Bundle, ...]
    strategy: Strategy
    count: int
    placement_group_ids: tuple[str, ...]
    fallbacks: tuple[tuple[Bundle, ...], ...] = ()


@dataclass(frozen=True)
class RayNode:
    """One Ray node as the GCS reports it. Dead nodes keep only ids and type (no resources)."""

    node_id: str  # hex, the form DrainNode wants
    instance_id: str  # RAY_CLOUD_INSTANCE_ID: the pod name
    node_type: str  # RAY_NODE_TYPE_NAME: the worker group ("head" for the head)
    status: NodeStatus
    total: Resources  # as reported, including node:<ip> and placement-group resources
    available: Resources
    idle_duration_ms: int
    labels: Mapping[str, str]
    ip: str = ""
    activity: tuple[str, ...] = ()  # Ray's words for why the node is busy (may lag the status)

    @property
    def alive(self) -> bool:
        return self.status in (NodeStatus.RUNNING, NodeStatus.IDLE, NodeStatus.DRAINING)

    @property
    def is_head(self) -> bool:
        return HEAD_RESOURCE in self.total


@dataclass(frozen=True)
class ClusterSnapshot:
    address: str
    session_name: str  # changes when the head (GCS) is replaced without fault tolerance
    state_version: int
    nodes: tuple[RayNode, ...]
    pending: tuple[ResourceDemand, ...]  # tasks and actors, queued or infeasible
    gangs: tuple[GangDemand, ...]  # placement groups waiting for capacity
    constraints: tuple[ResourceDemand, ...]  # request_resources(), GCS and internal-KV forms merged
    pending_in_placement_groups: int = 0  # tasks waiting inside a placement group (need no new node)
    ray_version: str | None = None  # the cluster's, from its metadata; None if it has none
    autoscaler_v2: bool | None = None  # head started with RAY_enable_autoscaler_v2=1
    read_at: float = 0.0  # epoch seconds when the read started
    read_seconds: float = 0.0  # how long the read took, all RPCs included

    def alive_nodes(self) -> tuple[RayNode, ...]:
        return tuple(n for n in self.nodes if n.alive)

    def node(self, node_id_hex: str) -> RayNode | None:
        return next((n for n in self.nodes if n.node_id == node_id_hex.lower()), None)

    def node_by_instance(self, instance_id: str) -> RayNode | None:
        """The node of a pod; an alive one wins over dead ones of the same pod name (a restarted head)."""
        matches = [n for n in self.nodes if n.instance_id == instance_id]
        return next((n for n in matches if n.alive), matches[0] if matches else None)


class DrainResult(NamedTuple):
    accepted: bool
    why: str  # Ray's rejection message, or ours when the drain was never sent; "" when accepted


class RayStateError(Exception):
    """Reading or draining a cluster failed; the caller should back off and retry."""


class GcsUnavailable(RayStateError):
    """The GCS cannot be reached, did not answer in time, or sent something unreadable."""


class GcsAuthError(RayStateError):
    """Token authentication failed: missing or wrong token."""


class _GcsReplaced(GcsUnavailable):
    """The GcsClient's GCS was replaced by a new one (WrongClusterID): reconnect."""


# ------------------------------------------------------------------------------------------- parsing

ShapeKey = tuple[tuple[str, float], ...]


def _shape_key(shape: Mapping[str, float]) -> ShapeKey:
    # Zero amounts constrain nothing; dropping them makes {"CPU": 1, "GPU": 0} equal {"CPU": 1}.
    return tuple(sorted((name, float(amount)) for name, amount in shape.items() if amount))


_LABEL_OPERATOR_NOT_IN = 2  # ray.rpc.LabelSelectorOperator.LABEL_OPERATOR_NOT_IN


def _label_selector(proto: Any) -> LabelSelector:
    terms = []
    for c in proto.label_constraints:
        op = LabelOp.NOT_IN if c.operator == _LABEL_OPERATOR_NOT_IN else LabelOp.IN
        terms.append(LabelConstraint(key=c.label_key, op=op, values=frozenset(c.label_values)))
    return tuple(sorted(terms, key=lambda t: (t.key, t.op, sorted(t.values))))


def _selectors(protos: Iterable[Any]) -> tuple[LabelSelector, ...]:
    # The GCS sends an empty selector for requests that have none.
    return tuple(s for s in (_label_selector(p) for p in protos) if s)


DemandItem = tuple[Mapping[str, float], tuple[LabelSelector, ...], int]  # shape, selectors, count


def aggregate(items: Iterable[DemandItem]) -> tuple[ResourceDemand, ...]:
    """Merge (shape, selectors, count) items of equal shape and selectors, in first-seen order."""
    counts: dict[tuple[ShapeKey, tuple[LabelSelector, ...]], int] = {}
    for shape, selectors, count in items:
        if count > 0:
            key = (_shape_key(shape), selectors)
            counts[key] = counts.get(key, 0) + count
    return tuple(ResourceDemand(dict(shape), count, selectors) for (shape, selectors), count in counts.items())


def is_placement_group_shape(shape: Mapping[str, float]) -> bool:
    return any(_PG_RESOURCE.fullmatch(name) for name in shape)


def _strategy(gang: Any) -> Strategy:
    found = _STRATEGY_IN_DETAILS.search(gang.details)
    if found:
        return Strategy(found.group(1))
    # Without details, the constraints Ray derives from the strategy still tell the strict ones apart;
    # PACK and SPREAD carry none, and PACK is the one that asks for fewer nodes.
    requests = itertools.chain(gang.requests, *(s.resource_requests for s in gang.bundle_selectors))
    for request in requests:
        for constraint in request.placement_constraints:
            if constraint.HasField("anti_affinity"):
                return Strategy.STRICT_SPREAD
            if constraint.HasField("affinity"):
                return Strategy.STRICT_PACK
    return Strategy.PACK


def _bundles(requests: Iterable[Any]) -> tuple[Bundle, ...]:
    bundles = []
    for r in requests:
        selectors = _selectors(r.label_selectors)
        bundles.append(Bundle(dict(_shape_key(r.resources_bundle)), selectors[0] if selectors else ()))
    return tuple(bundles)


def _gangs(protos: Iterable[Any]) -> tuple[GangDemand, ...]:
    merged: dict[tuple[Any, ...], tuple[list[tuple[Bundle, ...]], Strategy, list[str]]] = {}
    for g in protos:
        choices = [c for c in (_bundles(s.resource_requests) for s in g.bundle_selectors) if c]
        if not choices and g.requests:
            choices = [_bundles(g.requests)]  # the deprecated field, for GCS versions without selectors
        if not choices:
            continue  # an already placed group: the GCS lists it with no bundles
        strategy = _strategy(g)
        key = (tuple(tuple((_shape_key(b.shape), b.label_selector) for b in c) for c in choices), strategy)
        pg_id = g.details.split(":", 1)[0]
        merged.setdefault(key, (choices, strategy, []))[2].append(pg_id)
    return tuple(
        GangDemand(choices[0], strategy, len(ids), tuple(i for i in ids if i), tuple(choices[1:]))
        for choices, strategy, ids in merged.values()
    )


_NODE_STATUS = {1: NodeStatus.RUNNING, 2: NodeStatus.DEAD, 3: NodeStatus.IDLE, 4: NodeStatus.DRAINING}


def _map(proto_map: Any) -> dict[Any, Any]:
    # Indexing is twice as fast as dict(proto_map), which goes through the generic Mapping.keys();
    # with a thousand nodes this is most of the parsing time.
    return {k: proto_map[k] for k in proto_map}


def _node(proto: Any) -> RayNode:
    return RayNode(
        node_id=proto.node_id.hex(),
        instance_id=proto.instance_id,
        node_type=proto.ray_node_type_name,
        status=_NODE_STATUS.get(proto.status, NodeStatus.UNKNOWN),
        total=_map(proto.total_resources),
        available=_map(proto.available_resources),
        idle_duration_ms=proto.idle_duration_ms,
        labels=_map(proto.labels),
        ip=proto.node_ip_address,
        activity=tuple(proto.node_activity),
    )


def parse_v1_requests(raw: bytes | None) -> tuple[ResourceDemand, ...]:
    """The internal-KV form of ``request_resources``: a JSON list of resource dicts, one per bundle
    (``num_cpus=n`` becomes n × {"CPU": 1}). Anything malformed is logged and ignored: a bad write by a
    user's driver must not stop the cluster from being read."""
    if not raw:
        return ()
    try:
        bundles = json.loads(raw)
    except ValueError:
        log.warning("ignoring unreadable %s: %r", V1_REQUEST_KEY.decode(), raw[:200])
        return ()
    if not isinstance(bundles, list):
        log.warning("ignoring %s that is not a list: %r", V1_REQUEST_KEY.decode(), raw[:200])
        return ()
    good = [
        b for b in bundles
        if isinstance(b, dict)
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in b.values())
    ]
    if len(good) != len(bundles):
        log.warning("ignoring %d malformed bundles in %s", len(bundles) - len(good), V1_REQUEST_KEY.decode())
    return aggregate((b, (), 1) for b in good)


def snapshot_from_state(
    state: Any,
    *,
    address: str,
    v1_requests: bytes | None = None,
    ray_version: str | None = None,
    autoscaler_v2: bool | None = None,
    read_at: float = 0.0,
    read_seconds: float = 0.0,
) -> ClusterSnapshot:
    """Turn a ``ray.rpc.autoscaler.ClusterResourceState`` (plus the internal-KV request, if any) into a
    snapshot. Pure: the unit tests feed it protobufs they build."""
    pending: list[DemandItem] = []
    in_groups = 0
    for r in state.pending_resource_requests:
        if is_placement_group_shape(r.request.resources_bundle):
            in_groups += r.count
        else:
            pending.append((r.request.resources_bundle, _selectors(r.request.label_selectors), r.count))
    constraints = [
        (r.request.resources_bundle, _selectors(r.request.label_selectors), r.count)
        for c in state.cluster_resource_constraints
        for r in c.resource_requests
    ]
    constraints += [(d.shape, d.label_selectors, d.count) for d in parse_v1_requests(v1_requests)]
    return ClusterSnapshot(
        address=address,
        session_name=state.cluster_session_name,
        state_version=state.cluster_resource_state_version,
        nodes=tuple(_node(n) for n in state.node_states),
        pending=aggregate(pending),
        gangs=_gangs(state.pending_gang_resource_requests),
        constraints=aggregate(constraints),
        pending_in_placement_groups=in_groups,
        ray_version=ray_version,
        autoscaler_v2=autoscaler_v2,
        read_at=read_at,
        read_seconds=read_seconds,
    )


def parse_cluster_metadata(raw: bytes | None) -> str | None:
    """The Ray version from the ``CLUSTER_METADATA`` the head writes at start."""
    if not raw:
        return None
    try:
        version = json.loads(raw).get("ray_version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


# ----------------------------------------------------------------------------------------- transport


class _Wire(Protocol):
    """The three calls the client needs, on one connection to one GCS."""

    def resource_state(self, timeout_s: float) -> Any: ...  # a ray.rpc.autoscaler.ClusterResourceState

    def kv_get(self, key: bytes, namespace: bytes, timeout_s: float) -> bytes | None: ...

    def drain(self, node_id_hex: str, reason: int, message: str, deadline_ms: int, timeout_s: float) -> DrainResult: ...

    def close(self) -> None: ...


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"GCS address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast on a dead address: a refused or unroutable port costs at most ``timeout_s`` here, where
    the GcsClient would spend several fixed waits."""
    host, port = _split_address(address)
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
            return _GcsReplaced(f"GCS at {address} was replaced: {text}")
        return GcsAuthError(f"GCS at {address} refused the token: {text}")
    return GcsUnavailable(f"GCS at {address}: {type(e).__name__}: {text}")


def _parse_reply(address: str, raw: bytes) -> Any:
    reply = _autoscaler_pb2.GetClusterResourceStateReply()
    try:
        reply.ParseFromString(raw)
    except DecodeError as e:
        raise GcsUnavailable(f"GCS at {address} sent an unreadable resource state: {e}") from e
    return reply


class _GcsClientWire:
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


class _GrpcWire:
    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        _split_address(address)
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


# -------------------------------------------------------------------------------------------- client


@dataclass(frozen=True)
class _SessionInfo:
    session_name: str
    ray_version: str | None
    autoscaler_v2: bool | None


class RayStateClient:
    """Reads one cluster's resource state and drains its nodes.

    Connects lazily and drops the connection after any failure, so the next call reconnects (a head
    that was replaced, a connection that broke). Safe to share between threads.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        transport: Transport = Transport.AUTO,
        connect_timeout_s: float = 2.0,
        rpc_timeout_s: float = 5.0,
    ) -> None:
        _split_address(address)
        if transport is Transport.AUTO:
            transport = Transport.GRPC if token else Transport.GCS_CLIENT
        if transport is Transport.GCS_CLIENT and token:
            raise ValueError("the GcsClient takes its token from RAY_AUTH_TOKEN; a per-cluster token needs GRPC")
        self.address = address
        self.transport = transport
        self.connect_timeout_s = connect_timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self._token = token
        self._lock = threading.Lock()
        self._wire: _Wire | None = None
        self._session: _SessionInfo | None = None  # replaced whole, so readers never see a mix

    def _connect(self) -> _Wire:
        with self._lock:
            if self._wire is None:
                if self.transport is Transport.GRPC:
                    self._wire = _GrpcWire(self.address, self._token)
                else:
                    self._wire = _GcsClientWire(self.address, self.connect_timeout_s)
            return self._wire

    def _drop(self, wire: _Wire) -> None:
        with self._lock:
            if self._wire is wire:
                self._wire = None
        wire.close()

    def _on_wire(self, call: Callable[[_Wire], _T], *, retry_replaced: bool = True) -> _T:
        wire = self._connect()
        try:
            return call(wire)
        except _GcsReplaced:
            self._drop(wire)
            if not retry_replaced:
                raise
        except RayStateError:
            self._drop(wire)
            raise
        wire = self._connect()  # the head was replaced: one more try on a fresh connection
        try:
            return call(wire)
        except RayStateError:
            self._drop(wire)
            raise

    def _fetch(self, wire: _Wire) -> tuple[Any, bytes | None, _SessionInfo]:
        state = wire.resource_state(self.rpc_timeout_s)
        v1_requests = wire.kv_get(V1_REQUEST_KEY, b"", self.rpc_timeout_s)
        session = self._session
        if session is None or session.session_name != state.cluster_session_name:
            # Version and mode only change with the head, so they are read once per session.
            v2 = wire.kv_get(V2_ENABLED_KEY, V2_ENABLED_NS, self.rpc_timeout_s)
            session = _SessionInfo(
                session_name=state.cluster_session_name,
                ray_version=parse_cluster_metadata(
                    wire.kv_get(CLUSTER_METADATA_KEY, CLUSTER_METADATA_NS, self.rpc_timeout_s)
                ),
                autoscaler_v2=None if v2 is None else v2 == b"1",
            )
            self._session = session
        return state, v1_requests, session

    def read(self) -> ClusterSnapshot:
        """One snapshot of the cluster. Raises :class:`RayStateError` (after dropping the connection)."""
        read_at, started = time.time(), time.monotonic()
        state, v1_requests, session = self._on_wire(self._fetch)
        return snapshot_from_state(
            state,
            address=self.address,
            v1_requests=v1_requests,
            ray_version=session.ray_version,
            autoscaler_v2=session.autoscaler_v2,
            read_at=read_at,
            read_seconds=time.monotonic() - started,
        )

    def drain(
        self,
        node_id_hex: str,
        reason: DrainReason = DrainReason.IDLE_TERMINATION,
        message: str = "",
        deadline_ms: int = 0,
        *,
        snapshot: ClusterSnapshot,
    ) -> DrainResult:
        """Ask Ray to drain a node; ``deadline_ms`` is epoch milliseconds (0: none).

        The drain is only sent for a node alive in ``snapshot`` — the one the decision came from — and
        still alive in the same GCS session right before sending: the GCS accepts drains of nodes it does
        not know, so an accept means nothing otherwise. A refusal comes back as ``accepted=False`` with
        the reason; a failed call raises :class:`RayStateError` (the outcome is then unknown, and the
        call is safe to repeat).
        """
        node_id = node_id_hex.lower()
        if not _NODE_ID_HEX.fullmatch(node_id):
            raise ValueError(f"node id must be 56 hex digits, got {node_id_hex!r}")
        if deadline_ms < 0:
            raise ValueError(f"deadline_ms must be >= 0, got {deadline_ms}")
        if snapshot.address != self.address:
            raise ValueError(f"snapshot of {snapshot.address} given to the client of {self.address}")
        node = snapshot.node(node_id)
        if node is None or not node.alive:
            status = node.status if node else "absent"
            return DrainResult(False, f"node {node_id} is not alive in the snapshot ({status}); not sent")

        def check_then_drain(wire: _Wire) -> DrainResult:
            state = wire.resource_state(self.rpc_timeout_s)
            if state.cluster_session_name != snapshot.session_name:
                return DrainResult(
                    False,
                    f"the cluster's session is now {state.cluster_session_name}, the snapshot is from "
                    f"{snapshot.session_name}; not sent",
                )
            now = next((_node(n) for n in state.node_states if n.node_id.hex() == node_id), None)
            if now is None or not now.alive:
                status = now.status if now else "absent"
                return DrainResult(False, f"node {node_id} is no longer alive ({status}); not sent")
            return wire.drain(node_id, int(reason), message, deadline_ms, self.rpc_timeout_s)

        # A replaced head (WrongClusterID) is not retried: the node cannot be in a new session.
        return self._on_wire(check_then_drain, retry_replaced=False)

    def close(self) -> None:
        with self._lock:
            wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()


# ---------------------------------------------------------------------------------------------- pool


class ClusterClient(Protocol):
    """What the pool needs of a client (:class:`RayStateClient`, or a fake in tests)."""

    def read(self) -> ClusterSnapshot: ...

    def close(self) -> None: ...


_C = TypeVar("_C", bound=ClusterClient)


def new_client(address: str, token: str | None) -> RayStateClient:
    """The pool's usual client factory."""
    return RayStateClient(address, token=token)


@dataclass(frozen=True)
class ReadResult:
    key: str
    snapshot: ClusterSnapshot | None = None
    error: str | None = None
    failures: int = 0  # consecutive failed reads, this one included
    retry_in_s: float = 0.0  # after a failure: how long the cluster is left alone
    started: bool = True  # False: skipped, because of the backoff or a previous read still running


@dataclass
class _Entry(Generic[_C]):
    client: _C
    address: str
    token: str | None
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    inflight: concurrent.futures.Future[ClusterSnapshot] | None = None
    inflight_since: float = 0.0


class RayStatePool(Generic[_C]):
    """Reads many clusters at once, each read in a worker thread with a deadline.

    One slow or dead cluster never delays the others: every read runs on its own thread, the caller
    waits at most ``read_timeout_s``, a cluster whose previous read still runs is skipped rather than
    given a second thread, and a cluster that fails is left alone for a doubling backoff
    (``backoff_initial_s`` … ``backoff_max_s``). Connect and RPC deadlines bound how long a thread can be
    held, so the worker threads (``max_workers``, at most one per cluster at a time) always come back.
    """

    def __init__(
        self,
        client_factory: Callable[[str, str | None], _C],
        *,
        max_workers: int = 32,
        read_timeout_s: float = 5.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="ray-state")
        self.read_timeout_s = read_timeout_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry[_C]] = {}

    def set_cluster(self, key: str, address: str, token: str | None = None) -> None:
        """Add a cluster, or point it elsewhere; unchanged settings keep the client and its backoff."""
        with self._lock:
            old = self._entries.get(key)
            if old is not None and (old.address, old.token) == (address, token):
                return
            self._entries[key] = _Entry(self._factory(address, token), address, token)
        if old is not None:
            old.client.close()

    def remove_cluster(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
        if old is not None:
            old.client.close()

    def client(self, key: str) -> _C:
        with self._lock:
            return self._entries[key].client

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def _start(self, key: str) -> tuple[_Entry[_C], concurrent.futures.Future[ClusterSnapshot]] | ReadResult:
        with self._lock:
            entry = self._entries[key]
            now = self._clock()
            if entry.inflight is not None and not entry.inflight.done():
                return ReadResult(
                    key, error=f"previous read still running after {now - entry.inflight_since:.1f}s",
                    failures=entry.failures, started=False,
                )
            if now < entry.retry_at:
                return ReadResult(
                    key, error=entry.last_error, failures=entry.failures, retry_in_s=entry.retry_at - now,
                    started=False,
                )
            entry.inflight = self._executor.submit(entry.client.read)
            entry.inflight_since = now
            return entry, entry.inflight

    def _finish(
        self, key: str, entry: _Entry[_C], future: concurrent.futures.Future[ClusterSnapshot], timeout_s: float
    ) -> ReadResult:
        with self._lock:
            if self._entries.get(key) is not entry:
                return ReadResult(key, error="cluster removed or re-pointed during the read")
            error: str
            if not future.done():
                error = f"no answer within {timeout_s:g}s"
            elif (exc := future.exception()) is None:
                entry.failures, entry.retry_at, entry.last_error = 0, 0.0, ""
                return ReadResult(key, snapshot=future.result())
            elif isinstance(exc, RayStateError):
                error = str(exc)
            else:  # a bug, not a cluster problem: keep the traceback
                log.error("reading cluster %s failed unexpectedly", key, exc_info=exc)
                error = f"{type(exc).__name__}: {exc}"
            entry.failures += 1
            delay = backoff_delay(entry.failures, *self._backoff)
            entry.retry_at = self._clock() + delay
            entry.last_error = error
            return ReadResult(key, error=error, failures=entry.failures, retry_in_s=delay)

    def read_all(self, keys: Iterable[str] | None = None, timeout_s: float | None = None) -> dict[str, ReadResult]:
        """Read the given clusters (default: all) concurrently; returns within about ``timeout_s``."""
        timeout = self.read_timeout_s if timeout_s is None else timeout_s
        started: dict[str, tuple[_Entry[_C], concurrent.futures.Future[ClusterSnapshot]]] = {}
        results: dict[str, ReadResult] = {}
        for key in self.keys() if keys is None else keys:
            outcome = self._start(key)
            if isinstance(outcome, ReadResult):
                results[key] = outcome
            else:
                started[key] = outcome
        concurrent.futures.wait([f for _, f in started.values()], timeout=timeout)
        for key, (entry, future) in started.items():
            results[key] = self._finish(key, entry, future, timeout)
        return results

    def read(self, key: str, timeout_s: float | None = None) -> ReadResult:
        return self.read_all([key], timeout_s)[key]

    async def aread(self, key: str, timeout_s: float | None = None) -> ReadResult:
        """:meth:`read` for asyncio code: the event loop is never blocked."""
        timeout = self.read_timeout_s if timeout_s is None else timeout_s
        outcome = self._start(key)
        if isinstance(outcome, ReadResult):
            return outcome
        entry, future = outcome
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def wake(_: concurrent.futures.Future[ClusterSnapshot]) -> None:
            # RuntimeError: the loop closed while the read ran late, so nobody waits for it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finished.set)

        # Not asyncio.wrap_future: a read that fails after the timeout would leave an exception nobody
        # retrieves. On timeout the read keeps running and the pool remembers it as in flight.
        future.add_done_callback(wake)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout)
        return self._finish(key, entry, future, timeout)

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        self._executor.shutdown(wait=False, cancel_futures=True)
        for entry in entries:
            entry.client.close()
