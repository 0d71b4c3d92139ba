"""A SwarmCluster's effects: the kit's Effects bound to one cluster, plus carrying out its plan's actions.

Events report what the API server accepted: a refused create (a quota, an admission webhook) is a Warning
with the server's reason, a taken name a Warning, never a "Created".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_operator.kit.effects import Effects
from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.actions import (
    Action,
    CreateBudget,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeleteBudget,
    DeletePod,
    PatchPod,
)
from swarm_operator.reconcile.service import service_change
from swarm_operator.reconcile.tally import Disruption
from swarm_operator.resources.budget import build_head_budget
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.resources.service import build_head_service
from swarm_operator.spec.types import ClusterSpec

SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' own: no vowels, no look-alikes
NAME_TAKEN_RETRY_SECONDS = 3.0  # a name held by an object not ours: often a predecessor still terminating


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(SUFFIX_ALPHABET) for _ in range(n))


@dataclass
class Outcomes:
    """What the API server made of a plan's actions, for its Events."""

    created: dict[str, int] = field(default_factory=dict)  # by what, how many
    refused: dict[str, str] = field(default_factory=dict)  # by what, the server's reason
    taken: list[str] = field(default_factory=list)  # names held by an object not this cluster's
    deleted: list[DeletePod] = field(default_factory=list)
    budgets_deleted: list[DeleteBudget] = field(default_factory=list)
    updated: list[PatchPod] = field(default_factory=list)

    def creation(self, what: str, answer: dict[str, Any] | BaseException | None) -> None:
        if isinstance(answer, BaseException):
            self.refused[what] = getattr(answer, "reason", None) or str(answer)
        elif answer is None:  # 409: ours would be in the cache, so the name is held by someone else
            self.taken.append(what)
        else:
            self.created[what] = self.created.get(what, 0) + 1


class ClusterEffects(Effects):
    async def carry_out(self, cluster: ClusterSpec, actions: Iterable[Action], cluster_domain: str,
                        warned_taken: set[str]) -> list[str]:
        """Run the plan's Kubernetes actions concurrently (Ray drains are the turn's). Returns what could not
        be created because its name is held by an object not this cluster's; `warned_taken` remembers which
        of those were already reported. Raises the first failure, after every answer is in the cache."""
        actions = list(actions)
        outcomes = Outcomes()
        head_answers: list[dict[str, Any] | BaseException | None] = []
        head = next((a for a in actions if isinstance(a, CreateHead)), None)
        if head is not None:
            # The head first: workers of a head the API refused (a quota, an admission webhook), or
            # whose name another pod holds, could join nothing and would be recycled next turn.
            pod = build_head_pod(cluster, head.generation)
            head_answers = list(await asyncio.gather(self.create_pod(pod), return_exceptions=True))
            outcomes.creation(f"head {pod['metadata']['name']}", head_answers[0])
        head_missing = bool(head_answers) and not isinstance(head_answers[0], dict)
        creates: list[tuple[str, Awaitable[dict[str, Any] | None]]] = []
        patches = [a for a in actions if isinstance(a, PatchPod)]
        outcomes.deleted = [a for a in actions if isinstance(a, DeletePod)]
        for action in actions:
            if isinstance(action, CreateService):
                svc = build_head_service(cluster, action.head_generation)
                creates.append((f"service {svc['metadata']['name']}", self.create_service(svc)))
            elif isinstance(action, CreateBudget):
                budget = build_head_budget(cluster)
                creates.append((f"PodDisruptionBudget {budget['metadata']['name']}", self.create_budget(budget)))
            elif isinstance(action, CreateWorkers) and not head_missing:
                group = cluster.group(action.group)
                assert group is not None
                creates += [(f"{action.group} worker",
                             self.create_pod(build_worker_pod(cluster, group, random_suffix(), cluster_domain)))
                            for _ in range(action.count)]
        outcomes.budgets_deleted = [a for a in actions if isinstance(a, DeleteBudget)]
        answers = await asyncio.gather(*(c for _, c in creates), *(self.delete_pod(d.name) for d in outcomes.deleted),
                                       *(self.delete_budget(b.name, b.uid) for b in outcomes.budgets_deleted),
                                       *(self.patch_pod(p.name, p.patch) for p in patches), return_exceptions=True)
        create_answers = answers[:len(creates)]
        patch_answers = answers[len(creates) + len(outcomes.deleted) + len(outcomes.budgets_deleted):]
        for (what, _), answer in zip(creates, create_answers, strict=True):
            outcomes.creation(what, answer)
        outcomes.updated = [p for p, r in zip(patches, patch_answers, strict=True) if isinstance(r, dict)]
        for what in [w for w in outcomes.taken if w not in warned_taken]:
            outcomes.refused[what] = ("the name is held by an object that is not this cluster's (an earlier "
                                      "cluster of the same name still terminating?); retrying every "
                                      f"{NAME_TAKEN_RETRY_SECONDS:g}s")
        warned_taken.intersection_update(outcomes.taken)
        warned_taken.update(outcomes.taken)
        await self._report(outcomes)
        errors = [r for r in (*head_answers, *answers) if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return outcomes.taken

    async def _report(self, outcomes: Outcomes) -> None:
        posts: list[tuple[EventReason, str]] = []
        if outcomes.updated:
            posts.append((EventReason.UPDATED, f"{', '.join(p.name for p in outcomes.updated)}: "
                                               f"{outcomes.updated[0].reason}"))
        if outcomes.created:
            summary = [w if n == 1 and not w.endswith(" worker") else f"{n} {w}(s)"
                       for w, n in outcomes.created.items()]
            posts.append((EventReason.CREATED, "created " + ", ".join(summary)))
        if outcomes.refused:
            posts.append((EventReason.CREATE_FAILED, "; ".join(f"{w}: {why}" for w, why in outcomes.refused.items())))
        failures = [d for d in outcomes.deleted if d.failed]
        if failures:
            posts.append((EventReason.REPLACING, "; ".join(d.reason for d in failures)))
        # A disrupted pod's deletion is no news of its own: its disruption is (report_disruptions).
        others = [d for d in outcomes.deleted if d not in failures and not d.disrupted]
        if others or outcomes.budgets_deleted:
            gone: list[DeletePod | DeleteBudget] = [*others, *outcomes.budgets_deleted]
            posts.append((EventReason.DELETED, "; ".join(f"{d.name}: {d.reason}" for d in gone)))
        for reason, message in posts:
            await self.event(reason, message)

    async def report_disruptions(self, disruptions: Sequence[Disruption]) -> None:
        """One `Disrupted` Event naming every pod whose disruption this turn counts (reconcile/tally.py)."""
        if disruptions:
            await self.event(EventReason.DISRUPTED, "; ".join(d.message for d in disruptions))

    async def mark_drained(self, patches: Iterable[PatchPod]) -> None:
        """The drained-at annotations of drains Ray accepted (the autoscaler's, a rollout's): no Event of
        their own, the drain's decision is the Event."""
        for patch in patches:
            await self.patch_pod(patch.name, patch.patch)

    async def sync_service(self, cluster: ClusterSpec, live: Mapping[str, Any], head_generation: int) -> None:
        """Bring the head service's annotations, type and selector (the current head generation) to the spec: in
        place, or (headless ↔ not) anew."""
        desired = build_head_service(cluster, head_generation)
        change = service_change(desired, live)
        if change is None:
            return
        name = desired["metadata"]["name"]
        if change.recreate:
            await self.delete_service(name, live["metadata"].get("uid", ""))
            await self.create_service(desired)  # None: still terminating (a load balancer's finalizer): next turn
            await self.event(EventReason.SERVICE_REPLACED, change.reason)
            return
        assert change.patch is not None
        if await self.patch_service(name, change.patch) is not None:
            await self.event(EventReason.SERVICE_UPDATED, change.reason)
