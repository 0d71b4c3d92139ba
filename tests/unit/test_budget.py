"""The head's PodDisruptionBudget: built, planned (made while enabled, deleted when switched off), and carried out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from swarm_operator.reconcile.actions import CreateBudget, DeleteBudget
from swarm_operator.reconcile.observe import Observed
from swarm_operator.reconcile.plan import plan_cluster
from swarm_operator.resources import labels
from swarm_operator.resources.budget import build_head_budget
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from tests.unit.operator_fixtures import NAMESPACE, NOW, FakeKube, cluster, head, manifest, serving, workers

OFF = {"head": {"podDisruptionBudget": {"enabled": False}}}


def test_the_budget_guards_the_head_alone_and_never_blocks_a_broken_one() -> None:
    c = cluster()
    budget = build_head_budget(c)
    assert budget["apiVersion"] == "policy/v1" and budget["kind"] == "PodDisruptionBudget"
    assert budget["metadata"]["name"] == "demo-head-pdb"
    assert budget["metadata"]["ownerReferences"] == [labels.owner_reference("demo", c.uid)]
    assert budget["metadata"]["labels"][labels.CLUSTER] == "demo"
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels.head_selector("demo")},
                              "unhealthyPodEvictionPolicy": "AlwaysAllow"}


@pytest.mark.parametrize(("head_spec", "enabled"), [
    pytest.param({}, True, id="on-by-default"),
    pytest.param({"podDisruptionBudget": {}}, True, id="empty-block"),
    pytest.param({"podDisruptionBudget": {"enabled": False}}, False, id="switched-off"),
])
def test_spec(head_spec: dict[str, Any], enabled: bool) -> None:
    assert cluster({"head": head_spec}).head.disruption_budget is enabled


def test_spec_rejects_a_non_boolean() -> None:
    with pytest.raises(SpecError, match=r"spec\.head\.podDisruptionBudget\.enabled"):
        parse_cluster(manifest({"head": {"podDisruptionBudget": {"enabled": "no"}}}))


def budget_actions(spec: dict[str, Any] | None, budgets: dict[str, str], suspend: bool = False) -> list[Any]:
    c = cluster({**(spec or {}), "suspend": suspend})
    obs = Observed(pods=(head(c), *workers(c, 2)), service_exists=True, health={}, budgets=budgets)
    return [a for a in plan_cluster(c, obs, {}, NOW).actions if isinstance(a, CreateBudget | DeleteBudget)]


@pytest.mark.parametrize(("spec", "budgets", "suspend", "expected"), [
    pytest.param(None, {}, False, [CreateBudget("the head's PodDisruptionBudget is missing")], id="missing-made"),
    pytest.param(None, {"demo-head-pdb": "u1"}, False, [], id="present-kept"),
    pytest.param(None, {}, True, [CreateBudget("the head's PodDisruptionBudget is missing")], id="suspended-too"),
    pytest.param(OFF, {"demo-head-pdb": "u1"}, False,
                 [DeleteBudget("demo-head-pdb", "u1", "head.podDisruptionBudget.enabled is false")], id="switched-off"),
    pytest.param(OFF, {}, False, [], id="off-and-absent"),
    pytest.param(None, {"demo-head-pdb": "u1", "demo-old-pdb": "u2"}, False,
                 [DeleteBudget("demo-old-pdb", "u2", "head.podDisruptionBudget.enabled is false")],
                 id="a-stray-one-of-ours-goes"),
])
def test_plan(spec: dict[str, Any] | None, budgets: dict[str, str], suspend: bool, expected: list[Any]) -> None:
    assert budget_actions(spec, budgets, suspend) == expected


def test_a_turn_makes_the_budget_once_and_deletes_it_when_switched_off() -> None:
    kube = FakeKube()
    key = (NAMESPACE, "demo")

    async def body() -> None:
        c = serving(kube)
        await c.reconcile(key)
        await c.reconcile(key)  # before any watch event: the write-through cache knows it exists
        assert list(kube.budgets) == [(NAMESPACE, "demo-head-pdb")]
        off = manifest(OFF, generation=2)
        kube.swarmclusters[key] = off
        c.on_cluster("MODIFIED", off)
        await c.reconcile(key)

    asyncio.run(asyncio.wait_for(body(), timeout=10))
    assert [call for call in kube.calls if "budget" in call[0]] == [("create_budget", "demo-head-pdb"),
                                                                     ("delete_budget", "demo-head-pdb")]
    assert not kube.budgets
    assert any(e[2] == "Deleted" and "demo-head-pdb: head.podDisruptionBudget.enabled is false" in e[3]
               for e in kube.events)
