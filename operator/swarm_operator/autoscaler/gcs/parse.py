"""A ``GetClusterResourceState`` reply (plus the internal-KV forms) → a :class:`ClusterSnapshot`. Pure.

Facts about Ray 2.60 this is built on:

- ``pending_resource_requests`` mixes queued and infeasible demand, and includes tasks waiting for a
  placement group (shapes of ``CPU_group_<pg id>``-style resources): those are counted apart, the
  gang itself is what needs capacity. The GCS also lists an empty gang entry for every placement group
  already placed; those are skipped.
- On a head without ``RAY_enable_autoscaler_v2=1``, ``ray.autoscaler.sdk.request_resources`` writes a
  JSON list of resource dicts to internal-KV key ``autoscaler_resource_request`` instead of a GCS
  constraint; both are read and merged.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import ray

from swarm_operator.autoscaler.snapshot import (
    Bundle,
    ClusterSnapshot,
    GangDemand,
    LabelConstraint,
    LabelOp,
    LabelSelector,
    NodeStatus,
    RayNode,
    ResourceDemand,
    Strategy,
)

log = logging.getLogger(__name__)

OPERATOR_RAY_VERSION: str = ray.__version__

# Internal-KV keys (ray/_private/ray_constants.py, ray/_common/usage/usage_lib.py, ray/_raylet).
V1_REQUEST_KEY = b"autoscaler_resource_request"  # namespace "" (what ray's _internal_kv_put uses)
CLUSTER_METADATA_KEY, CLUSTER_METADATA_NS = b"CLUSTER_METADATA", b"cluster"
V2_ENABLED_KEY, V2_ENABLED_NS = b"__autoscaler_v2_enabled", b"__autoscaler"

# Ray names a placement group's reserved resources "<resource>_group_<pg id>" and
# "<resource>_group_<bundle index>_<pg id>"; a pg id is 18 bytes (36 hex digits).
_PG_RESOURCE = re.compile(r".+_group_(?:\d+_)?[0-9a-f]{36}")
_STRATEGY_IN_DETAILS = re.compile(r":(STRICT_PACK|STRICT_SPREAD|PACK|SPREAD)\|")

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


def parse_node(proto: Any) -> RayNode:
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
        nodes=tuple(parse_node(n) for n in state.node_states),
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
