"""The kopf wiring's assumptions: only watching handlers, so kopf's diff base can be skipped."""

from __future__ import annotations

import kopf

from swarm_operator import handlers


def test_only_watching_handlers_are_registered() -> None:
    # NoDiffBase is safe only while no change/daemon handler exists: kopf diffs only for those
    # (these registries are what kopf's own cause detection consults).
    registry = kopf.get_default_registry()
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
    # Pods and services come from kit/watch.py's reflectors, not kopf.
    assert {h.id for h in registry._watching.get_all_handlers()} == {"swarmcluster_event", "swarmjob_event"}


def test_no_diff_base_builds_nothing_from_a_body() -> None:
    body = kopf.Body({"metadata": {"name": "c", "annotations": {"a": "b"}}, "spec": {"x": [1, 2]}})
    storage = handlers.NoDiffBase()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
