"""autoscaler.inputs: the spec, Ray's snapshot and the pods → the policy's input; demand summaries."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.autoscaler import policy
from swarm_operator.autoscaler.inputs import capacity, demand_summary, policy_input
from swarm_operator.autoscaler.snapshot import (
    HEAD_RESOURCE,
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
from swarm_operator.reconcile.observe import PodState, observe_pod
from swarm_operator.resources import labels
from swarm_operator.resources.pods import ray_shape
from swarm_operator.spec.types import ClusterSpec, WorkerGroupSpec
from tests.unit.operator_fixtures import NOW, cluster, group, head, iso, worker, worker_pod
from tests.unit.ray_fixtures import demand, ray_node, snapshot

GI = 1024**3
PG = "6a5216cb0648328489383c24002c01000000"  # a placement group id: 36 hex digits


# -- capacity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param({"CPU": 4.0, "node:10.0.0.7": 1.0}, {"CPU": 4.0}, id="node-ip-dropped"),
        pytest.param({"CPU": 1.0, HEAD_RESOURCE: 1.0}, {"CPU": 1.0}, id="head-marker-dropped"),
        pytest.param({"GPU": 1.0, f"GPU_group_{PG}": 1.0, f"GPU_group_0_{PG}": 1.0, f"bundle_group_{PG}": 1000.0},
                     {"GPU": 1.0}, id="placement-group-resources-dropped"),
        pytest.param({"memory": 8e9, "object_store_memory": 2e9, "GPU": 2.0, "accel": 3.0},
                     {"memory": 8e9, "object_store_memory": 2e9, "GPU": 2.0, "accel": 3.0}, id="others-kept"),
        # A user's custom resource may contain "_group_": only Ray's placement-group names are unique.
        pytest.param({"tpu_group_a": 2.0, "my_group_0_x": 1.0}, {"tpu_group_a": 2.0, "my_group_0_x": 1.0},
                     id="custom-resource-named-like-a-group-kept"),
        pytest.param({}, {}, id="empty"),
    ],
)
def test_capacity(resources: dict[str, float], expected: dict[str, float]) -> None:
    assert capacity(resources) == expected


# -- policy_input -------------------------------------------------------------------------------

AUTO = {"autoscaling": {"enabled": True, "idleTimeoutSeconds": 120, "upscalingSpeed": 2.5,
                        "conserveGpuNodes": False, "scaleDownStabilizationSeconds": 45}}
C = cluster(AUTO, groups=[group("cpu", 2, lo=1, hi=4), group("gpu", None, lo=0, hi=3, gpu=1)])


def pod(name: str, group_name: str = "cpu", **state: Any) -> PodState:
    return worker(C, group_name, name, **state)


def drained(p: PodState) -> PodState:
    """The same pod after the autoscaler's drain of its Ray node was accepted."""
    raw = worker_pod(C, p.group or "cpu", p.name.rsplit("-", 1)[1], created=p.created)
    raw["metadata"].setdefault("annotations", {})[labels.DRAINED] = iso(NOW)
    return observe_pod(raw)


def build(pods: list[PodState], snap: ClusterSnapshot, targets: dict[str, int] | None = None,
          *, c: ClusterSpec = C, unavailable: frozenset[str] = frozenset(),
          last_up: dict[str, float] | None = None) -> policy.PolicyInput:
    return policy_input(c, snap, pods, targets if targets is not None else {}, last_up or {}, unavailable, NOW)


def node_rows(inp: policy.PolicyInput) -> list[tuple[str, str | None, str]]:
    return sorted((n.name, n.group, n.status.value) for n in inp.nodes)


HEAD = head(C)
A = pod("aaaaa", created=NOW - 300)
B = pod("bbbbb", created=NOW - 100)
G = pod("ggggg", "gpu")
N_A = ray_node(A.name, "cpu")

NODE_CASES = [
    pytest.param([A], [N_A], [(A.name, "cpu", "RUNNING")], id="worker-with-its-pod"),
    pytest.param([HEAD], [ray_node(HEAD.name, labels.HEAD, head=True)], [(HEAD.name, None, "RUNNING")],
                 id="head-has-no-group"),
    pytest.param([], [ray_node(HEAD.name, labels.HEAD, head=True)], [(HEAD.name, None, "RUNNING")],
                 id="head-kept-even-without-its-pod"),
    pytest.param([], [ray_node("demo-old-zzzzz", "old")], [("demo-old-zzzzz", None, "RUNNING")],
                 id="node-of-a-removed-group-kept-without-a-group"),
    pytest.param([], [N_A], [], id="pod-gone-node-skipped"),
    pytest.param([pod("aaaaa", phase="Failed", ready=False)], [N_A], [], id="pod-failed-node-skipped"),
    pytest.param([pod("aaaaa", deleting=True)], [N_A], [], id="pod-deleting-node-skipped"),
    pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DEAD)], [], id="dead-node-skipped"),
    pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DRAINING)], [(A.name, "cpu", "DRAINING")],
                 id="draining-node-kept"),
    pytest.param([A, B], [ray_node(A.name, "cpu", NodeStatus.IDLE), ray_node(B.name, "cpu")],
                 [(A.name, "cpu", "IDLE"), (B.name, "cpu", "RUNNING")], id="idle-and-running"),
    pytest.param([A, G], [N_A, ray_node(G.name, "gpu")], [(A.name, "cpu", "RUNNING"), (G.name, "gpu", "RUNNING")],
                 id="two-groups"),
]


@pytest.mark.parametrize(("pods", "nodes", "expected"), NODE_CASES)
def test_policy_input_nodes(pods: list[PodState], nodes: list[RayNode],
                            expected: list[tuple[str, str | None, str]]) -> None:
    assert node_rows(build(pods, snapshot(*nodes))) == expected


def test_policy_input_node_details() -> None:
    """Capacity loses the per-node and placement-group resources; idle time in seconds; age from the pod."""
    n = ray_node(A.name, "cpu", NodeStatus.IDLE, idle_s=90.5,
                 total={"CPU": 4.0, "memory": 8e9, f"CPU_group_{PG}": 2.0},
                 available={"CPU": 3.0, "memory": 8e9, f"CPU_group_{PG}": 1.0})
    (got,) = build([A], snapshot(n)).nodes
    assert got == policy.Node(name=A.name, group="cpu", status=NodeStatus.IDLE,
                              total={"CPU": 4.0, "memory": 8e9}, available={"CPU": 3.0, "memory": 8e9},
                              idle_s=90.5, age_s=300.0)


def test_policy_input_node_without_a_pod_has_age_zero_and_is_named_by_its_id() -> None:
    n = RayNode("ab" * 28, "", "old", NodeStatus.RUNNING, {"CPU": 1.0}, {"CPU": 1.0}, 0, {})
    (got,) = build([], snapshot(n)).nodes
    assert (got.name, got.group, got.age_s) == ("ab" * 28, None, 0.0)


def pending_of(inp: policy.PolicyInput) -> dict[str, int]:
    return {g.name: g.pending_pods for g in inp.groups}


PENDING_CASES = [
    pytest.param([], [], {"cpu": 0, "gpu": 0}, id="nothing"),
    pytest.param([A, B], [], {"cpu": 2, "gpu": 0}, id="pods-not-yet-ray-nodes"),
    pytest.param([A, B], [N_A], {"cpu": 1, "gpu": 0}, id="one-joined"),
    pytest.param([A, G], [], {"cpu": 1, "gpu": 1}, id="per-group"),
    pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.IDLE)], {"cpu": 0, "gpu": 0}, id="idle-node-joined"),
    pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DRAINING)], {"cpu": 0, "gpu": 0},
                 id="draining-node-joined"),
    pytest.param([pod("aaaaa", phase="Failed", ready=False), B], [], {"cpu": 1, "gpu": 0}, id="failed-pod-not-coming"),
    pytest.param([pod("aaaaa", deleting=True)], [], {"cpu": 0, "gpu": 0}, id="deleting-pod-not-coming"),
    pytest.param([HEAD], [], {"cpu": 0, "gpu": 0}, id="head-pod-not-a-worker"),
    # A pod whose Ray node is DEAD is on its way out (the planner deletes it): no capacity is coming from it.
    pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DEAD)], {"cpu": 0, "gpu": 0},
                 id="ray-dead-pod-not-coming"),
    pytest.param([drained(A)], [ray_node(A.name, "cpu", NodeStatus.DEAD)], {"cpu": 0, "gpu": 0},
                 id="drained-pod-with-dead-node-not-coming"),
    pytest.param([drained(A)], [], {"cpu": 0, "gpu": 0}, id="drained-pod-whose-node-is-forgotten-not-coming"),
    pytest.param([A], [ray_node(A.name, "cpu", NodeStatus.DEAD), ray_node(A.name, "cpu")],
                 {"cpu": 0, "gpu": 0}, id="restarted-node-joined"),
]


@pytest.mark.parametrize(("pods", "nodes", "expected"), PENDING_CASES)
def test_policy_input_pending_pods(pods: list[PodState], nodes: list[RayNode], expected: dict[str, int]) -> None:
    assert pending_of(build(pods, snapshot(*nodes))) == expected


def test_a_drained_node_that_died_does_not_bring_its_target_back() -> None:
    """Regression: the turn after a drain, the node is DEAD while `ray start --block` still runs. Counting
    that pod as coming capacity raised the target again (cpu 1→2) and a new worker replaced the drained one."""
    busy = ray_node(B.name, "cpu", available={"CPU": 0.0, "memory": 8e9})
    inp = build([B, drained(A)], snapshot(busy, ray_node(A.name, "cpu", NodeStatus.DEAD)), {"cpu": 1})
    decision = policy.decide(inp)
    assert decision.targets["cpu"] == 1
    assert decision.reasons == {}


def targets_of(inp: policy.PolicyInput) -> dict[str, int]:
    return {g.name: g.replicas for g in inp.groups}


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        pytest.param({}, {"cpu": 2, "gpu": 0}, id="initial-replicas-else-min"),
        pytest.param({"cpu": 3, "gpu": 2}, {"cpu": 3, "gpu": 2}, id="status-targets"),
        pytest.param({"cpu": 9, "gpu": 7}, {"cpu": 4, "gpu": 3}, id="clamped-to-max"),
        pytest.param({"cpu": 0}, {"cpu": 1, "gpu": 0}, id="clamped-to-min"),
        pytest.param({"old": 5}, {"cpu": 2, "gpu": 0}, id="unknown-group-ignored"),
    ],
)
def test_policy_input_targets(targets: dict[str, int], expected: dict[str, int]) -> None:
    assert targets_of(build([], snapshot(), targets)) == expected


def test_policy_input_groups_and_settings() -> None:
    inp = build([], snapshot(), unavailable=frozenset({"gpu"}), last_up={"cpu": NOW - 10})
    cpu, gpu = inp.groups
    spec = C.worker_groups[0]
    cpu_shape = ray_shape(spec.resources, spec.ray_start_params, spec.ray_resources)
    assert (cpu.name, cpu.min_replicas, cpu.max_replicas, cpu.resources) == ("cpu", 1, 4, cpu_shape)
    assert (gpu.name, gpu.min_replicas, gpu.max_replicas, gpu.resources["GPU"]) == ("gpu", 0, 3, 1.0)
    assert inp.settings == policy.Settings(upscaling_speed=2.5, idle_timeout_s=120.0, conserve_gpu_nodes=False,
                                           scale_down_stabilization_s=45.0)
    assert (inp.unavailable, inp.now, dict(inp.last_scale_up)) == (frozenset({"gpu"}), NOW, {"cpu": NOW - 10})


def test_policy_input_default_settings() -> None:
    c = cluster({"autoscaling": {"enabled": True}})
    assert build([], snapshot(), c=c).settings == policy.Settings(
        upscaling_speed=1.0, idle_timeout_s=60.0, conserve_gpu_nodes=True, scale_down_stabilization_s=30.0)


def test_policy_input_demand() -> None:
    """Tasks, gangs and constraints reach the policy as Ray reported them (selector alternatives and all);
    tasks and constraints of zero count drop."""
    zone = LabelConstraint("zone", LabelOp.IN, frozenset({"a"}))
    not_b = LabelConstraint("zone", LabelOp.NOT_IN, frozenset({"b"}))
    gpu = ResourceDemand({"GPU": 1.0}, 2, ((zone,), (not_b,)))
    spread = GangDemand((Bundle({"GPU": 1.0}, (zone,)), Bundle({"CPU": 2.0})), Strategy.STRICT_SPREAD, 2, ("p1", "p2"))
    gangs = (spread, GangDemand((), Strategy.PACK, 1, ("pg3",)))
    snap = snapshot(pending=(demand(3, CPU=1.0), demand(0, CPU=2.0), gpu), gangs=gangs,
                    constraints=(demand(4, CPU=8.0), demand(0, CPU=1.0)))
    inp = build([], snap)
    assert inp.demands == (ResourceDemand({"CPU": 1.0}, 3), gpu)
    assert inp.gangs == gangs
    assert inp.constraints == (ResourceDemand({"CPU": 8.0}, 4),)


# -- demand_summary -----------------------------------------------------------------------------

TASK = policy.DemandKind.TASK
GANG = policy.DemandKind.GANG


@pytest.mark.parametrize(
    ("demands", "limit", "expected"),
    [
        pytest.param([], 8, "", id="none"),
        pytest.param([ResourceDemand({"GPU": 1.0}, 12), ResourceDemand({"CPU": 4.0}, 3)], 8,
                     "12×{GPU:1}, 3×{CPU:4}", id="tasks"),
        pytest.param([ResourceDemand({"CPU": 4.0}, 3), ResourceDemand({"GPU": 1.0}, 12)], 8,
                     "12×{GPU:1}, 3×{CPU:4}", id="largest-first"),
        pytest.param([ResourceDemand({"CPU": 1.0, "memory": 4e9}, 1)], 8, "1×{CPU:1, memory:4G}", id="units"),
        pytest.param([policy.Unplaced(TASK, ({"TPU": 1.0},), 2)], 8, "2×{TPU:1}", id="unplaced-task"),
        pytest.param([policy.Unplaced(GANG, ({"GPU": 1.0}, {"CPU": 2.0}), 1, Strategy.PACK)], 8,
                     "1×{{GPU:1} + {CPU:2}}", id="unplaced-gang"),
        pytest.param([policy.Unplaced(GANG, ({"GPU": 8.0},), 3, Strategy.PACK)], 8, "3×{GPU:8}",
                     id="one-bundle-gang"),
        pytest.param([ResourceDemand({"CPU": float(i)}, 10 - i) for i in range(1, 4)], 2,
                     "9×{CPU:1}, 8×{CPU:2} and 1 more shapes", id="limit"),
        pytest.param([ResourceDemand({"CPU": float(i)}, 20 - i) for i in range(1, 11)], 8,
                     "19×{CPU:1}, 18×{CPU:2}, 17×{CPU:3}, 16×{CPU:4}, 15×{CPU:5}, 14×{CPU:6}, 13×{CPU:7}, "
                     "12×{CPU:8} and 2 more shapes", id="default-limit"),
    ],
)
def test_demand_summary(demands: list[ResourceDemand | policy.Unplaced], limit: int, expected: str) -> None:
    assert demand_summary(demands, limit) == expected


# -- accelerator kinds → the Ray resource a group offers ----------------------------------------------------


def group_shape(g: WorkerGroupSpec) -> dict[str, float]:
    return ray_shape(g.resources, g.ray_start_params, g.ray_resources)


@pytest.mark.parametrize(
    ("resources", "ray_key"),
    [
        pytest.param({"gpu": 2}, "GPU", id="nvidia-by-default"),
        pytest.param({"gpu": 2, "accelerator": "amd"}, "GPU", id="amd"),
        pytest.param({"gpu": 2, "accelerator": "tpu"}, "TPU", id="tpu"),
        pytest.param({"gpu": 2, "accelerator": "neuron"}, "neuron_cores", id="neuron"),
        pytest.param({"gpu": 2, "accelerator": "gaudi"}, "HPU", id="gaudi"),
        pytest.param({"gpu": 2, "gpuResourceName": "google.com/tpu"}, "TPU", id="tpu-from-the-resource-name"),
        pytest.param({"gpu": 2, "gpuResourceName": "aws.amazon.com/neuroncore"}, "neuron_cores",
                     id="neuron-from-the-resource-name"),
    ],
)
def test_group_shape_offers_the_accelerator_as_rays_resource(resources: dict[str, Any], ray_key: str) -> None:
    c = cluster(groups=[group("acc", resources={"cpu": "4", "memory": "8Gi", **resources})])
    shape = group_shape(c.worker_groups[0])
    assert shape[ray_key] == 2.0
    assert {k for k in shape if k in ("GPU", "TPU", "neuron_cores", "HPU")} == {ray_key}


@pytest.mark.parametrize(("accelerator", "ray_key"), [("tpu", "TPU"), ("neuron", "neuron_cores")])
def test_pending_accelerator_demand_scales_the_group_that_has_it(accelerator: str, ray_key: str) -> None:
    """Demand for TPU or neuron_cores opens nodes of the group with that accelerator, not the GPU group
    (before, every accelerator was offered to Ray as GPU and such demand fit no group)."""
    c = cluster(AUTO, groups=[group("cpu", 0, hi=4), group("gpu", 0, hi=4, gpu=1),
                              group("acc", 0, hi=4, resources={"cpu": "4", "memory": "8Gi", "gpu": 4,
                                                               "accelerator": accelerator})])
    snap = snapshot(ray_node(head(c).name, labels.HEAD, head=True), pending=(demand(2, **{ray_key: 4.0}),))
    decision = policy.decide(build([], snap, c=c))
    assert (decision.targets["acc"], decision.targets["gpu"], decision.targets["cpu"]) == (2, 0, 0)


def test_rays_cpus_override_is_the_groups_cpu() -> None:
    c = cluster(groups=[group("g", resources={"requests": {"cpu": "2"}, "memory": "1Gi", "rayCpus": 6})])
    assert group_shape(c.worker_groups[0])["CPU"] == 6.0


def test_cpu_shape_follows_the_limit_else_the_request() -> None:
    c = cluster(groups=[group("lim", resources={"requests": {"cpu": "2", "memory": "1Gi"},
                                                "limits": {"cpu": "3500m", "memory": "2Gi"}}),
                        group("req", resources={"requests": {"cpu": "1500m", "memory": "3Gi"}})])
    lim, req = (group_shape(g) for g in c.worker_groups)
    assert (lim["CPU"], lim["memory"]) == (4.0, 2.0 * GI)
    assert (req["CPU"], req["memory"]) == (2.0, 3.0 * GI)
