"""The controller: helpers, the write-through index, invalid specs, and the keyed work queue.

Kubernetes is an in-memory fake that records every call; the cluster objects, pods and services
are the real ones the builders produce. asyncio.run per test (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import pytest

from swarm_operator import controller as controller_module
from swarm_operator.config import OperatorConfig
from swarm_operator.controller import (
    NAME_TAKEN_RETRY_SECONDS,
    SUFFIX_ALPHABET,
    Controller,
    Key,
    _key_of,
    _newer,
    random_suffix,
)
from swarm_operator.kube import ApiError, Kube
from swarm_operator.resources import labels
from tests.unit.operator_fixtures import NAMESPACE, NOW, iso, manifest, with_state

KEY: Key = (NAMESPACE, "demo")


class FakeKube:
    """Just enough of kube.Kube: an API server of pods and services that records each call."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []  # (cluster, type, reason, message)
        self.swarmclusters: dict[Key, dict[str, Any]] = {}  # what the API server stores
        self._rv = 100
        self._lock = threading.Lock()  # the controller calls from worker threads

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            self.calls.append(("list_pods", namespace))
            items = [copy.deepcopy(p) for (ns, _), p in self.pods.items() if namespace in (None, ns)]
            return items, str(self._rv)

    def list_services(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(("list_services", namespace))
            return [copy.deepcopy(s) for (ns, _), s in self.services.items() if namespace in (None, ns)]

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = pod["metadata"]["name"]
            self.calls.append(("create_pod", name))
            if (namespace, name) in self.pods:
                return None  # 409
            stored = copy.deepcopy(pod)
            stored["metadata"].update(resourceVersion=self._bump(), creationTimestamp=iso(NOW), uid=f"pod-{name}")
            stored["status"] = {"phase": "Pending"}
            self.pods[(namespace, name)] = stored
            return copy.deepcopy(stored)

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("delete_pod", name))
            pod = self.pods.get((namespace, name))
            if pod is None:
                return None  # 404
            pod["metadata"].update(deletionTimestamp=iso(NOW), resourceVersion=self._bump())
            return copy.deepcopy(pod)

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of metadata labels/annotations (all the controller patches)."""
        with self._lock:
            self.calls.append(("patch_pod", name))
            pod = self.pods.get((namespace, name))
            if pod is None:
                return None  # 404
            for key, change in patch["metadata"].items():
                merged = {**pod["metadata"].get(key, {}), **change}
                pod["metadata"][key] = {k: v for k, v in merged.items() if v is not None}
            pod["metadata"]["resourceVersion"] = self._bump()
            return copy.deepcopy(pod)

    def create_service(self, namespace: str, service: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            name = service["metadata"]["name"]
            self.calls.append(("create_service", name))
            if (namespace, name) in self.services:
                return None  # 409
            stored = {**copy.deepcopy(service), "kind": "Service"}
            stored["metadata"].update(resourceVersion=self._bump(), uid=f"svc-{name}")
            self.services[(namespace, name)] = stored
            return copy.deepcopy(stored)

    def get_swarmcluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("get_swarmcluster", name))
            return copy.deepcopy(self.swarmclusters.get((namespace, name)))

    def list_swarmclusters(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            self.calls.append(("list_swarmclusters", namespace))
            return [copy.deepcopy(b) for (ns, _), b in self.swarmclusters.items() if namespace in (None, ns)], \
                str(self._rv)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        with self._lock:
            self.calls.append(("patch_status", name))
            if (namespace, name) not in self.swarmclusters:
                return False  # 404
            self.statuses.append((namespace, name, copy.deepcopy(status)))
            return True

    def post_event(self, namespace: str, name: str, uid: str, event_type: str, reason: str, message: str) -> None:
        with self._lock:
            self.calls.append(("post_event", name))
            self.events.append((name, event_type, reason, message))

    def verbs(self) -> Counter[str]:
        return Counter(c[0] for c in self.calls)


class _Clock:
    """The controller's `time` module with a fixed wall clock (backoff and timestamps are then exact)."""

    @staticmethod
    def time() -> float:
        return NOW

    @staticmethod
    def monotonic() -> float:
        return 0.0


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller_module, "time", _Clock)


class WatchedController(Controller):
    """The controller, with each watch event it is given also stored in the fake API server."""

    def __init__(self, kube: FakeKube, config: OperatorConfig) -> None:
        super().__init__(cast(Kube, kube), config)
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


def _obj(rv: str | None) -> dict[str, Any]:
    return {"metadata": {} if rv is None else {"resourceVersion": rv}}


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        pytest.param(_obj("5"), None, True, id="nothing-indexed"),
        pytest.param(_obj("11"), _obj("10"), True, id="newer"),
        pytest.param(_obj("10"), _obj("10"), True, id="same"),
        pytest.param(_obj("9"), _obj("10"), False, id="older"),
        pytest.param(_obj("100"), _obj("99"), True, id="numeric-not-lexical"),
        pytest.param(_obj("99"), _obj("100"), False, id="numeric-not-lexical-older"),
        pytest.param(_obj("5"), _obj(None), True, id="indexed-from-a-builder-no-version"),
        pytest.param(_obj(None), _obj("5"), True, id="candidate-without-version"),
        pytest.param(_obj("abc"), _obj("5"), True, id="opaque-version"),
    ],
)
def test_newer(candidate: dict[str, Any], current: dict[str, Any] | None, expected: bool) -> None:
    assert _newer(candidate, current) is expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param({"namespace": "ns", "labels": {labels.CLUSTER: "demo"}}, ("ns", "demo"), id="labelled"),
        pytest.param({"namespace": "ns", "labels": {}}, None, id="no-cluster-label"),
        pytest.param({"namespace": "ns"}, None, id="no-labels"),
        pytest.param({"labels": {labels.CLUSTER: "demo"}}, None, id="no-namespace"),
        pytest.param({"namespace": "ns", "labels": {labels.CLUSTER: ""}}, None, id="empty-label"),
    ],
)
def test_key_of(meta: dict[str, Any], expected: Key | None) -> None:
    assert _key_of({"metadata": meta}) == expected


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
    assert kube.verbs() == Counter({"create_pod": 3, "create_service": 1, "patch_status": 1, "post_event": 1})
    (_, _, status), = kube.statuses
    assert (status["phase"], status["workers"], status["observedGeneration"]) == ("Pending", "0/2", 1)
    ((_, etype, reason, message),) = kube.events
    assert (etype, reason) == ("Normal", "Created")
    assert "head demo-head" in message and "service demo-head-svc" in message and "2 cpu worker(s)" in message


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
        c.clusters[KEY]["status"] = kube.statuses[-1][2]
        del kube.swarmclusters[KEY]  # deleted; no DELETED event
        kube.pods.clear()
        for name in list(c.pods[KEY]):
            c.on_pod("DELETED", {**c.pods[KEY][name], "metadata": {**c.pods[KEY][name]["metadata"],
                                                                      "resourceVersion": "999"}})
        assert await c.reconcile(KEY) is None
        assert KEY not in c.clusters

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
        assert set(c.clusters) == {(NAMESPACE, "other")}

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
        failed = with_state(worker, phase="Failed", ready=False, reason="Evicted", message="low on memory",
                            resource_version=kube._bump())
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
        assert KEY not in c.clusters
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
        stored = c.pods[KEY].get("demo-cpu-aaaaa")
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
            c.clusters[KEY] = manifest()
        c.on_pod("ADDED", pod)
        # Pod events are coalesced: the turn is scheduled shortly after, not queued at once.
        assert c.queue.qsize() == 0
        assert (KEY in c._timers) is queued

    run(body)


def test_relist_drops_pods_a_broken_watch_never_reported() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        c.on_pod("ADDED", _pod("10", name="demo-cpu-ghost"))
        kube.pods[(NAMESPACE, "demo-cpu-live1")] = _pod("11", name="demo-cpu-live1")
        await c.relist()
        assert set(c.pods[KEY]) == {"demo-cpu-live1"}

    run(body)


def test_a_listing_by_kopf_triggers_a_relist_that_drops_what_was_deleted_unseen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After an API server restart kopf re-lists (events of type None) and never reports deletions."""
    monkeypatch.setattr(controller_module, "RELIST_AFTER_LISTING_SECONDS", 0.05)
    kube = FakeKube()
    live = _pod("11", name="demo-cpu-live1")

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        c.on_pod("ADDED", _pod("10", name="demo-cpu-gone1"))  # deleted while the watch was down
        kube.pods[(NAMESPACE, "demo-cpu-live1")] = live
        c.on_pod(None, live)  # kopf's re-listing
        await asyncio.sleep(0.3)
        assert set(c.pods[KEY]) == {"demo-cpu-live1"}
        await c.stop()

    run(body)
    assert [n for verb, n in kube.calls if verb == "list_pods"] == [None]  # one re-list, all namespaces


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
        kube.during_list = lambda: c._index(c.pods, "ADDED", _pod(rv, name="demo-cpu-new01"))  # a watch event
        await c.relist()
        assert ("demo-cpu-new01" in c.pods[KEY]) is kept

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
            c._index(c.pods, "DELETED", _pod("120", name="demo-cpu-gone1"))  # the watch event

        kube.during_list = deleted_meanwhile
        await c.relist()
        assert "demo-cpu-gone1" not in c.pods[KEY]

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
        failed = with_state(worker, phase="Failed", ready=False, reason="Error", resource_version=kube._bump())
        del kube.pods[(NAMESPACE, name)]  # gone from the API server
        c.on_pod("MODIFIED", failed)  # but the index only ever saw it fail
        kube.calls.clear()
        for _ in range(3):
            await c.reconcile(KEY)
        assert name not in c.pods[KEY]

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
            rv = self._bump()
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
        failed = with_state(head, phase="Failed", ready=False, reason="Error", resource_version=kube._bump())
        kube.pods[(NAMESPACE, "demo-head")] = failed
        c.on_pod("MODIFIED", failed)
        kube.watch = lambda event, obj: c._index(c.pods, event, obj)
        await c.reconcile(KEY)  # deletes the head and recycles the workers
        assert not c.pods[KEY]
        kube.calls.clear()
        await c.reconcile(KEY)

    run(body)
    assert ("create_pod", "demo-head") in kube.calls


# -- the queue -----------------------------------------------------------------------------------


class Probe(Controller):
    """Records how often, and how concurrently, each key is reconciled."""

    def __init__(self, kube: FakeKube, workers: int) -> None:
        super().__init__(cast(Kube, kube), OperatorConfig(workers=workers))
        self.running: Counter[Key] = Counter()
        self.max_running: Counter[Key] = Counter()
        self.runs: Counter[Key] = Counter()
        self.max_total = 0
        self.gate = asyncio.Event()  # turns block here until the test opens it
        self.gate.set()

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
        c.clusters = {KEY: manifest(), other: manifest(name="other")}
        c.gate.clear()
        c.active.set()
        c.start()
        try:
            c.enqueue(KEY)
            c.enqueue(other)
            await until(lambda: c.running[KEY] == 1 and c.running[other] == 1)
            for _ in range(5):  # events while it runs: one more turn afterwards, not five, not in parallel
                c.enqueue(KEY)
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
        c.clusters = {KEY: manifest()}
        for _ in range(5):
            c.enqueue(KEY)
        assert c.queue.qsize() == 1
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
        c.clusters = {KEY: manifest()}
        c.start()
        try:
            c.enqueue(KEY)
            await asyncio.sleep(0.05)
            assert c.runs[KEY] == 0
            c.active.set()
            await until(lambda: c.runs[KEY] == 1)
        finally:
            await c.stop()

    run(body)


@pytest.mark.parametrize(
    ("delays", "expected"),
    [
        pytest.param([10.0, 1.0], 1.0, id="sooner-replaces-later"),
        pytest.param([1.0, 10.0], 1.0, id="later-does-not-postpone"),
        pytest.param([5.0, 5.0], 5.0, id="same"),
    ],
)
def test_delayed_enqueue_keeps_the_earliest_timer(delays: list[float], expected: float) -> None:
    async def body() -> None:
        c = make(FakeKube())
        loop = asyncio.get_running_loop()
        start = loop.time()
        for d in delays:
            c.enqueue(KEY, d)
        assert len(c._timers) == 1
        assert c._timers[KEY].when() - start == pytest.approx(expected, abs=0.05)
        c.on_cluster("DELETED", manifest())
        assert KEY not in c._timers

    run(body)


def test_timer_fires_into_the_queue() -> None:
    async def body() -> None:
        c = make(FakeKube())
        c.clusters[KEY] = manifest()
        c.enqueue(KEY, 0.01)
        assert c.queue.qsize() == 0
        await until(lambda: c.queue.qsize() == 1)

    run(body)


def test_failing_reconcile_retries_with_backoff() -> None:
    class Failing(Probe):
        async def reconcile(self, key: Key) -> float | None:
            self.runs[key] += 1
            raise RuntimeError("API down")

    async def body() -> None:
        c = Failing(FakeKube(), workers=1)
        c.clusters = {KEY: manifest()}
        c.active.set()
        c.start()
        try:
            c.enqueue(KEY)
            await until(lambda: c.runs[KEY] == 1 and KEY in c._timers)
            delay = c._timers[KEY].when() - asyncio.get_running_loop().time()
        finally:
            await c.stop()
        assert 0.5 < delay <= 1.0, "first retry after ~1 s, not the 60 s resync"

    run(body)


# -- our own status writes coming back -------------------------------------------------------------


def _turns_after(second: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Turns the controller queues for a SwarmCluster event made from what it holds by `second`."""
    kube = FakeKube()
    queued: list[Key] = []

    async def body() -> None:
        c = make(kube)
        c.on_cluster("ADDED", manifest())
        await c.reconcile(KEY)
        stored = copy.deepcopy(c.clusters[KEY])
        stored["metadata"]["resourceVersion"] = "999"  # every write gets a new one
        c.enqueue = lambda key, delay=0.0: queued.append(key)  # type: ignore[method-assign]
        c.on_cluster("MODIFIED", second(stored))

    run(body)
    return len(queued)


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
