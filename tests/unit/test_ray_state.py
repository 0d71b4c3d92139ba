"""Ray state client, the parts that need no Ray process: protobuf replies built here → snapshot
dataclasses, aggregation, the internal-KV form of request_resources, drain preconditions, and the pool's
isolation and backoff with fake clients."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from swarm_operator.autoscaler.gcs import (
    DrainResult,
    GcsUnavailable,
    RayStateClient,
    RayStatePool,
    ReadResult,
    Transport,
    snapshot_from_state,
)
from swarm_operator.autoscaler.gcs.parse import (
    CLUSTER_METADATA_KEY,
    aggregate,
    is_placement_group_shape,
    parse_cluster_metadata,
    parse_v1_requests,
)
from swarm_operator.autoscaler.snapshot import (
    Bundle,
    ClusterSnapshot,
    GangDemand,
    LabelConstraint,
    LabelOp,
    NodeStatus,
    RayNode,
    ResourceDemand,
    Strategy,
)
from swarm_operator.kit.blocking import Blocking

pb: Any = importlib.import_module("ray.core.generated.autoscaler_pb2")
common_pb: Any = importlib.import_module("ray.core.generated.common_pb2")

ADDRESS = "127.0.0.1:1"  # nothing listens there: a test that reached the network would fail
PG_A = "6a5216cb0648328489383c24002c01000000"
PG_B = "865707d7c5d08c28fc41182999fe01000000"
HEAD_ID = bytes(range(28))
WORKER_ID = bytes(range(100, 128))


# ----------------------------------------------------------------------------------- proto builders


def selector(*terms: tuple[str, int, list[str]]) -> Any:
    return common_pb.LabelSelector(
        label_constraints=[
            common_pb.LabelSelectorConstraint(label_key=k, operator=op, label_values=v) for k, op, v in terms
        ]
    )


IN, NOT_IN = 1, 2  # ray.rpc.LabelSelectorOperator


def request(shape: Mapping[str, float], *selectors: Any) -> Any:
    return pb.ResourceRequest(resources_bundle=dict(shape), label_selectors=list(selectors))


def by_count(shape: Mapping[str, float], count: int, *selectors: Any) -> Any:
    return pb.ResourceRequestByCount(request=request(shape, *selectors), count=count)


def node(node_id: bytes, instance: str, group: str, status: int, **fields: Any) -> Any:
    return pb.NodeState(node_id=node_id, instance_id=instance, ray_node_type_name=group, status=status, **fields)


def gang(details: str, bundles: list[Any], *, legacy: bool = True, selectors: int = 1) -> Any:
    g = pb.GangResourceRequest(details=details)
    if legacy:
        g.requests.extend(bundles)
    for _ in range(selectors):
        g.bundle_selectors.append(pb.BundleSelector(resource_requests=bundles))
    return g


def state(**fields: Any) -> Any:
    fields.setdefault("cluster_session_name", "session_1")
    return pb.ClusterResourceState(**fields)


def snap(**fields: Any) -> ClusterSnapshot:
    return snapshot_from_state(state(**fields), address=ADDRESS)


# -------------------------------------------------------------------------------------------- nodes


def test_node_fields() -> None:
    head = node(
        HEAD_ID, "c-head", "head", pb.IDLE,
        total_resources={"CPU": 4.0, "memory": 8e9, "node:__internal_head__": 1.0},
        available_resources={"CPU": 3.5},
        idle_duration_ms=1234, node_ip_address="10.0.0.1",
        labels={"ray.io/node-group": "head"}, node_activity=["Busy workers on node."],
    )
    (n,) = snap(node_states=[head]).nodes
    assert n == RayNode(
        node_id=HEAD_ID.hex(), instance_id="c-head", node_type="head", status=NodeStatus.IDLE,
        total={"CPU": 4.0, "memory": 8e9, "node:__internal_head__": 1.0}, available={"CPU": 3.5},
        idle_duration_ms=1234, labels={"ray.io/node-group": "head"}, ip="10.0.0.1",
        activity=("Busy workers on node.",),
    )
    assert n.is_head and n.alive


@pytest.mark.parametrize(
    ("wire", "status", "alive"),
    [
        pytest.param(pb.RUNNING, NodeStatus.RUNNING, True, id="running"),
        pytest.param(pb.IDLE, NodeStatus.IDLE, True, id="idle"),
        pytest.param(pb.DRAINING, NodeStatus.DRAINING, True, id="draining"),
        pytest.param(pb.DEAD, NodeStatus.DEAD, False, id="dead"),
        pytest.param(pb.UNSPECIFIED, NodeStatus.UNKNOWN, False, id="unspecified"),
    ],
)
def test_node_status(wire: int, status: NodeStatus, alive: bool) -> None:
    (n,) = snap(node_states=[node(WORKER_ID, "w-1", "cpu", wire)]).nodes
    assert (n.status, n.alive, n.is_head) == (status, alive, False)


def test_node_lookups() -> None:
    s = snap(node_states=[
        node(HEAD_ID, "c-head", "head", pb.DEAD),  # the head before a restart with GCS fault tolerance
        node(WORKER_ID, "w-1", "cpu", pb.RUNNING),
        node(bytes(28), "c-head", "head", pb.IDLE),
    ])
    assert [n.instance_id for n in s.nodes if n.alive] == ["w-1", "c-head"]
    found = s.node_by_instance("c-head")
    assert found is not None and found.status is NodeStatus.IDLE
    assert s.node_by_instance("gone") is None
    assert s.node(WORKER_ID.hex().upper()) == s.nodes[1]
    assert s.node("ab" * 28) is None


def test_dead_only_pod_is_still_found() -> None:
    s = snap(node_states=[node(HEAD_ID, "w-9", "cpu", pb.DEAD)])
    found = s.node_by_instance("w-9")
    assert found is not None and found.status is NodeStatus.DEAD


# ------------------------------------------------------------------------------------------- demand


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        pytest.param([], (), id="none"),
        pytest.param(
            [by_count({"CPU": 8}, 3)], (ResourceDemand({"CPU": 8.0}, 3),), id="one-shape",
        ),
        pytest.param(
            [by_count({"CPU": 1, "GPU": 1}, 2), by_count({"GPU": 1, "CPU": 1}, 5)],
            (ResourceDemand({"CPU": 1.0, "GPU": 1.0}, 7),),
            id="same-shape-merged-whatever-the-key-order",
        ),
        pytest.param(
            [by_count({"CPU": 1, "GPU": 0}, 2), by_count({"CPU": 1}, 1)],
            (ResourceDemand({"CPU": 1.0}, 3),),
            id="zero-amounts-dropped",
        ),
        pytest.param(
            [by_count({"CPU": 1}, 2, selector()), by_count({"CPU": 1}, 1)],
            (ResourceDemand({"CPU": 1.0}, 3),),
            id="empty-selector-is-no-selector",
        ),
        pytest.param(
            [by_count({"CPU": 1}, 2, selector(("zone", IN, ["a", "b"]))), by_count({"CPU": 1}, 1)],
            (
                ResourceDemand({"CPU": 1.0}, 2, ((LabelConstraint("zone", LabelOp.IN, frozenset({"a", "b"})),),)),
                ResourceDemand({"CPU": 1.0}, 1),
            ),
            id="selector-keeps-shapes-apart",
        ),
        pytest.param(
            [by_count({"GPU": 1}, 4, selector(("acc", NOT_IN, ["T4"]), ("zone", IN, ["a"])), selector())],
            (
                ResourceDemand(
                    {"GPU": 1.0}, 4,
                    ((
                        LabelConstraint("acc", LabelOp.NOT_IN, frozenset({"T4"})),
                        LabelConstraint("zone", LabelOp.IN, frozenset({"a"})),
                    ),),
                ),
            ),
            id="not-in-and-several-terms",
        ),
        pytest.param(
            [by_count({"GPU": 1}, 1, selector(("acc", IN, ["H100"])), selector(("acc", IN, ["A100"])))],
            (
                ResourceDemand(
                    {"GPU": 1.0}, 1,
                    (
                        (LabelConstraint("acc", LabelOp.IN, frozenset({"H100"})),),
                        (LabelConstraint("acc", LabelOp.IN, frozenset({"A100"})),),
                    ),
                ),
            ),
            id="fallback-selectors-keep-their-order",
        ),
        pytest.param([by_count({"CPU": 1}, 0)], (), id="zero-count-dropped"),
    ],
)
def test_pending(requests: list[Any], expected: tuple[ResourceDemand, ...]) -> None:
    s = snap(pending_resource_requests=requests)
    assert s.pending == expected
    assert s.pending_in_placement_groups == 0


def test_tasks_inside_placement_groups_are_counted_apart() -> None:
    s = snap(pending_resource_requests=[
        by_count({f"CPU_group_{PG_A}": 1, f"bundle_group_{PG_A}": 0.001}, 2),
        by_count({f"GPU_group_0_{PG_B}": 1}, 3),
        by_count({"CPU": 2}, 1),
    ])
    assert s.pending == (ResourceDemand({"CPU": 2.0}, 1),)
    assert s.pending_in_placement_groups == 5


@pytest.mark.parametrize(
    ("name", "is_pg"),
    [
        pytest.param(f"CPU_group_{PG_A}", True, id="wildcard"),
        pytest.param(f"bundle_group_3_{PG_A}", True, id="indexed"),
        pytest.param("my_group_a", False, id="user-resource-with-group-in-its-name"),
        pytest.param(f"CPU_group_{PG_A[:-2]}", False, id="short-id"),
        pytest.param("CPU", False, id="plain"),
    ],
)
def test_placement_group_resource_names(name: str, is_pg: bool) -> None:
    assert is_placement_group_shape({name: 1.0}) is is_pg


def test_aggregate_keeps_first_seen_order() -> None:
    items = [({"GPU": 1.0}, (), 1), ({"CPU": 1.0}, (), 2), ({"GPU": 1.0}, (), 3)]
    assert aggregate(items) == (ResourceDemand({"GPU": 1.0}, 4), ResourceDemand({"CPU": 1.0}, 2))


# -------------------------------------------------------------------------------------------- gangs


def strict_spread_bundle(shape: Mapping[str, float], pg: str = PG_A) -> Any:
    r = request(shape)
    r.placement_constraints.append(pb.PlacementConstraint(anti_affinity=pb.AntiAffinityConstraint(label_name=f"_PG_{pg}")))
    return r


@pytest.mark.parametrize("strategy", list(Strategy))
def test_gang_strategy_from_details(strategy: Strategy) -> None:
    (g,) = snap(pending_gang_resource_requests=[gang(f"{PG_A}:{strategy}|PENDING", [request({"CPU": 1})] * 2)]).gangs
    assert g == GangDemand((Bundle({"CPU": 1.0}),) * 2, strategy, 1, (PG_A,))


@pytest.mark.parametrize(
    ("constraint", "strategy"),
    [
        pytest.param(pb.PlacementConstraint(anti_affinity=pb.AntiAffinityConstraint(label_name="_PG_x")),
                     Strategy.STRICT_SPREAD, id="anti-affinity"),
        pytest.param(pb.PlacementConstraint(affinity=pb.AffinityConstraint(label_name="_PG_x")),
                     Strategy.STRICT_PACK, id="affinity"),
        pytest.param(None, Strategy.PACK, id="none-means-pack-or-spread"),
    ],
)
def test_gang_strategy_without_details(constraint: Any, strategy: Strategy) -> None:
    r = request({"CPU": 1})
    if constraint is not None:
        r.placement_constraints.append(constraint)
    (g,) = snap(pending_gang_resource_requests=[gang("", [r])]).gangs
    assert (g.strategy, g.placement_group_ids) == (strategy, ())


def test_gangs_of_equal_shape_and_strategy_are_counted_once() -> None:
    bundles_a = [strict_spread_bundle({"CPU": 1}, PG_A)] * 3
    bundles_b = [strict_spread_bundle({"CPU": 1}, PG_B)] * 3
    s = snap(pending_gang_resource_requests=[
        gang(f"{PG_A}:STRICT_SPREAD|PENDING", bundles_a),
        gang(f"{PG_B}:STRICT_SPREAD|RESCHEDULING", bundles_b),
        gang(f"{PG_B}:SPREAD|PENDING", [request({"CPU": 1})] * 3),
    ])
    assert s.gangs == (
        GangDemand((Bundle({"CPU": 1.0}),) * 3, Strategy.STRICT_SPREAD, 2, (PG_A, PG_B)),
        GangDemand((Bundle({"CPU": 1.0}),) * 3, Strategy.SPREAD, 1, (PG_B,)),
    )


def test_placed_groups_listed_empty_are_skipped() -> None:
    assert snap(pending_gang_resource_requests=[pb.GangResourceRequest()]).gangs == ()


def test_gang_bundle_label_selectors() -> None:
    bundles = [request({"GPU": 1, "CPU": 2}, selector(("acc", IN, ["A100"]))), request({"CPU": 1}, selector())]
    (g,) = snap(pending_gang_resource_requests=[gang(f"{PG_A}:PACK|PENDING", bundles)]).gangs
    assert g.bundles == (
        Bundle({"CPU": 2.0, "GPU": 1.0}, (LabelConstraint("acc", LabelOp.IN, frozenset({"A100"})),)),
        Bundle({"CPU": 1.0}),
    )


def test_gang_from_the_deprecated_field_only() -> None:
    (g,) = snap(pending_gang_resource_requests=[
        gang(f"{PG_A}:STRICT_PACK|PENDING", [request({"CPU": 1})], selectors=0)
    ]).gangs
    assert (g.bundles, g.strategy) == ((Bundle({"CPU": 1.0}),), Strategy.STRICT_PACK)


def test_gang_fallback_bundle_lists() -> None:
    g_proto = gang(f"{PG_A}:PACK|PENDING", [request({"GPU": 2})], legacy=False)
    g_proto.bundle_selectors.append(pb.BundleSelector(resource_requests=[request({"GPU": 1})] * 2))
    (g,) = snap(pending_gang_resource_requests=[g_proto]).gangs
    assert g.bundles == (Bundle({"GPU": 2.0}),)
    assert g.fallbacks == ((Bundle({"GPU": 1.0}),) * 2,)


# -------------------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, (), id="absent"),
        pytest.param(b"", (), id="empty"),
        pytest.param(b"[]", (), id="cleared"),
        pytest.param(
            b'[{"CPU": 1}, {"CPU": 1}, {"CPU": 4, "GPU": 1}]',
            (ResourceDemand({"CPU": 1.0}, 2), ResourceDemand({"CPU": 4.0, "GPU": 1.0}, 1)),
            id="num-cpus-and-bundles",
        ),
        pytest.param(b"{not json", (), id="unreadable"),
        pytest.param(b'{"CPU": 1}', (), id="not-a-list"),
        pytest.param(
            b'[{"CPU": 1}, "x", {"CPU": -1}, {"CPU": true}, {"CPU": "2"}, {"GPU": 2.5}]',
            (ResourceDemand({"CPU": 1.0}, 1), ResourceDemand({"GPU": 2.5}, 1)),
            id="malformed-bundles-skipped",
        ),
    ],
)
def test_v1_requests(raw: bytes | None, expected: tuple[ResourceDemand, ...]) -> None:
    assert parse_v1_requests(raw) == expected


def test_constraints_merge_gcs_and_internal_kv_forms() -> None:
    gcs = pb.ClusterResourceConstraint(resource_requests=[by_count({"CPU": 1}, 2), by_count({"CPU": 4}, 1)])
    s = snapshot_from_state(
        state(cluster_resource_constraints=[gcs]), address=ADDRESS, v1_requests=b'[{"CPU": 4}, {"GPU": 1}]'
    )
    assert s.constraints == (
        ResourceDemand({"CPU": 1.0}, 2), ResourceDemand({"CPU": 4.0}, 2), ResourceDemand({"GPU": 1.0}, 1),
    )


def test_snapshot_carries_read_facts() -> None:
    s = snapshot_from_state(
        state(cluster_resource_state_version=42, cluster_session_name="session_x"),
        address=ADDRESS, ray_version="2.60.0", autoscaler_v2=False, read_at=1700000000.0, read_seconds=0.002,
    )
    assert (s.address, s.session_name, s.state_version, s.ray_version, s.autoscaler_v2, s.read_at, s.read_seconds) == (
        ADDRESS, "session_x", 42, "2.60.0", False, 1700000000.0, 0.002,
    )


# ---------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        pytest.param(b'{"ray_version": "2.60.0", "python_version": "3.11.7"}', "2.60.0", id="head-metadata"),
        pytest.param(None, None, id="absent"),
        pytest.param(b"nonsense", None, id="unreadable"),
        pytest.param(b"[1]", None, id="not-an-object"),
        pytest.param(b'{"ray_version": 2}', None, id="not-a-string"),
    ],
)
def test_cluster_metadata(raw: bytes | None, version: str | None) -> None:
    assert parse_cluster_metadata(raw) == version


# ------------------------------------------------------------------------------- client, no network


@pytest.mark.parametrize(
    ("token", "transport", "chosen"),
    [
        pytest.param(None, Transport.AUTO, Transport.GCS_CLIENT, id="default"),
        pytest.param("t", Transport.AUTO, Transport.GRPC, id="token-needs-grpc"),
        pytest.param(None, Transport.GRPC, Transport.GRPC, id="grpc-asked"),
    ],
)
def test_transport_choice(token: str | None, transport: Transport, chosen: Transport) -> None:
    assert RayStateClient(ADDRESS, token=token, transport=transport).transport is chosen


@pytest.mark.parametrize(
    ("address", "kwargs"),
    [
        pytest.param("no-port", {}, id="no-port"),
        pytest.param(":6379", {}, id="no-host"),
        pytest.param("host:http", {}, id="port-not-a-number"),
        pytest.param(ADDRESS, {"token": "t", "transport": Transport.GCS_CLIENT}, id="token-on-gcs-client"),
    ],
)
def test_client_rejects(address: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RayStateClient(address, **kwargs)


LIVE = snap(node_states=[
    node(WORKER_ID, "w-1", "cpu", pb.IDLE),
    node(HEAD_ID, "w-0", "cpu", pb.DEAD),
])


@pytest.mark.parametrize(
    ("node_id", "why"),
    [
        pytest.param(HEAD_ID.hex(), "not alive in the snapshot (DEAD)", id="dead"),
        pytest.param("ab" * 28, "not alive in the snapshot (absent)", id="unknown"),
    ],
)
def test_drain_is_not_sent_for_a_node_not_alive_in_the_snapshot(node_id: str, why: str) -> None:
    # Nothing listens at ADDRESS: had the client called out, this would raise GcsUnavailable.
    result = RayStateClient(ADDRESS).drain(node_id, snapshot=LIVE)
    assert result == DrainResult(False, f"node {node_id} is {why}; not sent")


@pytest.mark.parametrize(
    ("node_id", "deadline_ms", "snapshot"),
    [
        pytest.param("zz", 0, LIVE, id="not-hex"),
        pytest.param("ab" * 27, 0, LIVE, id="too-short"),
        pytest.param(WORKER_ID.hex(), -1, LIVE, id="negative-deadline"),
        pytest.param(WORKER_ID.hex(), 0, snapshot_from_state(state(), address="other:6379"), id="other-cluster"),
    ],
)
def test_drain_rejects(node_id: str, deadline_ms: int, snapshot: ClusterSnapshot) -> None:
    with pytest.raises(ValueError):
        RayStateClient(ADDRESS).drain(node_id, deadline_ms=deadline_ms, snapshot=snapshot)


def test_drain_of_an_alive_node_reaches_for_the_gcs() -> None:
    with pytest.raises(GcsUnavailable, match="cannot connect"):
        RayStateClient(ADDRESS).drain(WORKER_ID.hex(), snapshot=LIVE)


# ---------------------------------------------------------------------------------- pool, fake clients


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeClient:
    """Answers with a snapshot after ``delay`` seconds, or raises ``error``."""

    def __init__(self, address: str, delay: float = 0.0, error: Exception | None = None) -> None:
        self.address, self.delay, self.error = address, delay, error
        self.reads = 0
        self.closed = False
        self.release = threading.Event()

    def read(self) -> ClusterSnapshot:
        self.reads += 1
        if self.delay:
            self.release.wait(self.delay)
        if self.error is not None:
            raise self.error
        return snapshot_from_state(state(), address=self.address)

    def close(self) -> None:
        self.closed = True
        self.release.set()


class Factory:
    def __init__(self) -> None:
        self.made: dict[str, FakeClient] = {}
        self.behaviour: dict[str, dict[str, Any]] = {}

    def __call__(self, address: str, token: str | None) -> FakeClient:
        client = FakeClient(address, **self.behaviour.get(address, {}))
        self.made[address] = client
        return client


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pool(factory: Factory, clock: FakeClock) -> Iterator[RayStatePool[FakeClient]]:
    blocking = Blocking(32)
    p = RayStatePool(factory, blocking.submit, read_timeout_s=0.3, backoff_initial_s=1.0, backoff_max_s=4.0,
                     clock=clock)
    yield p
    p.close()
    blocking.shutdown()


def read(pool: RayStatePool[FakeClient], key: str, timeout_s: float | None = None) -> ReadResult:
    return asyncio.run(pool.aread(key, timeout_s))


def read_all(pool: RayStatePool[FakeClient], keys: list[str]) -> dict[str, ReadResult]:
    """The keys read concurrently, as the controller's turns for several clusters do."""
    async def gather() -> list[ReadResult]:
        return await asyncio.gather(*(pool.aread(key) for key in keys))

    return dict(zip(keys, asyncio.run(gather()), strict=True))


def test_slow_and_dead_clusters_do_not_delay_the_others(factory: Factory, pool: RayStatePool[FakeClient]) -> None:
    factory.behaviour = {"slow:1": {"delay": 30.0}, "dead:1": {"error": GcsUnavailable("refused")}}
    for key in ("fast", "slow", "dead"):
        pool.set_cluster(key, f"{key}:1")
    started = time.monotonic()
    results = read_all(pool, ["fast", "slow", "dead"])
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert results["fast"].snapshot is not None and results["fast"].error is None
    assert results["slow"].error == "no answer within 0.3s"
    assert results["dead"].error == "refused"
    # the slow read still runs: no second thread for it, while the fast one is read again at once
    again = read_all(pool, ["fast", "slow"])
    assert again["fast"].snapshot is not None
    assert not again["slow"].started and (again["slow"].error or "").startswith("previous read still running")
    assert factory.made["slow:1"].reads == 1


def test_failures_back_off_and_success_resets(
    factory: Factory, pool: RayStatePool[FakeClient], clock: FakeClock
) -> None:
    factory.behaviour = {"a:1": {"error": GcsUnavailable("down")}}
    pool.set_cluster("a", "a:1")
    client = factory.made["a:1"]
    expected = [(1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0)]  # doubling from 1 s, capped at 4 s
    for failures, delay in expected:
        result = read(pool, "a")
        assert (result.started, result.failures, result.retry_in_s, result.error) == (True, failures, delay, "down")
        clock.now += delay / 2
        skipped = read(pool, "a")
        assert (skipped.started, skipped.retry_in_s, skipped.error) == (False, delay / 2, "down")
        clock.now += delay / 2
    assert client.reads == 4
    client.error = None
    ok = read(pool, "a")
    assert (ok.snapshot is not None, ok.failures, ok.retry_in_s) == (True, 0, 0.0)
    client.error = GcsUnavailable("down again")
    assert read(pool, "a").retry_in_s == 1.0


def test_a_timeout_counts_as_a_failure(factory: Factory, pool: RayStatePool[FakeClient], clock: FakeClock) -> None:
    factory.behaviour = {"s:1": {"delay": 30.0}}
    pool.set_cluster("s", "s:1")
    assert read(pool, "s").failures == 1
    factory.made["s:1"].release.set()  # the read finishes late
    time.sleep(0.2)  # for its thread to hand the result over
    clock.now += 1.0
    late = read(pool, "s")
    assert late.started  # the backoff is over and nothing is in flight any more
    assert late.snapshot is not None and late.failures == 0


def test_an_unexpected_exception_is_a_failure_with_its_type(
    factory: Factory, pool: RayStatePool[FakeClient], caplog: pytest.LogCaptureFixture
) -> None:
    factory.behaviour = {"b:1": {"error": KeyError("oops")}}
    pool.set_cluster("b", "b:1")
    result = read(pool, "b")
    assert result.error == "KeyError: 'oops'" and result.failures == 1
    assert "reading cluster b failed unexpectedly" in caplog.text


def test_set_cluster_keeps_or_replaces_the_client(factory: Factory, pool: RayStatePool[FakeClient]) -> None:
    pool.set_cluster("c", "c:1")
    first = pool.client("c")
    pool.set_cluster("c", "c:1")
    assert pool.client("c") is first
    pool.set_cluster("c", "c:1", token="secret")
    assert pool.client("c") is not first and first.closed
    second = pool.client("c")
    pool.remove_cluster("c")
    assert second.closed
    with pytest.raises(KeyError):
        read(pool, "c")


def test_a_cluster_removed_during_its_read(factory: Factory, pool: RayStatePool[FakeClient]) -> None:
    factory.behaviour = {"r:1": {"delay": 30.0}}
    pool.set_cluster("r", "r:1")
    timer = threading.Timer(0.1, pool.remove_cluster, args=("r",))
    timer.start()
    result = read(pool, "r", timeout_s=2.0)
    timer.join()
    assert result.error == "cluster removed or re-pointed during the read"


def test_aread_never_blocks_the_event_loop(factory: Factory, pool: RayStatePool[FakeClient]) -> None:
    factory.behaviour = {"slow:1": {"delay": 30.0}}
    pool.set_cluster("fast", "fast:1")
    pool.set_cluster("slow", "slow:1")

    async def main() -> tuple[Any, ...]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(pool.aread("fast"), pool.aread("slow"))
        task.cancel()
        return (*results, ticks)

    fast, slow, ticks = asyncio.run(main())
    assert fast.snapshot is not None
    assert slow.error == "no answer within 0.3s"
    assert ticks >= 10  # the loop kept running while the slow read waited


# ------------------------------------------------------------------------ reconnects, with a fake wire


class FakeWire:
    """Stands in for a connection; ``script`` says what each successive connection does."""

    script: ClassVar[list[Exception | None]] = []
    made: ClassVar[int] = 0
    metadata: ClassVar[bytes | None] = None  # CLUSTER_METADATA as the head has written it so far

    def __init__(self, address: str, connect_timeout_s: float) -> None:
        FakeWire.made += 1
        self.error = FakeWire.script.pop(0) if FakeWire.script else None
        self.closed = False
        self.drains = 0

    def resource_state(self, timeout_s: float) -> Any:
        if self.error is not None:
            raise self.error
        return state(node_states=[node(WORKER_ID, "w-1", "cpu", pb.IDLE)])

    def kv_get(self, key: bytes, namespace: bytes, timeout_s: float) -> bytes | None:
        return FakeWire.metadata if key == CLUSTER_METADATA_KEY else None

    def drain(self, node_id_hex: str, reason: int, message: str, deadline_ms: int, timeout_s: float) -> DrainResult:
        self.drains += 1
        return DrainResult(True, "")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_wire(monkeypatch: pytest.MonkeyPatch) -> type[FakeWire]:
    client = importlib.import_module("swarm_operator.autoscaler.gcs.client")
    monkeypatch.setattr(client, "GcsClientWire", FakeWire)
    FakeWire.script, FakeWire.made, FakeWire.metadata = [], 0, None
    return FakeWire


def test_a_replaced_head_is_read_again_on_a_fresh_connection(fake_wire: type[FakeWire]) -> None:
    replaced = importlib.import_module("swarm_operator.autoscaler.gcs.wire").GcsReplaced
    fake_wire.script = [replaced("WrongClusterID")]
    s = RayStateClient(ADDRESS).read()
    assert fake_wire.made == 2 and s.node_by_instance("w-1") is not None


def test_a_failure_drops_the_connection_and_the_next_call_reconnects(fake_wire: type[FakeWire]) -> None:
    fake_wire.script = [GcsUnavailable("timed out")]
    client = RayStateClient(ADDRESS)
    with pytest.raises(GcsUnavailable):
        client.read()
    client.read()
    client.read()
    assert fake_wire.made == 2  # one failed connection, then one kept


def test_a_drain_is_never_retried_on_a_replaced_head(fake_wire: type[FakeWire]) -> None:
    client = RayStateClient(ADDRESS)
    snapshot = client.read()
    replaced = importlib.import_module("swarm_operator.autoscaler.gcs.wire").GcsReplaced
    fake_wire.script = [replaced("WrongClusterID")]
    client.close()  # the next call connects anew, to the "replaced" head
    with pytest.raises(GcsUnavailable):
        client.drain(WORKER_ID.hex(), snapshot=snapshot)
    assert fake_wire.made == 2


def test_a_drain_is_not_sent_when_the_session_changed(fake_wire: type[FakeWire]) -> None:
    client = RayStateClient(ADDRESS)
    old = snapshot_from_state(state(cluster_session_name="session_0", node_states=[
        node(WORKER_ID, "w-1", "cpu", pb.IDLE)]), address=ADDRESS)
    accepted, why = client.drain(WORKER_ID.hex(), snapshot=old)
    assert not accepted and "session is now session_1" in why
    assert client.drain(WORKER_ID.hex(), snapshot=client.read()) == (True, "")


def test_a_version_the_head_had_not_written_yet_is_read_again(fake_wire: type[FakeWire]) -> None:
    # Measured in CI: the first read came between the GCS answering and `ray start` writing its metadata,
    # and the version stayed unknown for the head's whole life.
    client = RayStateClient(ADDRESS)
    assert client.read().ray_version is None
    fake_wire.metadata = b'{"ray_version": "2.59.0"}'
    assert client.read().ray_version == "2.59.0"
    fake_wire.metadata = b'{"ray_version": "2.61.0"}'
    assert client.read().ray_version == "2.59.0"  # once known, read once per session
