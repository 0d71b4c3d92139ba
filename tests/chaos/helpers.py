"""What the chaos tests share: small SwarmClusters on kwok's fake nodes, a model of what should
exist, and one check that says everything that differs from it.

Objects travel as plain dicts (raw JSON): a namespace of 50 clusters is listed every half
second while waiting, and the client's model classes would cost more CPU than the API server.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from swarm_operator import GROUP, PLURAL, VERSION
from swarm_operator.resources import labels

DEFAULT_SEED = 20261122


def seed() -> int:
    """The seed of this run: CHAOS_SEED, else a fixed one (a failure names it; rerun with it set)."""
    return int(os.environ.get("CHAOS_SEED", DEFAULT_SEED))


def manifest(name: str, groups: Mapping[str, int], *, autoscaling: bool = False,
             max_replicas: int = 6) -> dict[str, Any]:
    """A small SwarmCluster: tiny resources (hundreds of pods fit the fake nodes), one entry per group.

    With autoscaling on, a group's ``replicas`` is only the start; the target lives in status.
    """
    spec: dict[str, Any] = {
        "head": {"resources": {"cpu": "100m", "memory": "128Mi"}},
        "workerGroups": [{"name": g, "replicas": n, "minReplicas": 0, "maxReplicas": max_replicas,
                          "resources": {"cpu": "100m", "memory": "128Mi"}} for g, n in groups.items()],
    }
    if autoscaling:
        # Every second: a restarted operator reads (and fails to reach) Ray at once, which is
        # where a lost target would show.
        spec["autoscaling"] = {"enabled": True, "intervalSeconds": 1, "idleTimeoutSeconds": 30}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": name}, "spec": spec}


class Api:
    """The calls the chaos tests make, on plain dicts."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(resp.data)
        return data

    def clusters(self) -> dict[str, dict[str, Any]]:
        resp = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, _preload_content=False)
        return {c["metadata"]["name"]: c for c in self._json(resp)["items"]}

    def get(self, name: str) -> dict[str, Any]:
        return self._json(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name,
                                                                   _preload_content=False))

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, dict(body),
                                                                      _preload_content=False))

    def patch(self, name: str, patch: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, dict(patch),
                                                   _preload_content=False)

    def patch_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, PLURAL, name,
                                                          {"status": dict(status)}, _preload_content=False)

    def delete(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name,
                                                        _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def set_replicas(self, name: str, groups: Mapping[str, int]) -> None:
        """Scale by spec: a merge patch replaces the whole list, so send every group."""
        wanted = self.get(name)["spec"]["workerGroups"]
        for g in wanted:
            if g["name"] in groups:
                g["replicas"] = groups[g["name"]]
        self.patch(name, {"spec": {"workerGroups": wanted}})

    def pods(self) -> list[dict[str, Any]]:
        return list(self._json(self.core.list_namespaced_pod(self.ns, _preload_content=False))["items"])

    def services(self) -> list[dict[str, Any]]:
        return list(self._json(self.core.list_namespaced_service(self.ns, _preload_content=False))["items"])

    def events(self) -> list[dict[str, Any]]:
        return list(self._json(self.core.list_namespaced_event(self.ns, _preload_content=False))["items"])


@dataclass
class Want:
    """One cluster as it should be: worker count per group; with autoscaling, the target in status."""

    groups: dict[str, int]
    autoscaling: bool = False


@dataclass
class Model:
    """Every SwarmCluster that should exist in the namespace, and how it should look."""

    clusters: dict[str, Want] = field(default_factory=dict)


def _owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {o.get("uid", "") for o in obj["metadata"].get("ownerReferences") or []}


def problems(api: Api, model: Model, *, check_status: bool = True) -> list[str]:
    """Everything in the namespace that differs from ``model``; empty when it has converged.

    Converged means: exactly the model's SwarmClusters, each with one head, the wanted number
    of workers per group and its head service, all owned by the cluster's current incarnation;
    no pod or service of a cluster that no longer exists (or of an earlier one of the same
    name); nothing being deleted; no finalizer anywhere; the autoscaler targets in status as
    wanted; and (``check_status``) status saying Running with every worker ready.
    """
    out: list[str] = []
    clusters = api.clusters()
    if set(clusters) != set(model.clusters):
        out.append(f"clusters: extra {sorted(set(clusters) - set(model.clusters))}, "
                   f"missing {sorted(set(model.clusters) - set(clusters))}")
    uids = {name: c["metadata"]["uid"] for name, c in clusters.items()}
    heads: dict[str, int] = {}
    workers: dict[tuple[str, str], int] = {}
    for kind, items in (("pod", api.pods()), ("service", api.services())):
        for obj in items:
            meta = obj["metadata"]
            what = f"{kind} {meta['name']}"
            if meta.get("finalizers"):
                out.append(f"{what} has finalizers {meta['finalizers']}")
            if meta.get("deletionTimestamp"):
                out.append(f"{what} is still being deleted")
                continue
            owner = (meta.get("labels") or {}).get(labels.CLUSTER)
            if owner is None:
                continue  # not the operator's
            if owner not in uids:
                out.append(f"{what} is an orphan: cluster {owner} does not exist")
                continue
            if uids[owner] not in _owner_uids(obj):
                out.append(f"{what} is not owned by the current {owner} (uid {uids[owner]})")
                continue
            if kind == "pod":
                node_type = meta["labels"].get(labels.NODE_TYPE)
                if node_type == labels.HEAD:
                    heads[owner] = heads.get(owner, 0) + 1
                else:
                    key = (owner, meta["labels"].get(labels.WORKER_GROUP, "?"))
                    workers[key] = workers.get(key, 0) + 1
            else:
                heads.setdefault(owner, 0)
                workers.setdefault((owner, "<service>"), 0)
                workers[(owner, "<service>")] += 1
    for name, want in sorted(model.clusters.items()):
        c = clusters.get(name)
        if c is None:
            continue
        if c["metadata"].get("finalizers"):
            out.append(f"swarmcluster {name} has finalizers {c['metadata']['finalizers']}")
        if heads.get(name, 0) != 1:
            out.append(f"{name}: {heads.get(name, 0)} heads, want 1")
        if workers.get((name, "<service>"), 0) != 1:
            out.append(f"{name}: {workers.get((name, '<service>'), 0)} head services, want 1")
        for group, n in want.groups.items():
            if workers.get((name, group), 0) != n:
                out.append(f"{name}: group {group} has {workers.get((name, group), 0)} workers, want {n}")
        extra = {g for (cl, g) in workers if cl == name and g != "<service>"} - set(want.groups)
        if extra:
            out.append(f"{name}: workers of groups not in the spec: {sorted(extra)}")
        status = c.get("status") or {}
        stored = {g.get("name"): g.get("desiredReplicas") for g in status.get("workerGroups") or []}
        if want.autoscaling:
            for group, n in want.groups.items():
                if stored.get(group) != n:
                    out.append(f"{name}: status target of {group} is {stored.get(group)}, want {n}")
        if check_status:
            total = sum(want.groups.values())
            if status.get("phase") != "Running" or status.get("workers") != f"{total}/{total}":
                out.append(f"{name}: status phase={status.get('phase')} workers={status.get('workers')}, "
                           f"want Running {total}/{total}")
            if status.get("observedGeneration") != c["metadata"].get("generation"):
                out.append(f"{name}: observedGeneration {status.get('observedGeneration')} "
                           f"≠ generation {c['metadata'].get('generation')}")
    return out


def wait_converged(api: Api, model: Model, what: str, timeout: float = 60.0, stable: float = 1.5,
                   check_status: bool = True, extra: Callable[[], str] | None = None) -> float:
    """Poll ``problems`` until there are none, and none for ``stable`` seconds on end (a state that
    flaps, such as children created and garbage-collected in a loop, can look right for a moment);
    returns the seconds until it first looked right. On timeout, fail listing the last problems
    (and ``extra()``, e.g. the operator's log tail)."""
    start = time.monotonic()
    last: list[str] = []
    clean_since: float | None = None
    while time.monotonic() - start < timeout:
        try:
            last = problems(api, model, check_status=check_status)
        except ApiException as exc:  # the API server restarting: keep polling
            last = [f"API error {exc.status} {exc.reason}"]
        now = time.monotonic()
        if last:
            clean_since = None
        elif clean_since is None:
            clean_since = now
        if clean_since is not None and now - clean_since >= stable:
            return clean_since - start
        time.sleep(0.25)
    shown = "\n  ".join(last[:40]) + (f"\n  … and {len(last) - 40} more" if len(last) > 40 else "")
    more = f"\n{extra()}" if extra else ""
    raise AssertionError(f"{what}: not converged after {timeout:.0f}s (seed {seed()}):\n  {shown}{more}")


METRIC_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one metric from Prometheus text, by their label string ("" when unlabelled)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m and m["name"] == name:
            out[m["labels"] or ""] = float(m["value"])
    return out


def log_lines(text: str, needles: Iterable[str]) -> list[str]:
    """Lines of an operator log that contain any of ``needles``."""
    keys = tuple(needles)
    return [ln for ln in text.splitlines() if any(k in ln for k in keys)]


def failed_reconciles(metrics: str) -> float:
    """Reconciles that raised, of every kind (swarm_reconcile_total is labelled by kind and result)."""
    return sum(v for labels_, v in metric_values(metrics, "swarm_reconcile_total").items()
               if 'result="error"' in labels_)


def child_writes(metrics: str) -> float:
    """How many pods and services the operator has created or deleted, from its request counter."""
    return sum(v for labels_, v in metric_values(metrics, "swarm_api_requests_total").items()
               if ('verb="create"' in labels_ or 'verb="delete"' in labels_)
               and ('resource="pods"' in labels_ or 'resource="services"' in labels_))


def writes_while_at_rest(metrics: Callable[[], str], seconds: float = 3.0) -> float:
    """Creates and deletes of pods and services the operator issues over ``seconds`` of a converged
    namespace, where nothing changes: zero, unless it fights someone (e.g. the garbage collector)."""
    before = child_writes(metrics())
    time.sleep(seconds)
    return child_writes(metrics()) - before
