"""resources/revision.py: what a pod records it was built from, and what a change restarts."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.resources import revision
from swarm_operator.resources.pods import build_head_pod, head_hash, worker_hash
from tests.unit.operator_fixtures import cluster, group

BASE = cluster(groups=[group("cpu", 2)])


def _cpu(spec: dict[str, Any] | None = None, **g: Any) -> Any:
    c = cluster(spec, groups=[group("cpu", 2, **g)])
    return revision.worker_parts(c, c.worker_groups[0])


@pytest.mark.parametrize(
    ("spec", "group_extra", "changed"),
    [
        pytest.param({}, {}, [], id="same-spec"),
        pytest.param({"image": "rayproject/ray:2.59.0"}, {}, ["image"], id="image"),
        pytest.param({}, {"resources": {"cpu": "2", "memory": "1Gi"}}, ["resources"], id="resources"),
        pytest.param({}, {"rayResources": {"accel": 1}}, ["rayResources"], id="ray-resources"),
        pytest.param({}, {"rayStartParams": {"object-store-memory": "100000000"}}, ["rayStartParams"],
                     id="ray-start-params"),
        pytest.param({}, {"template": {"spec": {"nodeSelector": {"pool": "a"}}}}, ["template"], id="template-spec"),
        pytest.param({}, {"template": {"metadata": {"labels": {"team": "ml"}}}}, [], id="template-metadata-only"),
        pytest.param({}, {"minReplicas": 1, "maxReplicas": 20}, [], id="replica-counts-restart-nothing"),
        pytest.param({"faultTolerance": {"gcs": {"redisAddress": "redis:6379"}}}, {}, ["gcsFaultTolerance"],
                     id="gcs-fault-tolerance"),
    ],
)
def test_changed_parts(spec: dict[str, Any], group_extra: dict[str, Any], changed: list[str]) -> None:
    recorded = revision.part_hashes(_cpu())
    parts = _cpu(spec, **group_extra)
    assert revision.changed_parts(recorded, parts) == changed
    assert (revision.revision_hash(parts) != revision.revision_hash(_cpu())) is bool(changed)


@pytest.mark.parametrize(
    ("changed", "text"),
    [
        pytest.param(["image"], "spec.image changed", id="one"),
        pytest.param(["image", "resources", "template"], "spec.image, resources and template.spec changed",
                     id="three"),
        pytest.param([], "its pod template changed (a pod without a revision record, made by an older operator)",
                     id="no-record"),
    ],
)
def test_describe_change(changed: list[str], text: str) -> None:
    assert revision.describe_change(changed) == text


def test_a_new_unset_gcs_option_keeps_the_hash() -> None:
    """Options a later operator adds default to unset and stay out of the hash: upgrading restarts nothing."""
    c = cluster({"faultTolerance": {"gcs": {"redisAddress": "redis:6379"}}})
    assert revision.head_parts(c)["gcsFaultTolerance"] == {"redis_address": "redis:6379"}


def test_hashes_are_pinned() -> None:
    """A change to how hashes are computed replaces every running pod when the operator is upgraded.
    If this fails, the change must keep old pods' hashes (or be called out as a restarting upgrade)."""
    assert (head_hash(BASE), worker_hash(BASE, BASE.worker_groups[0])) == ("d76248e8d1", "e76ce9584c")


def test_the_record_reads_back() -> None:
    pod = build_head_pod(BASE)
    annotations = pod["metadata"]["annotations"]
    assert revision.read_json_annotation(annotations, revision.REVISION) == revision.part_hashes(
        revision.head_parts(BASE))
    assert revision.read_json_annotation(annotations, revision.TEMPLATE_METADATA) == {"labels": {},
                                                                                        "annotations": {}}
    assert revision.read_json_annotation({revision.REVISION: "not json"}, revision.REVISION) is None
    assert revision.read_json_annotation({revision.REVISION: "[1]"}, revision.REVISION) is None

