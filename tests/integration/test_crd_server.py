"""The CRD against a real API server: it installs, the samples pass, invalid objects are refused.

The validation cases come from the shared corpus ``tests/cases/invalid_manifests.py``;
the CEL rules and OpenAPI constraints are evaluated by the API server itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.cases.invalid_manifests import CASES
from tests.integration.helpers import GROUP, PLURAL, REPO, VERSION, Kubectl, Namespaces, await_gone

pytestmark = pytest.mark.integration

SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
SERVER_REJECTS = [c for c in CASES if c.api_field is not None]
SERVER_ACCEPTS = [c for c in CASES if c.api_field is None]


@pytest.fixture(scope="module")
def validation_namespace(namespaces: Namespaces) -> Iterator[str]:
    """One namespace for all dry-run creates: they persist nothing, so they need no isolation."""
    name = namespaces.new("swarm-validation")
    yield name
    namespaces.delete(name)


def _dry_run_create(custom: Any, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server would store it (defaults applied)."""
    body = copy.deepcopy(manifest)
    body.setdefault("metadata", {})["namespace"] = namespace
    # Strict: an unknown field is an error, as with `kubectl apply` (whose default is strict).
    stored: dict[str, Any] = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body,
                                                                    dry_run="All", field_validation="Strict")
    return stored


def test_crd_is_established_and_served(crd: dict[str, Any], kubectl: Kubectl, validation_namespace: str) -> None:
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    assert served == [VERSION]
    res = kubectl("get", "swarmclusters", "-n", validation_namespace)
    assert res.returncode == 0, res.stderr


def test_samples_exist() -> None:
    assert len(SAMPLES) >= 3, SAMPLES


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: Path(p).name)
def test_sample_passes_server_dry_run(sample: Path, kubectl: Kubectl, validation_namespace: str) -> None:
    # The whole file, so that a sample's companion objects (a Secret) are checked too.
    res = kubectl("apply", "--dry-run=server", "-n", validation_namespace, "-f", str(sample))
    assert res.returncode == 0, res.stderr
    assert "(server dry run)" in res.stdout


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: Path(p).name)
def test_the_api_server_defaults_nothing_inside_list_items(sample: Path, custom_objects: Any,
                                                           validation_namespace: str) -> None:
    """GitOps: Argo CD compares the live object with the manifest, and a default stored inside a workerGroups[]
    item (replaced whole by a merge) would show the cluster OutOfSync for fields nobody wrote."""
    clusters = [d for d in yaml.safe_load_all(sample.read_text()) if d and d.get("kind") == "SwarmCluster"]
    assert clusters
    for manifest in clusters:
        stored = _dry_run_create(custom_objects, validation_namespace, manifest)
        assert stored["spec"]["workerGroups"] == manifest["spec"]["workerGroups"]
        assert stored["spec"]["autoscaling"]["pendingTimeoutSeconds"] >= 600  # a GPU node's cold start
        assert stored["spec"]["image"]  # defaults outside lists are stored


def test_corpus_has_at_least_30_server_side_rejections() -> None:
    assert len(SERVER_REJECTS) >= 30, len(SERVER_REJECTS)


@pytest.mark.parametrize("case", SERVER_REJECTS, ids=lambda c: c.id)
def test_api_server_rejects_invalid_manifest(case: Any, custom_objects: Any, validation_namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        _dry_run_create(custom_objects, validation_namespace, case.manifest)
    assert err.value.status in (400, 422), err.value
    message = json.loads(err.value.body or "{}").get("message", "")
    assert case.api_field in message, f"{case.api_field!r} not named in: {message}"


@pytest.mark.parametrize("case", SERVER_ACCEPTS, ids=lambda c: c.id)
def test_api_server_accepts_what_only_the_operator_rejects(case: Any, custom_objects: Any,
                                                           validation_namespace: str) -> None:
    _dry_run_create(custom_objects, validation_namespace, case.manifest)


def test_namespace_cleanup_does_not_hang_on_a_finalizer(namespaces: Namespaces, custom_objects: Any,
                                                        core_v1: Any) -> None:
    """A SwarmCluster whose finalizer no operator will ever remove does not keep its namespace."""
    name = namespaces.new("swarm-finalizer")
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster",
            "metadata": {"name": "stuck", "finalizers": ["swarm.io/never-removed"]}, "spec": {"head": {}}}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, name, PLURAL, body)
    namespaces.delete(name)
    assert await_gone(core_v1, custom_objects, [name], timeout=60) == []
