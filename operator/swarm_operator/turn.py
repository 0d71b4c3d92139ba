"""One turn for one SwarmCluster: read (the cache, and what status kept), decide (the pure planner, and the
autoscaler once per interval), act (creates and deletes through the Kube protocol, written through to the
cache), record (status, only when it changed; events; metrics).

The work queue guarantees that a cluster never has two turns at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from swarm_operator import metrics
from swarm_operator.autoscaler.runner import Autoscaler, RayView
from swarm_operator.config import OperatorConfig
from swarm_operator.kube import ApiError, Kube
from swarm_operator.reconcile import deletion
from swarm_operator.reconcile.cache import Key, WatchCache
from swarm_operator.reconcile.observe import PodState, observe_pod, owned_by
from swarm_operator.reconcile.plan import (
    Action,
    CreateHead,
    CreateService,
    CreateWorkers,
    DeletePod,
    DrainForRollout,
    Observed,
    PatchPod,
    desired_replicas,
    needs_ray_state,
    plan_cluster,
)
from swarm_operator.reconcile.service import service_change
from swarm_operator.resources import labels
from swarm_operator.resources.pods import build_head_pod, build_worker_pod, storage_namespace, template_overrides
from swarm_operator.resources.redis_cleanup import build_cleanup_job, job_name
from swarm_operator.resources.service import build_head_service
from swarm_operator.resources.token import build_token_secret, token_of
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.status import (
    Persisted,
    autoscaler_status,
    cluster_status,
    differs,
    invalid_status,
    persisted_from_status,
)
from swarm_operator.times import parse_time

log = logging.getLogger(__name__)
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' own: no vowels, no look-alikes
NAME_TAKEN_RETRY_SECONDS = 3.0  # a name held by an object not ours: often a predecessor still terminating
TOKEN_RETRY_SECONDS = 5.0  # the Ray token's Secret is missing or not this cluster's


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(SUFFIX_ALPHABET) for _ in range(n))


def head_ip(cache: WatchCache, key: Key, cluster: ClusterSpec) -> str | None:
    """The running head pod's IP: where the autoscaler reaches the GCS."""
    pod = cache.pods.get(key, labels.head_pod_name(cluster.name))
    if not pod or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    return status.get("podIP") if status.get("phase") == "Running" else None


class Turns:
    """Runs turns; remembers only what may be lost on a restart (which warnings were already given)."""

    def __init__(self, kube: Kube, config: OperatorConfig, cache: WatchCache, autoscaler: Autoscaler,
                 on_pods: Callable[[Key, list[PodState]], None],
                 on_gone: Callable[[Key, dict[str, Any] | None], None]) -> None:
        self.kube = kube
        self.config = config
        self.cache = cache
        self.autoscaler = autoscaler
        self._on_pods = on_pods  # the pod gauges
        self._on_gone = on_gone  # the cluster is gone (and the object now stored under its name, if any)
        self._warned: dict[Key, tuple[int, str]] = {}  # invalid specs, warned about once per generation
        self._overrides_seen: dict[Key, int] = {}  # the generation whose template overrides were reported
        self._taken: dict[Key, set[str]] = {}  # names found held by others, warned about once
        self._noted: dict[Key, tuple[str, ...]] = {}  # the plan's last notes, posted once while they hold
        # The Ray token of each token-auth cluster, by (Secret, key, cluster uid); read again after a failed read
        # of Ray's state (the Secret may have been rotated). Never logged.
        self._tokens: dict[Key, tuple[tuple[str, str, str], str]] = {}
        self._token_warned: dict[Key, str] = {}

    def forget(self, key: Key) -> None:
        self._warned.pop(key, None)
        self._overrides_seen.pop(key, None)
        self._taken.pop(key, None)
        self._noted.pop(key, None)
        self._tokens.pop(key, None)
        self._token_warned.pop(key, None)

    def _pod_states(self, key: Key, uid: str) -> list[PodState]:
        return [observe_pod(p) for p in self.cache.pods.objects(key) if owned_by(p, uid)]

    async def run(self, key: Key) -> float | None:
        """One turn; returns when the cluster wants its next one (seconds), None for the resync."""
        body = self.cache.cluster(key)
        if body is None:
            return None
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            if deletion.FINALIZER in (body["metadata"].get("finalizers") or []):
                return await self._delete_with_cleanup(key, body)
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
        if self._overrides_seen.get(key) != cluster.generation:
            self._overrides_seen[key] = cluster.generation
            overrides = template_overrides(cluster)
            if overrides:
                await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, "Warning", "TemplateOverridden",
                                        "the operator's own values are used instead of " + "; ".join(overrides))
        # Before any pod: the finalizer must be on the cluster before its head writes to Redis.
        if not await self._keep_finalizer(key, body, cluster.fault_tolerance.gcs is not None):
            return None
        token = None
        if cluster.auth is not None:
            token = await self._ray_token(key, cluster)
            if token is None:
                return TOKEN_RETRY_SECONDS
        kept = persisted_from_status(old_status)
        autoscaling = cluster.autoscaling.enabled and not cluster.suspend

        targets, scale_ups = kept.targets, kept.last_scale_ups
        outcome = None
        if autoscaling:
            outcome = await self.autoscaler.step("/".join(key), cluster, self._pod_states(key, uid),
                                                 head_ip(self.cache, key, cluster), targets, scale_ups, now,
                                                 token=token)
        if outcome is not None and outcome.report.error:
            self._tokens.pop(key, None)  # a rotated token is read again
        if outcome is not None:
            targets = outcome.targets
            scale_ups = {**scale_ups, **dict.fromkeys(outcome.scaled_up, now)}
            for pod in outcome.patched_pods:
                self.cache.pods.apply(None, pod)
            for event_type, reason, message in outcome.events:
                await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, event_type, reason, message)
        view = RayView.of(outcome) if outcome is not None else None
        pods = self._pod_states(key, uid)
        if outcome is None and not cluster.suspend and needs_ray_state(cluster, pods):
            view = await self.autoscaler.observe("/".join(key), pods, head_ip(self.cache, key, cluster), token)
            if view is None:
                self._tokens.pop(key, None)  # a rotated token is read again
        svc = self.cache.services.get(key, labels.head_service_name(cluster.name))
        obs = _observed(pods, svc is not None and owned_by(svc, uid), kept, view)
        plan = plan_cluster(cluster, obs, targets, now)
        if plan.notes != self._noted.get(key, ()):
            self._noted[key] = plan.notes
            for note in plan.notes:
                await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, "Normal", "RolloutWaiting", note)

        if old_status and any(isinstance(a, (CreateHead, CreateService, CreateWorkers)) for a in plan.actions):
            # Re-creating children of a cluster served before: make sure it still exists. A watch
            # resumed after an API server restart may never report its deletion, and every child
            # made for it would be garbage-collected and made again.
            stored = await asyncio.to_thread(self.kube.get_swarmcluster, *key)
            if stored is None or (stored.get("metadata") or {}).get("uid") != uid:
                self._on_gone(key, stored)
                return None
        refused: Exception | None = None
        taken: list[str] = []
        if plan.actions:
            try:
                taken = await self._act(key, cluster, plan.actions)
            except Exception as exc:  # status is still written below, then the turn fails and backs off
                refused = exc
        drains = [a for a in plan.actions if isinstance(a, DrainForRollout)]
        if drains and view is not None:  # the plan drains only what this view showed busy
            drained, drain_events = await self.autoscaler.drain_for_rollout("/".join(key), view.snapshot, drains,
                                                                           now)
            for pod in drained:
                self.cache.pods.apply(None, pod)
            for event_type, reason, message in drain_events:
                await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, event_type, reason, message)
        if refused is None and svc is not None and owned_by(svc, uid) and not svc["metadata"].get("deletionTimestamp"):
            try:
                await self._sync_service(key, cluster, svc)
            except Exception as exc:
                refused = exc
        for action in plan.actions:
            if isinstance(action, DeletePod) and action.failed_group:
                metrics.WORKER_REPLACEMENTS.labels(key[0], key[1], action.failed_group).inc()
        if plan.head_restarts > kept.head_restarts:
            metrics.HEAD_REPLACEMENTS.labels(*key).inc(plan.head_restarts - kept.head_restarts)

        states = self._pod_states(key, uid)
        self._on_pods(key, states)
        after = Persisted(plan.health, desired_replicas(cluster, targets), plan.head_restarts, scale_ups)
        record = autoscaler_status(old_status.get("autoscaler") or {}, outcome.report, now) if outcome else None
        # A failed pod deleted in this turn is gone at once (the API server does not wait for a terminal pod),
        # yet status quotes why it failed (HeadReady's CrashLoop).
        gone = [p for p in pods if p.failure is not None and p.name not in {s.name for s in states}]
        status = cluster_status(cluster, [*states, *gone], after, old_status, now, head_ip(self.cache, key, cluster),
                                record)
        if differs(old_status, status):
            if not await asyncio.to_thread(self.kube.patch_status, key[0], key[1], status):
                self._on_gone(key, None)  # deleted, though no watch said so
                return None
            self.cache.record_status(key, status)
        if refused is not None:
            raise refused
        requeues = [r for r in (plan.requeue_after, NAME_TAKEN_RETRY_SECONDS if taken else None) if r is not None]
        if autoscaling:
            requeues.append(max(0.05, self.autoscaler.due_in("/".join(key), time.time())))
        return min(requeues) if requeues else None

    async def _keep_finalizer(self, key: Key, body: Mapping[str, Any], wanted: bool) -> bool:
        """Our finalizer on the cluster exactly while it has GCS fault tolerance (reconcile/deletion.py says why).
        False when the cluster turned out to be gone."""
        meta = body.get("metadata") or {}
        for attempt in range(2):
            finalizers = deletion.finalizers_with(meta.get("finalizers") or [], wanted)
            if finalizers is None:
                return True
            try:
                stored = await asyncio.to_thread(self.kube.set_finalizers, key[0], key[1], finalizers,
                                                 str(meta.get("resourceVersion") or ""))
            except ApiError as exc:
                if exc.status != 409 or attempt:
                    raise
                # Someone wrote it since our cache saw it: read it again (their finalizers are kept).
                fresh = await asyncio.to_thread(self.kube.get_swarmcluster, *key)
                if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
                    self._on_gone(key, fresh)
                    return False
                meta = fresh["metadata"]
                continue
            if stored is None:
                self._on_gone(key, None)
                return False
            self.cache.put_cluster(key, stored)
            return True
        return True

    def _record_pod_deletion(self, key: Key, name: str, uid: str, answer: dict[str, Any] | None) -> None:
        """A pod DELETE's answer, into the cache."""
        if answer is not None and (answer.get("metadata") or {}).get("resourceVersion"):
            self.cache.pods.apply(None, answer)  # being deleted (a grace period)
        else:
            # 404, or removed at once (a Failed pod gets no grace period): the API server then answers with
            # the pod as it was, without a resourceVersion, which no tombstone could be compared with. Either
            # way it is gone, whatever the cache says.
            self.cache.pods.gone(key, name, uid)

    async def _delete_with_cleanup(self, key: Key, body: dict[str, Any]) -> float | None:
        """One step of deleting a cluster that carries our finalizer: pods first, then the cleanup Job, then the
        finalizer goes (reconcile/deletion.py decides)."""
        meta = body["metadata"]
        uid = meta.get("uid", "")
        try:
            cluster: ClusterSpec | None = parse_cluster(body)
        except SpecError:
            cluster = None
        gcs = cluster.fault_tolerance.gcs if cluster else None
        pods = self._pod_states(key, uid)
        job = None
        if cluster is not None and gcs is not None and not pods:
            raw = await asyncio.to_thread(self.kube.get_job, key[0], job_name(key[1]))
            if raw is not None and owned_by(raw, uid):
                job = deletion.job_state(raw)
        namespace = storage_namespace(cluster) if cluster else ""
        step = deletion.deletion_step(gcs, namespace, pods, job, time.time() - parse_time(meta["deletionTimestamp"]))
        for name in step.delete_pods:
            cached = self.cache.pods.get(key, name) or {}
            answer = await asyncio.to_thread(self.kube.delete_pod, key[0], name)
            self._record_pod_deletion(key, name, (cached.get("metadata") or {}).get("uid") or "", answer)
        if step.create_job and cluster is not None:
            job_body = build_cleanup_job(cluster)
            if await asyncio.to_thread(self.kube.create_job, key[0], job_body) is not None:
                await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, "Normal", "RedisCleanup",
                                        f"pods gone; Job {job_body['metadata']['name']} removes the GCS keys of "
                                        f"namespace {namespace} from Redis")
        if step.event is not None:
            await asyncio.to_thread(self.kube.post_event, key[0], key[1], uid, *step.event)
        if step.remove_finalizer:
            finalizers = deletion.finalizers_with(meta.get("finalizers") or [], False)
            if finalizers is not None:
                await asyncio.to_thread(self.kube.set_finalizers, key[0], key[1], finalizers,
                                        str(meta.get("resourceVersion") or ""))
            return None
        return step.requeue_after

    async def _ray_token(self, key: Key, cluster: ClusterSpec) -> str | None:
        """The cluster's Ray token, from its Secret; the operator makes the Secret when the spec names none.
        None (with a Warning Event, once per problem) while there is no usable token."""
        auth = cluster.auth
        assert auth is not None
        which = (auth.secret_name, auth.secret_key, cluster.uid)
        cached = self._tokens.get(key)
        if cached is not None and cached[0] == which:
            return cached[1]
        ns = cluster.namespace
        secret = await asyncio.to_thread(self.kube.get_secret, ns, auth.secret_name)
        if secret is None and auth.operator_made:
            made = build_token_secret(cluster, secrets.token_hex(32))  # 256 bits, as `ray` makes its own
            secret = await asyncio.to_thread(self.kube.create_secret, ns, made)
            if secret is not None:
                await asyncio.to_thread(self.kube.post_event, ns, cluster.name, cluster.uid, "Normal", "Created",
                                        f"created Secret {auth.secret_name} holding the cluster's Ray token")
            else:  # 409: made meanwhile (by an earlier turn whose answer was lost, or by someone else)
                secret = await asyncio.to_thread(self.kube.get_secret, ns, auth.secret_name)
        token = None
        if secret is None:
            problem = f"Secret {auth.secret_name} not found; pods wait for it"
        elif auth.operator_made and not owned_by(secret, cluster.uid):
            problem = (f"Secret {auth.secret_name} exists but is not this cluster's (an earlier cluster's still "
                       "being deleted?); the operator uses only a token Secret it made for this cluster")
        else:
            token = token_of(secret, auth.secret_key)
            problem = "" if token else f"Secret {auth.secret_name} has no key {auth.secret_key}"
        if token is None:
            if self._token_warned.get(key) != problem:
                self._token_warned[key] = problem
                log.warning("SwarmCluster %s/%s: no Ray token: %s", *key, problem)
                await asyncio.to_thread(self.kube.post_event, ns, cluster.name, cluster.uid, "Warning",
                                        "RayTokenMissing", problem)
            return None
        self._token_warned.pop(key, None)
        self._tokens[key] = (which, token)
        return token

    async def _report_invalid(self, key: Key, meta: Mapping[str, Any], old: dict[str, Any], message: str,
                              now: float) -> None:
        generation = int(meta.get("generation") or 0)
        status = invalid_status(message, old, generation, now)
        if differs(old, status):
            await asyncio.to_thread(self.kube.patch_status, key[0], key[1], status)
            self.cache.record_status(key, status)
        if self._warned.get(key) != (generation, message):
            self._warned[key] = (generation, message)
            log.warning("SwarmCluster %s/%s is invalid: %s", *key, message.replace("\n", "; "))
            await asyncio.to_thread(self.kube.post_event, key[0], key[1], meta.get("uid", ""), "Warning",
                                    "InvalidSpec", message.replace("\n", "; "))

    async def _act(self, key: Key, cluster: ClusterSpec, actions: tuple[Action, ...]) -> list[str]:
        """Run the plan's actions concurrently; the cache learns each result at once (write-through).
        Returns what could not be created because its name is held by an object not this cluster's.

        Events report what the API server accepted: a refused create (a quota, an admission
        webhook) is a Warning with the server's reason, a taken name a Warning, never a "Created".
        """
        ns = cluster.namespace
        calls: list[asyncio.Future[Any]] = []
        labels_of_calls: list[str] = []  # what each call creates
        deleted: list[DeletePod] = []
        deleted_uids: list[str] = []  # of the pods as the cache knew them, one per `deleted`
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
            elif isinstance(action, DrainForRollout):
                continue  # through Ray, after the Kubernetes calls
            elif isinstance(action, PatchPod):
                patches.append(asyncio.ensure_future(asyncio.to_thread(self.kube.patch_pod, ns, action.name,
                                                                       action.patch)))
                patched.append(action)
            else:
                cached = self.cache.pods.get(key, action.name) or {}
                deleted_uids.append((cached.get("metadata") or {}).get("uid") or "")
                deletions.append(asyncio.ensure_future(asyncio.to_thread(self.kube.delete_pod, ns, action.name)))
                deleted.append(action)
        results = await asyncio.gather(*calls, return_exceptions=True)
        gone = await asyncio.gather(*deletions, return_exceptions=True)
        patch_results = await asyncio.gather(*patches, return_exceptions=True)
        errors = [r for r in (*results, *gone, *patch_results) if isinstance(r, BaseException)]
        updated = []
        for patch, r in zip(patched, patch_results, strict=True):
            if isinstance(r, dict):
                self.cache.pods.apply(None, r)
                updated.append(patch)
        for action, uid, r in zip(deleted, deleted_uids, gone, strict=True):
            if not isinstance(r, BaseException):
                self._record_pod_deletion(key, action.name, uid, r)
        created: dict[str, int] = {}
        refused: dict[str, str] = {}
        taken: list[str] = []
        for what, r in zip(labels_of_calls, results, strict=True):
            if isinstance(r, dict) and r.get("kind") == "Pod":
                self.cache.pods.apply(None, r)
            elif isinstance(r, dict) and r.get("kind") == "Service":
                self.cache.services.apply(None, r)
            if isinstance(r, BaseException):
                refused[what] = getattr(r, "reason", None) or str(r)
            elif r is None:  # 409: ours would be in the cache, so the name is held by someone else
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

    async def _sync_service(self, key: Key, cluster: ClusterSpec, live: Mapping[str, Any]) -> None:
        """Bring the head service's annotations and type to the spec: in place, or (headless ↔ not) anew."""
        desired = build_head_service(cluster)
        change = service_change(desired, live)
        if change is None:
            return
        ns, name = cluster.namespace, desired["metadata"]["name"]
        if change.recreate:
            await asyncio.to_thread(self.kube.delete_service, ns, name)
            self.cache.services.gone(key, name, live["metadata"].get("uid", ""))
            created = await asyncio.to_thread(self.kube.create_service, ns, desired)
            if created is not None:  # else still terminating (a load balancer's finalizer): made next turn
                self.cache.services.apply(None, created)
            await asyncio.to_thread(self.kube.post_event, *key, cluster.uid, "Warning", "ServiceReplaced",
                                    change.reason)
            return
        assert change.patch is not None
        patched = await asyncio.to_thread(self.kube.patch_service, ns, name, change.patch)
        if patched is not None:
            self.cache.services.apply(None, patched)
            await asyncio.to_thread(self.kube.post_event, *key, cluster.uid, "Normal", "ServiceUpdated",
                                    change.reason)

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


def _observed(pods: list[PodState], service_exists: bool, kept: Persisted, view: RayView | None) -> Observed:
    return Observed(pods=tuple(pods), service_exists=service_exists, health=kept.health,
                    head_restarts=kept.head_restarts,
                    idle_pods=view.idle if view else None,
                    ray_dead=view.ray_dead if view else frozenset(),
                    ray_nodes=view.ray_nodes if view else None)
