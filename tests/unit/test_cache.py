"""kit/cache.py through its public API: version ordering, tombstones, write-through, relist merge."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.kit.cache import ChildStore, Key, WatchCache, newer, owner_key
from swarm_operator.resources import labels
from tests.unit.operator_fixtures import NAMESPACE, manifest

KEY: Key = (NAMESPACE, "demo")


def _obj(rv: str | None) -> dict[str, Any]:
    return {"metadata": {} if rv is None else {"resourceVersion": rv}}


def pod(rv: str | None, name: str = "demo-cpu-aaaaa", uid: str = "", cluster: str = "demo") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "labels": {labels.CLUSTER: cluster}}
    if rv is not None:
        meta["resourceVersion"] = rv
    if uid:
        meta["uid"] = uid
    return {"metadata": meta}


def version(store: ChildStore, name: str = "demo-cpu-aaaaa") -> str | None:
    obj = store.get(KEY, name)
    return None if obj is None else obj["metadata"].get("resourceVersion")


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        pytest.param(_obj("5"), None, True, id="nothing-cached"),
        pytest.param(_obj("11"), _obj("10"), True, id="newer"),
        pytest.param(_obj("10"), _obj("10"), True, id="same"),
        pytest.param(_obj("9"), _obj("10"), False, id="older"),
        pytest.param(_obj("100"), _obj("99"), True, id="numeric-not-lexical"),
        pytest.param(_obj("99"), _obj("100"), False, id="numeric-not-lexical-older"),
        pytest.param(_obj("5"), _obj(None), True, id="cached-from-a-builder-no-version"),
        pytest.param(_obj(None), _obj("5"), True, id="candidate-without-version"),
        pytest.param(_obj("abc"), _obj("5"), True, id="opaque-version"),
    ],
)
def test_newer(candidate: dict[str, Any], current: dict[str, Any] | None, expected: bool) -> None:
    assert newer(candidate, current) is expected


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
    assert owner_key({"metadata": meta}, labels.CLUSTER) == expected


@pytest.mark.parametrize(
    ("steps", "cached_rv"),
    [
        pytest.param([("ADDED", "10"), ("MODIFIED", "9")], "10", id="late-update-ignored"),
        pytest.param([("ADDED", "10"), ("DELETED", "9")], "10", id="late-delete-ignored"),
        pytest.param([("ADDED", "10"), ("DELETED", "10")], None, id="delete-of-cached-version"),
        pytest.param([("ADDED", "10"), ("DELETED", "11"), ("MODIFIED", "10")], None, id="late-event-after-delete"),
        pytest.param([("ADDED", "10"), ("DELETED", "11"), (None, "11")], None, id="delete-answer-after-the-event"),
        pytest.param([("ADDED", "10"), ("DELETED", "11"), ("ADDED", "12")], "12", id="a-new-pod-of-the-name"),
    ],
)
def test_events_follow_resource_versions(steps: list[tuple[str | None, str]], cached_rv: str | None) -> None:
    store = ChildStore(labels.CLUSTER)
    for event_type, rv in steps:
        store.apply(event_type, pod(rv))
    assert version(store) == cached_rv


def test_a_deleted_uid_never_comes_back_whatever_its_version() -> None:
    """An answer without a resourceVersion (a pod removed at once) leaves a tombstone by uid."""
    store = ChildStore(labels.CLUSTER)
    store.apply("ADDED", pod("10", uid="u1"))
    assert store.gone(KEY, "demo-cpu-aaaaa", "u1")
    assert store.apply("MODIFIED", pod("11", uid="u1")) is None  # a late event from before the removal
    assert store.get(KEY, "demo-cpu-aaaaa") is None
    assert store.apply("ADDED", pod("12", uid="u2")) == KEY  # a new pod of the same name
    assert version(store) == "12"


def test_gone_leaves_a_newer_pod_of_the_same_name_alone() -> None:
    store = ChildStore(labels.CLUSTER)
    store.apply("ADDED", pod("12", uid="u2"))
    assert not store.gone(KEY, "demo-cpu-aaaaa", "u1")  # the answer about its predecessor came late
    assert version(store) == "12"


def test_reads() -> None:
    store = ChildStore(labels.CLUSTER, keep=lambda obj: {"metadata": dict(obj["metadata"]), "kept": True})
    store.apply("ADDED", pod("1", name="a"))
    store.apply("ADDED", pod("2", name="b"))
    store.apply("ADDED", pod("3", name="x", cluster="other"))
    assert store.names(KEY) == {"a", "b"}
    assert all(o["kept"] for o in store.objects(KEY))
    assert store.apply("ADDED", {"metadata": {"name": "u", "namespace": NAMESPACE}}) is None  # unlabelled
    store.drop_key(KEY)
    assert store.names(KEY) == set() and store.names((NAMESPACE, "other")) == {"x"}


@pytest.mark.parametrize(
    ("cached", "listed", "list_rv", "expected", "changed"),
    [
        pytest.param({"a": "10"}, {}, "20", set(), True, id="gone-unseen-dropped"),
        pytest.param({"a": "30"}, {}, "20", {"a"}, False, id="newer-than-the-list-kept"),
        pytest.param({"a": "20"}, {}, "20", set(), True, id="as-old-as-the-list-dropped"),
        pytest.param({}, {"a": "10"}, "20", {"a"}, True, id="listed-added"),
        pytest.param({"a": "10"}, {"a": "15"}, "20", {"a"}, True, id="listed-newer-replaces"),
        pytest.param({"a": "15"}, {"a": "15"}, "20", {"a"}, False, id="same-no-change"),
    ],
)
def test_merge_list(cached: dict[str, str], listed: dict[str, str], list_rv: str, expected: set[str],
                    changed: bool) -> None:
    store = ChildStore(labels.CLUSTER)
    for name, rv in cached.items():
        store.apply("ADDED", pod(rv, name=name))
    keys = store.merge_list([pod(rv, name=name) for name, rv in listed.items()], {None: list_rv})
    assert store.names(KEY) == expected
    assert keys == ({KEY} if changed else set())


def test_a_pod_dropped_by_a_relist_is_not_brought_back_by_a_late_event() -> None:
    store = ChildStore(labels.CLUSTER)
    store.apply("ADDED", pod("10"))
    store.merge_list([], {None: "20"})
    assert store.apply("MODIFIED", pod("15")) is None
    assert store.apply("ADDED", pod("21")) == KEY  # created after the list: a new pod


def test_a_relist_does_not_bring_back_a_pod_deleted_while_it_ran() -> None:
    store = ChildStore(labels.CLUSTER)
    store.apply("ADDED", pod("10"))
    store.apply("DELETED", pod("25"))
    assert store.merge_list([pod("10")], {None: "20"}) == set()
    assert store.get(KEY, "demo-cpu-aaaaa") is None


def test_clusters() -> None:
    cache = WatchCache(labels.CLUSTER)
    old = manifest(name="old")
    old["metadata"]["resourceVersion"] = "5"
    young = manifest(name="young")
    young["metadata"]["resourceVersion"] = "50"
    cache.objects.put((NAMESPACE, "old"), old)
    cache.objects.put((NAMESPACE, "young"), young)
    cache.objects.record_status((NAMESPACE, "old"), {"phase": "Running"})
    body = cache.objects.get((NAMESPACE, "old"))
    assert body is not None and body["status"] == {"phase": "Running"}
    cache.objects.record_status((NAMESPACE, "old"), {"phase": "Pending", "endTime": None})  # a merge patch
    assert body["status"] == {"phase": "Pending"}, "a None removes its field, as the API server does"
    gone, unknown = cache.objects.gone_from_list(None, [manifest(name="new")], "20")
    assert gone == [(NAMESPACE, "old")], "the young one was made after the list"
    assert [b["metadata"]["name"] for b in unknown] == ["new"]
    assert cache.objects.gone_from_list("elsewhere", [], "20") == ([], [])
    cache.objects.drop((NAMESPACE, "old"))
    assert cache.objects.keys() == [(NAMESPACE, "young")]


def test_an_answer_that_a_pod_is_gone_outruns_its_added_event() -> None:
    """Found by the property test: removed at once, answered before the watch reported it at all."""
    store = ChildStore(labels.CLUSTER)
    assert not store.gone(KEY, "demo-cpu-aaaaa", "u1")
    assert store.apply("ADDED", pod("10", uid="u1")) is None
    assert store.get(KEY, "demo-cpu-aaaaa") is None
