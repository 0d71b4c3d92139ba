"""The hostile corpus (tests/cases/hostile_manifests.py) against the operator's parser and the local schema,
and the schema-derived strategies (tests/cases/crd_strategies.py) against both. No API server: the
integration tier (tests/integration/test_hostile_input.py) sends the same input to a real one."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from tests.cases.crd_schema import schema_errors
from tests.cases.crd_strategies import Generated, blame_for, generated, in_schema_spec, manifest_of
from tests.cases.hostile_manifests import HOSTILE_CASES, ODDITIES, SERVER_ONLY_CASES, STATUS_GARBAGE
from tests.cases.invalid_manifests import CASES, InvalidCase


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def test_the_corpus_is_large_and_its_ids_are_unique() -> None:
    ids = [c.id for c in (*CASES, *HOSTILE_CASES)] + [c.id for c in SERVER_ONLY_CASES] + [o.id for o in ODDITIES]
    assert len(ids) == len(set(ids))
    assert len(HOSTILE_CASES) + len(SERVER_ONLY_CASES) + len(ODDITIES) >= 50
    assert len({g.id for g in STATUS_GARBAGE}) == len(STATUS_GARBAGE) >= 20


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=lambda c: c.id)
def test_operator_names_the_field(case: InvalidCase) -> None:
    manifest = copy.deepcopy(case.manifest)
    with pytest.raises(SpecError) as info:
        parse_cluster(manifest)
    assert manifest == case.manifest, "parse_cluster must not modify its input"
    paths = [e.path for e in info.value.errors]
    assert any(under(p, case.field) for p in paths), f"no error at {case.field}: {paths}"
    assert all(under(p, case.field) for p in paths), f"errors outside {case.field}: {paths}"


@pytest.mark.parametrize("case", [c for c in HOSTILE_CASES if c.rejected_by == "schema"], ids=lambda c: c.id)
def test_schema_case_is_rejected_by_the_local_schema(case: InvalidCase) -> None:
    errors = schema_errors(case.manifest)
    assert case.api_field in errors, f"schema errors name {errors}, the case expects {case.api_field}"


@pytest.mark.parametrize("case", [c for c in HOSTILE_CASES if c.rejected_by != "schema"], ids=lambda c: c.id)
def test_other_case_passes_the_local_schema(case: InvalidCase) -> None:
    assert schema_errors(case.manifest) == []


@pytest.mark.parametrize("oddity", ODDITIES, ids=lambda o: o.id)
def test_oddity_parses_and_renders(oddity: Any) -> None:
    manifest = {k: v for k, v in copy.deepcopy(oddity.manifest).items() if k != "status"}
    manifest["spec"] = _as_stored(manifest["spec"])
    assert schema_errors(manifest) == []
    cluster = parse_cluster({**manifest, "metadata": {**manifest["metadata"], "namespace": "ns", "uid": "u"}})
    pods = [build_head_pod(cluster), *(build_worker_pod(cluster, g, "abcde") for g in cluster.worker_groups)]
    for pod in pods:
        assert pod["metadata"]["labels"]["swarm.io/cluster"] == cluster.name
        assert len(pod["metadata"]["name"]) <= 63
        # argv, never a shell line: a rayStartParams value stays one element
        assert pod["spec"]["containers"][0]["command"] == ["ray"]


def _as_stored(value: Any) -> Any:
    """What the API server stores: nulls dropped, whole floats as integers (1.0 → 1)."""
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_as_stored(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def test_blame_covers_ancestors_and_cel_partners() -> None:
    assert blame_for("spec.workerGroups[1].maxReplicas") == (
        "spec.workerGroups[1].maxReplicas", "spec.workerGroups", "spec.workerGroups[1]",
        "spec.workerGroups[1].replicas", "spec.workerGroups[1].minReplicas")
    assert "spec.workerGroups" in blame_for("metadata.name")


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(spec=in_schema_spec())
def test_in_schema_samples_pass_the_local_schema_and_render(spec: dict[str, Any]) -> None:
    manifest = manifest_of(spec, "gen-001")
    assert schema_errors(manifest) == []
    try:
        cluster = parse_cluster({**manifest, "metadata": {"name": "gen-001", "namespace": "ns", "uid": "u"}})
    except SpecError as exc:
        # What only the operator checks inside a schema-valid spec: plain bytes for object-store-memory,
        # Python's (wider) idea of whitespace in a Redis address.
        assert all(_operator_only(e.path) for e in exc.errors), str(exc)
        return
    for g in cluster.worker_groups:
        json.dumps(build_worker_pod(cluster, g, "abcde"))


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(sample=generated())
def test_a_mutation_is_blamed_on_its_field_by_the_operator(sample: Generated) -> None:
    """Whatever the operator refuses in a one-field mutation, it blames on that field (or what a rule ties to it)."""
    try:
        parse_cluster({**sample.manifest, "metadata": {**sample.manifest["metadata"], "namespace": "ns"}})
    except SpecError as exc:
        blamed = [e.path for e in exc.errors]
        others = [p for p in blamed if not any(under(p, b) for b in sample.blame)]
        assert all(_operator_only(p) for p in others), (sample.describe(), blamed)


def _operator_only(path: str) -> bool:
    """Fields the operator checks further than the schema can (their in-schema values may still be refused)."""
    return ".rayStartParams.object-store-memory" in path or path.endswith(".redisAddress")
