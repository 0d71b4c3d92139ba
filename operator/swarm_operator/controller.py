"""The control loop: a keyed work queue fed by watch events; each turn reads the cache,
decides with the pure planner, acts through kube.py, and writes status only on change.

Why not kopf daemons: kopf puts a finalizer on every object a daemon serves, and a
namespace deletion would then hang whenever the operator is down. Children are owned
by the SwarmCluster, so nothing needs a finalizer; watch handlers add none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from swarm_operator import metrics
from swarm_operator.autoscaler.runner import Autoscaler
from swarm_operator.config import OperatorConfig
from swarm_operator.kube import Kube
from swarm_operator.reconcile.observe import PodState, observe_pod, owned_by, slim_pod
from swarm_operator.reconcile.plan import (
    Action,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeletePod,
    Observed,
    PatchPod,
    desired_replicas,
    plan_cluster,
)
from swarm_operator.resources import labels
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.resources.service import build_head_service
from swarm_operator.spec import ClusterSpec, SpecError, parse_cluster
from swarm_operator.status import cluster_status, differs, health_from_status, invalid_status

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, cluster name)
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' own: no vowels, no look-alikes
ERROR_BACKOFF_CAP = 60.0
POD_EVENT_SETTLE_SECONDS = 0.5
RELIST_AFTER_LISTING_SECONDS = 2.0  # once kopf's (re)listing of a resource has gone quiet
NAME_TAKEN_RETRY_SECONDS = 3.0  # a name held by an object not ours: often a predecessor still terminating
# Metadata a SwarmCluster's turn depends on; resourceVersion and managedFields change with every write.
ECHO_METADATA = ("uid", "generation", "deletionTimestamp", "finalizers", "labels", "annotations")
TOMBSTONES = 10000  # remembered deletions; far more than can be in flight at once


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(SUFFIX_ALPHABET) for _ in range(n))


def _newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None, *, strictly: bool = False) -> bool:
    """Whether `candidate` is at least as new as `current` (resourceVersions are etcd revisions)."""
    if current is None:
        return True
    a = (candidate.get("metadata") or {}).get("resourceVersion", "")
    b = (current.get("metadata") or {}).get("resourceVersion", "")
    if a.isdigit() and b.isdigit():
        return int(a) > int(b) if strictly else int(a) >= int(b)
    return True


def _echo(cached: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether a SwarmCluster watch event only brings back what the cache holds already: every
    status write of ours comes back as one, and a turn for it (one per write, thousands at scale)
    would find nothing to do. Another writer's status, or any spec or metadata change, is no echo."""
    old, new = cached.get("metadata") or {}, event.get("metadata") or {}
    return (all(old.get(k) == new.get(k) for k in ECHO_METADATA)
            and cached.get("spec") == event.get("spec") and cached.get("status") == event.get("status"))


def _key_of(obj: Mapping[str, Any]) -> Key | None:
    meta = obj.get("metadata") or {}
    cluster = (meta.get("labels") or {}).get(labels.CLUSTER)
    if not cluster or not meta.get("namespace"):
        return None
    return (meta["namespace"], cluster)


class Controller:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self.clusters: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.services: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._errors: dict[Key, int] = defaultdict(int)
        self._warned: dict[Key, tuple[int, str]] = {}
        self._taken: dict[Key, set[str]] = {}  # names found held by others, warned about once
        self._pod_gauges: dict[Key, set[tuple[str, str]]] = defaultdict(set)
        self.autoscaler = Autoscaler(kube)
        self.active = asyncio.Event()  # set while this replica may act (always, without leader election)
        self._tasks: list[asyncio.Task[None]] = []
        self._tombstones: dict[tuple[Key, str], dict[str, Any]] = {}  # insertion-ordered: oldest first
        self._relist_timer: asyncio.TimerHandle | None = None

    # -- watch inputs ---------------------------------------------------------------------------

    def _listed(self) -> None:
        """kopf (re)listed a resource (events of type None): at startup, or after a watch it could not
        resume (an API server restart). Objects deleted meanwhile are never reported, so once the
        listing has gone quiet, re-list everything ourselves and drop what is gone."""
        if self._relist_timer is not None:
            self._relist_timer.cancel()
        self._relist_timer = asyncio.get_running_loop().call_later(
            RELIST_AFTER_LISTING_SECONDS, lambda: self._tasks.append(asyncio.ensure_future(self._relist_once())))

    async def _relist_once(self) -> None:
        self._tasks[:] = [t for t in self._tasks if not t.done()]
        try:
            await self.relist()
        except Exception as exc:
            log.warning("re-list after a watch restart failed: %s", exc)

    def on_cluster(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type is None:
            self._listed()
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._forget(key)
            return
        cached = self.clusters.get(key)
        self.clusters[key] = dict(body)
        if cached is not None and _echo(cached, body):
            return  # our own status write coming back: the turn that wrote it has seen everything in it
        self.enqueue(key)

    def _forget(self, key: Key) -> None:
        """The SwarmCluster is gone: stop serving it (the garbage collector removes its children)."""
        self.clusters.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        for group, state in self._pod_gauges.pop(key, set()):
            metrics.PODS.remove(key[0], key[1], group, state)
        self._warned.pop(key, None)
        self._taken.pop(key, None)
        self.autoscaler.forget("/".join(key))

    def _index(self, store: dict[Key, dict[str, dict[str, Any]]], event_type: str | None,
               obj: Mapping[str, Any]) -> Key | None:
        key = _key_of(obj)
        if key is None:
            return None
        name = obj["metadata"]["name"]
        if not _newer(obj, store[key].get(name)):
            return None  # older than what a write already told us
        # A deleted pod's delete response carries the deletion's own revision: only a strictly
        # newer object (a new pod of the same name) may replace its tombstone.
        if event_type != "DELETED" and not _newer(obj, self._tombstones.get((key, name)), strictly=True):
            return None
        if event_type == "DELETED":
            store[key].pop(name, None)
            # A delete response can arrive after the watch reported the pod gone; without a
            # tombstone it would put back a pod that no longer exists.
            self._tombstones[(key, name)] = {"metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")}}
            while len(self._tombstones) > TOMBSTONES:
                self._tombstones.pop(next(iter(self._tombstones)))
        else:
            store[key][name] = slim_pod(obj) if store is self.pods else dict(obj)
        return key

    def _drop_pod(self, key: Key, name: str) -> None:
        """Forget a pod the API says is gone, as if the watch had reported its deletion."""
        cached = self.pods[key].get(name)
        if cached is not None:
            self._index(self.pods, "DELETED", cached)

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type is None:
            self._listed()
        key = self._index(self.pods, event_type, body)
        if key is not None and key in self.clusters:
            # Pods of a cluster change in bursts (scheduled, running, ready …): one turn for the burst.
            self.enqueue(key, POD_EVENT_SETTLE_SECONDS)

    def on_service(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type is None:
            self._listed()
        key = self._index(self.services, event_type, body)
        if key is not None and key in self.clusters:
            self.enqueue(key)

    def _scopes(self) -> list[str | None]:
        """Namespaces to list in; None means all of them."""
        return list(self.config.namespaces) or [None]

    def seed(self) -> None:
        """Fill the pod and service index from the API before acting (blocking; runs at startup)."""
        selector = labels.CLUSTER
        for ns in self._scopes():
            pods, _ = self.kube.list_pods(ns, selector)
            for pod in pods:
                self._index(self.pods, None, pod)
            for svc in self.kube.list_services(ns, selector):
                self._index(self.services, None, svc)

    async def _relist_clusters(self) -> None:
        """A watch resumed after an API server restart re-lists without reporting the objects deleted
        meanwhile (kopf emits no DELETED for them): forget those, and serve any the watch missed."""
        for ns in self._scopes():
            items, rv = await asyncio.to_thread(self.kube.list_swarmclusters, ns)
            listed = {"metadata": {"resourceVersion": rv}}
            present = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
            for gone in [k for k in self.clusters if ns in (None, k[0]) and k not in present]:
                if not _newer(self.clusters[gone], listed, strictly=True):  # not created after the list
                    self._forget(gone)
            for key, body in present.items():
                if key not in self.clusters:
                    self.on_cluster("ADDED", body)

    async def relist(self) -> None:
        """Replace the index with a fresh list: catches deletions a broken watch never reported."""
        await self._relist_clusters()
        selector = labels.CLUSTER
        fresh_pods: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        fresh_svcs: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        listed_at: dict[str | None, str] = {}  # each pod list's resourceVersion, by scope
        for ns in self._scopes():
            pods, listed_at[ns] = await asyncio.to_thread(self.kube.list_pods, ns, selector)
            for pod in pods:
                key = _key_of(pod)
                if key:
                    fresh_pods[key][pod["metadata"]["name"]] = slim_pod(pod)
            for svc in await asyncio.to_thread(self.kube.list_services, ns, selector):
                key = _key_of(svc)
                if key:
                    fresh_svcs[key][svc["metadata"]["name"]] = svc
        for store, fresh in ((self.pods, fresh_pods), (self.services, fresh_svcs)):
            for key in set(store) | set(fresh):
                # Keep entries newer than the list (written or watched while it ran), and leave out
                # listed objects whose deletion was seen while it ran: the list predates it, and
                # putting such a pod back would have every turn delete it again (404) and count a failure.
                merged = {name: obj for name, obj in fresh.get(key, {}).items()
                          if _newer(obj, self._tombstones.get((key, name)), strictly=True)}
                listed = {"metadata": {"resourceVersion": listed_at.get(key[0], listed_at.get(None, ""))}}
                for name, obj in store.get(key, {}).items():
                    if name in merged:
                        if _newer(obj, merged[name]):
                            merged[name] = obj
                    elif store is self.pods and _newer(obj, listed) and not _newer(listed, obj):
                        # Created after the list was taken (worker names are random: dropping it would
                        # let the next turn create a duplicate).
                        merged[name] = obj
                if merged != store.get(key, {}):
                    store[key] = merged
                    if key in self.clusters:
                        self.enqueue(key)

    # -- the queue -------------------------------------------------------------------------------

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        if delay > 0:
            old = self._timers.get(key)
            when = asyncio.get_running_loop().time() + delay
            if old is not None and old.when() <= when:
                return
            if old is not None:
                old.cancel()
            self._timers[key] = asyncio.get_running_loop().call_at(when, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)  # run again when the current turn ends; never two turns at once
        elif key not in self._queued:
            self._queued.add(key)
            self.queue.put_nowait(key)
            metrics.QUEUE_DEPTH.set(self.queue.qsize())

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        if key in self.clusters:
            self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            await self.active.wait()
            self._queued.discard(key)
            self._active.add(key)
            metrics.QUEUE_DEPTH.set(self.queue.qsize())
            requeue: float | None = None
            started = time.monotonic()
            try:
                requeue = await self.reconcile(key)
                self._errors.pop(key, None)
                metrics.RECONCILES.labels("ok").inc()
            except Exception as exc:
                self._errors[key] += 1
                requeue = min(ERROR_BACKOFF_CAP, 0.5 * 2 ** self._errors[key])
                metrics.RECONCILES.labels("error").inc()
                metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
                log.warning("reconcile of %s/%s failed (retry in %.1fs): %s", *key, requeue, exc)
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
                self._active.discard(key)
                self.queue.task_done()
            if key in self.clusters:
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)
                self.enqueue(key, min(requeue, self.config.resync_seconds) if requeue
                             else self.config.resync_seconds * random.uniform(0.9, 1.1))

    async def _relist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.relist_seconds)
            try:
                await self.relist()
            except Exception as exc:
                log.warning("periodic re-list failed: %s", exc)

    async def _phase_gauge_loop(self) -> None:
        while True:
            counts: dict[str, int] = defaultdict(int)
            for body in list(self.clusters.values()):
                counts[(body.get("status") or {}).get("phase") or "Pending"] += 1
            for phase in ("Pending", "Running", "Degraded", "Suspended", "Invalid"):
                metrics.CLUSTERS.labels(phase).set(counts.get(phase, 0))
            await asyncio.sleep(5)

    def start(self) -> None:
        for _ in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker()))
        self._tasks.append(asyncio.create_task(self._relist_loop()))
        self._tasks.append(asyncio.create_task(self._phase_gauge_loop()))

    async def stop(self) -> None:
        if self._relist_timer is not None:
            self._relist_timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- one turn --------------------------------------------------------------------------------

    def _pods_of(self, key: Key, uid: str) -> list[dict[str, Any]]:
        return [p for p in list(self.pods.get(key, {}).values()) if owned_by(p, uid)]

    async def reconcile(self, key: Key) -> float | None:
        body = self.clusters.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # deleted: the garbage collector removes the children
        meta = body["metadata"]
        old_status: dict[str, Any] = dict(body.get("status") or {})
        now = time.time()
        try:
            cluster = parse_cluster(body)
        except SpecError as exc:
            await self._report_invalid(key, meta, old_status, str(exc), now)
            return None
        self._warned.pop(key, None)
        uid = meta.get("uid", "")
        states = [observe_pod(p) for p in self._pods_of(key, uid)]
        health, targets, head_restarts = health_from_status(old_status)
        svc_name = labels.head_service_name(cluster.name)
        svc = self.services.get(key, {}).get(svc_name)
        outcome = None
        if cluster.autoscaling.enabled and not cluster.suspend:
            outcome = await self.autoscaler.step("/".join(key), cluster, states, self._head_ip(key, cluster),
                                                 targets, old_status, now)
        if outcome is not None:
            targets = outcome.targets
            for pod in outcome.patched_pods:
                self._index(self.pods, None, pod)
            states = [observe_pod(p) for p in self._pods_of(key, uid)]
            for event_type, reason, message in outcome.events:
                await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, event_type, reason, message)
        obs = Observed(pods=tuple(states), service_exists=svc is not None and owned_by(svc, uid),
                       health=health, head_restarts=head_restarts,
                       idle_pods=outcome.idle if outcome else None,
                       ray_dead=outcome.ray_dead if outcome else frozenset(),
                       ray_nodes=outcome.ray_nodes if outcome else None)
        plan = plan_cluster(cluster, obs, targets, now)
        if old_status and any(isinstance(a, (CreateHead, CreateService, CreateWorkers)) for a in plan.actions):
            # Re-creating children of a cluster served before: make sure it still exists. A watch
            # resumed after an API server restart may never report its deletion, and every child
            # made for it would be garbage-collected and made again.
            stored = await asyncio.to_thread(self.kube.get_swarmcluster, *key)
            if stored is None or (stored.get("metadata") or {}).get("uid") != uid:
                self._forget(key)
                if stored is not None:
                    self.on_cluster("ADDED", stored)  # deleted and made again under the same name
                return None
        refused: Exception | None = None
        taken: list[str] = []
        if plan.actions:
            try:
                taken = await self._act(key, cluster, plan.actions)
            except Exception as exc:  # status is still written below, then the turn fails and backs off
                refused = exc
        for action in plan.actions:
            if isinstance(action, DeletePod) and action.failed_group:
                metrics.WORKER_REPLACEMENTS.labels(key[0], key[1], action.failed_group).inc()
        if plan.head_restarts > head_restarts:
            metrics.HEAD_REPLACEMENTS.labels(*key).inc(plan.head_restarts - head_restarts)
        states = [observe_pod(p) for p in self._pods_of(key, uid)]
        head_ip = self._head_ip(key, cluster)
        desired = desired_replicas(cluster, targets)
        status = cluster_status(cluster, states, desired, plan.health, plan.head_restarts, old_status, now, head_ip)
        if outcome is not None:
            status["autoscaler"] = outcome.status
        self._update_pod_gauges(key, states)
        if differs(old_status, status):
            if not await asyncio.to_thread(self.kube.patch_status, key[0], key[1], status):
                self._forget(key)  # deleted, though no watch said so
                return None
            body["status"] = {**old_status, **status}  # our own write; the watch confirms it later
        if refused is not None:
            raise refused
        requeues = [r for r in (plan.requeue_after, NAME_TAKEN_RETRY_SECONDS if taken else None) if r is not None]
        if cluster.autoscaling.enabled and not cluster.suspend:
            requeues.append(max(0.05, self.autoscaler.due_in("/".join(key), time.time())))
        return min(requeues) if requeues else None

    def _head_ip(self, key: Key, cluster: ClusterSpec) -> str | None:
        """The running head pod's IP: where the autoscaler reaches the GCS."""
        pod = self.pods.get(key, {}).get(labels.head_pod_name(cluster.name))
        if not pod or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return None
        status = pod.get("status") or {}
        return status.get("podIP") if status.get("phase") == "Running" else None

    async def _report_invalid(self, key: Key, meta: Mapping[str, Any], old: dict[str, Any], message: str,
                              now: float) -> None:
        generation = int(meta.get("generation") or 0)
        status = invalid_status(message, old, generation, now)
        if differs(old, status):
            await asyncio.to_thread(self.kube.patch_status, key[0], key[1], status)
            body = self.clusters.get(key)
            if body is not None:
                body["status"] = {**old, **status}  # our own write, as in reconcile: no rewrite every turn
        if self._warned.get(key) != (generation, message):
            self._warned[key] = (generation, message)
            log.warning("SwarmCluster %s/%s is invalid: %s", *key, message.replace("\n", "; "))
            await asyncio.to_thread(self.kube.post_event, key[0], key[1], meta.get("uid", ""), "Warning",
                                    "InvalidSpec", message.replace("\n", "; "))

    def _update_pod_gauges(self, key: Key, states: list[PodState]) -> None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for p in states:
            group = p.group or labels.HEAD
            state = "deleting" if p.deleting else "failed" if p.failure else "ready" if p.ready else p.phase.lower()
            counts[(group, state)] += 1
        for gs in self._pod_gauges[key] - set(counts):
            metrics.PODS.labels(key[0], key[1], *gs).set(0)
        for gs, n in counts.items():
            metrics.PODS.labels(key[0], key[1], *gs).set(n)
        self._pod_gauges[key] |= set(counts)

    async def _act(self, key: Key, cluster: ClusterSpec, actions: tuple[Action, ...]) -> list[str]:
        """Run the plan's actions concurrently; the index learns each result at once (write-through).
        Returns what could not be created because its name is held by an object not this cluster's.

        Events report what the API server accepted: a refused create (a quota, an admission
        webhook) is a Warning with the server's reason, a taken name a Warning, never a "Created".
        """
        ns = cluster.namespace
        calls: list[asyncio.Future[Any]] = []
        labels_of_calls: list[str] = []  # what each call creates
        deleted: list[DeletePod] = []
        deletions: list[asyncio.Future[Any]] = []  # one per `deleted`, in the same order
        patched: list[PatchPod] = []
        patches: list[asyncio.Future[Any]] = []  # one per `patched`, in the same order

        def call(fn: Any, *args: Any, what: str = "") -> None:
            calls.append(asyncio.ensure_future(asyncio.to_thread(fn, *args)))
            labels_of_calls.append(what)

        head_missing = False
        if any(isinstance(a, CreateHead) for a in actions):
            # The head first: workers of a head the API refused (a quota, an admission webhook), or
            # whose name another pod holds, could join nothing and would be recycled next turn.
            pod = build_head_pod(cluster)
            call(self.kube.create_pod, ns, pod, what=f"head {pod['metadata']['name']}")
            head_missing = not isinstance((await asyncio.gather(calls[-1], return_exceptions=True))[0], dict)
        for action in actions:
            if isinstance(action, CreateService):
                svc = build_head_service(cluster)
                call(self.kube.create_service, ns, svc, what=f"service {svc['metadata']['name']}")
            elif isinstance(action, CreateHead):
                continue  # created above
            elif isinstance(action, CreateWorkers):
                if head_missing:
                    continue
                group = cluster.group(action.group)
                assert group is not None
                for _ in range(action.count):
                    pod = build_worker_pod(cluster, group, random_suffix(), self.config.cluster_domain)
                    call(self.kube.create_pod, ns, pod, what=f"{action.group} worker")
            elif isinstance(action, PatchPod):
                patches.append(asyncio.ensure_future(asyncio.to_thread(self.kube.patch_pod, ns, action.name,
                                                                       action.patch)))
                patched.append(action)
            else:
                deletions.append(asyncio.ensure_future(asyncio.to_thread(self.kube.delete_pod, ns, action.name)))
                deleted.append(action)
        results = await asyncio.gather(*calls, return_exceptions=True)
        gone = await asyncio.gather(*deletions, return_exceptions=True)
        patch_results = await asyncio.gather(*patches, return_exceptions=True)
        errors = [r for r in (*results, *gone, *patch_results) if isinstance(r, BaseException)]
        updated = []
        for patch, r in zip(patched, patch_results, strict=True):
            if isinstance(r, dict):
                self._index(self.pods, None, r)
                updated.append(patch)
        for action, r in zip(deleted, gone, strict=True):
            if isinstance(r, dict) and (r.get("metadata") or {}).get("resourceVersion"):
                self._index(self.pods, None, r)  # being deleted (a grace period)
            elif not isinstance(r, BaseException):
                # 404, or removed at once (a Failed pod gets no grace period): the API server then
                # answers with the pod as it was, without a resourceVersion, which no tombstone could
                # be compared with. Either way it is gone, whatever the index says.
                self._drop_pod(key, action.name)
        created: dict[str, int] = {}
        refused: dict[str, str] = {}
        taken: list[str] = []
        for what, r in zip(labels_of_calls, results, strict=True):
            if isinstance(r, dict) and r.get("kind") == "Pod":
                self._index(self.pods, None, r)
            elif isinstance(r, dict) and r.get("kind") == "Service":
                self._index(self.services, None, r)
            if isinstance(r, BaseException):
                refused[what] = getattr(r, "reason", None) or str(r)
            elif r is None:  # 409: ours would be in the index, so the name is held by someone else
                taken.append(what)
            else:
                created[what] = created.get(what, 0) + 1
        summary = [w if n == 1 and not w.endswith(" worker") else f"{n} {w}(s)" for w, n in created.items()]
        warned = self._taken.setdefault(key, set())
        for what in [w for w in taken if w not in warned]:
            refused[what] = ("the name is held by an object that is not this cluster's (an earlier cluster of "
                             f"the same name still terminating?); retrying every {NAME_TAKEN_RETRY_SECONDS:g}s")
        warned.intersection_update(taken)
        warned.update(taken)
        await self._post_action_events(key, cluster, summary, deleted, refused, updated)
        if errors:
            raise errors[0]
        return taken

    async def _post_action_events(self, key: Key, cluster: ClusterSpec, created: list[str],
                                  deleted: list[DeletePod], refused: Mapping[str, str],
                                  updated: list[PatchPod]) -> None:
        posts = []
        if updated:
            posts.append(("Normal", "Updated", f"{', '.join(p.name for p in updated)}: {updated[0].reason}"))
        if created:
            posts.append(("Normal", "Created", "created " + ", ".join(created)))
        if refused:
            posts.append(("Warning", "CreateFailed", "; ".join(f"{w}: {why}" for w, why in refused.items())))
        failures = [d for d in deleted if d.failed]
        if failures:
            posts.append(("Warning", "Replacing", "; ".join(d.reason for d in failures)))
        others = [d for d in deleted if d not in failures]
        if others:
            posts.append(("Normal", "Deleted", "; ".join(f"{d.name}: {d.reason}" for d in others)))
        for event_type, reason, message in posts:
            await asyncio.to_thread(self.kube.post_event, key[0], key[1], cluster.uid, event_type, reason, message)
