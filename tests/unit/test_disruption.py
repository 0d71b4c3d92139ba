"""Disruption is not failure: the classifier, the node cache, and what the planner does with each."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from swarm_operator import turn as turn_module
from swarm_operator.nodes import NodeCache
from swarm_operator.reconcile.actions import CreateHead, CreateWorkers, DeletePod
from swarm_operator.reconcile.backoff import GroupHealth
from swarm_operator.reconcile.disruption import (
    NODE_SHUTDOWN_MESSAGE,
    Cause,
    Disrupted,
    Failed,
    Healthy,
    NodeState,
    Verdict,
    classify,
    node_state,
)
from swarm_operator.reconcile.observe import Observed, failure_reason, observe_pod, slim_pod
from swarm_operator.reconcile.plan import plan_cluster
from swarm_operator.times import timestamp
from tests.unit.operator_fixtures import (
    NAMESPACE,
    NOW,
    FakeKube,
    FixedClock,
    cluster,
    group,
    head,
    head_pod,
    serving,
    with_state,
    worker,
    worker_pod,
    workers,
)

C = cluster()
C_GCS = cluster({"faultTolerance": {"gcs": {"redisAddress": "redis:6379"}}})
NOT_READY_SECONDS = 60.0
READY = NodeState("n1")
GONE = NodeState.gone("n1")


def target(reason: str) -> dict[str, Any]:
    return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": "…"}


def pod(phase: str = "Running", reason: str | None = None, message: str | None = None,
        conditions: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    p = worker_pod(C, phase=phase, ready=phase == "Running", reason=reason, message=message, node="n1")
    p["status"]["conditions"] += list(conditions)
    return p


def not_ready_for(seconds: float) -> NodeState:
    return NodeState("n1", ready=False, ready_since=NOW - seconds)


ERROR = pod("Failed", "Error", "container exited 1")
CASES = [
    pytest.param(pod(), READY, Healthy(), id="running-on-ready-node"),
    pytest.param(pod(), None, Healthy(), id="node-unknown"),
    pytest.param(ERROR, READY, Failed("pod Error: container exited 1"), id="failed"),
    pytest.param(pod("Failed", "Evicted", "The node was low on resource: memory."), READY,
                 Disrupted(Cause.EVICTED, "evicted by the kubelet: The node was low on resource: memory."),
                 id="kubelet-eviction"),
    pytest.param(pod("Failed", "Evicted", "low on memory", (target("TerminationByKubelet"),)), READY,
                 Disrupted(Cause.EVICTED, "evicted by the kubelet: low on memory"),
                 id="kubelet-eviction-with-its-condition"),
    pytest.param(pod("Failed", "Terminated", NODE_SHUTDOWN_MESSAGE, (target("TerminationByKubelet"),)), READY,
                 Disrupted(Cause.NODE_SHUTDOWN, "stopped by its node's graceful shutdown"),
                 id="graceful-node-shutdown"),
    pytest.param(pod("Failed", "NodeShutdown", "Pod was rejected as the node is shutting down."), READY,
                 Disrupted(Cause.NODE_SHUTDOWN, "stopped by its node's graceful shutdown"),
                 id="rejected-while-node-shuts-down"),
    pytest.param(pod("Failed", "Terminated", "something else"), READY, Failed("pod Terminated: something else"),
                 id="terminated-for-another-reason-is-a-failure"),
    pytest.param(pod(conditions=(target("EvictionByEvictionAPI"),)), READY,
                 Disrupted(Cause.EVICTED, "evicted through the Eviction API"), id="eviction-api"),
    pytest.param(pod(conditions=(target("DeletionByTaintManager"),)), READY,
                 Disrupted(Cause.DISRUPTION_TARGET, "deleted by the taint manager (its node was tainted NoExecute)"),
                 id="taint-manager"),
    pytest.param(pod("Failed", conditions=(target("DeletionByPodGC"),)), READY,
                 Disrupted(Cause.DISRUPTION_TARGET, "deleted by the pod garbage collector (its node is gone)"),
                 id="pod-gc"),
    pytest.param(pod(conditions=(target("PreemptionByScheduler"),)), READY,
                 Disrupted(Cause.DISRUPTION_TARGET, "preempted by the scheduler"), id="preempted"),
    pytest.param(pod(conditions=(target("SomethingNew"),)), READY,
                 Disrupted(Cause.DISRUPTION_TARGET, "condition DisruptionTarget (SomethingNew)"), id="unknown-reason"),
    pytest.param(pod(conditions=({"type": "DisruptionTarget", "status": "False"},)), READY, Healthy(),
                 id="condition-false"),
    pytest.param(pod(), GONE, Disrupted(Cause.NODE_DELETED, "its node n1 was deleted"), id="node-deleted"),
    pytest.param(ERROR, GONE, Disrupted(Cause.NODE_DELETED, "its node n1 was deleted"),
                 id="failed-on-a-deleted-node"),
    pytest.param(pod(), not_ready_for(NOT_READY_SECONDS + 1),
                 Disrupted(Cause.NODE_NOT_READY, "its node n1 has been NotReady for more than 60s"),
                 id="node-not-ready-past-threshold"),
    pytest.param(pod(), not_ready_for(10), Healthy(recheck_at=NOW + 50), id="node-not-ready-briefly"),
    pytest.param(ERROR, not_ready_for(10), Failed("pod Error: container exited 1"),
                 id="failed-while-node-briefly-not-ready"),
    pytest.param(pod(), NodeState("n1", ready=False), Disrupted(Cause.NODE_NOT_READY, "its node n1 has been "
                                                                "NotReady for more than 60s"),
                 id="not-ready-since-unknown"),
]


@pytest.mark.parametrize(("raw", "node", "expected"), CASES)
def test_classify(raw: dict[str, Any], node: NodeState | None, expected: Verdict) -> None:
    assert classify(raw, node, NOW, NOT_READY_SECONDS, failure_reason(raw)) == expected
    # The operator classifies from its slim cache copy: the same verdict.
    assert classify(slim_pod(raw), node, NOW, NOT_READY_SECONDS, failure_reason(slim_pod(raw))) == expected


def node(name: str, ready: str | None = "True", since: float = NOW - 100, rv: str = "5") -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready, "lastTransitionTime": timestamp(since),
                                            "lastHeartbeatTime": timestamp(NOW)}]
    return {"metadata": {"name": name, "resourceVersion": rv}, "status": {"conditions": conditions}}


def marked(raw: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """The node with `spec` fields (unschedulable, taints) as a cordon, a drain or an autoscaler leaves them."""
    return {**raw, "spec": spec}


@pytest.mark.parametrize(("raw", "expected"), [
    pytest.param(node("a"), NodeState("a", ready_since=NOW - 100), id="ready"),
    pytest.param(node("a", "Unknown"), NodeState("a", ready=False, ready_since=NOW - 100), id="unknown-is-not-ready"),
    pytest.param(node("a", None), NodeState("a"), id="no-condition-yet"),
    pytest.param(marked(node("a"), unschedulable=True), NodeState("a", ready_since=NOW - 100, cordoned=True),
                 id="cordoned"),
    pytest.param(marked(node("a"), taints=[{"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000",
                                            "effect": "NoSchedule"}]),
                 NodeState("a", ready_since=NOW - 100, removal="the cluster autoscaler is removing it"),
                 id="cluster-autoscaler-removes-it"),
    pytest.param(marked(node("a", None), unschedulable=True,
                        taints=[{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"},
                                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
                 NodeState("a", cordoned=True, removal="Karpenter is disrupting it"), id="karpenter-disrupts-it"),
    pytest.param(marked(node("a"), taints=[{"key": "karpenter.sh/disruption", "value": "disrupting",
                                            "effect": "NoSchedule"}]),
                 NodeState("a", ready_since=NOW - 100, removal="Karpenter is disrupting it"),
                 id="karpenter-before-v1"),
    # A spot pool's permanent taint, or a cluster autoscaler's mere candidate mark, announce no removal.
    pytest.param(marked(node("a"), taints=[{"key": "kubernetes.azure.com/scalesetpriority", "value": "spot",
                                            "effect": "NoSchedule"},
                                           {"key": "DeletionCandidateOfClusterAutoscaler", "value": "1",
                                            "effect": "PreferNoSchedule"}]),
                 NodeState("a", ready_since=NOW - 100), id="other-taints-are-no-removal"),
])
def test_node_state(raw: dict[str, Any], expected: NodeState) -> None:
    assert node_state(raw) == expected


def test_node_cache_knows_gone_only_from_a_deletion_it_saw() -> None:
    nodes = NodeCache()
    assert nodes.state("a") is None and nodes.state(None) is None
    assert nodes.apply(None, node("a")) is True
    hb = node("a", rv="6")
    hb["status"]["conditions"][0]["lastHeartbeatTime"] = timestamp(NOW + 10)
    assert nodes.apply("MODIFIED", hb) is False, "a heartbeat changes nothing a decision reads"
    assert nodes.apply("MODIFIED", node("a", "False", since=NOW, rv="7")) is True
    assert nodes.state("a") == NodeState("a", ready=False, ready_since=NOW)
    assert nodes.apply("MODIFIED", node("a", rv="6")) is False, "an older report never rolls the cache back"
    assert nodes.apply("DELETED", node("a", rv="8")) is True
    assert nodes.state("a") == NodeState.gone("a")
    assert nodes.apply("ADDED", node("a", rv="9")) is True, "registered again"
    assert nodes.state("a") == NodeState("a", ready_since=NOW - 100)


def test_node_cache_full_list_drops_what_it_no_longer_has_but_not_what_came_after_it() -> None:
    nodes = NodeCache()
    nodes.apply(None, node("old", rv="5"))
    nodes.apply(None, node("new", rv="20"))  # watched after the list below was taken
    assert nodes.replace_all([node("kept", rv="3")], "10") == {"old", "kept"}
    assert nodes.state("old") == NodeState.gone("old")
    assert nodes.state("new") is not None and nodes.state("new") != NodeState.gone("new")
    assert nodes.state("kept") == NodeState("kept", ready_since=NOW - 100)


# -- the planner: disrupted pods are replaced at once, without counting a failure ------------------------

IN_BACKOFF = GroupHealth(restarts=3, consecutive_failures=3, last_failure=NOW - 2, backoff_until=NOW + 60)


def observed(pods: list[Any], health: GroupHealth | None = None) -> Observed:
    return Observed(pods=tuple(pods), service_exists=True, health={"cpu": health} if health else {})


def evicted(suffix: str) -> Any:
    return worker(C, suffix=suffix, phase="Failed", ready=False, reason="Evicted", message="low on memory")


def test_nine_evicted_workers_are_replaced_at_once_and_count_no_failure() -> None:
    c = cluster(groups=[group("cpu", 10, hi=20)])
    pods = [head(c), *workers(c, 1), *(evicted(f"ev{i:03d}") for i in range(9))]
    plan = plan_cluster(c, observed(pods), {}, NOW)
    deletes = [a for a in plan.actions if isinstance(a, DeletePod)]
    assert len(deletes) == 9 and all(d.disrupted and d.disrupted.cause == Cause.EVICTED and not d.failed
                                     for d in deletes)
    assert deletes[0].reason == "worker demo-cpu-ev000 of group cpu disrupted (evicted by the kubelet: low on memory)"
    assert [a for a in plan.actions if isinstance(a, CreateWorkers)] == [
        CreateWorkers("cpu", 9, "group cpu has 1 of 10 workers (replacing 9 disrupted)")]
    assert plan.health["cpu"] == GroupHealth(), "no failure counted, no backoff"


def test_disrupted_workers_skip_a_running_backoff_but_failed_ones_wait() -> None:
    pods = [head(C), evicted("ev1"), worker(C, suffix="err1", phase="Failed", ready=False, reason="Error")]
    plan = plan_cluster(C, observed(pods, IN_BACKOFF), {}, NOW)
    creates = [a for a in plan.actions if isinstance(a, CreateWorkers)]
    assert creates == [CreateWorkers("cpu", 1, "group cpu has 0 of 2 workers (replacing 1 disrupted at once; the "
                                               "rest wait for the failure backoff)")]
    assert plan.health["cpu"].consecutive_failures == 4, "only the failed one counts"
    assert plan.requeue_after is not None and plan.requeue_after > 0


def test_workers_evicted_through_the_api_are_replaced_at_once_though_already_going() -> None:
    raw = worker_pod(C, suffix="ev1", deleting=True)
    raw["status"]["conditions"].append(target("EvictionByEvictionAPI"))
    going = observe_pod(raw)
    assert going.disruption is not None
    plan = plan_cluster(C, observed([head(C), *workers(C, 1), going], IN_BACKOFF), {}, NOW)
    assert [a for a in plan.actions if isinstance(a, CreateWorkers)] == [
        CreateWorkers("cpu", 1, "group cpu has 1 of 2 workers (replacing 1 disrupted at once; the rest wait for "
                                "the failure backoff)")]
    assert not [a for a in plan.actions if isinstance(a, DeletePod)], "its deletion is under way"


def test_a_worker_gone_between_two_turns_by_a_disruption_is_replaced_at_once() -> None:
    raw = worker_pod(C, suffix="ev1", deleting=True)
    raw["status"]["conditions"].append(target("EvictionByEvictionAPI"))
    obs = Observed(pods=(head(C), *workers(C, 1)), service_exists=True, health={"cpu": IN_BACKOFF},
                   vanished=(observe_pod(raw),))
    assert [a for a in plan_cluster(C, obs, {}, NOW).actions if isinstance(a, CreateWorkers)] == [
        CreateWorkers("cpu", 1, "group cpu has 1 of 2 workers (replacing 1 disrupted at once; the rest wait for "
                                "the failure backoff)")]
    ours = replace(obs, deleted_by_operator=frozenset({"demo-cpu-ev1"}))
    assert not [a for a in plan_cluster(C, ours, {}, NOW).actions if isinstance(a, CreateWorkers)], \
        "one the operator deleted itself is no disruption: it waits for the backoff"


def test_workers_on_a_deleted_node_are_replaced_and_ones_on_a_briefly_not_ready_node_are_rechecked() -> None:
    lost = observe_pod(worker_pod(C, suffix="lost1", node="gone"), NodeState.gone("gone"), NOW)
    wobbly = observe_pod(worker_pod(C, suffix="wob01", node="n2"), NodeState("n2", ready=False, ready_since=NOW - 20),
                         NOW, NOT_READY_SECONDS)
    plan = plan_cluster(C, observed([head(C), lost, wobbly]), {}, NOW)
    assert DeletePod("demo-cpu-lost1", "worker demo-cpu-lost1 of group cpu disrupted (its node gone was deleted)",
                     disrupted=Disrupted(Cause.NODE_DELETED, "its node gone was deleted")) in plan.actions
    assert plan.requeue_after == pytest.approx(40), "looked at again when the NotReady threshold passes"


@pytest.mark.parametrize(("c", "recycled"), [(C, True), (C_GCS, False)], ids=["no-gcs-ft", "gcs-ft"])
def test_a_disrupted_head_is_replaced_without_counting_a_restart(c: Any, recycled: bool) -> None:
    h = observe_pod(head_pod(c, node="gone"), NodeState.gone("gone"), NOW)
    plan = plan_cluster(c, Observed(pods=(h, *workers(c, 2)), service_exists=True, health={}, head_restarts=2),
                        {}, NOW)
    deletes = [a for a in plan.actions if isinstance(a, DeletePod)]
    assert deletes[0] == DeletePod("demo-head", "head demo-head disrupted (its node gone was deleted); replacing it",
                                   disrupted=Disrupted(Cause.NODE_DELETED, "its node gone was deleted"))
    assert len(deletes) == (3 if recycled else 1)
    assert plan.head_restarts == 2
    # Its node is gone, so it runs nothing: the next head starts at once, under the next generation's name (the
    # old pod would hold its name until someone force-deletes it).
    assert [a for a in plan.actions if isinstance(a, CreateHead)] == [
        CreateHead("head pod missing; the old one is stuck on a lost node: demo-head (its node gone was deleted)", 1)]
    assert plan.head_generation == 1


# -- the controller: a node event gives the clusters with pods on it a turn ------------------------------

def test_a_deleted_node_disrupts_its_pods_and_the_turn_replaces_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_module, "time", FixedClock)
    kube = FakeKube()
    key = (NAMESPACE, "demo")

    async def body() -> None:
        c = serving(kube)
        await c.reconcile(key)  # head + 2 workers
        c.on_node(None, node("n1"))
        victim = next(p for (_, n), p in kube.pods.items() if n.startswith("demo-cpu-"))
        placed = with_state(victim, node="n1", resource_version=kube.bump())
        kube.pods[(NAMESPACE, placed["metadata"]["name"])] = placed
        c.on_pod("MODIFIED", placed)
        await c.reconcile(key)
        while len(c.loop.queue):
            await c.loop.queue.get()
            c.loop.queue.done(key)
        c.on_node("MODIFIED", node("n2"))
        assert not len(c.loop.queue), "no pod of the cluster is on n2"
        c.on_node("DELETED", node("n1"))
        assert len(c.loop.queue) == 1, "its pods' cluster gets a turn"
        kube.calls.clear()
        await c.reconcile(key)
        # The pod garbage collector ends the pod the operator deleted, marking it: no second count.
        last = with_state(kube.pods.pop((NAMESPACE, placed["metadata"]["name"])), node="n1", deleting=True,
                          resource_version=kube.bump())
        last["status"]["conditions"].append(target("DeletionByPodGC"))
        c.on_pod("DELETED", last)
        await c.reconcile(key)

    asyncio.run(asyncio.wait_for(body(), timeout=10))
    assert (kube.verbs()["delete_pod"], kube.verbs()["create_pod"]) == (1, 1)
    disrupted = [e for e in kube.events if e[2] == "Disrupted"]
    assert len(disrupted) == 1 and disrupted[0][1] == "Normal" and "its node n1 was deleted" in disrupted[0][3]
    assert not [e for e in kube.events if e[2] == "Replacing"]
    (group_status,) = kube.statuses[-1][2]["workerGroups"]
    assert (group_status["restarts"], group_status["consecutiveFailures"]) == (0, 0)


# -- the turn: every disruption counted once, however the operator first sees it -------------------------------

def running(kube: FakeKube, c: Any) -> list[dict[str, Any]]:
    """Every pod of the fake API server Running on n1, as the watch reports it."""
    out = []
    for (ns, name), p in list(kube.pods.items()):
        placed = with_state(p, node="n1", resource_version=kube.bump())
        kube.pods[(ns, name)] = placed
        c.on_pod("MODIFIED", placed)
        out.append(placed)
    return out


def evicted_through_the_api(kube: FakeKube, raw: dict[str, Any]) -> dict[str, Any]:
    """What the Eviction API leaves: DisruptionTarget and the deletion, in one go."""
    going = with_state(raw, node="n1", deleting=True, resource_version=kube.bump())
    going["status"]["conditions"].append(target("EvictionByEvictionAPI"))
    return going


def disruptions_counted(group_name: str, cause: Cause) -> float:
    return REGISTRY.get_sample_value("swarm_pod_disruptions_total", {
        "namespace": NAMESPACE, "cluster": "demo", "group": group_name, "cause": cause.value}) or 0.0


def test_workers_evicted_through_the_api_are_counted_once_whether_seen_going_or_only_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_module, "time", FixedClock)
    kube = FakeKube()
    key = (NAMESPACE, "demo")
    before = disruptions_counted("cpu", Cause.EVICTED)

    async def body() -> tuple[str, str]:
        c = serving(kube)
        await c.reconcile(key)  # head + 2 workers
        first, second = (p for p in running(kube, c) if p["metadata"]["name"].startswith("demo-cpu-"))
        await c.reconcile(key)
        # The first seen deleting with its condition, then gone.
        going = evicted_through_the_api(kube, first)
        kube.pods[(NAMESPACE, going["metadata"]["name"])] = going
        c.on_pod("MODIFIED", going)
        await c.reconcile(key)
        del kube.pods[(NAMESPACE, going["metadata"]["name"])]
        c.on_pod("DELETED", {**going, "metadata": {**going["metadata"], "resourceVersion": kube.bump()}})
        await c.reconcile(key)
        # The second only gone: its condition, its deletion and its end all between two turns.
        gone = evicted_through_the_api(kube, second)
        c.on_pod("MODIFIED", gone)
        del kube.pods[(NAMESPACE, gone["metadata"]["name"])]
        c.on_pod("DELETED", {**gone, "metadata": {**gone["metadata"], "resourceVersion": kube.bump()}})
        await c.reconcile(key)
        await c.reconcile(key)
        return first["metadata"]["name"], second["metadata"]["name"]

    names = asyncio.run(asyncio.wait_for(body(), timeout=10))
    assert disruptions_counted("cpu", Cause.EVICTED) - before == 2
    messages = [e[3] for e in kube.events if e[2] == "Disrupted"]
    for name in names:
        assert sum(m.count(f"worker {name} of group cpu disrupted (evicted through the Eviction API)")
                   for m in messages) == 1, messages
    assert not [e for e in kube.events if e[2] in ("Replacing", "Deleted")], kube.events
    (group_status,) = kube.statuses[-1][2]["workerGroups"]
    assert (group_status["restarts"], group_status["consecutiveFailures"]) == (0, 0)


def test_a_pod_the_operator_deleted_is_neither_kept_as_gone_nor_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own delete answered (here: at once, as for a failed pod) takes it out of the cache; its DELETED event then
    brings nothing, even with the pod garbage collector's DisruptionTarget on it. A cluster not served keeps none."""
    monkeypatch.setattr(turn_module, "time", FixedClock)
    kube = FakeKube()
    key = (NAMESPACE, "demo")

    async def body() -> None:
        c = serving(kube)
        await c.reconcile(key)
        worker_raw = next(p for p in running(kube, c) if p["metadata"]["name"].startswith("demo-cpu-"))
        c.cache.pods.gone(key, worker_raw["metadata"]["name"], worker_raw["metadata"]["uid"])
        marked = with_state(worker_raw, node="n1", deleting=True, resource_version=kube.bump())
        marked["status"]["conditions"].append(target("DeletionByPodGC"))
        c.on_pod("DELETED", marked)
        assert c.turns.memories[key].vanished == {}
        other = {**marked, "metadata": {**marked["metadata"], "labels": {
            **marked["metadata"]["labels"], "swarm.io/cluster": "unserved"}}}
        c.on_pod("DELETED", other)
        assert (NAMESPACE, "unserved") not in c.turns.memories

    asyncio.run(asyncio.wait_for(body(), timeout=10))
