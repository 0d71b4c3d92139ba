"""The controller: helpers, the write-through index, invalid specs, and the keyed work queue.

Kubernetes is an in-memory fake that records every call; the cluster objects, pods and services
are the real ones the builders produce. asyncio.run per test (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import pytest

from swarm_operator import finalizer as finalizer_module
from swarm_operator import turn as turn_module
from swarm_operator.autoscaler import gcs
from swarm_operator.autoscaler.snapshot import NodeStatus
from swarm_operator.cluster_effects import NAME_TAKEN_RETRY_SECONDS, SUFFIX_ALPHABET, random_suffix
from swarm_operator.config import OperatorConfig
from swarm_operator.controller import Controller
from swarm_operator.jobs.rayapi import RayJobsClient
from swarm_operator.kit import loop as loop_module
from swarm_operator.kit.cache import Key
from swarm_operator.kube_http import ApiError
from swarm_operator.reconcile.suspend import HeadJobs, JobsUnreadable
from swarm_operator.resources import labels
from tests.unit.operator_fixtures import NAMESPACE, NOW, FakeKube, FixedClock, as_kube, iso, manifest, with_state
from tests.unit.ray_fixtures import HEAD_IP, FakeRay, node_id, ray_node, snapshot

KEY: Key = (NAMESPACE, "demo")


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_module, "time", FixedClock)
    monkeypatch.setattr(finalizer_module, "time", FixedClock)


class WatchedController(Controller):
    """The controller, with each watch event it is given also stored in the fake API server."""

    def __init__(self, kube: FakeKube, config: OperatorConfig) -> None:
        super().__init__(as_kube(kube), config)
        self.fake = kube

    def on_cluster(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.fake.swarmclusters.pop(key, None)
        else:
            self.fake.swarmclusters[key] = copy.deepcopy(dict(body))
        super().on_cluster(event_type, body)


def make(kube: FakeKube, **config: Any) -> Controller:
    return WatchedController(kube, OperatorConfig(**config))


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=10))


# -- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [pytest.param(5, id="default-length"), pytest.param(12, id="longer")])
def test_random_suffix(n: int) -> None:
    suffixes = {random_suffix(n) for _ in range(200)}
    assert all(len(s) == n and set(s) <= set(SUFFIX_ALPHABET) for s in suffixes)
    assert len(suffixes) > 190, "suffixes must not repeat in practice"
    assert not set(SUFFIX_ALPHABET) & set("aeiou01"), "no vowels, no look-alikes"


def test_random_suffix_default_is_five() -> None:
    assert len(random_suffix()) == 5


# -- reconcile against the fake API --------------------------------------------------------------


def test_new_cluster_created_exactly_once_even_if_reconciled_twice() -> None:
    """The second turn runs before any watch event: the write-through index must stop duplicates."""
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)
        await c.reconcile(KEY)

    run(body)
    creates = [name for verb, name in kube.calls if verb == "create_pod"]
    workers = [n for n in creates if n != "demo-head"]
    assert creates.count("demo-head") == 1
    assert len(workers) == 2 and all(n.startswith("demo-cpu-") for n in workers)
    assert kube.verbs() == Counter({"create_pod": 3, "create_service": 1, "create_budget": 1, "patch_status": 1,
                                    "post_event": 1})
    (_, _, status), = kube.statuses
    assert (status["phase"], status["workers"], status["observedGeneration"]) == ("Pending", "0/2", 1)
    ((_, etype, reason, message),) = kube.events
    assert (etype, reason) == ("Normal", "Created")
    assert "head demo-head" in message and "service demo-head-svc" in message and "2 cpu worker(s)" in message
    assert "PodDisruptionBudget demo-head-pdb" in message


class RefusingHeadKube(FakeKube):
    """An API server whose admission refuses the head pod (a missing PriorityClass, a quota)."""

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any] | None:
        if pod["metadata"]["name"].endswith("-head"):
            with self._lock:
                self.calls.append(("create_pod", pod["metadata"]["name"]))
            raise ApiError(403, 'pods "demo-head" is forbidden: no PriorityClass with name x was found')
        return super().create_pod(namespace, pod)


def test_a_refused_head_creates_no_workers_but_still_reports_status() -> None:
    kube = RefusingHeadKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        for _ in range(3):
            with pytest.raises(ApiError, match="PriorityClass"):
                await c.reconcile(KEY)

    run(body)
    creates = [name for verb, name in kube.calls if verb == "create_pod"]
    assert creates == ["demo-head"] * 3, "no worker of a head that does not exist"
    assert kube.statuses and kube.statuses[0][2]["phase"] == "Pending"
    assert any(reason == "CreateFailed" and "PriorityClass" in message for _, _, reason, message in kube.events)


def test_a_head_name_held_by_someone_else_is_retried_without_workers_or_false_events() -> None:
    """A pod of the head's name exists and is not ours (a deleted cluster's, still terminating): 409."""
    kube = FakeKube()
    kube.pods[(NAMESPACE, "demo-head")] = {"metadata": {"name": "demo-head", "namespace": NAMESPACE,
                                                        "labels": {"app": "someone-else"}}}
    requeues: list[float | None] = []

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        for _ in range(3):
            requeues.append(await c.reconcile(KEY))

    run(body)
    assert [n for verb, n in kube.calls if verb == "create_pod"] == ["demo-head"] * 3
    assert requeues == [NAME_TAKEN_RETRY_SECONDS] * 3
    assert not [m for _, _, reason, m in kube.events if reason == "Created" and "head demo-head" in m]
    warnings = [m for _, etype, reason, m in kube.events if etype == "Warning" and "head demo-head" in m]
    assert len(warnings) == 1 and "held by an object that is not this cluster's" in warnings[0]


def test_a_service_name_held_by_someone_else_is_not_taken_for_ours() -> None:
    kube = FakeKube()
    kube.services[(NAMESPACE, "demo-head-svc")] = {"metadata": {"name": "demo-head-svc", "namespace": NAMESPACE}}

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        assert await c.reconcile(KEY) == NAME_TAKEN_RETRY_SECONDS
        del kube.services[(NAMESPACE, "demo-head-svc")]  # freed
        await c.reconcile(KEY)

    run(body)
    assert [n for verb, n in kube.calls if verb == "create_service"] == ["demo-head-svc"] * 2
    assert kube.services[(NAMESPACE, "demo-head-svc")]["metadata"]["uid"] == "svc-demo-head-svc"


def test_a_cluster_deleted_unseen_is_forgotten_before_children_are_made_again() -> None:
    """The watch missed the deletion (resumed after an API server restart): the garbage collector took
    the children; before making them again the operator checks that the cluster still exists."""
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)
        c.cache.objects.record_status(KEY, kube.statuses[-1][2])
        del kube.swarmclusters[KEY]  # deleted; no DELETED event
        kube.pods.clear()
        for pod in c.cache.pods.objects(KEY):
            c.on_pod("DELETED", {**pod, "metadata": {**pod["metadata"], "resourceVersion": "999"}})
        assert await c.reconcile(KEY) is None
        assert c.cache.objects.get(KEY) is None

    run(body)
    assert [n for verb, n in kube.calls if verb == "create_pod"].count("demo-head") == 1


def test_relist_forgets_clusters_the_watch_never_reported_deleted() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        for body in (manifest(), manifest(name="other", uid="uid-other")):
            body["metadata"]["resourceVersion"] = "5"  # older than the list's
            c.on_cluster("ADDED", body)
        del kube.swarmclusters[KEY]
        await c.relist()
        assert c.cache.objects.keys() == [(NAMESPACE, "other")]

    run(body)


def test_restart_after_head_created_converges_without_duplicates() -> None:
    """A new operator process seeds its index from the API: it creates only what is missing."""
    kube = FakeKube()

    async def first_process() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest(groups=[]))  # this process only got as far as the head
        await c.reconcile(KEY)

    async def second_process() -> None:
        c = make(kube)
        await asyncio.to_thread(c.seed)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)

    run(first_process)
    kube.calls.clear()
    run(second_process)
    created = [name for verb, name in kube.calls if verb in ("create_pod", "create_service")]
    assert len(created) == 2 and all(n.startswith("demo-cpu-") for n in created)
    assert sorted(name for (_, name) in kube.pods) == sorted(["demo-head", *created])


INVALID = {"workerGroups": [{"name": "cpu", "minReplicas": 3, "maxReplicas": 1}]}


def test_invalid_spec_reports_once_and_touches_nothing() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest(INVALID))
        for _ in range(3):
            await c.reconcile(KEY)

    run(body)
    assert kube.verbs() == Counter({"patch_status": 1, "post_event": 1})
    ((_, _, status),) = kube.statuses
    assert status["phase"] == "Invalid"
    (valid,) = status["conditions"]
    assert (valid["type"], valid["status"], valid["reason"]) == ("Valid", "False", "InvalidSpec")
    assert "spec.workerGroups[0].maxReplicas" in valid["message"]
    ((_, etype, reason, message),) = kube.events
    assert (etype, reason) == ("Warning", "InvalidSpec")
    assert message.startswith("spec.workerGroups[0].maxReplicas")


@pytest.mark.parametrize(
    ("second", "events"),
    [
        pytest.param(manifest(INVALID), 1, id="same-object-no-new-event"),
        pytest.param(manifest(INVALID, generation=2), 2, id="new-generation-warns-again"),
        pytest.param(manifest({"workerGroups": [{"name": "cpu", "minReplicas": 4, "maxReplicas": 1}]}), 2,
                     id="new-message-warns-again"),
    ],
)
def test_invalid_warning_once_per_generation_and_message(second: dict[str, Any], events: int) -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest(INVALID))
        await c.reconcile(KEY)
        c.on_cluster("MODIFIED", second)
        await c.reconcile(KEY)

    run(body)
    assert [e[2] for e in kube.events] == ["InvalidSpec"] * events


def test_invalid_cluster_does_not_stop_its_neighbour() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest(INVALID, name="bad", uid="uid-bad"))
        c.on_cluster("ADDED", manifest(name="good", uid="uid-good"))
        await c.reconcile((NAMESPACE, "bad"))
        await c.reconcile((NAMESPACE, "good"))

    run(body)
    pods = sorted(name.rsplit("-", 1)[0] for (_, name) in kube.pods)
    assert pods == ["good", "good-cpu", "good-cpu"], "good-head, and two good-cpu-<suffix> workers"
    assert {name for (_, name, _) in kube.statuses} == {"bad", "good"}


def test_fixed_spec_becomes_valid_and_is_served() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest(INVALID))
        await c.reconcile(KEY)
        c.on_cluster("MODIFIED", {**manifest(generation=2), "status": kube.statuses[-1][2]})
        await c.reconcile(KEY)

    run(body)
    valid = next(x for x in kube.statuses[-1][2]["conditions"] if x["type"] == "Valid")
    assert valid["status"] == "True"
    assert kube.verbs()["create_pod"] == 3


def test_a_template_annotation_is_patched_onto_running_pods_without_a_restart() -> None:
    kube = FakeKube()
    annotated = {"head": {"resources": {"cpu": "1", "memory": "2Gi"},
                          "template": {"metadata": {"annotations": {"prometheus.io/scrape": "true"}}}}}

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)
        c.on_cluster("MODIFIED", {**manifest(annotated, generation=2), "status": kube.statuses[-1][2]})
        await c.reconcile(KEY)
        await c.reconcile(KEY)  # the patched pod is current: nothing more to do

    run(body)
    assert kube.verbs()["delete_pod"] == 0 and kube.verbs()["create_pod"] == 3
    assert [name for verb, name in kube.calls if verb == "patch_pod"] == ["demo-head"]
    assert kube.pods[(NAMESPACE, "demo-head")]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert any(reason == "Updated" and message.startswith("demo-head: ") for _, _, reason, message in kube.events)


def test_failed_worker_deleted_once_and_backoff_survives_in_status() -> None:
    kube = FakeKube()
    results: list[float | None] = []

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)  # creates head + 2 workers
        worker = next(p for (_, n), p in kube.pods.items() if n.startswith("demo-cpu-"))
        failed = with_state(worker, phase="Failed", ready=False, reason="Error", message="low on memory",
                            resource_version=kube.bump())
        kube.pods[(NAMESPACE, worker["metadata"]["name"])] = failed
        c.on_pod("MODIFIED", failed)
        kube.calls.clear()
        results.append(await c.reconcile(KEY))
        results.append(await c.reconcile(KEY))

    run(body)
    assert kube.verbs()["delete_pod"] == 1
    assert kube.verbs()["create_pod"] == 0, "the first replacement waits out the 1 s backoff"
    assert results == [1.0, 1.0]
    replacing = [e for e in kube.events if e[2] == "Replacing"]
    assert len(replacing) == 1 and replacing[0][1] == "Warning" and "low on memory" in replacing[0][3]
    (group,) = kube.statuses[-1][2]["workerGroups"]
    until = iso(NOW + 1).replace("Z", ".000Z")
    assert (group["restarts"], group["consecutiveFailures"], group["backoffUntil"]) == (1, 1, until)


def test_deleted_cluster_is_not_reconciled() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", {**manifest(), "metadata": {**manifest()["metadata"], "deletionTimestamp": iso(NOW)}})
        assert await c.reconcile(KEY) is None
        c.on_cluster("DELETED", manifest())
        assert c.cache.objects.get(KEY) is None
        assert await c.reconcile(KEY) is None

    run(body)
    assert kube.calls == []


# -- the watch index -----------------------------------------------------------------------------


def _pod(rv: str, name: str = "demo-cpu-aaaaa", cluster: str = "demo") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": rv,
                         "labels": {labels.CLUSTER: cluster}}}


@pytest.mark.parametrize(
    ("event", "rv", "indexed_rv"),
    [
        pytest.param("DELETED", "9", "10", id="late-delete-ignored"),
        pytest.param("DELETED", "10", None, id="delete-of-indexed-version"),
        pytest.param("DELETED", "11", None, id="delete"),
        pytest.param("MODIFIED", "9", "10", id="late-update-ignored"),
        pytest.param("MODIFIED", "12", "12", id="update"),
        pytest.param("ADDED", "3", "10", id="late-add-ignored"),
    ],
)
def test_pod_events_respect_resource_versions(event: str, rv: str, indexed_rv: str | None) -> None:
    async def body() -> None:
        c = make(FakeKube())
        c.on_pod("ADDED", _pod("10"))
        c.on_pod(event, _pod(rv))
        stored = c.cache.pods.get(KEY, "demo-cpu-aaaaa")
        assert (stored or {}).get("metadata", {}).get("resourceVersion") == indexed_rv

    run(body)


@pytest.mark.parametrize(
    ("known_cluster", "pod", "queued"),
    [
        pytest.param(True, _pod("5"), True, id="known-cluster-enqueued"),
        pytest.param(False, _pod("5"), False, id="unknown-cluster-indexed-not-enqueued"),
        pytest.param(True, {"metadata": {"name": "x", "namespace": NAMESPACE, "labels": {}}}, False,
                     id="unlabelled-ignored"),
    ],
)
def test_pod_event_enqueues_its_cluster(known_cluster: bool, pod: dict[str, Any], queued: bool) -> None:
    async def body() -> None:
        c = make(FakeKube())
        if known_cluster:
            c.cache.objects.put(KEY, manifest())
        c.on_pod("ADDED", pod)
        # Pod events are coalesced: the turn is scheduled shortly after, not queued at once.
        assert len(c.loop.queue) == 0
        assert (c.loop.queue.due_in(KEY) is not None) is queued

    run(body)


def test_relist_drops_pods_a_broken_watch_never_reported() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        c.on_pod("ADDED", _pod("10", name="demo-cpu-ghost"))
        kube.pods[(NAMESPACE, "demo-cpu-live1")] = _pod("11", name="demo-cpu-live1")
        await c.relist()
        assert c.cache.pods.names(KEY) == {"demo-cpu-live1"}

    run(body)


def test_a_listing_by_kopf_triggers_a_relist_that_drops_what_was_deleted_unseen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After an API server restart kopf re-lists (events of type None) and never reports deletions."""
    monkeypatch.setattr(loop_module, "RELIST_AFTER_LISTING_SECONDS", 0.05)
    kube = FakeKube()
    live = _pod("11", name="demo-cpu-live1")

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        c.on_pod("ADDED", _pod("10", name="demo-cpu-gone1"))  # deleted while the watch was down
        kube.pods[(NAMESPACE, "demo-cpu-live1")] = live
        c.on_pod(None, live)  # kopf's re-listing
        await asyncio.sleep(0.3)
        assert c.cache.pods.names(KEY) == {"demo-cpu-live1"}
        await c.stop()

    run(body)
    assert [c[1] for c in kube.calls if c[0] == "list_pods"] == [None]  # one re-list, all namespaces


class RacingKube(FakeKube):
    """A worker is created (and written through to the index) while the relist's pod list is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.during_list: Callable[[], None] = lambda: None

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        result = super().list_pods(namespace, selector)
        self.during_list()
        return result


@pytest.mark.parametrize(
    ("rv", "kept"),
    [
        pytest.param("200", True, id="created-after-the-list-kept"),
        pytest.param("100", False, id="as-old-as-the-list-dropped"),
        pytest.param("50", False, id="older-than-the-list-dropped"),
    ],
)
def test_relist_keeps_pods_written_while_it_listed(rv: str, kept: bool) -> None:
    kube = RacingKube()  # its list resourceVersion is "100"

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        kube.during_list = lambda: c.cache.pods.apply("ADDED", _pod(rv, name="demo-cpu-new01"))  # a watch event
        await c.relist()
        assert ("demo-cpu-new01" in c.cache.pods.names(KEY)) is kept

    run(body)


def test_relist_does_not_bring_back_a_pod_deleted_while_it_listed() -> None:
    """The list still has the pod; its DELETED event arrives while the list is in flight."""
    kube = RacingKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        kube.pods[(NAMESPACE, "demo-cpu-gone1")] = _pod("90", name="demo-cpu-gone1")
        c.on_pod("ADDED", _pod("90", name="demo-cpu-gone1"))

        def deleted_meanwhile() -> None:
            del kube.pods[(NAMESPACE, "demo-cpu-gone1")]
            c.cache.pods.apply("DELETED", _pod("120", name="demo-cpu-gone1"))  # the watch event

        kube.during_list = deleted_meanwhile
        await c.relist()
        assert "demo-cpu-gone1" not in c.cache.pods.names(KEY)

    run(body)


def test_a_failed_pod_already_gone_is_forgotten_not_deleted_every_turn() -> None:
    """The index still has a Failed worker the API no longer has (its deletion went unseen): the delete
    answers 404 once, and the next turns neither delete it again nor count it as another failure."""
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)  # creates head + 2 workers
        worker = next(p for (_, n), p in kube.pods.items() if n.startswith("demo-cpu-"))
        name = worker["metadata"]["name"]
        failed = with_state(worker, phase="Failed", ready=False, reason="Error", resource_version=kube.bump())
        del kube.pods[(NAMESPACE, name)]  # gone from the API server
        c.on_pod("MODIFIED", failed)  # but the index only ever saw it fail
        kube.calls.clear()
        for _ in range(3):
            await c.reconcile(KEY)
        assert name not in c.cache.pods.names(KEY)

    run(body)
    assert kube.verbs()["delete_pod"] == 1
    assert len([e for e in kube.events if e[2] == "Replacing"]) == 1
    (group,) = kube.statuses[-1][2]["workerGroups"]
    assert (group["restarts"], group["consecutiveFailures"]) == (1, 1)


class ImmediateDeleteKube(FakeKube):
    """Removes a pod at once, as the API server does for a Failed one (no grace period), and answers
    with the pod as it was, without a resourceVersion; the watch reports the deletion first."""

    def __init__(self) -> None:
        super().__init__()
        self.watch: Callable[[str, dict[str, Any]], None] = lambda event, obj: None

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("delete_pod", name))
            pod = self.pods.pop((namespace, name), None)
            if pod is None:
                return None
            rv = self.bump()
        self.watch("DELETED", {**pod, "metadata": {**pod["metadata"], "resourceVersion": rv}})
        gone = copy.deepcopy(pod)
        gone["metadata"]["deletionTimestamp"] = iso(NOW)
        del gone["metadata"]["resourceVersion"]
        return gone


def test_a_failed_head_removed_at_once_is_replaced() -> None:
    """The delete's answer (no resourceVersion) comes after the watch's DELETED: it must not put the old
    head back, or every turn would wait for a deletion that already happened."""
    kube = ImmediateDeleteKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)  # creates head + 2 workers
        head = kube.pods[(NAMESPACE, "demo-head")]
        failed = with_state(head, phase="Failed", ready=False, reason="Error", resource_version=kube.bump())
        kube.pods[(NAMESPACE, "demo-head")] = failed
        c.on_pod("MODIFIED", failed)
        kube.watch = c.cache.pods.apply  # from the API call's thread: the cache alone, no queue
        await c.reconcile(KEY)  # deletes the head and recycles the workers
        assert not c.cache.pods.names(KEY)
        kube.calls.clear()
        await c.reconcile(KEY)

    run(body)
    assert ("create_pod", "demo-head") in kube.calls


# -- the queue -----------------------------------------------------------------------------------


class Probe(Controller):
    """Records how often, and how concurrently, each key is reconciled."""

    def __init__(self, kube: FakeKube, workers: int) -> None:
        super().__init__(as_kube(kube), OperatorConfig(workers=workers))
        self.running: Counter[Key] = Counter()
        self.max_running: Counter[Key] = Counter()
        self.runs: Counter[Key] = Counter()
        self.max_total = 0
        self.gate = asyncio.Event()  # turns block here until the test opens it
        self.gate.set()
        self.turns.run = self.reconcile  # type: ignore[method-assign]  # the kit's workers run the probe

    async def reconcile(self, key: Key) -> float | None:
        self.running[key] += 1
        self.max_running[key] = max(self.max_running[key], self.running[key])
        self.max_total = max(self.max_total, sum(self.running.values()))
        await self.gate.wait()
        await asyncio.sleep(0.005)
        self.running[key] -= 1
        self.runs[key] += 1
        return None


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.002)


def test_one_key_never_runs_in_two_workers() -> None:
    other: Key = (NAMESPACE, "other")

    async def body() -> None:
        c = Probe(FakeKube(), workers=4)
        c.cache.objects.put(KEY, manifest())
        c.cache.objects.put(other, manifest(name="other"))
        c.gate.clear()
        c.active.set()
        c.start()
        try:
            c.loop.queue.add(KEY)
            c.loop.queue.add(other)
            await until(lambda: c.running[KEY] == 1 and c.running[other] == 1)
            for _ in range(5):  # events while it runs: one more turn afterwards, not five, not in parallel
                c.loop.queue.add(KEY)
                await asyncio.sleep(0.001)
            c.gate.set()
            await until(lambda: c.runs[KEY] >= 2 and c.runs[other] >= 1)
            await asyncio.sleep(0.08)  # time for any extra (wrong) turn to show
        finally:
            await c.stop()
        assert c.max_running[KEY] == 1
        assert c.runs[KEY] == 2
        assert c.runs[other] == 1
        assert c.max_total == 2, "different clusters run concurrently"

    run(body)


def test_enqueue_while_queued_is_coalesced() -> None:
    async def body() -> None:
        c = Probe(FakeKube(), workers=2)
        c.cache.objects.put(KEY, manifest())
        for _ in range(5):
            c.loop.queue.add(KEY)
        assert len(c.loop.queue) == 1
        c.active.set()
        c.start()
        try:
            await until(lambda: c.runs[KEY] == 1)
            await asyncio.sleep(0.06)
        finally:
            await c.stop()
        assert c.runs[KEY] == 1

    run(body)


def test_nothing_runs_until_this_replica_may_act() -> None:
    async def body() -> None:
        c = Probe(FakeKube(), workers=2)
        c.cache.objects.put(KEY, manifest())
        c.start()
        try:
            c.loop.queue.add(KEY)
            await asyncio.sleep(0.05)
            assert c.runs[KEY] == 0
            c.active.set()
            await until(lambda: c.runs[KEY] == 1)
        finally:
            await c.stop()

    run(body)


def test_a_deleted_cluster_loses_its_pending_turn() -> None:
    """(Which of several timers is kept is the work queue's own test: test_workqueue.py.)"""
    async def body() -> None:
        c = make(FakeKube())
        c.loop.queue.add_after(KEY, 5.0)
        c.on_cluster("DELETED", manifest())
        assert c.loop.queue.due_in(KEY) is None

    run(body)


def test_timer_fires_into_the_queue() -> None:
    async def body() -> None:
        c = make(FakeKube())
        c.cache.objects.put(KEY, manifest())
        c.loop.queue.add_after(KEY, 0.01)
        assert len(c.loop.queue) == 0
        await until(lambda: len(c.loop.queue) == 1)

    run(body)


def test_failing_reconcile_retries_with_backoff() -> None:
    class Failing(Probe):
        async def reconcile(self, key: Key) -> float | None:
            self.runs[key] += 1
            raise RuntimeError("API down")

    async def body() -> None:
        c = Failing(FakeKube(), workers=1)
        c.cache.objects.put(KEY, manifest())
        c.active.set()
        c.start()
        try:
            c.loop.queue.add(KEY)
            await until(lambda: c.runs[KEY] == 1 and c.loop.queue.due_in(KEY) is not None)
            delay = c.loop.queue.due_in(KEY)
        finally:
            await c.stop()
        assert delay is not None and 0.5 < delay <= 1.0, "first retry after ~1 s, not the 60 s resync"

    run(body)


# -- our own status writes coming back -------------------------------------------------------------


def _turns_after(second: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Turns the controller queues for a SwarmCluster event made from what it holds by `second`."""
    kube = FakeKube()
    queued = 0

    async def body() -> None:
        nonlocal queued
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        c.loop.queue.done(await c.loop.queue.get())  # the turn for ADDED, taken off the queue
        await c.reconcile(KEY)
        stored = copy.deepcopy(c.cache.objects.get(KEY))
        assert stored is not None
        stored["metadata"]["resourceVersion"] = "999"  # every write gets a new one
        c.on_cluster("MODIFIED", second(stored))
        queued = len(c.loop.queue)

    run(body)
    return queued


def _edit(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def apply(body: dict[str, Any]) -> dict[str, Any]:
        *parents, leaf = path.split(".")
        node = body
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        return body
    return apply


@pytest.mark.parametrize(
    ("second", "turns"),
    [
        pytest.param(lambda b: b, 0, id="our-status-write-echoed"),
        pytest.param(_edit("status.phase", "Degraded"), 1, id="another-writers-status"),
        pytest.param(_edit("metadata.generation", 2), 1, id="spec-generation"),
        pytest.param(_edit("spec.suspend", True), 1, id="spec"),
        pytest.param(_edit("metadata.deletionTimestamp", iso(NOW)), 1, id="being-deleted"),
        pytest.param(_edit("metadata.annotations", {"a": "b"}), 1, id="annotations"),
    ],
)
def test_an_echo_of_our_status_write_queues_no_turn(second: Callable[[dict[str, Any]], dict[str, Any]],
                                                    turns: int) -> None:
    assert _turns_after(second) == turns


# -- a rollout with autoscaling off: the turn reads Ray's state and drains busy workers -------------


def running(kube: FakeKube, c: Controller, name: str, ip: str, **meta: Any) -> None:
    """The pod running with `ip` (and `meta` merged into its metadata), as its watch would report it."""
    pod = with_state(kube.pods[(NAMESPACE, name)], resource_version=kube.bump())
    pod["status"]["podIP"] = ip
    pod["metadata"].update(meta)
    kube.pods[(NAMESPACE, name)] = pod
    c.on_pod("MODIFIED", pod)


def test_rollout_reads_ray_without_autoscaling_replaces_the_idle_worker_and_drains_the_busy_one() -> None:
    kube, ray = FakeKube(), FakeRay()
    changed = manifest({"workerGroups": [{**manifest()["spec"]["workerGroups"][0],
                                          "rayStartParams": {"object-store-memory": "100000000"}}],
                        "updateStrategy": {"maxUnavailable": 2, "drainTimeoutSeconds": 120}}, generation=2)

    async def body() -> None:
        c = make(kube)
        c.autoscaler.pool = cast(Any, gcs.RayStatePool(ray.factory, c.blocking.submit, read_timeout_s=5.0))
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)  # head + 2 workers
        busy, idle = sorted(n for (_, n) in kube.pods if n.startswith("demo-cpu-"))
        for name, ip in (("demo-head", HEAD_IP), (busy, "10.0.0.2"), (idle, "10.0.0.3")):
            running(kube, c, name, ip)
        await c.reconcile(KEY)  # all up to date: Ray is not asked
        assert ray.reads == 0
        ray.snapshot = snapshot(ray_node("demo-head", labels.HEAD, head=True),
                                ray_node(busy, "cpu", available={"CPU": 0.0, "memory": 8e9}),
                                ray_node(idle, "cpu", NodeStatus.IDLE))
        c.on_cluster("MODIFIED", {**changed, "status": kube.statuses[-1][2]})
        kube.calls.clear()
        await c.reconcile(KEY)
        assert ray.reads == 1
        # Neither pod is deleted on the snapshot's word: the idle node is drained with IDLE_TERMINATION (its raylet
        # refuses if a task started since the read), the busy one with PREEMPTION and the deadline.
        assert [n for verb, n in kube.calls if verb == "delete_pod"] == []
        drains = {node: (reason, deadline_ms) for node, reason, _, deadline_ms, _ in ray.drains}
        assert drains == {node_id(busy): (gcs.DrainReason.PREEMPTION, int((NOW + 120) * 1000)),
                          node_id(idle): (gcs.DrainReason.IDLE_TERMINATION, 0)}
        assert "rayStartParams changed" in next(m for n, _, m, _, _ in ray.drains if n == node_id(busy))
        for name in (busy, idle):
            assert labels.DRAINED in kube.pods[(NAMESPACE, name)]["metadata"]["annotations"]
        assert any(e[2] == "Draining" and busy in e[3] for e in kube.events)

        # The idle node's raylet exited at once: its pod is removed, not counted as a failure.
        ray.snapshot = snapshot(ray_node("demo-head", labels.HEAD, head=True),
                                ray_node(busy, "cpu", NodeStatus.DRAINING), ray_node(idle, "cpu", NodeStatus.DEAD))
        kube.calls.clear()
        await c.reconcile(KEY)
        assert [n for verb, n in kube.calls if verb == "delete_pod"] == [idle]

        # The busy node is still draining (its tasks run): its pod stays, and it is not drained twice.
        ray.snapshot = snapshot(ray_node("demo-head", labels.HEAD, head=True),
                                ray_node(busy, "cpu", NodeStatus.DRAINING))
        gone = kube.pods.pop((NAMESPACE, idle))
        gone["metadata"]["resourceVersion"] = kube.bump()
        c.on_pod("DELETED", gone)
        kube.calls.clear()
        await c.reconcile(KEY)
        assert [n for verb, n in kube.calls if verb == "delete_pod"] == []
        assert len(ray.drains) == 2
        # Its raylet exited: Ray reports it DEAD, and the pod is removed without counting as a failure.
        ray.snapshot = snapshot(ray_node("demo-head", labels.HEAD, head=True),
                                ray_node(busy, "cpu", NodeStatus.DEAD))
        kube.calls.clear()
        await c.reconcile(KEY)
        assert [n for verb, n in kube.calls if verb == "delete_pod"] == [busy]
        assert not any(e[2] == "Replacing" for e in kube.events)

    run(body)


def test_a_rollout_with_ray_unreachable_waits_and_says_so_once() -> None:
    kube, ray = FakeKube(), FakeRay()
    ray.error = "connection refused"
    changed = manifest({"workerGroups": [{**manifest()["spec"]["workerGroups"][0],
                                          "rayStartParams": {"object-store-memory": "100000000"}}]}, generation=2)

    async def body() -> None:
        c = make(kube)
        c.autoscaler.pool = cast(Any, gcs.RayStatePool(ray.factory, c.blocking.submit, read_timeout_s=5.0))
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)
        for (_, name), pod in list(kube.pods.items()):
            pod = with_state(pod, resource_version=kube.bump())
            pod["status"]["podIP"] = HEAD_IP
            kube.pods[(NAMESPACE, name)] = pod
            c.on_pod("MODIFIED", pod)
        c.on_cluster("MODIFIED", {**changed, "status": kube.statuses[-1][2]})
        kube.calls.clear()
        await c.reconcile(KEY)
        await c.reconcile(KEY)

    run(body)
    assert ray.reads >= 1 and kube.verbs()["delete_pod"] == 0
    waiting = [e for e in kube.events if e[2] == "RolloutWaiting"]
    assert len(waiting) == 1 and "2 ready outdated worker(s)" in waiting[0][3]


# -- drained ahead of a disruption: someone else's deletion, never the operator's own ------------------


def test_a_worker_deleted_by_someone_else_is_drained_with_its_grace_left_and_the_operators_own_are_not() -> None:
    kube, ray = FakeKube(), FakeRay()

    async def body() -> None:
        c = make(kube)
        c.autoscaler.pool = cast(Any, gcs.RayStatePool(ray.factory, c.blocking.submit, read_timeout_s=5.0))
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)  # head + 2 workers
        first, second = sorted(n for (_, n) in kube.pods if n.startswith("demo-cpu-"))
        for name, ip in (("demo-head", HEAD_IP), (first, "10.0.0.2"), (second, "10.0.0.3")):
            running(kube, c, name, ip)
        ray.snapshot = snapshot(ray_node("demo-head", labels.HEAD, head=True),
                                ray_node(first, "cpu", available={"CPU": 0.0, "memory": 8e9}),
                                ray_node(second, "cpu", NodeStatus.IDLE))
        await c.reconcile(KEY)
        assert ray.drains == []
        running(kube, c, first, "10.0.0.2", deletionTimestamp=iso(NOW + 30))  # kubectl delete: 30 s of grace left
        await c.reconcile(KEY)
        ((node, reason, message, deadline_ms, _),) = ray.drains
        assert (node, reason, deadline_ms) == (node_id(first), gcs.DrainReason.PREEMPTION, int((NOW + 30) * 1000))
        assert "its pod is being deleted, not by the operator" in message
        # The operator's own scale-down of the idle worker: Ray drains it as idle (IDLE_TERMINATION), then the
        # operator deletes the pod; that deletion is no disruption to drain ahead of (no PREEMPTION drain for it).
        to_zero = manifest({"workerGroups": [{**manifest()["spec"]["workerGroups"][0], "replicas": 0}]}, generation=2)
        c.on_cluster("MODIFIED", {**to_zero, "status": kube.statuses[-1][2]})
        await c.reconcile(KEY)
        assert [(d[0], d[1]) for d in ray.drains][1:] == [(node_id(second), gcs.DrainReason.IDLE_TERMINATION)]
        ray.snapshot = snapshot(ray_node("demo-head", labels.HEAD, head=True),
                                ray_node(first, "cpu", NodeStatus.DRAINING), ray_node(second, "cpu", NodeStatus.DEAD))
        await c.reconcile(KEY)
        assert kube.pods[(NAMESPACE, second)]["metadata"].get("deletionTimestamp"), "the idle worker deleted"
        await c.reconcile(KEY)
        assert [d[0] for d in ray.drains] == [node_id(first), node_id(second)]

    run(body)


# -- the head service, reconciled in place -------------------------------------------------------------


def _with_service(spec_head: dict[str, Any]) -> dict[str, Any]:
    return {"head": {"resources": {"cpu": "1", "memory": "2Gi"}, **spec_head}}


@pytest.mark.parametrize(
    ("head", "verbs", "event"),
    [
        pytest.param({"serviceType": "Headless", "service": {"annotations": {"lb": "internal"}}},
                     {"patch_service": 1}, ("Normal", "ServiceUpdated"), id="annotation-patched"),
        pytest.param({"serviceType": "ClusterIP"}, {"delete_service": 1, "create_service": 2},
                     ("Warning", "ServiceReplaced"), id="headless-to-clusterip-recreated"),
    ],
)
def test_a_head_service_change_is_applied_without_touching_pods(head: dict[str, Any], verbs: dict[str, int],
                                                                event: tuple[str, str]) -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)
        c.on_cluster("MODIFIED", {**manifest(_with_service(head), generation=2), "status": kube.statuses[-1][2]})
        await c.reconcile(KEY)
        await c.reconcile(KEY)  # the service is current now: nothing more to do

    run(body)
    assert kube.verbs()["delete_pod"] == 0 and kube.verbs()["create_pod"] == 3
    assert {v: kube.verbs()[v] for v in verbs} == verbs
    assert any((etype, reason) == event for _, etype, reason, _ in kube.events)
    svc = kube.services[(NAMESPACE, "demo-head-svc")]
    assert svc["metadata"].get("annotations", {}).get("lb") == head.get("service", {}).get("annotations", {}).get("lb")
    assert (svc["spec"].get("clusterIP") == "None") is (head["serviceType"] == "Headless")


# -- suspend: the head stays while a Ray job's driver runs there (reconcile/suspend.py) ------------------------


class FakeJobsApi(RayJobsClient):
    """The head's Jobs API: the jobs it lists as not ended (or why it cannot be read); each read's address kept."""

    def __init__(self, jobs: HeadJobs) -> None:
        super().__init__()
        self.jobs = jobs
        self.reads: list[str] = []

    def unended_submissions(self, head_ip: str, token: str | None) -> HeadJobs:
        self.reads.append(head_ip)
        return self.jobs


def _suspend_with_head_up(kube: FakeKube, jobs: FakeJobsApi, spec: dict[str, Any] | None = None,
                          status: dict[str, Any] | None = None) -> Callable[[], Awaitable[Controller]]:
    """A cluster of only a head, running at HEAD_IP, then suspended (with `status` as stored, if given)."""
    async def start() -> Controller:
        c = make(kube)
        c.turns.ray_jobs = jobs
        c.on_cluster("ADDED", manifest(spec, groups=[]))
        await c.reconcile(KEY)
        running(kube, c, "demo-head", HEAD_IP)
        await c.reconcile(KEY)
        c.on_cluster("MODIFIED", {**manifest({**(spec or {}), "suspend": True}, groups=[], generation=2),
                                  "status": status or kube.statuses[-1][2]})
        return c
    return start


def _suspended_condition(kube: FakeKube) -> dict[str, Any]:
    return next(x for x in kube.statuses[-1][2]["conditions"] if x["type"] == "Suspended")


def test_a_suspended_head_stays_while_a_ray_job_runs_there_and_says_so_once() -> None:
    kube, jobs = FakeKube(), FakeJobsApi(("raysubmit_a",))
    why = f"the head stays while Ray job(s) raysubmit_a run, at most until {iso(NOW + 600)}"

    async def body() -> None:
        c = await _suspend_with_head_up(kube, jobs)()
        await c.reconcile(KEY)
        await c.reconcile(KEY)
        assert jobs.reads == [HEAD_IP, HEAD_IP] and kube.verbs()["delete_pod"] == 0
        assert [e[3] for e in kube.events if e[2] == "SuspendWaiting"] == [f"cluster is suspended: {why}"]
        assert _suspended_condition(kube)["message"] == f"spec.suspend is true; {why}"
        jobs.jobs = ()  # the driver reported and ended
        await c.reconcile(KEY)
        assert [n for verb, n in kube.calls if verb == "delete_pod"] == ["demo-head"]
        assert _suspended_condition(kube)["message"] == "spec.suspend is true"

    run(body)
    assert not [e for e in kube.events if e[2] == "SuspendTimedOut"]


@pytest.mark.parametrize(
    ("jobs", "warning"),
    [
        pytest.param(("raysubmit_a",), "while Ray job(s) raysubmit_a still run", id="jobs-running"),
        pytest.param(JobsUnreadable("timed out"), "though its Jobs API could not be read (timed out)",
                     id="unreadable"),
    ],
)
def test_a_suspended_head_goes_at_the_bound_with_a_warning(jobs: HeadJobs, warning: str) -> None:
    kube, api = FakeKube(), FakeJobsApi(jobs)
    since = {"conditions": [{"type": "Suspended", "status": "True", "lastTransitionTime": iso(NOW - 600)}]}

    async def body() -> None:
        c = await _suspend_with_head_up(kube, api, status=since)()
        await c.reconcile(KEY)

    run(body)
    assert [n for verb, n in kube.calls if verb == "delete_pod"] == ["demo-head"]
    assert [(e[1], warning in e[3]) for e in kube.events if e[2] == "SuspendTimedOut"] == [("Warning", True)]


def test_a_suspended_head_without_a_dashboard_goes_without_a_read() -> None:
    kube, jobs = FakeKube(), FakeJobsApi(("raysubmit_a",))
    no_dashboard = {"head": {"resources": {"cpu": "1", "memory": "2Gi"},
                             "rayStartParams": {"include-dashboard": "false"}}}

    async def body() -> None:
        c = await _suspend_with_head_up(kube, jobs, no_dashboard)()
        await c.reconcile(KEY)

    run(body)
    assert jobs.reads == [] and [n for verb, n in kube.calls if verb == "delete_pod"] == ["demo-head"]
