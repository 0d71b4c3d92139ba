"""Generated files stay current: the chart's CRD copy, manifests/install.yaml, docs/crd-reference.md,
docs/grafana/swarm-operator.json, and the tables of docs/operations.md.

Each test regenerates in memory and compares with what is committed; `python -m hack.generate`
rewrites them all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from hack import crd_docs, dashboard, generate
from localcluster import versions
from swarm_operator import metrics
from swarm_operator.reasons import ConditionType, EventReason

FIX = "stale: run `python -m hack.generate` and commit the result"


def test_chart_crd_is_the_crd() -> None:
    assert generate.CHART_CRD.read_bytes() == generate.CRD.read_bytes(), FIX
    assert generate.CHART_JOB_CRD.read_bytes() == generate.JOB_CRD.read_bytes(), FIX


def test_the_job_crds_cluster_spec_is_the_swarmcluster_spec() -> None:
    assert generate.JOB_CRD.read_text() == generate.job_crd(), FIX
    job = yaml.safe_load(generate.JOB_CRD.read_text())
    cluster_spec = job["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "clusterSpec"]
    assert {k: v for k, v in cluster_spec.items() if k != "description"} == generate.cluster_spec_schema()


def test_install_yaml_is_the_chart_rendered_with_defaults() -> None:
    helm = versions.helm_binary()
    if helm is None:
        pytest.skip("helm is not built: run `python -m localcluster build` (or put helm on PATH, or set HELM)")
    assert generate.INSTALL.read_text() == generate.install_yaml(helm), FIX


def test_install_yaml_applies_in_order_and_never_holds_the_crd() -> None:
    """kubectl apply -f creates in file order: the namespace before anything in it. The CRD is applied on
    its own: `kubectl delete -f install.yaml` must never delete it (and with it every SwarmCluster)."""
    docs = [d for d in yaml.safe_load_all(generate.INSTALL.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    assert "CustomResourceDefinition" not in kinds
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    namespaced = [d for d in docs if d["kind"] in ("ServiceAccount", "Service", "Deployment")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {generate.NAMESPACE}


def test_crd_reference_is_current() -> None:
    assert generate.CRD_REFERENCE.read_text() == generate.crd_reference(), FIX
    assert generate.JOB_REFERENCE.read_text() == generate.job_reference(), FIX


def test_crd_reference_lists_every_field() -> None:
    crd = yaml.safe_load(generate.CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    text = generate.CRD_REFERENCE.read_text()
    for path in ("spec.workerGroups[].maxReplicas", "spec.autoscaling.idleTimeoutSeconds",
                 "spec.faultTolerance.gcs.redisPasswordSecret.key", "status.workerGroups[].desiredReplicas"):
        assert f"| `{path}` |" in text
    assert len(list(crd_docs.rows(schema["spec"], "spec"))) == text.count("| `spec")


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["a"],
    "properties": {
        "a": {"type": "integer", "minimum": 1, "default": 2, "description": "A  count,\n wrapped."},
        "b": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "string", "enum": ["x|y"]}}}},
        "d": {"type": "object", "additionalProperties": {"type": "string"}},
        "e": {"x-kubernetes-int-or-string": True,
              "x-kubernetes-validations": [{"rule": "self > 0 || true", "message": "must be positive"}]},
        "f": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def test_rows_flatten_the_schema() -> None:
    rows = {r.path: r for r in crd_docs.rows(SCHEMA, "spec")}
    assert list(rows) == ["spec", "spec.a", "spec.b", "spec.b[].c", "spec.d", "spec.e", "spec.f"]
    assert rows["spec.a"] == crd_docs.Row("spec.a", "integer", "`2`", "A count, wrapped.", ("required", "≥ 1"))
    assert rows["spec.b"].type == "[]object"
    assert rows["spec.b[].c"].constraints == ("one of `x\\|y`",)  # a pipe would end the table cell
    assert rows["spec.d"].type == "map[string]string"
    assert rows["spec.e"].type == "int or string"
    assert rows["spec.e"].constraints == ("must be positive (`self > 0 \\|\\| true`)",)
    assert rows["spec.f"].type == "object (free-form)"


def test_dashboard_is_current() -> None:
    assert generate.DASHBOARD.read_text() == generate.dashboard_json(), FIX


def test_dashboard_shows_every_operator_metric() -> None:
    exprs = " ".join(t["expr"] for p in dashboard.dashboard()["panels"] for t in p.get("targets", []))
    defined = [m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(defined) >= 10
    assert [name for name in defined if name not in exprs] == []


def test_dashboard_layout() -> None:
    board = json.loads(generate.DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
    used = {v["name"] for v in board["templating"]["list"]}
    for p in board["panels"]:
        for t in p.get("targets", []):
            for var in ("$namespace", "$cluster", "$job"):
                if var in t["expr"]:
                    assert var[1:] in used


def test_operations_page_tables_are_the_reasons_and_conditions() -> None:
    """docs/operations.md's tables are generated from reasons.py: a reason or condition not in the page fails."""
    text = generate.OPERATIONS.read_text()
    assert text == generate.operations_page(), FIX
    for reason in EventReason:
        assert f"| `{reason}` | {reason.event_type} |" in text
    for ctype in ConditionType:
        assert f"| `{ctype}` |" in text
