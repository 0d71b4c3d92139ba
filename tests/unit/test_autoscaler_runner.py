"""autoscaler.runner: the helpers, and Autoscaler.step against a fake GCS (a RayStatePool of fake clients);
the drained-at annotations it returns for the turn to write are applied to the harness's pods."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from swarm_operator.autoscaler import confirm, gcs
from swarm_operator.autoscaler.ray_version import check
from swarm_operator.autoscaler.runner import (
    Autoscaler,
    AutoscalerMemory,
    Outcome,
    pending_by_resource,
    ray_dead_pods,
    unavailable_groups,
)
from swarm_operator.autoscaler.snapshot import (
    Bundle,
    ClusterSnapshot,
    GangDemand,
    NodeStatus,
    RayNode,
    ResourceDemand,
    Strategy,
)
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.cache import Key
from swarm_operator.reconcile.actions import DrainWorker, PatchPod
from swarm_operator.reconcile.observe import PodState, observe_pod
from swarm_operator.resources import labels
from swarm_operator.spec.types import AutoscalingSpec, ClusterSpec
from swarm_operator.status import AutoscalerReport
from swarm_operator.times import timestamp
from tests.unit.operator_fixtures import NAMESPACE, NOW, cluster, group, head, worker, worker_pod
from tests.unit.ray_fixtures import HEAD_IP, FakeRay, demand, node_id, ray_node, snapshot

# -- helpers ------------------------------------------------------------------------------------

C = cluster(groups=[group("cpu", 2), group("gpu", 1, gpu=1)])


def pod(suffix: str, group_name: str = "cpu", **state: Any) -> PodState:
    return worker(C, group_name, suffix, **state)


PENDING_TIMEOUT = float(AutoscalingSpec().pending_timeout_seconds)  # what the clusters here get
OLD = NOW - PENDING_TIMEOUT - 1
YOUNG = NOW - PENDING_TIMEOUT + 1
UNSCHEDULED = {"phase": "Pending", "ready": False, "node": None}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param([], set(), id="no-pods"),
        pytest.param([pod("a", created=OLD, **UNSCHEDULED)], {"cpu"}, id="unscheduled-too-long"),
        pytest.param([pod("a", created=YOUNG, **UNSCHEDULED)], set(), id="unscheduled-recently"),
        pytest.param([pod("a", created=OLD, phase="Pending", ready=False)], set(), id="scheduled-still-pending"),
        pytest.param([pod("a", created=OLD, deleting=True, **UNSCHEDULED)], set(), id="deleting"),
        pytest.param([pod("a", created=OLD, phase="Failed", ready=False, node=None)], set(), id="failed"),
        pytest.param([head(C, created=OLD, **UNSCHEDULED)], set(), id="head-has-no-group"),
        pytest.param([pod("a", created=OLD, **UNSCHEDULED), pod("b", "gpu", created=OLD, **UNSCHEDULED),
                      pod("c", created=YOUNG, **UNSCHEDULED)], {"cpu", "gpu"}, id="per-group"),
    ],
)
def test_unavailable_groups(pods: list[PodState], expected: set[str]) -> None:
    assert unavailable_groups(pods, NOW, PENDING_TIMEOUT) == frozenset(expected)


def test_unavailable_groups_ignores_unknown_creation_time() -> None:
    p = worker(C, "cpu", "a", **UNSCHEDULED)
    assert unavailable_groups([PodState(**{**p.__dict__, "created": 0.0})], NOW, PENDING_TIMEOUT) == frozenset()


A, B = pod("aaaaa"), pod("bbbbb")


@pytest.mark.parametrize(
    ("pods", "nodes", "expected"),
    [
        pytest.param([A], [ray_node(A.name, "cpu")], set(), id="alive"),
        pytest.param([A], [], set(), id="not-joined-yet"),
        pytest.param([A, B], [ray_node(A.name, "cpu", NodeStatus.DEAD), ray_node(B.name, "cpu")], {A.name},
                     id="dead"),
        pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DRAINING)], set(), id="draining"),
        pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DEAD), ray_node(A.name, "cpu")], set(),
                     id="dead-then-restarted"),
        pytest.param([pod("aaaaa", phase="Failed", ready=False)], [ray_node(A.name, "cpu", NodeStatus.DEAD)],
                     set(), id="pod-already-failed"),
        pytest.param([pod("aaaaa", deleting=True)], [ray_node(A.name, "cpu", NodeStatus.DEAD)], set(),
                     id="pod-already-deleting"),
        pytest.param([head(C)], [ray_node(head(C).name, labels.HEAD, NodeStatus.DEAD)], set(), id="head-ignored"),
    ],
)
def test_ray_dead_pods(pods: list[PodState], nodes: list[RayNode], expected: set[str]) -> None:
    assert ray_dead_pods(snapshot(*nodes), pods) == frozenset(expected)


def test_pending_by_resource() -> None:
    snap = snapshot(
        pending=(demand(3, CPU=1.0), demand(2, GPU=1.0, CPU=0.5)),
        constraints=(demand(1, CPU=2.0),),
        gangs=(GangDemand((Bundle({"GPU": 1.0}), Bundle({"CPU": 1.0})), Strategy.PACK, 2, ("p", "q")),),
    )
    assert pending_by_resource(snap) == {"CPU": 3.0 + 1.0 + 2.0 + 2.0, "GPU": 2.0 + 2.0}
    assert pending_by_resource(snapshot()) == {}


# -- Autoscaler.step with fakes -----------------------------------------------------------------


AUTO = {"autoscaling": {"enabled": True, "idleTimeoutSeconds": 60, "intervalSeconds": 5,
                        "scaleDownStabilizationSeconds": 0}}
CPU4 = {"cpu": "4", "memory": "8Gi"}
GPU_NODE = {"cpu": "16", "memory": "64Gi", "gpu": 1}


def autoscaled(name: str = "demo", *, cpu_max: int = 10) -> ClusterSpec:
    return cluster(AUTO, name=name, groups=[group("cpu", 1, lo=0, hi=cpu_max, resources=CPU4),
                                            group("gpu", 0, lo=0, hi=4, resources=GPU_NODE)])


def key_of(c: ClusterSpec) -> Key:
    return (c.namespace, c.name)


BUSY = {"CPU": 0.0, "memory": 8e9}
CPU_TOTAL = {"CPU": 4.0, "memory": 8 * 1024**3}


def head_node(c: ClusterSpec) -> RayNode:
    return ray_node(head(c).name, labels.HEAD, head=True, total={"CPU": 1.0}, available={"CPU": 0.0})


def cpu_node(c: ClusterSpec, i: int, status: NodeStatus = NodeStatus.RUNNING, idle_s: float = 0.0) -> RayNode:
    name = f"{c.name}-cpu-w{i:04d}"
    free = BUSY if status is NodeStatus.RUNNING else CPU_TOTAL
    return ray_node(name, "cpu", status, idle_s=idle_s, total=CPU_TOTAL, available=free)


class Harness:
    def __init__(self, ray: FakeRay, scaler: Autoscaler) -> None:
        self.ray, self.scaler = ray, scaler
        self.memories: dict[Key, AutoscalerMemory] = {}
        self.pod_dicts: dict[str, dict[str, Any]] = {}  # the pods as the API server holds them

    def memory(self, c: ClusterSpec) -> AutoscalerMemory:
        return self.memories.setdefault(key_of(c), AutoscalerMemory())

    def forget(self, c: ClusterSpec) -> None:
        self.scaler.forget(key_of(c), self.memories.pop(key_of(c), AutoscalerMemory()))

    def pods(self, c: ClusterSpec, n: int) -> list[PodState]:
        """The head and n cpu workers, running; the harness knows their pod dicts."""
        out = [head(c)]
        for i in range(n):
            raw = worker_pod(c, "cpu", f"w{i:04d}", created=NOW - 3600 + 60 * i)
            self.pod_dicts[raw["metadata"]["name"]] = raw
            out.append(worker(c, "cpu", f"w{i:04d}", created=NOW - 3600 + 60 * i))
        return out

    def marked(self, mark: PatchPod) -> PodState:
        """The pod after the turn wrote the mark (a merge patch of its annotations)."""
        pod = copy.deepcopy(self.pod_dicts[mark.name])
        pod["metadata"].setdefault("annotations", {}).update(mark.patch["metadata"]["annotations"])
        return observe_pod(pod)

    def step(self, c: ClusterSpec, pods: list[PodState], targets: Mapping[str, int], *, now: float = NOW,
             scale_ups: Mapping[str, float] | None = None, head_ip: str | None = HEAD_IP) -> Outcome | None:
        return asyncio.run(self.scaler.step(key_of(c), self.memory(c), c, pods, head_ip, targets, scale_ups or {},
                                            now))


def drained_at(marks: Any) -> list[tuple[str, dict[str, str]]]:
    return [(m.name, m.patch["metadata"]["annotations"]) for m in marks]


@pytest.fixture
def h() -> Iterator[Harness]:
    ray = FakeRay()
    blocking = Blocking(4)
    scaler = Autoscaler(blocking)
    # In place of the real clients:
    scaler.pool = cast(Any, gcs.RayStatePool(ray.factory, blocking.submit, read_timeout_s=5.0))
    yield Harness(ray, scaler)
    scaler.pool.close()
    blocking.shutdown()


def metric(name: str, **labels_: str) -> float:
    return REGISTRY.get_sample_value(name, labels_) or 0.0


def events(o: Outcome, reason: str | None = None) -> list[tuple[str, str]]:
    return [e for e in o.events if reason is None or e[0] == reason]


def test_not_due_yet(h: Harness) -> None:
    c = autoscaled()
    pods = h.pods(c, 1)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0))
    assert h.step(c, pods, {"cpu": 1}) is not None
    assert h.step(c, pods, {"cpu": 1}, now=NOW + 4.9) is None
    assert h.scaler.due_in(h.memory(c), NOW + 1) == pytest.approx(4.0)
    assert h.step(c, pods, {"cpu": 1}, now=NOW + 5) is not None
    assert h.ray.reads == 2
    assert h.ray.addresses == [f"{HEAD_IP}:6379"]  # one client, kept between reads


def test_forget_makes_it_due_again(h: Harness) -> None:
    c = autoscaled()
    pods = h.pods(c, 1)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0))
    assert h.step(c, pods, {"cpu": 1}) is not None
    h.forget(c)
    assert h.scaler.due_in(h.memory(c), NOW) == 0.0
    assert h.step(c, pods, {"cpu": 1}, now=NOW + 1) is not None


def test_no_head_ip(h: Harness) -> None:
    c = autoscaled()
    assert h.step(c, h.pods(c, 1), {"cpu": 1}, head_ip=None) is None
    assert (h.ray.reads, h.ray.addresses) == (0, [])


def test_read_error_keeps_targets_and_records_the_error(h: Harness) -> None:
    c = autoscaled("read-error")
    h.ray.error = "connection refused"
    errors = metric("swarm_autoscaler_poll_errors_total", namespace=NAMESPACE, cluster="read-error")
    o = h.step(c, h.pods(c, 3), {"cpu": 3, "gpu": 1}, scale_ups={"cpu": NOW - 60})
    assert o is not None
    assert o.targets == {"cpu": 3, "gpu": 1}
    assert (o.report, o.scaled_up) == (AutoscalerReport(error="reading Ray state: connection refused"), frozenset())
    assert (o.events, o.ray_dead, o.idle, o.ray_nodes, o.marks) == ((), frozenset(), None, None, ())
    assert metric("swarm_autoscaler_poll_errors_total", namespace=NAMESPACE, cluster="read-error") == errors + 1


def test_cpu_demand_scales_the_cpu_group_not_the_gpu_group(h: Harness) -> None:
    c = autoscaled("cpu-demand")
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=(demand(12, CPU=1.0),))
    ups = metric("swarm_autoscaler_decisions_total", namespace=NAMESPACE, cluster="cpu-demand", group="cpu",
                 direction="up")
    o = h.step(c, h.pods(c, 1), {"cpu": 1, "gpu": 0})
    assert o is not None
    assert o.targets == {"cpu": 4, "gpu": 0}
    (event,) = events(o)
    assert event[0] == "Autoscaled" and event[0].event_type == "Normal"
    assert re.fullmatch(r"cpu 1→4: 12 pending \{CPU:1\}", event[1]), event[1]
    assert o.scaled_up == frozenset({"cpu"})
    assert o.report.decisions == (event[1],)
    assert (o.report.pending_demand, o.report.infeasible_demand, o.report.error) == ("12×{CPU:1}", "", "")
    assert metric("swarm_autoscaler_decisions_total", namespace=NAMESPACE, cluster="cpu-demand", group="cpu",
                  direction="up") == ups + 1
    assert h.ray.drains == []


def test_gpu_demand_scales_the_gpu_group(h: Harness) -> None:
    c = autoscaled()
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=(demand(2, GPU=1.0),))
    o = h.step(c, h.pods(c, 1), {"cpu": 1, "gpu": 0})
    assert o is not None
    assert o.targets == {"cpu": 1, "gpu": 2}
    assert [e[1] for e in events(o, "Autoscaled")] == ["gpu 0→2: 2 pending {GPU:1}"]


def test_no_change_reports_no_decision(h: Harness) -> None:
    c = autoscaled()
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0))
    o = h.step(c, h.pods(c, 1), {"cpu": 1, "gpu": 0}, scale_ups={"cpu": NOW - 60})
    assert o is not None
    assert (o.targets, o.events, o.scaled_up) == ({"cpu": 1, "gpu": 0}, (), frozenset())
    assert o.report == AutoscalerReport(ray_version=gcs.OPERATOR_RAY_VERSION)


def test_an_unavailable_group_is_not_grown(h: Harness) -> None:
    """A cpu pod unschedulable past the timeout: the cpu group is not scaled up for more demand."""
    c = autoscaled()
    stuck = worker(c, "cpu", "w0001", created=OLD, **UNSCHEDULED)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=(demand(12, CPU=1.0),))
    o = h.step(c, [*h.pods(c, 1), stuck], {"cpu": 2, "gpu": 0})
    assert o is not None
    assert o.targets["cpu"] <= 2


def test_infeasible_demand_is_reported_once(h: Harness) -> None:
    c = autoscaled()
    pods = h.pods(c, 1)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=(demand(2, TPU=1.0),))
    warning = ("InfeasibleDemand", "fits no worker group, not scaling for it: 2×{TPU:1}")
    steps: list[tuple[float, tuple[ResourceDemand, ...], list[tuple[str, str]]]] = [
        (NOW, (demand(2, TPU=1.0),), [warning]),
        (NOW + 5, (demand(2, TPU=1.0),), []),  # the same summary: no second event
        (NOW + 10, (demand(3, TPU=1.0),), [(warning[0], warning[1].replace("2×", "3×"))]),  # changed
        (NOW + 15, (), []),  # gone
        (NOW + 20, (demand(3, TPU=1.0),), [(warning[0], warning[1].replace("2×", "3×"))]),  # back again
    ]
    for now, pending, expected in steps:
        h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=pending)
        o = h.step(c, pods, {"cpu": 1, "gpu": 0}, now=now)
        assert o is not None
        assert events(o) == expected, now - NOW
        assert o.targets == {"cpu": 1, "gpu": 0}
        assert o.report.infeasible_demand == (warning[1].split(": ", 1)[1].replace("2×", f"{pending[0].count}×")
                                              if pending else "")


def idle_cluster(h: Harness, c: ClusterSpec, idle: int) -> list[PodState]:
    """One busy cpu worker (w0000) and `idle` workers idle for 120 s (> the 60 s timeout)."""
    pods = h.pods(c, 1 + idle)
    nodes = [cpu_node(c, 0)] + [cpu_node(c, 1 + i, NodeStatus.IDLE, idle_s=120) for i in range(idle)]
    h.ray.snapshot = snapshot(head_node(c), *nodes)
    return pods


def test_idle_node_past_the_timeout_is_drained(h: Harness) -> None:
    c = autoscaled("idle-drain")
    pods = idle_cluster(h, c, 1)
    accepted = metric("swarm_autoscaler_drains_total", namespace=NAMESPACE, cluster="idle-drain", result="accepted")
    o = h.step(c, pods, {"cpu": 2, "gpu": 0})
    assert o is not None
    victim = "idle-drain-cpu-w0001"
    (drain,) = h.ray.drains
    assert drain[:4] == (node_id(victim), gcs.DrainReason.IDLE_TERMINATION,
                         "swarm-operator: idle 120s > idleTimeout 60s", 0)
    assert drain[4] is h.ray.snapshot  # only the snapshot the decision came from
    assert drained_at(o.marks) == [(victim, {labels.DRAINED: timestamp(NOW)})]  # for the turn to write
    assert o.targets == {"cpu": 1, "gpu": 0}
    assert [e[1] for e in events(o, "Autoscaled")] == ["cpu 2→1: 1 idle > 60s"]
    assert events(o, "DrainRefused") == []
    assert o.report.decisions == ("cpu 2→1: 1 idle > 60s", f"drained {victim}: idle 120s > idleTimeout 60s")
    assert o.scaled_up == frozenset()
    assert o.idle == frozenset({victim})
    assert metric("swarm_autoscaler_drains_total", namespace=NAMESPACE, cluster="idle-drain",
                  result="accepted") == accepted + 1


REFUSALS = [
    pytest.param({"refuse": "node has running tasks"}, "node has running tasks", id="refused-by-the-raylet"),
    pytest.param({"fail": True}, "drain timed out", id="drain-rpc-failed"),
]


@pytest.mark.parametrize(("how", "why"), REFUSALS)
def test_refused_drain_keeps_the_node_and_its_target(h: Harness, how: dict[str, Any], why: str) -> None:
    c = autoscaled(f"refused-{'rpc' if 'fail' in how else 'ray'}")
    pods = idle_cluster(h, c, 1)
    victim = f"{c.name}-cpu-w0001"
    if "refuse" in how:
        h.ray.refuse[victim] = how["refuse"]
    else:
        h.ray.fail_drain.add(victim)
    refused = metric("swarm_autoscaler_drains_total", namespace=NAMESPACE, cluster=c.name, result="refused")
    o = h.step(c, pods, {"cpu": 2, "gpu": 0})
    assert o is not None
    assert o.targets == {"cpu": 2, "gpu": 0}
    assert o.marks == ()
    assert events(o, "DrainRefused") == [("DrainRefused", f"{victim} keeps running: {why}")]
    # The target did not change: no event may claim it did.
    assert events(o, "Autoscaled") == []
    assert f"drain of {victim} refused (it got work)" in o.report.decisions
    assert metric("swarm_autoscaler_drains_total", namespace=NAMESPACE, cluster=c.name, result="refused") == refused + 1


def test_one_drain_refused_of_two(h: Harness) -> None:
    c = autoscaled()
    pods = idle_cluster(h, c, 2)
    h.ray.refuse["demo-cpu-w0002"] = "busy"
    o = h.step(c, pods, {"cpu": 3, "gpu": 0})
    assert o is not None
    assert len(h.ray.drains) == 2
    assert o.targets["cpu"] == 2
    assert [name for name, _ in drained_at(o.marks)] == ["demo-cpu-w0001"]
    (event,) = events(o, "Autoscaled")
    # The target it really got, not the policy's 3→1.
    assert event[1] == "cpu 3→2: 2 idle > 60s; 1 drain(s) refused"


def test_an_unsupported_ray_version_warns_once_per_cluster(h: Harness) -> None:
    one, two = autoscaled("one"), autoscaled("two")
    h.ray.snapshot = snapshot(ray_version="2.30.0")
    (text,) = check(None, "2.30.0", gcs.OPERATOR_RAY_VERSION).warnings
    warning = ("RayVersionUnsupported", text)
    for now, c, expected in [(NOW, one, [warning]), (NOW, two, [warning]), (NOW + 5, one, []), (NOW + 5, two, []),
                             (NOW + 10, one, [])]:
        o = h.step(c, [], {"cpu": 1, "gpu": 0}, now=now)
        assert o is not None
        assert events(o, "RayVersionUnsupported") == expected, (c.name, now)
        assert (o.report.ray_version, o.report.ray_version_warning) == ("2.30.0", text)
    h.forget(one)
    o = h.step(one, [], {"cpu": 1, "gpu": 0}, now=NOW + 15)
    assert o is not None and events(o, "RayVersionUnsupported") == [warning]


def test_spec_ray_version_differing_from_the_heads_warns(h: Harness) -> None:
    c = cluster({**AUTO, "rayVersion": "2.59.0"}, groups=[group("cpu", 1, resources=CPU4)])
    h.ray.snapshot = snapshot()
    o = h.step(c, [], {"cpu": 1})
    assert o is not None
    (event,) = events(o, "RayVersionMismatch")
    assert event[1].startswith(f"spec.rayVersion is 2.59.0 but the head runs Ray {gcs.OPERATOR_RAY_VERSION}")
    assert o.report.ray_version_warning == event[1]


def test_same_ray_version_or_unknown_never_warns(h: Harness) -> None:
    c = autoscaled()
    h.ray.snapshot = snapshot()
    o = h.step(c, [], {"cpu": 1, "gpu": 0})
    assert o is not None and events(o, "RayVersionMismatch") == []
    h.ray.snapshot = ClusterSnapshot("a", "s", 1, (), (), (), (), ray_version=None)
    o = h.step(c, [], {"cpu": 1, "gpu": 0}, now=NOW + 5)
    assert o is not None and events(o, "RayVersionMismatch") == [] and o.report.ray_version == ""
    assert o.report.ray_version_warning == ""


def test_ray_dead_pods_are_reported(h: Harness) -> None:
    c = autoscaled()
    pods = h.pods(c, 2)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), cpu_node(c, 1, NodeStatus.DEAD))
    o = h.step(c, pods, {"cpu": 2, "gpu": 0})
    assert o is not None
    assert o.ray_dead == frozenset({"demo-cpu-w0001"})
    assert o.ray_nodes == frozenset({head_node(c).instance_id, "demo-cpu-w0000"})  # live ones only
    assert o.targets["cpu"] == 2  # the planner replaces it; the autoscaler does not drop its place


def test_the_turn_after_a_drain_keeps_the_lower_target(h: Harness) -> None:
    """The drained node is DEAD, its pod still runs: reported ray_dead, and the target stays lowered."""
    c = autoscaled()
    pods = idle_cluster(h, c, 1)
    o = h.step(c, pods, {"cpu": 2, "gpu": 0})
    assert o is not None and o.targets["cpu"] == 1
    (mark,) = o.marks
    pods = [p if p.name != "demo-cpu-w0001" else h.marked(mark) for p in pods]
    assert pods[-1].drained
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), cpu_node(c, 1, NodeStatus.DEAD))
    o = h.step(c, pods, o.targets, now=NOW + 5, scale_ups=dict.fromkeys(o.scaled_up, NOW))
    assert o is not None
    assert o.targets["cpu"] == 1
    assert events(o, "Autoscaled") == []
    assert o.ray_dead == frozenset({"demo-cpu-w0001"})


def test_pending_demand_gauge_follows_the_demand(h: Harness) -> None:
    c = autoscaled("gauge")
    pods = h.pods(c, 1)

    def gauge(resource: str) -> float | None:
        return REGISTRY.get_sample_value("swarm_autoscaler_pending_demand",
                                         {"namespace": NAMESPACE, "cluster": "gauge", "resource": resource})

    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=(demand(2, GPU=1.0, CPU=1.0),))
    assert h.step(c, pods, {"cpu": 1, "gpu": 0}) is not None
    assert (gauge("GPU"), gauge("CPU")) == (2.0, 2.0)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), pending=(demand(3, CPU=1.0),))
    assert h.step(c, pods, {"cpu": 1, "gpu": 2}, now=NOW + 5) is not None
    assert (gauge("GPU"), gauge("CPU")) == (0.0, 3.0)  # demand that went away is no longer reported
    h.forget(c)
    assert (gauge("GPU"), gauge("CPU")) == (None, None)  # a deleted cluster leaves no series behind


# -- rollouts: Ray's state read-only, and drains with reason PREEMPTION -----------------------------


def test_observe_reads_ray_without_deciding_anything(h: Harness) -> None:
    c = cluster(groups=[group("cpu", 3)])  # autoscaling off
    pods = h.pods(c, 3)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), cpu_node(c, 1, NodeStatus.IDLE),
                              cpu_node(c, 2, NodeStatus.DEAD))
    assert asyncio.run(h.scaler.observe(key_of(c), pods, None)) is None  # no head to ask
    view = asyncio.run(h.scaler.observe(key_of(c), pods, HEAD_IP))
    assert view is not None
    assert (view.ray_nodes, view.idle, view.ray_dead) == (
        frozenset({head(c).name, "demo-cpu-w0000", "demo-cpu-w0001"}), frozenset({"demo-cpu-w0001"}),
        frozenset({"demo-cpu-w0002"}))
    assert h.ray.drains == []
    h.ray.error = "connection refused"
    h.forget(c)  # no read backoff left from before
    assert asyncio.run(h.scaler.observe(key_of(c), pods, HEAD_IP)) is None


@pytest.mark.parametrize(
    ("fail", "annotated"),
    [pytest.param(False, True, id="accepted-annotated"), pytest.param(True, False, id="rpc-failed-retried-later")],
)
def test_drain_workers_uses_preemption_and_the_deadline(h: Harness, fail: bool, annotated: bool) -> None:
    c = cluster(groups=[group("cpu", 2)])
    pods = h.pods(c, 2)
    h.ray.snapshot = snapshot(head_node(c), cpu_node(c, 0), cpu_node(c, 1))
    view = asyncio.run(h.scaler.observe(key_of(c), pods, HEAD_IP))
    assert view is not None
    if fail:
        h.ray.fail_drain.add("demo-cpu-w0000")
    drains = [DrainWorker("demo-cpu-w0000", "worker demo-cpu-w0000 of group cpu: rolling update", 90),
              DrainWorker("demo-cpu-gone", "not a Ray node any more", 90)]
    marks, evs = asyncio.run(h.scaler.drain_workers(key_of(c), view.snapshot, drains, NOW))
    ((node, reason, message, deadline_ms, _),) = h.ray.drains  # the node Ray does not know is not sent
    assert (node, reason, deadline_ms) == (node_id("demo-cpu-w0000"), gcs.DrainReason.PREEMPTION,
                                           int((NOW + 90) * 1000))
    assert message == "swarm-operator: worker demo-cpu-w0000 of group cpu: rolling update"
    if annotated:
        assert drained_at(marks) == [("demo-cpu-w0000", {labels.DRAINED: timestamp(NOW)})]
        assert [e[0] for e in evs] == ["Draining"]
    else:
        assert (marks, evs) == ([], [])


# -- a scale-up that may be Ray counting the same tasks twice waits for a second read (autoscaler.confirm)

def took(c: ClusterSpec, cpus: float) -> RayNode:
    """The harness's first cpu worker, having taken `cpus` of its 4 CPUs."""
    return ray_node(f"{c.name}-cpu-w0000", "cpu", total=CPU_TOTAL, available={**CPU_TOTAL, "CPU": 4.0 - cpus})


HELD = ("held for a second read in 1.5s (Ray may count the tasks the live nodes just took twice): "
        "cpu 1→2: 1 pending {CPU:1}")


def second_read(h: Harness, before: str, pending: int) -> tuple[Any, ClusterSpec, list[PodState]]:
    """A first read with the worker idle or not yet a Ray node; one 5 s later where it took one CPU while Ray still
    counts 4 tasks pending (3 fit it, 1 would open a node), held for a second read; then that read 1.5 s later, with
    `pending` tasks. Its outcome, the cluster and its pods."""
    c = autoscaled()
    pods = h.pods(c, 1)
    h.ray.snapshot = snapshot(head_node(c), *([took(c, 0)] if before == "idle" else []))
    assert h.step(c, pods, {"cpu": 1, "gpu": 0}, scale_ups={"cpu": NOW - 60}) is not None
    h.ray.snapshot = snapshot(head_node(c), took(c, 1), pending=(demand(4, CPU=1.0),))
    held = h.step(c, pods, {"cpu": 1, "gpu": 0}, now=NOW + 5, scale_ups={"cpu": NOW - 60})
    assert held is not None
    assert (held.targets, held.scaled_up, held.events, held.marks) == ({"cpu": 1, "gpu": 0}, frozenset(), (), ())
    assert held.report.decisions == (HELD,)
    assert h.scaler.due_in(h.memory(c), NOW + 5) == pytest.approx(1.5)
    h.ray.snapshot = snapshot(head_node(c), took(c, 1), pending=(demand(pending, CPU=1.0),))
    return h.step(c, pods, {"cpu": 1, "gpu": 0}, now=NOW + 6.5, scale_ups={"cpu": NOW - 60}), c, pods


@pytest.mark.parametrize("before", ["idle", "not yet a Ray node"])
def test_a_scale_up_whose_task_went_by_the_second_read_is_dropped(h: Harness, before: str) -> None:
    o, c, _ = second_read(h, before, pending=3)  # the task the worker took had been counted twice
    assert o is not None and o.targets == {"cpu": 1, "gpu": 0}
    assert h.scaler.due_in(h.memory(c), NOW + 6.5) == pytest.approx(5.0)


def test_a_known_nodes_task_still_pending_at_the_second_read_opens_the_node(h: Harness) -> None:
    o, _, _ = second_read(h, "idle", pending=4)
    assert o is not None and o.targets == {"cpu": 2, "gpu": 0}


def test_a_task_still_pending_beside_a_node_that_just_joined_is_held_on_then_opens_the_node(h: Harness) -> None:
    still, c, pods = second_read(h, "not yet a Ray node", pending=4)
    assert still is not None and still.targets == {"cpu": 1, "gpu": 0} and still.scaled_up == frozenset()
    assert still.report.decisions == (
        "still held, read again in 1.5s (1.5s of at most 10s: nodes that just joined took as much): "
        "cpu 1→2: 1 pending {CPU:1}",)
    assert h.scaler.due_in(h.memory(c), NOW + 6.5) == pytest.approx(1.5)
    o = h.step(c, pods, {"cpu": 1, "gpu": 0}, now=NOW + 5 + confirm.MAX_HOLD_S, scale_ups={"cpu": NOW - 60})
    assert o is not None and o.targets == {"cpu": 2, "gpu": 0} and o.scaled_up == frozenset({"cpu"})


@pytest.mark.parametrize(("pending", "gangs", "target"), [
    ((demand(8, CPU=1.0),), (), 3),  # 5 on new nodes, more than the 1 CPU taken
    # A placement group opens a node too: one more for the 4th task goes with it.
    ((demand(4, CPU=1.0),), (GangDemand((Bundle({"CPU": 4.0}),), Strategy.PACK, 1),), 3),
])
def test_other_scale_ups_go_at_once(h: Harness, pending: tuple[ResourceDemand, ...],
                                    gangs: tuple[GangDemand, ...], target: int) -> None:
    c = autoscaled()
    pods = h.pods(c, 1)
    h.ray.snapshot = snapshot(head_node(c), took(c, 0))
    h.step(c, pods, {"cpu": 1, "gpu": 0})
    h.ray.snapshot = snapshot(head_node(c), took(c, 1), pending=pending, gangs=gangs)
    o = h.step(c, pods, {"cpu": 1, "gpu": 0}, now=NOW + 5)
    assert o is not None and o.targets == {"cpu": target, "gpu": 0} and o.scaled_up == frozenset({"cpu"})
