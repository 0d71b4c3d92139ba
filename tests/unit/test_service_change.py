"""reconcile.service: the head service's annotations and type, patched in place or (headless ↔ not) re-created."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from swarm_operator.reconcile.service import ServiceChange, service_change
from swarm_operator.resources.labels import OWNED_ANNOTATIONS
from swarm_operator.resources.service import build_head_service
from tests.unit.test_builders import make_cluster

LB = "service.beta.kubernetes.io/aws-load-balancer-internal"
SCHEME = "service.beta.kubernetes.io/aws-load-balancer-scheme"


def desired(annotations: dict[str, str] | None = None, service_type: str = "Headless") -> dict[str, Any]:
    changes: dict[str, Any] = {"spec.head.serviceType": service_type}
    if annotations is not None:
        changes["spec.head.service.annotations"] = annotations
    return build_head_service(make_cluster(changes))


def live(built: dict[str, Any], **extra_annotations: str) -> dict[str, Any]:
    """The service as the API server returns it: a clusterIP allocated, others' annotations added."""
    svc = copy.deepcopy(built)
    if svc["spec"].get("clusterIP") != "None":
        svc["spec"]["clusterIP"] = "10.96.0.17"
    if extra_annotations:
        svc["metadata"].setdefault("annotations", {}).update(extra_annotations)
    return svc


@pytest.mark.parametrize(
    ("want", "have", "patch"),
    [
        pytest.param(desired(), live(desired()), None, id="unchanged"),
        pytest.param(desired({LB: "true"}), live(desired({LB: "true"}), other="x"), None,
                     id="unchanged-with-others-annotations"),
        pytest.param(desired({LB: "true"}), live(desired()),
                     {"metadata": {"annotations": {LB: "true", OWNED_ANNOTATIONS: f'["{LB}"]'}}}, id="added"),
        pytest.param(desired({LB: "false"}), live(desired({LB: "true"})),
                     {"metadata": {"annotations": {LB: "false"}}}, id="changed"),
        pytest.param(desired({LB: "true"}), live(desired({LB: "true", SCHEME: "internal"}), other="kept"),
                     {"metadata": {"annotations": {SCHEME: None, OWNED_ANNOTATIONS: f'["{LB}"]'}}},
                     id="dropped-key-removed-others-kept"),
        pytest.param(desired(), live(desired({LB: "true"}), other="kept"),
                     {"metadata": {"annotations": {LB: None, OWNED_ANNOTATIONS: None}}}, id="all-dropped"),
        pytest.param(desired(service_type="LoadBalancer"), live(desired(service_type="ClusterIP")),
                     {"spec": {"type": "LoadBalancer"}}, id="type-in-place"),
        pytest.param(desired({LB: "true"}, "LoadBalancer"), live(desired(service_type="NodePort")),
                     {"metadata": {"annotations": {LB: "true", OWNED_ANNOTATIONS: f'["{LB}"]'}},
                      "spec": {"type": "LoadBalancer"}}, id="type-and-annotations"),
        pytest.param(desired(), live(desired({LB: "true"}), **{OWNED_ANNOTATIONS: "not json", LB: "true"}),
                     {"metadata": {"annotations": {OWNED_ANNOTATIONS: None}}},
                     id="garbled-bookkeeping-removes-only-itself"),
    ],
)
def test_patched_in_place(want: dict[str, Any], have: dict[str, Any], patch: dict[str, Any] | None) -> None:
    change = service_change(want, have)
    assert (change.patch if change else None) == patch
    assert change is None or not change.recreate


@pytest.mark.parametrize(("before", "after"), [("Headless", "ClusterIP"), ("LoadBalancer", "Headless")])
def test_headless_and_not_is_a_new_service(before: str, after: str) -> None:
    change = service_change(desired(service_type=after), live(desired(service_type=before)))
    assert isinstance(change, ServiceChange) and change.recreate and change.patch is None
    assert "spec.head.serviceType" in change.reason and before in change.reason and after in change.reason


def test_reason_names_what_changed() -> None:
    change = service_change(desired({LB: "true"}, "LoadBalancer"),
                            live(desired({SCHEME: "internal"}, "ClusterIP")))
    assert change is not None
    assert change.reason == (f"demo-head-svc: annotations {LB} set; annotations {SCHEME} removed; "
                             "type ClusterIP → LoadBalancer")


def test_the_built_service_records_the_keys_it_applies() -> None:
    svc = desired({SCHEME: "internal", LB: "true"})
    assert svc["metadata"]["annotations"] == {LB: "true", SCHEME: "internal",
                                              OWNED_ANNOTATIONS: f'["{LB}","{SCHEME}"]'}
    assert "annotations" not in desired()["metadata"]
