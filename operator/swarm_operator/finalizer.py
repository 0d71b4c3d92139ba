"""The operator's finalizers, through an object's effects: on a SwarmCluster exactly while it has GCS fault
tolerance (and on a SwarmJob until it finishes, jobs/turn.py), and the steps of such a cluster's deletion
(reconcile/deletion.py decides each, and says why)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from swarm_operator.cluster_effects import ClusterEffects
from swarm_operator.kit.effects import Effects
from swarm_operator.kube_http import ApiError
from swarm_operator.reasons import EventReason
from swarm_operator.reconcile import deletion
from swarm_operator.reconcile.observe import PodState, owned_by
from swarm_operator.resources.pods import storage_namespace
from swarm_operator.resources.redis_cleanup import build_cleanup_job, job_name
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.times import parse_time


async def keep_finalizer(fx: Effects, body: Mapping[str, Any], wanted: bool,
                         ours: str = deletion.FINALIZER) -> dict[str, Any] | bool:
    """Our finalizer `ours` on the object exactly while `wanted`. True when it is as wanted; otherwise the object
    turned out to be gone, and the answer is False, or the object now stored under its name."""
    meta = body.get("metadata") or {}
    for attempt in range(2):
        finalizers = deletion.finalizers_with(meta.get("finalizers") or [], wanted, ours)
        if finalizers is None:
            return True
        try:
            stored = await fx.set_finalizers(finalizers, str(meta.get("resourceVersion") or ""))
        except ApiError as exc:
            if exc.status != 409 or attempt:
                raise
            # Someone wrote it since our cache saw it: read it again (their finalizers are kept).
            fresh = await fx.read_back()
            if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
                return fresh or False
            meta = fresh["metadata"]
            continue
        return stored is not None
    return True


async def delete_with_cleanup(fx: ClusterEffects, body: Mapping[str, Any], pods: list[PodState]) -> float | None:
    """One step of deleting a cluster that carries our finalizer: pods first, then the cleanup Job, then the
    finalizer goes. Returns when to look again."""
    meta = body["metadata"]
    try:
        cluster: ClusterSpec | None = parse_cluster(body)
    except SpecError:
        cluster = None
    gcs = cluster.fault_tolerance.gcs if cluster else None
    job = None
    if cluster is not None and gcs is not None and not pods:
        raw = await fx.call(fx.kube.get_job, fx.ref.namespace, job_name(fx.ref.name))
        if raw is not None and owned_by(raw, fx.ref.uid):
            job = deletion.job_state(raw)
    namespace = storage_namespace(cluster) if cluster else ""
    step = deletion.deletion_step(gcs, namespace, pods, job, time.time() - parse_time(meta["deletionTimestamp"]))
    for name in step.delete_pods:
        await fx.delete_pod(name)
    if step.create_job and cluster is not None:
        job_body = build_cleanup_job(cluster)
        if await fx.call(fx.kube.create_job, fx.ref.namespace, job_body) is not None:
            await fx.event(EventReason.REDIS_CLEANUP, f"pods gone; Job {job_body['metadata']['name']} removes the "
                                                      f"GCS keys of namespace {namespace} from Redis")
    if step.event is not None:
        await fx.event(*step.event)
    if step.remove_finalizer:
        finalizers = deletion.finalizers_with(meta.get("finalizers") or [], False)
        if finalizers is not None:
            await fx.call(fx.kube.set_finalizers, fx.ref.resource, fx.ref.namespace, fx.ref.name, finalizers,
                          str(meta.get("resourceVersion") or ""))
        return None
    return step.requeue_after
