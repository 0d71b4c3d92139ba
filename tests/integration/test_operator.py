"""The operator against a real API server, scheduler and garbage collector, on kwok's fake nodes."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.chaos import fail_pod
from localcluster.operator_process import OperatorProcess
from swarm_operator.resources import labels
from swarm_operator.resources.pods import build_head_pod
from swarm_operator.spec.parse import parse_cluster
from tests.integration.helpers import Cluster, manifest, ready_status, wait_for

pytestmark = pytest.mark.integration


def test_create_builds_head_service_workers_and_status(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("alpha", replicas=3))
    wait_for("cluster Running 3/3", ready_status(swc, "alpha", 3))
    assert len(swc.heads("alpha")) == 1
    assert len(swc.workers("alpha")) == 3
    assert all(p.status.phase == "Running" and p.spec.node_name for p in swc.pods("alpha"))
    svc = swc.core.read_namespaced_service("alpha-head-svc", swc.ns)
    assert svc.spec.cluster_ip == "None"
    st = swc.status("alpha")
    assert st["observedGeneration"] == swc.get("alpha")["metadata"]["generation"]
    assert st["head"]["ready"] is True
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions == {"Valid": "True", "HeadReady": "True", "WorkersReady": "True", "Autoscaling": "False",
                          "Suspended": "False", "ReplicaFailure": "False", "RolloutComplete": "True"}
    assert any(e.reason == "Created" for e in swc.events("alpha"))
    assert not swc.get("alpha")["metadata"].get("finalizers"), "the operator must not put finalizers"
    text = operator.metrics()
    assert "swarm_reconcile_total" in text and "swarm_pods{" in text


def test_deleted_worker_is_replaced(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("beta", replicas=2))
    wait_for("Running", ready_status(swc, "beta", 2))
    victim = swc.workers("beta")[0].metadata.name
    swc.core.delete_namespaced_pod(victim, swc.ns)
    wait_for("replacement", lambda: len(swc.workers("beta")) == 2
             and victim not in {p.metadata.name for p in swc.workers("beta")})
    wait_for("Running again", ready_status(swc, "beta", 2))


def test_failed_worker_is_replaced_with_growing_backoff(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("gamma", replicas=1, faultTolerance={"workerBackoffInitialSeconds": 1,
                                                             "workerBackoffMaxSeconds": 30}))
    wait_for("Running", ready_status(swc, "gamma", 1))
    delays = []
    for _ in range(3):
        pod = wait_for("one running worker", lambda: [p for p in swc.workers("gamma") if p.status.phase == "Running"])
        old = pod[0].metadata.name
        failed_at = time.monotonic()
        fail_pod(swc.api, swc.ns, old)
        wait_for("replacement", lambda o=old: any(p.metadata.name != o for p in swc.workers("gamma")), timeout=60)
        delays.append(time.monotonic() - failed_at)
    st = swc.status("gamma")["workerGroups"][0]
    assert st["restarts"] == 3
    assert st["consecutiveFailures"] == 3
    # 1 s, 2 s, 4 s: the third replacement waits measurably longer than the first.
    assert delays[2] >= 3.5, delays
    assert delays[2] > delays[0] + 2, delays
    assert any(e.reason == "Replacing" and "gamma-cpu" in e.message for e in swc.events("gamma"))
    conditions = {c["type"]: c for c in swc.status("gamma")["conditions"]}
    assert conditions["ReplicaFailure"]["status"] == "True"


@pytest.mark.parametrize("gcs_ft", [False, True], ids=["no-gcs-ft-recycles-workers", "gcs-ft-keeps-workers"])
def test_failed_head_is_replaced(swc: Cluster, operator: OperatorProcess, gcs_ft: bool) -> None:
    extra = {"faultTolerance": {"gcs": {"redisAddress": "redis:6379"}}} if gcs_ft else {}
    swc.create(manifest("delta", replicas=2, **extra))
    wait_for("Running", ready_status(swc, "delta", 2))
    old_head = swc.heads("delta")[0].metadata.uid
    old_workers = {p.metadata.name for p in swc.workers("delta")}
    fail_pod(swc.api, swc.ns, "delta-head")
    wait_for("new head", lambda: [h for h in swc.heads("delta") if h.metadata.uid != old_head
                                  and h.status.phase == "Running"])
    wait_for("Running", ready_status(swc, "delta", 2))
    new_workers = {p.metadata.name for p in swc.workers("delta")}
    if gcs_ft:
        assert new_workers == old_workers
    else:
        assert not new_workers & old_workers
    assert swc.status("delta")["head"]["restarts"] == 1


def test_scale_up_and_down_by_spec(swc: Cluster, operator: OperatorProcess) -> None:
    """kwok's pods run no Ray: a lower count cannot tell busy workers from idle ones, so ready workers wait (one
    ScaleDownWaiting event) rather than risk killing Ray tasks. The scale-down itself, with real Ray (idle workers
    deleted, busy ones drained), is tests/e2e/test_scale_down.py."""
    swc.create(manifest("eps", replicas=1))
    wait_for("1", ready_status(swc, "eps", 1))
    swc.patch_group("eps", replicas=4)
    wait_for("4", ready_status(swc, "eps", 4))
    assert len(swc.workers("eps")) == 4
    swc.patch_group("eps", replicas=1)
    waiting = wait_for("ScaleDownWaiting", lambda: [e.message for e in swc.events("eps")
                                                    if e.reason == "ScaleDownWaiting"], timeout=30)
    assert waiting == ["group cpu: 3 ready worker(s) to remove wait for Ray's state (busy workers are drained, "
                       "never deleted; Ray's state is unknown)"], waiting
    time.sleep(6)  # past the planner's retry: still nothing deleted, and no second event
    assert len(swc.workers("eps")) == 4
    assert len([e for e in swc.events("eps") if e.reason == "ScaleDownWaiting"]) == 1


def test_template_change_without_ray_state_waits_and_a_deleted_worker_comes_back_updated(
        swc: Cluster, operator: OperatorProcess) -> None:
    """kwok's pods run no Ray: the operator cannot tell busy workers from idle ones, so ready outdated
    workers wait (one RolloutWaiting event) rather than risk killing Ray tasks. The rollout itself, with
    real Ray, is tests/e2e/test_rollout.py; here, the escape hatch: a worker deleted by hand comes back
    with the new template."""
    swc.create(manifest("zeta", replicas=3))
    wait_for("Running", ready_status(swc, "zeta", 3))
    before = {p.metadata.name for p in swc.workers("zeta")}
    swc.patch_group("zeta", template={"spec": {"terminationGracePeriodSeconds": 7}})
    waiting = wait_for("RolloutWaiting", lambda: [e.message for e in swc.events("zeta")
                                                  if e.reason == "RolloutWaiting"], timeout=30)
    assert waiting == ["group cpu: 3 ready outdated worker(s) wait for Ray's state (busy workers are drained, "
                       "never deleted; Ray's state is unknown)"], waiting
    # The event and the status are two writes of one turn: the status may land a moment after the event.
    wait_for("RolloutComplete False", lambda: _condition(swc, "zeta", "RolloutComplete")["status"] == "False")
    rollout = _condition(swc, "zeta", "RolloutComplete")
    assert (rollout["status"], rollout["reason"]) == ("False", "RollingUpdate"), rollout
    time.sleep(6)  # past the planner's retry: still nothing deleted, and no second event
    assert {p.metadata.name for p in swc.workers("zeta")} == before
    assert len([e for e in swc.events("zeta") if e.reason == "RolloutWaiting"]) == 1
    victim = sorted(before)[0]
    swc.core.delete_namespaced_pod(victim, swc.ns, grace_period_seconds=0)

    def replaced() -> list[client.V1Pod]:
        ws = swc.workers("zeta")
        return [p for p in ws if p.metadata.name not in before] if len(ws) == 3 else []

    (new,) = wait_for("a replacement with the new template", replaced)
    assert new.spec.termination_grace_period_seconds == 7
    assert {p.metadata.name for p in swc.workers("zeta")} == (before - {victim}) | {new.metadata.name}


def test_template_labels_and_annotations_are_patched_in_place(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("kappa", replicas=2))
    wait_for("Running", ready_status(swc, "kappa", 2))
    before = {p.metadata.name: p.metadata.uid for p in swc.pods("kappa")}
    meta = {"metadata": {"labels": {"team": "vision"}, "annotations": {"prometheus.io/scrape": "true"}}}
    swc.patch("kappa", {"spec": {"head": {"template": meta}}})
    swc.patch_group("kappa", template=meta)

    def patched() -> bool:
        pods = swc.pods("kappa")
        return len(pods) == 3 and all(p.metadata.labels.get("team") == "vision"
                                      and p.metadata.annotations.get("prometheus.io/scrape") == "true" for p in pods)

    wait_for("labels and annotations on every pod", patched)
    assert {p.metadata.name: p.metadata.uid for p in swc.pods("kappa")} == before, "no pod was replaced"
    assert _condition(swc, "kappa", "RolloutComplete")["status"] == "True"
    # The Updated Event is posted once every patch was answered: the pods show the patch before it is there.
    wait_for("an Updated Event", lambda: any(e.reason == "Updated" for e in swc.events("kappa")), timeout=10)
    # Removing the label from the template removes it from the pods it was patched onto.
    swc.patch_group("kappa", template={"metadata": {"annotations": {"prometheus.io/scrape": "true"}}})
    wait_for("label removed from workers",
             lambda: all("team" not in (p.metadata.labels or {}) for p in swc.workers("kappa")))
    assert {p.metadata.name: p.metadata.uid for p in swc.pods("kappa")} == before


def test_a_head_change_replaces_the_head_with_its_reason_in_an_event(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("mu", replicas=1))
    wait_for("Running", ready_status(swc, "mu", 1))
    old_head = swc.heads("mu")[0].metadata.uid
    old_worker = swc.workers("mu")[0].metadata.name
    swc.patch("mu", {"spec": {"head": {"rayStartParams": {"object-store-memory": "200000000"}}}})
    wait_for("a new head", lambda: [h for h in swc.heads("mu") if h.metadata.uid != old_head])
    wait_for("Running", ready_status(swc, "mu", 1))
    deleted = [e.message for e in swc.events("mu") if e.reason == "Deleted"]
    assert any(m.startswith("mu-head: head mu-head: rayStartParams changed; replacing the head; without GCS fault "
                            "tolerance its 1 worker(s) are replaced too") for m in deleted), deleted
    assert old_worker not in {p.metadata.name for p in swc.workers("mu")}, "it could not join the new GCS"
    assert swc.status("mu")["head"]["restarts"] == 0, "an edit is not a failure"


def test_template_values_the_operator_keeps_are_named_in_a_warning(swc: Cluster, operator: OperatorProcess) -> None:
    """A template without a container named ray only adds sidecars; values the operator keeps are named."""
    body = manifest("lambda", replicas=1)
    body["spec"]["workerGroups"][0]["template"] = {
        "metadata": {"labels": {"swarm.io/group": "other", "team": "ml"}},
        "spec": {"restartPolicy": "Always", "containers": [{"name": "log-shipper", "image": "fluent/fluent-bit:3"}]}}
    swc.create(body)
    wait_for("Running", ready_status(swc, "lambda", 1))
    (warning,) = wait_for("a TemplateOverridden warning", lambda: [
        e for e in swc.events("lambda") if e.type == "Warning" and e.reason == "TemplateOverridden"])
    assert "spec.workerGroups[0].template.spec.restartPolicy" in warning.message, warning.message
    assert "spec.workerGroups[0].template.metadata.labels.swarm.io/group" in warning.message, warning.message
    assert "team" not in warning.message and warning.count == 1, (warning.message, warning.count)
    (pod,) = swc.workers("lambda")
    assert pod.spec.restart_policy == "Never"
    assert [(c.name, c.image) for c in pod.spec.containers] == [("ray", swc.get("lambda")["spec"]["image"]),
                                                                ("log-shipper", "fluent/fluent-bit:3")]
    assert (pod.metadata.labels["swarm.io/group"], pod.metadata.labels["team"]) == ("cpu", "ml")


def _condition(swc: Cluster, name: str, ctype: str) -> dict[str, str]:
    found = [c for c in swc.status(name).get("conditions") or [] if c["type"] == ctype]
    return found[0] if found else {"status": "Unknown", "reason": "", "message": ""}


SUSPEND_BOUND = 25  # updateStrategy.drainTimeoutSeconds: how long a suspended head may stay for its Ray jobs


def test_suspend_and_resume(swc: Cluster, operator: OperatorProcess) -> None:
    """Suspending takes the workers down first, the head last. kwok runs no Ray, so the ready workers wait (busy
    cannot be told from idle) and say so; deleted by hand, they leave the head, whose Jobs API cannot be read
    either: it stays, saying so, until drainTimeoutSeconds after the suspension, then goes with a Warning."""
    swc.create(manifest("eta", replicas=2, updateStrategy={"drainTimeoutSeconds": SUSPEND_BOUND}))
    wait_for("Running", ready_status(swc, "eta", 2))
    swc.patch("eta", {"spec": {"suspend": True}})
    suspended_at = time.time()
    wait_for("ScaleDownWaiting", lambda: [e for e in swc.events("eta") if e.reason == "ScaleDownWaiting"], timeout=30)
    wait_for("Suspended says what it waits for", lambda: "2 worker(s) still running" in _condition(
        swc, "eta", "Suspended")["message"])
    assert len(swc.heads("eta")) == 1, "the head goes last"
    for pod in swc.workers("eta"):
        swc.core.delete_namespaced_pod(pod.metadata.name, swc.ns, grace_period_seconds=0)
    wait_for("SuspendWaiting", lambda: [e for e in swc.events("eta") if e.reason == "SuspendWaiting"
                                        and "its Jobs API cannot be read" in (e.message or "")], timeout=20)
    # The Event goes out mid-turn; the status patch that carries the same words ends the turn.
    wait_for("Suspended says the head stays", lambda: "the head stays while its Jobs API cannot be read"
             in _condition(swc, "eta", "Suspended")["message"], timeout=10)
    assert len(swc.heads("eta")) == 1, "the head stays (not deleting) within the bound"
    assert time.time() < suspended_at + SUSPEND_BOUND - 1, "the head was seen staying before the bound"
    left_at = wait_for("the head leaving", lambda: None if swc.heads("eta") else time.time(),
                       timeout=SUSPEND_BOUND + 30)
    # The bound counts from the Suspended condition's lastTransitionTime (whole seconds: up to 1 s early).
    assert left_at >= suspended_at + SUSPEND_BOUND - 1.5, (left_at - suspended_at, "the head went before the bound")
    wait_for("no pods", lambda: not swc.pods("eta", include_deleting=True))
    (timed_out,) = [e for e in swc.events("eta") if e.reason == "SuspendTimedOut"]
    assert timed_out.type == "Warning" and "Jobs API could not be read" in timed_out.message, timed_out
    wait_for("Suspended", lambda: swc.status("eta").get("phase") == "Suspended")
    swc.patch("eta", {"spec": {"suspend": False}})
    wait_for("back", ready_status(swc, "eta", 2))


def test_delete_cascades_through_owner_references(swc: Cluster, operator: OperatorProcess) -> None:
    swc.create(manifest("theta", replicas=2))
    wait_for("Running", ready_status(swc, "theta", 2))
    swc.delete("theta")
    wait_for("pods gone", lambda: not swc.pods("theta", include_deleting=True), timeout=90)
    wait_for("service gone", lambda: not swc.core.list_namespaced_service(
        swc.ns, label_selector=f"{labels.CLUSTER}=theta").items, timeout=90)


def test_invalid_spec_is_marked_and_neighbour_keeps_working(swc: Cluster, operator: OperatorProcess) -> None:
    bad = manifest("broken", replicas=1)
    bad["spec"]["workerGroups"][0]["template"] = {"spec": {"containers": "not-a-list"}}
    swc.create(bad)
    swc.create(manifest("fine", replicas=2))
    wait_for("Valid=False", lambda: any(c["type"] == "Valid" and c["status"] == "False"
                                        for c in swc.status("broken").get("conditions", [])))
    wait_for("neighbour Running", ready_status(swc, "fine", 2))
    assert swc.status("broken")["phase"] == "Invalid"
    assert not swc.pods("broken"), "no pods for a spec the operator cannot serve"
    # The InvalidSpec Warning follows the status write (turn.py, _report_invalid).
    warnings = wait_for("an InvalidSpec Warning", lambda: [
        e for e in swc.events("broken") if e.type == "Warning" and e.reason == "InvalidSpec"], timeout=10)
    assert "spec.workerGroups[0].template.spec.containers" in warnings[0].message, warnings[0].message
    # the neighbour is still served: scale it while the broken one sits there
    swc.patch_group("fine", replicas=3)
    wait_for("neighbour scaled", ready_status(swc, "fine", 3))
    # fixing the spec brings the broken cluster up
    swc.patch_group("broken", template=None)
    wait_for("fixed cluster Running", ready_status(swc, "broken", 1))


def test_restart_after_head_only_converges_without_duplicates(
        swc: Cluster, kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    """The operator died right after creating the head: a new one creates the rest, and no second head."""
    body = swc.create(manifest("iota", replicas=3))
    head = build_head_pod(parse_cluster(body))
    swc.core.create_namespaced_pod(namespace, head)
    proc = OperatorProcess(kubeconfig, [namespace], tmp_path / "op.log")
    proc.start()
    try:
        wait_for("Running", ready_status(swc, "iota", 3))
        time.sleep(2)  # a duplicate would show up within a couple of turns
        assert len(swc.heads("iota")) == 1
        assert len(swc.workers("iota")) == 3
    finally:
        proc.stop()


def test_kill_9_at_random_moments_converges(swc: Cluster, kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    rng = random.Random(4)
    names = [f"kappa{i}" for i in range(4)]
    proc = OperatorProcess(kubeconfig, [namespace], tmp_path / "op.log")
    for i, name in enumerate(names):
        swc.create(manifest(name, replicas=3))
        proc.start()
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        if i % 2:
            swc.patch_group(names[0], replicas=1 + i)
    proc.start()
    try:
        want = {names[0]: 4, **{n: 3 for n in names[1:]}}
        for name, n in want.items():
            wait_for(f"{name} Running", ready_status(swc, name, n), timeout=90)
        time.sleep(2)
        for name, n in want.items():
            assert len(swc.heads(name)) == 1, name
            assert len(swc.workers(name)) == n, name
    finally:
        proc.stop()


def test_namespace_deletion_never_waits_for_the_operator(api_client: client.ApiClient, kubeconfig: str,
                                                          tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client)
    ns = f"swarm-nsdel-{random.randrange(10**6)}"
    core.create_namespace({"metadata": {"name": ns}})
    cl = Cluster(api_client, ns)
    proc = OperatorProcess(kubeconfig, [ns], tmp_path / "op.log")
    proc.start()
    try:
        cl.create(manifest("lam", replicas=1))
        wait_for("Running", ready_status(cl, "lam", 1))
    finally:
        proc.stop()  # the operator is gone when the namespace is deleted
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
            return False
        except ApiException as exc:
            return exc.status == 404
    wait_for("namespace deleted", gone, timeout=120)
