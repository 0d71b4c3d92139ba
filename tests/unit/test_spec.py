"""spec.parse_cluster: every invalid manifest names its field; valid ones parse with the documented defaults."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import FieldError, SpecError
from swarm_operator.spec.rules import DEFAULT_GPU_RESOURCE, DEFAULT_IMAGE
from tests.cases.invalid_manifests import (
    CASES,
    CASES_BY_ID,
    DELETE,
    LAYERS,
    InvalidCase,
    base_manifest,
    get_path,
    mutated,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
GiB = 2**30


def sample_clusters() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in SAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "SwarmCluster":
                yield f"{path.stem}/{doc['metadata']['name']}", doc


def under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or a field/element below it."""
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def errors_of(manifest: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(SpecError) as info:
        parse_cluster(manifest)
    return info.value.errors


# --- the corpus ---------------------------------------------------------------------------------


def test_corpus_is_large_and_covers_every_layer() -> None:
    assert len(CASES) >= 40
    assert {c.rejected_by for c in CASES} == set(LAYERS)
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c.id) for c in CASES)


def test_base_manifest_is_valid() -> None:
    cluster = parse_cluster(base_manifest())
    assert [g.name for g in cluster.worker_groups] == ["cpu", "gpu"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case_differs_from_the_valid_base(case: InvalidCase) -> None:
    assert case.manifest != base_manifest()
    assert case.manifest["apiVersion"] == "swarm.io/v1alpha1"
    assert case.manifest["kind"] == "SwarmCluster"
    assert case.manifest["metadata"]["name"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_names_its_field(case: InvalidCase) -> None:
    manifest = copy.deepcopy(case.manifest)
    errors = errors_of(manifest)
    assert manifest == case.manifest, "parse_cluster must not modify its input"
    paths = [e.path for e in errors]
    assert any(under(p, case.field) for p in paths), f"no error at {case.field}: {paths}"
    # Each case breaks one thing: an error anywhere else would send the user to the wrong field.
    assert all(under(p, case.field) for p in paths), f"errors outside {case.field}: {paths}"
    for e in errors:
        assert str(e).startswith(f"{e.path}: ")
        assert e.message.strip()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_spec_error_text_lists_every_error_with_its_path(case: InvalidCase) -> None:
    with pytest.raises(SpecError) as info:
        parse_cluster(case.manifest)
    text = str(info.value)
    assert isinstance(info.value, ValueError)
    assert case.field in text
    assert text.splitlines() == [str(e) for e in info.value.errors]


# The offending part of these is a map key, and the key is the last part of the path.
_KEY_IS_THE_OFFENCE = (".rayStartParams.", ".rayResources.")


def _scalar_value_cases() -> list[Any]:
    """Cases whose broken field holds a scalar the message should repeat (not missing, not a bad key)."""
    out = []
    for case in CASES:
        try:
            value = get_path(case.manifest, case.field)
        except (LookupError, TypeError):
            continue
        if not isinstance(value, dict | list) and not any(k in case.field for k in _KEY_IS_THE_OFFENCE):
            out.append(pytest.param(case, value, id=case.id))
    return out


@pytest.mark.parametrize(("case", "value"), _scalar_value_cases())
def test_message_shows_the_offending_value(case: InvalidCase, value: Any) -> None:
    messages = " ".join(e.message for e in errors_of(case.manifest) if e.path == case.field)
    if case.id == "cluster-plus-group-name-too-long":
        assert "(40 + 20)" in messages  # the two lengths are what the user needs
    else:
        assert repr(value) in messages or str(value) in messages, messages


def test_example_message_format() -> None:
    errors = errors_of(CASES_BY_ID["min-greater-than-max"].manifest)
    assert [str(e) for e in errors] == ["spec.workerGroups[1].maxReplicas: must be ≥ minReplicas (2 < 4)"]


def test_every_error_is_reported_at_once() -> None:
    manifest = mutated({
        "spec.workerGroups[0].replicas": 9,
        "spec.head.serviceType": "External",
        "spec.workerGroups[1].resources.gpu": -2,
        "spec.autoscaling.intervalSeconds": 0,
    })
    paths = [e.path for e in errors_of(manifest)]
    assert sorted(paths) == sorted([
        "spec.workerGroups[0].replicas",
        "spec.head.serviceType",
        "spec.workerGroups[1].resources.gpu",
        "spec.autoscaling.intervalSeconds",
    ])


def test_duplicate_names_the_first_occurrence() -> None:
    manifest = mutated({"spec.workerGroups": [{"name": "a"}, {"name": "b"}, {"name": "a"}]})
    assert [str(e) for e in errors_of(manifest)] == [
        "spec.workerGroups[2].name: duplicates spec.workerGroups[0].name ('a')"
    ]


def test_long_values_are_shortened_in_messages() -> None:
    errors = errors_of(mutated({"spec.head.serviceType": "x" * 500}))
    assert len(str(errors[0])) < 200
    assert str(errors[0]).startswith("spec.head.serviceType: ")


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        pytest.param({}, "spec", id="empty-object"),
        pytest.param({"metadata": "demo", "spec": {}}, "metadata.name", id="metadata-not-object"),
        pytest.param({"metadata": {"name": 5}, "spec": {}}, "metadata.name", id="name-not-string"),
        pytest.param({"metadata": {}, "spec": {}}, "metadata.name", id="name-missing"),
    ],
)
def test_broken_envelopes(obj: dict[str, Any], path: str) -> None:
    assert path in [e.path for e in errors_of(obj)]


# --- valid manifests ------------------------------------------------------------------------------


def test_samples_exist() -> None:
    assert len(list(sample_clusters())) >= 3


@pytest.mark.parametrize(("name", "doc"), list(sample_clusters()), ids=[n for n, _ in sample_clusters()])
def test_sample_parses(name: str, doc: dict[str, Any]) -> None:
    cluster = parse_cluster(doc)
    assert cluster.name == doc["metadata"]["name"]
    assert [g.name for g in cluster.worker_groups] == [g["name"] for g in doc["spec"].get("workerGroups", [])]


def test_gpu_sample_values() -> None:
    doc = next(d for n, d in sample_clusters() if n.startswith("gpu-autoscaling"))
    cluster = parse_cluster(doc)
    gpu = cluster.group("gpu")
    assert gpu is not None
    assert gpu.resources.gpu == 1
    assert dict(gpu.ray_resources) == {"accelerator_type_T4": 1.0}
    assert cluster.autoscaling.enabled is True
    assert cluster.autoscaling.interval_seconds == 2.0
    assert cluster.group("nope") is None


def test_gcs_sample_values() -> None:
    doc = next(d for n, d in sample_clusters() if n.startswith("gcs-fault-tolerance"))
    gcs = parse_cluster(doc).fault_tolerance.gcs
    assert gcs is not None
    assert (gcs.redis_address, gcs.password_secret_name, gcs.password_secret_key) == (
        "redis.default.svc.cluster.local:6379", "ray-redis", "password")


def _get(obj: Any, path: str) -> Any:
    """Attribute path on the parsed spec, e.g. "worker_groups[0].resources.cpu"."""
    for part in path.split("."):
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
        assert m, part
        obj = getattr(obj, m.group(1))
        if m.group(2) is not None:
            obj = obj[int(m.group(2))]
    return obj


MINIMAL: dict[str, Any] = {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster",
                           "metadata": {"name": "tiny"}, "spec": {}}
ONE_GROUP: dict[str, Any] = {**MINIMAL, "spec": {"workerGroups": [{"name": "w"}]}}


DEFAULTS: list[tuple[dict[str, Any], str, Any]] = [
    (MINIMAL, "namespace", "default"),
    (MINIMAL, "uid", ""),
    (MINIMAL, "generation", 0),
    (MINIMAL, "ray_version", None),
    (MINIMAL, "image", DEFAULT_IMAGE),
    (MINIMAL, "suspend", False),
    (MINIMAL, "worker_groups", ()),
    (MINIMAL, "head.resources.cpu", Decimal(1)),
    (MINIMAL, "head.resources.memory", 2 * GiB),
    (MINIMAL, "head.resources.gpu", 0),
    (MINIMAL, "head.resources.gpu_resource_name", DEFAULT_GPU_RESOURCE),
    (MINIMAL, "head.resources.cpu_text", "1"),
    (MINIMAL, "head.resources.memory_text", "2Gi"),
    (MINIMAL, "head.service_type", "Headless"),
    (MINIMAL, "head.ray_start_params", {}),
    (MINIMAL, "head.template", {}),
    (MINIMAL, "autoscaling.enabled", False),
    (MINIMAL, "autoscaling.idle_timeout_seconds", 60),
    (MINIMAL, "autoscaling.interval_seconds", 5.0),
    (MINIMAL, "autoscaling.upscaling_speed", 1.0),
    (MINIMAL, "autoscaling.conserve_gpu_nodes", True),
    (MINIMAL, "autoscaling.scale_down_stabilization_seconds", 30),
    (MINIMAL, "autoscaling.pending_timeout_seconds", 600),
    (MINIMAL, "fault_tolerance.backoff_initial_seconds", 1.0),
    (MINIMAL, "fault_tolerance.backoff_max_seconds", 300.0),
    (MINIMAL, "fault_tolerance.gcs", None),
    (MINIMAL, "update_strategy.type", "Rolling"),
    (MINIMAL, "update_strategy.max_unavailable", 1),
    (ONE_GROUP, "worker_groups[0].name", "w"),
    (ONE_GROUP, "worker_groups[0].replicas", None),
    (ONE_GROUP, "worker_groups[0].min_replicas", 0),
    (ONE_GROUP, "worker_groups[0].max_replicas", 10),
    (ONE_GROUP, "worker_groups[0].resources.cpu", Decimal(1)),
    (ONE_GROUP, "worker_groups[0].resources.memory", 2 * GiB),
    (ONE_GROUP, "worker_groups[0].resources.gpu", 0),
    (ONE_GROUP, "worker_groups[0].resources.gpu_resource_name", DEFAULT_GPU_RESOURCE),
    (ONE_GROUP, "worker_groups[0].ray_resources", {}),
    (ONE_GROUP, "worker_groups[0].ray_start_params", {}),
    (ONE_GROUP, "worker_groups[0].template", {}),
]


@pytest.mark.parametrize(("manifest", "attr", "expected"), DEFAULTS, ids=[a for _, a, _ in DEFAULTS])
def test_defaults(manifest: dict[str, Any], attr: str, expected: Any) -> None:
    value = _get(parse_cluster(manifest), attr)
    if isinstance(expected, dict):
        assert dict(value) == expected
    else:
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("changes", "attr", "expected"),
    [
        ({"metadata.namespace": "ml", "metadata.uid": "u-1", "metadata.generation": 7}, "namespace", "ml"),
        ({"metadata.uid": "u-1"}, "uid", "u-1"),
        ({"metadata.generation": 7}, "generation", 7),
        ({"spec.suspend": True}, "suspend", True),
        ({"spec.workerGroups[0].resources.cpu": "500m"}, "worker_groups[0].resources.cpu", Decimal("0.5")),
        ({"spec.workerGroups[0].resources.cpu": "500m"}, "worker_groups[0].resources.cpu_text", "500m"),
        ({"spec.workerGroups[0].resources.memory": "1500Mi"}, "worker_groups[0].resources.memory", 1500 * 2**20),
        ({"spec.workerGroups[0].resources.memory": 1000}, "worker_groups[0].resources.memory_text", "1000"),
        ({"spec.workerGroups[1].resources.gpuResourceName": "amd.com/gpu"},
         "worker_groups[1].resources.gpu_resource_name", "amd.com/gpu"),
        ({"spec.head.serviceType": "LoadBalancer"}, "head.service_type", "LoadBalancer"),
        ({"spec.head.rayStartParams": {"object-store-memory": 100000000, "include-dashboard": "false"}},
         "head.ray_start_params", {"object-store-memory": "100000000", "include-dashboard": "false"}),
        ({"spec.workerGroups[1].rayResources": {"TPU": 4, "slice": 2}},
         "worker_groups[1].ray_resources", {"TPU": 4.0, "slice": 2.0}),
        ({"spec.workerGroups[1].replicas": 3}, "worker_groups[1].replicas", 3),
        ({"spec.autoscaling.intervalSeconds": 1}, "autoscaling.interval_seconds", 1.0),
        ({"spec.faultTolerance.gcs": {"redisAddress": "redis:6379"}}, "fault_tolerance.gcs.redis_address",
         "redis:6379"),
        ({"spec.faultTolerance.gcs": {"redisAddress": "redis:6379"}}, "fault_tolerance.gcs.password_secret_name",
         None),
        ({"spec.updateStrategy": {"type": "OnDelete", "maxUnavailable": 3}}, "update_strategy.max_unavailable", 3),
        ({"spec.workerGroups": DELETE}, "worker_groups", ()),
        ({"spec.workerGroups": None}, "worker_groups", ()),
        ({"spec.rayVersion": "2.60.0rc1"}, "ray_version", "2.60.0rc1"),
    ],
)
def test_values_are_taken_from_the_manifest(changes: dict[str, Any], attr: str, expected: Any) -> None:
    value = _get(parse_cluster(mutated(changes)), attr)
    assert (dict(value) if isinstance(expected, dict) else value) == expected


@pytest.mark.parametrize(
    ("replicas", "lo", "expected"),
    [(None, 0, 0), (None, 2, 2), (3, 1, 3), (0, 0, 0)],
)
def test_initial_replicas(replicas: int | None, lo: int, expected: int) -> None:
    group: dict[str, Any] = {"name": "w", "minReplicas": lo, "maxReplicas": 5}
    if replicas is not None:
        group["replicas"] = replicas
    cluster = parse_cluster({**MINIMAL, "spec": {"workerGroups": [group]}})
    assert cluster.worker_groups[0].initial_replicas() == expected


def test_parsed_spec_is_immutable() -> None:
    cluster = parse_cluster(base_manifest())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cluster.head.ray_start_params["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        cluster.worker_groups[0].ray_resources["x"] = 1.0  # type: ignore[index]


def test_junk_generation_is_ignored() -> None:
    assert parse_cluster(mutated({"metadata.generation": "x"})).generation == 0
