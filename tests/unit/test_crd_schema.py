"""The CRD: structural, validates the samples, rejects what its schema can express, agrees with spec/rules.py.

The OpenAPI schema is checked locally with `jsonschema` (see tests/cases/crd_schema.py for how
Kubernetes' extensions are mapped), with the CRD's defaults applied first, as the API server does.
CEL rules (x-kubernetes-validations) cannot be evaluated here: corpus cases that only a CEL
rule rejects are checked to pass the structural schema, and tests/integration runs them against
a real API server.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from swarm_operator.spec import rules as spec_rules
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from tests.cases.crd_schema import CRD, ROOT, SAMPLES, apply_defaults, schema_errors, to_json_schema, version, walk
from tests.cases.invalid_manifests import CASES, InvalidCase, base_manifest, mutated


def sample_clusters() -> list[Any]:
    out = []
    for path in SAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "SwarmCluster":
                out.append(pytest.param(doc, id=path.stem))
    return out


# --- the CRD object --------------------------------------------------------------------------------


def test_names_and_scope() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == f"{CRD['spec']['names']['plural']}.{CRD['spec']['group']}"
    assert CRD["spec"]["group"] == "swarm.io"
    assert CRD["spec"]["scope"] == "Namespaced"
    names = CRD["spec"]["names"]
    assert names["kind"] == "SwarmCluster"
    assert names["plural"] == "swarmclusters"
    assert names["singular"] == "swarmcluster"
    assert set(names["shortNames"]) == {"swc", "swarm"}
    v = version()
    assert v["name"] == "v1alpha1" and v["served"] is True and v["storage"] is True


def test_status_subresource() -> None:
    assert version()["subresources"]["status"] == {}
    assert ROOT["properties"]["status"]["type"] == "object"


def _schema_at(json_path: str) -> dict[str, Any]:
    node = ROOT
    for part in json_path.strip(".").split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize(
    ("name", "json_path", "col_type"),
    [
        ("Phase", ".status.phase", "string"),
        ("Head", ".status.head.ready", "boolean"),
        ("Workers", ".status.workers", "string"),
        ("GPUs", ".status.gpus", "integer"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ],
)
def test_printer_column(name: str, json_path: str, col_type: str) -> None:
    columns = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    assert columns[name]["jsonPath"] == json_path
    assert columns[name]["type"] == col_type
    if json_path.startswith(".status."):
        assert _schema_at(json_path)["type"] == col_type, "a column's type must match the field it prints"


def test_printer_columns_in_order() -> None:
    assert [c["name"] for c in version()["additionalPrinterColumns"]] == ["Phase", "Head", "Workers", "GPUs", "Age"]


# --- structural schema rules -------------------------------------------------------------------


def test_every_node_has_a_type() -> None:
    untyped = [p for p, n in walk(ROOT) if "type" not in n and not n.get("x-kubernetes-int-or-string")]
    assert untyped == []


def test_int_or_string_nodes_have_no_type() -> None:
    typed = [p for p, n in walk(ROOT) if n.get("x-kubernetes-int-or-string") and "type" in n]
    assert typed == []
    assert {p for p, n in walk(ROOT) if n.get("x-kubernetes-int-or-string")} == {
        "spec.head.resources.cpu", "spec.head.resources.memory",
        "spec.workerGroups[].resources.cpu", "spec.workerGroups[].resources.memory",
        "spec.head.resources.requests{*}", "spec.head.resources.limits{*}",
        "spec.workerGroups[].resources.requests{*}", "spec.workerGroups[].resources.limits{*}",
    }


def test_no_node_has_both_properties_and_additional_properties() -> None:
    assert [p for p, n in walk(ROOT) if "properties" in n and "additionalProperties" in n] == []


def test_only_pod_templates_preserve_unknown_fields() -> None:
    preserving = {p for p, n in walk(ROOT) if n.get("x-kubernetes-preserve-unknown-fields")}
    assert preserving == {"spec.head.template", "spec.workerGroups[].template"}


def test_metadata_is_a_plain_object() -> None:
    assert ROOT["properties"]["metadata"] == {"type": "object"}


def test_list_map_keys_are_required() -> None:
    lists = [(p, n) for p, n in walk(ROOT) if n.get("x-kubernetes-list-type") == "map"]
    assert {p for p, _ in lists} == {"spec.workerGroups", "status.conditions", "status.workerGroups"}
    for path, node in lists:
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in node["items"].get("required", []) or "default" in node["items"]["properties"][key], path


@pytest.mark.parametrize(("path", "node"), [pytest.param(p, n, id=p) for p, n in walk(ROOT) if "default" in n])
def test_defaults_are_valid_for_their_own_schema(path: str, node: dict[str, Any]) -> None:
    default = apply_defaults(node, copy.deepcopy(node["default"]))
    jsonschema.Draft4Validator(to_json_schema(node)).validate(default)


def _resolve_field_path(node: dict[str, Any], field_path: str) -> dict[str, Any]:
    for part in field_path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_cel_rules_are_well_formed() -> None:
    rules = [(p, r) for p, n in walk(ROOT) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 8
    for path, rule in rules:
        assert set(rule) <= {"rule", "message", "fieldPath", "reason", "messageExpression"}, path
        assert rule["rule"].strip() and rule["message"].strip(), path
        assert rule["rule"].count("(") == rule["rule"].count(")"), path
        node = dict(walk(ROOT))[path]
        if "fieldPath" in rule:
            _resolve_field_path(node, rule["fieldPath"])  # KeyError if the path names no field


# --- spec/rules.py and the CRD say the same thing -------------------------------------------------------


def _props(path: str) -> dict[str, Any]:
    return dict(walk(ROOT))[path]


@pytest.mark.parametrize(
    ("schema_path", "regex"),
    [
        ("spec.workerGroups[].name", spec_rules.DNS_LABEL),
        ("spec.head.resources.gpuResourceName", spec_rules.RESOURCE_NAME),
        ("spec.faultTolerance.gcs.redisAddress", spec_rules.REDIS_ADDRESS),
        ("spec.rayVersion", spec_rules.VERSION_TEXT),
        ("spec.faultTolerance.gcs.redisPasswordSecret.name", spec_rules.SECRET_NAME),
        ("spec.faultTolerance.gcs.redisPasswordSecret.key", spec_rules.SECRET_KEY),
    ],
)
def test_patterns_match_spec(schema_path: str, regex: re.Pattern[str]) -> None:
    assert _props(schema_path)["pattern"] == regex.pattern


def _rule_texts(schema_path: str) -> str:
    return " ".join(r["rule"] for r in _props(schema_path).get("x-kubernetes-validations", []))


def test_cel_rules_name_what_spec_checks() -> None:
    assert spec_rules.FLAG_NAME.pattern in _rule_texts("spec.head.rayStartParams")
    for flag in spec_rules.OPERATOR_OWNED_FLAGS:
        assert f"'{flag}'" in _rule_texts("spec.head.rayStartParams")
        assert f"'{flag}'" in _rule_texts("spec.workerGroups[].rayStartParams")
    for name in spec_rules.BUILTIN_RAY_RESOURCES:
        assert f"'{name}'" in _rule_texts("spec.workerGroups[].rayResources")
    root = _rule_texts("")
    assert f"<= {spec_rules.MAX_CLUSTER_NAME}" in root
    assert spec_rules.DNS_1035_LABEL.pattern in root
    assert f"+ {spec_rules.WORKER_SUFFIX_LEN + 2} <= {spec_rules.MAX_POD_NAME}" in root


def test_enums_and_bounds_match_spec() -> None:
    assert tuple(_props("spec.head.serviceType")["enum"]) == spec_rules.SERVICE_TYPES
    assert tuple(_props("spec.updateStrategy.type")["enum"]) == spec_rules.UPDATE_TYPES
    assert _props("spec.workerGroups[].name")["maxLength"] == spec_rules.MAX_GROUP_NAME
    assert _props("spec.workerGroups")["maxItems"] == spec_rules.MAX_GROUPS
    assert _props("spec.workerGroups[].resources.gpu")["maximum"] == spec_rules.MAX_GPUS
    assert _props("spec.image")["default"] == spec_rules.DEFAULT_IMAGE
    assert spec_rules.ACCELERATORS["nvidia"][0] == spec_rules.DEFAULT_GPU_RESOURCE
    for field in ("replicas", "minReplicas", "maxReplicas"):
        assert _props(f"spec.workerGroups[].{field}")["maximum"] == spec_rules.MAX_REPLICAS


def _concrete(schema_path: str) -> str:
    """spec.workerGroups[].x → spec.workerGroups[1].x (the GPU group of the base manifest)."""
    return schema_path.replace("[]", "[1]")


# Other fields a boundary value needs so that only the bound under test is in play.
_COMPANIONS: dict[str, dict[str, Any]] = {
    "spec.workerGroups[1].minReplicas": {"spec.workerGroups[1].maxReplicas": 10000},
    "spec.workerGroups[1].replicas": {"spec.workerGroups[1].maxReplicas": 10000},
    "spec.faultTolerance.workerBackoffInitialSeconds": {"spec.faultTolerance.workerBackoffMaxSeconds": 3600},
    **{f"{owner}.probes.{kind}.{field}": companions
       for owner in ("spec.head", "spec.workerGroups[1]") for kind in ("readiness", "liveness")
       for field, companions in (
           ("periodSeconds", {f"{owner}.probes.{kind}.timeoutSeconds": 1,
                              f"{owner}.probes.{kind}.failureThreshold": 1000}),
           ("timeoutSeconds", {f"{owner}.probes.{kind}.periodSeconds": 300}),
           ("failureThreshold", {f"{owner}.probes.{kind}.periodSeconds": 30}))},
    "spec.faultTolerance.gcs.cleanupTimeoutSeconds": {"spec.faultTolerance.gcs.redisAddress": "redis:6379"},
}


def _bounded_fields() -> Iterator[Any]:
    for path, node in walk(ROOT):
        if path.startswith("spec.") and node.get("type") in ("integer", "number") and "{*}" not in path:
            for bound in ("minimum", "maximum"):
                if bound in node:
                    yield pytest.param(path, node, bound, id=f"{path}-{bound}")


@pytest.mark.parametrize(("schema_path", "node", "bound"), list(_bounded_fields()))
def test_operator_enforces_the_same_numeric_bounds(schema_path: str, node: dict[str, Any], bound: str) -> None:
    """The CRD's bound is accepted by parse_cluster, one step beyond is rejected at that field."""
    field = _concrete(schema_path)
    limit = node[bound]
    step = 1 if node["type"] == "integer" else 0.001
    beyond = limit - step if bound == "minimum" else limit + step
    if field.endswith("replicas") or field.endswith("Replicas"):
        base = mutated({f"{field.rsplit('.', 1)[0]}.minReplicas": 0})
    else:
        base = base_manifest()
    companions = _COMPANIONS.get(field, {})
    ok = mutated({**companions, field: limit}, base)
    assert schema_errors(ok) == []
    parse_cluster(ok)
    bad = mutated({**companions, field: beyond}, base)
    assert field in schema_errors(bad)
    with pytest.raises(SpecError) as info:
        parse_cluster(bad)
    assert field in [e.path for e in info.value.errors]


def test_bounds_are_checked_for_every_numeric_field() -> None:
    assert len(list(_bounded_fields())) >= 20


# --- manifests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", sample_clusters())
def test_sample_validates(doc: dict[str, Any]) -> None:
    assert schema_errors(doc) == []


def test_base_manifest_validates() -> None:
    assert schema_errors(base_manifest()) == []


@pytest.mark.parametrize("doc", [*sample_clusters(), pytest.param(base_manifest(), id="base"),
                                 pytest.param({"metadata": {"name": "tiny"}, "spec": {}}, id="minimal"),
                                 pytest.param({"metadata": {"name": "w"}, "spec": {"workerGroups": [{"name": "a"}]}},
                                              id="one-group")])
def test_crd_defaults_agree_with_spec(doc: dict[str, Any]) -> None:
    """What the API server stores (defaults applied) parses exactly like what the user wrote."""
    defaulted = apply_defaults(ROOT, copy.deepcopy(doc))
    assert defaulted != doc
    assert parse_cluster(defaulted) == parse_cluster(doc)


def test_defaulting_fills_the_head() -> None:
    defaulted = apply_defaults(ROOT, {"metadata": {"name": "tiny"}, "spec": {}})
    # No resources: a default cpu or memory would clash with requests/limits, a default gpuResourceName with
    # accelerator (the operator defaults them, as inside workerGroups[]).
    assert defaulted["spec"]["head"] == {"serviceType": "Headless", "podDisruptionBudget": {"enabled": True}}


SCHEMA_CASES = [pytest.param(c, id=c.id) for c in CASES if c.rejected_by == "schema"]
OTHER_CASES = [pytest.param(c, id=c.id) for c in CASES if c.rejected_by != "schema"]


def test_most_cases_are_checkable_here() -> None:
    assert len(SCHEMA_CASES) >= 40


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_schema_case_is_rejected_by_the_schema(case: InvalidCase) -> None:
    errors = schema_errors(case.manifest)
    assert errors, "the structural schema accepts this manifest"
    assert case.api_field in errors, f"schema errors name {errors}, the case expects {case.api_field}"


@pytest.mark.parametrize("case", OTHER_CASES)
def test_non_schema_case_passes_the_schema(case: InvalidCase) -> None:
    """CEL, API-machinery and operator-only cases must not be schema violations (else mislabelled)."""
    assert schema_errors(case.manifest) == []


def test_nothing_is_defaulted_inside_spec_list_items() -> None:
    # A merge patch replaces a list item whole: a default stored inside one makes GitOps tools
    # (Argo CD's diff) report fields the user never wrote as OutOfSync.
    inside = [p for p, n in walk(ROOT) if "default" in n and p.startswith("spec.") and "[]" in p]
    assert inside == []


def test_worker_groups_default_in_spec_as_the_head_does_in_the_crd() -> None:
    parsed = parse_cluster({"metadata": {"name": "w"}, "spec": {"workerGroups": [{"name": "a"}]}})
    head_defaults = apply_defaults(ROOT, {"metadata": {"name": "w"}, "spec": {}})["spec"]["head"]
    group = parsed.worker_groups[0]
    assert (group.min_replicas, group.max_replicas) == (0, 10)
    assert group.resources == parse_cluster(
        {"metadata": {"name": "w"}, "spec": {"head": head_defaults}}).head.resources
