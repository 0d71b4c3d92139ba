"""Disruption is not failure, and the head's PodDisruptionBudget, against a real API server, scheduler, disruption
controller and garbage collector, on kwok's fake nodes (no process nodes: runs without the Ray bridge lock).

Tests that delete a node or make one NotReady bring their own nodes (kwok simulates any node annotated for it), so
the session's shared nodes stay as they are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.chaos import fail_pod, failed_status_patch
from localcluster.nodes import wait_nodes_ready
from localcluster.operator_process import OperatorProcess
from swarm_operator.resources import labels
from swarm_operator.times import timestamp
from tests.integration.helpers import Cluster, Nodes, evict, manifest, ready_status, wait_for

pytestmark = pytest.mark.integration

# The pod garbage collector deletes pods of a deleted node after 40 s at the earliest: replacements well within
# that are the operator's doing.
AT_ONCE_SECONDS = 20.0
NOT_READY_SECONDS = 4


@pytest.fixture
def nodes(core_v1: Any) -> Iterator[Nodes]:
    pool = Nodes(core_v1, 2)
    yield pool
    pool.remove()


@pytest.fixture
def fast_operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator with a short NotReady threshold, so that a test waits seconds, not a minute."""
    proc = OperatorProcess(kubeconfig, [namespace], tmp_path / "operator.log",
                           extra=["--node-not-ready-seconds", str(NOT_READY_SECONDS)])
    proc.start()
    yield proc
    proc.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def disrupted_events(swc: Cluster, name: str) -> list[str]:
    return [e.message for e in swc.events(name) if e.reason == "Disrupted"]


def group_status(swc: Cluster, name: str) -> dict[str, Any]:
    return dict(swc.status(name)["workerGroups"][0])


def start_pinned(swc: Cluster, nodes: Nodes, name: str, replicas: int) -> tuple[str, set[str]]:
    """A running cluster whose workers run on `nodes` only (its head elsewhere); the node of its first worker,
    and the workers on that node."""
    wait_nodes_ready(swc.api, nodes.names)
    body = manifest(name, replicas=replicas)
    body["spec"]["workerGroups"][0]["template"] = nodes.selector()
    swc.create(body)
    wait_for(f"Running {replicas}/{replicas}", ready_status(swc, name, replicas))
    node = swc.workers(name)[0].spec.node_name
    return node, {p.metadata.name for p in swc.workers(name) if p.spec.node_name == node}


def test_workers_of_a_deleted_node_are_replaced_at_once_as_a_disruption(
        swc: Cluster, fast_operator: OperatorProcess, nodes: Nodes) -> None:
    victim, gone = start_pinned(swc, nodes, "lost", 4)
    deleted_at = time.monotonic()
    swc.core.delete_node(victim)
    wait_for("replacements off the deleted node", lambda: len(swc.workers("lost")) == 4
             and not {p.metadata.name for p in swc.workers("lost")} & gone
             and all(p.spec.node_name and p.spec.node_name != victim for p in swc.workers("lost")),
             timeout=AT_ONCE_SECONDS)
    assert time.monotonic() - deleted_at < AT_ONCE_SECONDS
    messages = disrupted_events(swc, "lost")
    assert any(f"its node {victim} was deleted" in m for m in messages), messages
    assert (group_status(swc, "lost")["consecutiveFailures"], group_status(swc, "lost")["restarts"]) == (0, 0)
    text = fast_operator.metrics()
    assert metric(text, "swarm_pod_disruptions_total", cluster="lost", cause="node-deleted") == len(gone)
    assert metric(text, "swarm_worker_replacements_total", cluster="lost") == 0


def test_workers_of_a_node_not_ready_past_the_threshold_are_replaced(
        swc: Cluster, fast_operator: OperatorProcess, nodes: Nodes) -> None:
    sick, on_sick = start_pinned(swc, nodes, "sick", 2)
    became_not_ready = time.monotonic()
    nodes.not_ready(sick)
    wait_for("replacements off the NotReady node", lambda: not {p.metadata.name for p in swc.workers("sick")}
             & on_sick and len(swc.running("sick")) == 3, timeout=AT_ONCE_SECONDS)
    waited = time.monotonic() - became_not_ready
    assert waited >= NOT_READY_SECONDS - 1, f"replaced after {waited:.1f}s: before the threshold"
    messages = disrupted_events(swc, "sick")
    assert any(f"its node {sick} has been NotReady for more than {NOT_READY_SECONDS}s" in m for m in messages)
    assert group_status(swc, "sick")["consecutiveFailures"] == 0
    assert metric(fast_operator.metrics(), "swarm_pod_disruptions_total", cluster="sick", cause="node-not-ready") \
        == len(on_sick)


def budget(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(api.sanitize_for_serialization(found))  # type: ignore[no-untyped-call]


def test_the_head_budget_refuses_an_eviction_until_switched_off(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("guard", replicas=1))
    wait_for("Running", ready_status(swc, "guard", 1))
    pdb = wait_for("the head's budget, observed by the disruption controller",
                   lambda: (b := budget(swc.api, swc.ns, "guard-head-pdb")) and (b.get("status") or {})
                   .get("currentHealthy") == 1 and b)
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == swc.get("guard")["metadata"]["uid"]
    head_uid = swc.heads("guard")[0].metadata.uid
    assert evict(swc.core, swc.ns, "guard-head") == 429, "a healthy head may not be drained"
    assert swc.heads("guard")[0].metadata.uid == head_uid
    worker = swc.workers("guard")[0].metadata.name
    assert evict(swc.core, swc.ns, worker) == 201, "workers have no budget"
    # The Eviction API writes DisruptionTarget and deletes the pod in one go: counted once, as evicted.
    wait_for("the evicted worker counted", lambda: metric(operator.metrics(), "swarm_pod_disruptions_total",
                                                          cluster="guard", group="cpu", cause="evicted") == 1)
    # The counter goes up just before the Disrupted Event is posted (turn.py, _count): wait for the Event too.
    told = wait_for("the Disrupted Event", lambda: sum(
        m.count(f"worker {worker} of group cpu disrupted (evicted through the Eviction API)")
        for m in disrupted_events(swc, "guard")), timeout=10)
    assert told == 1, disrupted_events(swc, "guard")

    swc.patch("guard", {"spec": {"head": {"podDisruptionBudget": {"enabled": False}}}})
    wait_for("the budget deleted", lambda: budget(swc.api, swc.ns, "guard-head-pdb") is None)
    # The Deleted Event is posted once the deletion was answered: the budget is gone a moment before it is there.
    wait_for("a Deleted Event for the budget", lambda: any(
        "guard-head-pdb: head.podDisruptionBudget.enabled is false" in e.message
        for e in swc.events("guard") if e.reason == "Deleted"), timeout=10)
    assert evict(swc.core, swc.ns, "guard-head") == 201
    wait_for("a new head", lambda: [h for h in swc.heads("guard") if h.metadata.uid != head_uid
                                    and h.status.phase == "Running"])
    wait_for("Running again", ready_status(swc, "guard", 1))
    assert swc.status("guard")["head"]["restarts"] == 0, "an eviction is not a failure"
    assert group_status(swc, "guard")["consecutiveFailures"] == 0
    # The head's eviction is the head's disruption, counted once; the workers recycled with it are the operator's
    # own deletions, and the worker evicted before is not counted again.
    text = operator.metrics()
    assert metric(text, "swarm_pod_disruptions_total", cluster="guard", group="head", cause="evicted") == 1
    assert metric(text, "swarm_pod_disruptions_total", cluster="guard") == 2
    assert metric(text, "swarm_head_replacements_total", cluster="guard") == 0
    messages = disrupted_events(swc, "guard")
    assert sum(m.count("head guard-head disrupted (evicted through the Eviction API)") for m in messages) == 1
    assert sum(m.count(" disrupted (") for m in messages) == 2, messages


def test_a_broken_head_can_be_evicted_despite_its_budget(swc: Cluster, operator: OperatorProcess) -> None:
    """unhealthyPodEvictionPolicy AlwaysAllow: a head that is not ready never blocks a node upgrade."""
    swc.create(manifest("broken", replicas=0))
    wait_for("the head's budget", lambda: (b := budget(swc.api, swc.ns, "broken-head-pdb"))
             and (b.get("status") or {}).get("expectedPods") == 1)
    wait_for("head Running", lambda: [h for h in swc.heads("broken") if h.status.phase == "Running"])
    now = timestamp(time.time())
    swc.core.patch_namespaced_pod_status("broken-head", swc.ns, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "ProbeFailed", "lastTransitionTime": now}]}})
    assert evict(swc.core, swc.ns, "broken-head") == 201


def a_running_worker(swc: Cluster, name: str) -> str:
    """A cluster of two workers, Running; the name of one of them."""
    swc.create(manifest(name, replicas=2))
    wait_for("Running 2/2", ready_status(swc, name, 2))
    return str(swc.workers(name)[0].metadata.name)


def mark_disruption_target(swc: Cluster, pod: str, reason: str, message: str) -> None:
    """The condition DisruptionTarget on the pod, as the controller named by `reason` writes it."""
    swc.core.patch_namespaced_pod_status(pod, swc.ns, {"status": {"conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
         "lastTransitionTime": timestamp(time.time())}]}})


def test_a_disruption_target_condition_is_a_disruption(swc: Cluster, operator: OperatorProcess) -> None:
    victim = a_running_worker(swc, "target")
    mark_disruption_target(swc, victim, "PreemptionByScheduler", "preempted by a higher-priority pod")
    wait_for("its replacement", lambda: victim not in {p.metadata.name for p in swc.workers("target")}
             and len(swc.workers("target")) == 2)
    wait_for("Running 2/2 again", ready_status(swc, "target", 2))
    assert any(f"worker {victim} of group cpu disrupted (preempted by the scheduler)" in m
               for m in disrupted_events(swc, "target"))
    assert group_status(swc, "target")["consecutiveFailures"] == 0


def test_a_worker_gone_between_two_turns_is_counted_from_its_last_state(
        swc: Cluster, operator: OperatorProcess) -> None:
    """The taint manager's DisruptionTarget and a deletion without grace, back to back: the pod is gone before the
    operator's next turn (which waits 0.5 s for a burst of pod events to settle), so only the watch's DELETED event,
    whose object is the pod's last state, tells the operator it was disrupted."""
    victim = a_running_worker(swc, "vanish")
    mark_disruption_target(swc, victim, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")
    swc.core.delete_namespaced_pod(victim, swc.ns, grace_period_seconds=0)
    wait_for("its replacement", lambda: len(swc.running("vanish")) == 3
             and victim not in {p.metadata.name for p in swc.pods("vanish", include_deleting=True)})
    wait_for("counted", lambda: metric(operator.metrics(), "swarm_pod_disruptions_total", cluster="vanish",
                                       group="cpu", cause="disruption-target") == 1)
    # As above: the Event follows the counter.
    told = wait_for("the Disrupted Event", lambda: sum(
        m.count(f"worker {victim} of group cpu disrupted (deleted by the taint manager (its node was tainted "
                "NoExecute))") for m in disrupted_events(swc, "vanish")), timeout=10)
    assert told == 1, disrupted_events(swc, "vanish")
    wait_for("Running 2/2 again", ready_status(swc, "vanish", 2))
    assert group_status(swc, "vanish")["consecutiveFailures"] == 0
    assert metric(operator.metrics(), "swarm_pod_disruptions_total", cluster="vanish") == 1


def test_nine_evicted_workers_are_replaced_at_once_and_told_apart_from_a_failure(
        swc: Cluster, operator: OperatorProcess) -> None:
    body = manifest("spot", replicas=10, faultTolerance={"workerBackoffInitialSeconds": 5,
                                                          "workerBackoffMaxSeconds": 300})
    body["spec"]["workerGroups"][0]["maxReplicas"] = 16
    swc.create(body)
    wait_for("Running 10/10", ready_status(swc, "spot", 10), timeout=90)
    victims = [p.metadata.name for p in swc.workers("spot")[:9]]
    evicted_at = time.monotonic()
    containers = [c.name for c in swc.workers("spot")[0].spec.containers]
    for name in victims:  # as the kubelet writes a node-pressure eviction
        swc.core.patch_namespaced_pod_status(name, swc.ns, failed_status_patch(
            containers, reason="Evicted", message="The node was low on resource: memory."))
    wait_for("9 replacements", lambda: not set(victims) & {p.metadata.name for p in swc.workers("spot")}
             and len(swc.running("spot")) == 11, timeout=AT_ONCE_SECONDS)
    # Nine failures would hold the replacements back 5 s × 2⁸; nine disruptions not at all.
    assert time.monotonic() - evicted_at < AT_ONCE_SECONDS
    st = group_status(swc, "spot")
    assert (st["consecutiveFailures"], st["restarts"]) == (0, 0)
    assert "backoffUntil" not in st
    messages = disrupted_events(swc, "spot")
    assert sum(m.count("disrupted (evicted by the kubelet: The node was low on resource: memory.)")
               for m in messages) == 9, messages

    # A real failure of the tenth worker still counts, and says so.
    survivor = next(p.metadata.name for p in swc.workers("spot") if p.metadata.name not in victims
                    and p.status.phase == "Running")
    fail_pod(swc.api, swc.ns, survivor)
    wait_for("the failure counted", lambda: group_status(swc, "spot")["consecutiveFailures"] == 1)
    assert any(f"worker {survivor} of group cpu failed (" in e.message for e in swc.events("spot")
               if e.reason == "Replacing")
    text = operator.metrics()
    assert metric(text, "swarm_pod_disruptions_total", cluster="spot", cause="evicted") == 9
    assert metric(text, "swarm_worker_replacements_total", cluster="spot") == 1


HOLD = "swarm.io/test-hold"  # the test's own finalizer: keeps a deleted pod Terminating, as a lost kubelet does


def test_a_head_stuck_terminating_on_a_lost_node_is_replaced_under_a_new_name(
        swc: Cluster, operator: OperatorProcess, nodes: Nodes) -> None:
    """While its node is Ready the stuck head is waited for (two GCS servers must never run at once); once the node
    is deleted, a new head starts beside it under the next generation's name and the head service selects it."""
    wait_nodes_ready(swc.api, nodes.names)
    body = manifest("stuck", replicas=1)
    body["spec"]["head"]["template"] = nodes.selector()
    swc.create(body)
    wait_for("Running 1/1", ready_status(swc, "stuck", 1))
    (old,) = swc.heads("stuck")
    assert old.metadata.name == "stuck-head", "the first head keeps the usual name"
    swc.core.patch_namespaced_pod(old.metadata.name, swc.ns, {"metadata": {"finalizers": [HOLD]}})
    try:
        swc.core.delete_namespaced_pod(old.metadata.name, swc.ns, grace_period_seconds=1)
        waited = wait_for("HeadWaiting: the old head's node is Ready", lambda: [
            e.message for e in swc.events("stuck") if e.reason == "HeadWaiting"])
        assert "the new head waits for stuck-head to be gone" in waited[0]
        time.sleep(2)
        assert [p.metadata.name for p in swc.pods("stuck", include_deleting=True)
                if p.metadata.labels[labels.NODE_TYPE] == labels.HEAD] == ["stuck-head"], "no second head"

        swc.core.delete_node(old.spec.node_name)
        new = wait_for("a new head Running on the other node", lambda: next(
            (h for h in swc.heads("stuck") if h.status.phase == "Running"), None), timeout=AT_ONCE_SECONDS)
        assert new.metadata.name == "stuck-head-1"
        assert new.metadata.labels[labels.HEAD_GENERATION] == "1"
        assert new.spec.node_name != old.spec.node_name
        held = swc.core.read_namespaced_pod("stuck-head", swc.ns)
        assert held.metadata.deletion_timestamp is not None, "the old head is still there, Terminating"
        svc = swc.core.read_namespaced_service("stuck-head-svc", swc.ns)
        assert svc.spec.selector == {labels.CLUSTER: "stuck", labels.NODE_TYPE: labels.HEAD,
                                     labels.HEAD_GENERATION: "1"}
        # kwok's pod IPs are loopback ones, which an EndpointSlice refuses: what the service selects is asked of the
        # API server with its selector instead.
        selected = swc.core.list_namespaced_pod(swc.ns, label_selector=labels.selector_string(svc.spec.selector))
        assert [p.metadata.name for p in selected.items] == ["stuck-head-1"], "never the stuck one"
        wait_for("Running 1/1 on the new head, as status says", lambda: ready_status(swc, "stuck", 1)()
                 and (h := swc.status("stuck")["head"])["podName"] == "stuck-head-1" and h["generation"] == 1
                 and h["ready"], timeout=90)
    finally:
        swc.core.patch_namespaced_pod("stuck-head", swc.ns, {"metadata": {"finalizers": None}})
    wait_for("the old head gone", lambda: "stuck-head" not in {
        p.metadata.name for p in swc.pods("stuck", include_deleting=True)})
    assert [h.metadata.name for h in swc.heads("stuck")] == ["stuck-head-1"]
    assert swc.status("stuck")["head"]["generation"] == 1


def test_a_head_on_a_node_not_ready_past_the_threshold_is_replaced_under_a_new_name(
        swc: Cluster, fast_operator: OperatorProcess, nodes: Nodes) -> None:
    """No kubelet answers for a NotReady node, so the head deleted there stays Terminating; past the threshold the
    node counts as dead and the new head starts beside it."""
    wait_nodes_ready(swc.api, nodes.names)
    body = manifest("sickhead", replicas=1)
    body["spec"]["head"]["template"] = nodes.selector()
    swc.create(body)
    wait_for("Running 1/1", ready_status(swc, "sickhead", 1))
    (old,) = swc.heads("sickhead")
    became_not_ready = time.monotonic()
    nodes.not_ready(old.spec.node_name)
    new = wait_for("a new head Running on the other node", lambda: next(
        (h for h in swc.heads("sickhead") if h.metadata.name != old.metadata.name and h.status.phase == "Running"),
        None), timeout=AT_ONCE_SECONDS)
    waited = time.monotonic() - became_not_ready
    assert waited >= NOT_READY_SECONDS - 1, f"a new head after {waited:.1f}s: before the threshold"
    # The next generation's name: the old pod was still there when the new head was decided (kwok may finish its
    # deletion soon after, so it is not looked for here; the test above holds one for good).
    assert new.metadata.name == "sickhead-head-1" and new.spec.node_name != old.spec.node_name
    assert any(f"its node {old.spec.node_name} has been NotReady for more than {NOT_READY_SECONDS}s" in m
               for m in disrupted_events(swc, "sickhead"))
    # Status said Running 1/1 before the node went too: wait for the new head's name in it.
    wait_for("Running 1/1 on the new head, as status says", lambda: ready_status(swc, "sickhead", 1)()
             and (h := swc.status("sickhead")["head"])["podName"] == "sickhead-head-1" and h["generation"] == 1
             and h["ready"], timeout=90)
    assert swc.status("sickhead")["head"]["restarts"] == 0, "a disruption, not a failure"
