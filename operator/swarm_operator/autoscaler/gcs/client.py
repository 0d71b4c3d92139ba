"""One cluster's GCS: read its resource state into a :class:`ClusterSnapshot`, and drain its nodes.

``DrainNode`` accepts drains of unknown and dead nodes, and a node id of the wrong length is accepted too
(logged by Ray's C++ client as an error): an accept only means something for a node that was alive in the
snapshot the decision came from, and ids are checked here.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from swarm_operator.autoscaler.gcs.parse import (
    CLUSTER_METADATA_KEY,
    CLUSTER_METADATA_NS,
    V1_REQUEST_KEY,
    V2_ENABLED_KEY,
    V2_ENABLED_NS,
    parse_cluster_metadata,
    parse_node,
    snapshot_from_state,
)
from swarm_operator.autoscaler.gcs.wire import (
    DrainReason,
    DrainResult,
    GcsClientWire,
    GcsReplaced,
    GrpcWire,
    RayStateError,
    Transport,
    Wire,
    split_address,
)
from swarm_operator.autoscaler.snapshot import ClusterSnapshot

_T = TypeVar("_T")
_NODE_ID_HEX = re.compile(r"[0-9a-f]{56}")  # NodeID is 28 bytes


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
        split_address(address)
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
        self._wire: Wire | None = None
        self._session: _SessionInfo | None = None  # replaced whole, so readers never see a mix

    def _connect(self) -> Wire:
        with self._lock:
            if self._wire is None:
                if self.transport is Transport.GRPC:
                    self._wire = GrpcWire(self.address, self._token)
                else:
                    self._wire = GcsClientWire(self.address, self.connect_timeout_s)
            return self._wire

    def _drop(self, wire: Wire) -> None:
        with self._lock:
            if self._wire is wire:
                self._wire = None
        wire.close()

    def _on_wire(self, call: Callable[[Wire], _T], *, retry_replaced: bool = True) -> _T:
        wire = self._connect()
        try:
            return call(wire)
        except GcsReplaced:
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

    def _fetch(self, wire: Wire) -> tuple[Any, bytes | None, _SessionInfo]:
        state = wire.resource_state(self.rpc_timeout_s)
        v1_requests = wire.kv_get(V1_REQUEST_KEY, b"", self.rpc_timeout_s)
        session = self._session
        if session is None or session.session_name != state.cluster_session_name or session.ray_version is None:
            # Version and mode only change with the head, so they are read once per session; but the head's
            # `ray start` writes its metadata only after its GCS answers, so a read that found none is retried.
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

        def check_then_drain(wire: Wire) -> DrainResult:
            state = wire.resource_state(self.rpc_timeout_s)
            if state.cluster_session_name != snapshot.session_name:
                return DrainResult(
                    False,
                    f"the cluster's session is now {state.cluster_session_name}, the snapshot is from "
                    f"{snapshot.session_name}; not sent",
                )
            now = next((parse_node(n) for n in state.node_states if n.node_id.hex() == node_id), None)
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


def new_client(address: str, token: str | None) -> RayStateClient:
    """The pool's usual client factory."""
    return RayStateClient(address, token=token)
