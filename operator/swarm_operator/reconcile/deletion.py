"""What a SwarmCluster with GCS fault tolerance needs before it may go: its GCS keys removed from Redis. Pure.

Only such clusters carry the operator's finalizer (FINALIZER). Everything else a cluster owns is removed by
the garbage collector through owner references; Redis is outside Kubernetes, so without the finalizer a
deleted cluster's GCS tables would stay in Redis for ever. Deletion of such a cluster goes:

1. its pods are deleted (the head's GCS must stop writing before its keys are removed), and gone (or stuck on a
   node that is gone or dead: they run nothing);
2. a cleanup Job (resources/redis_cleanup.py) runs Ray's own cleanup in the cluster's image;
3. the finalizer is removed when the Job succeeded, failed, or `cleanupTimeoutSeconds` after the deletion
   was asked for, whichever comes first, with an Event saying which: a deletion never hangs for ever on a
   Redis that is gone (only while the operator itself is down; docs/operations.md says how to step in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.observe import PodState
from swarm_operator.spec.rules import PREFIX
from swarm_operator.spec.types import GcsFaultTolerance

FINALIZER = f"{PREFIX}redis-cleanup"
POLL_SECONDS = 2.0  # while pods terminate and the Job runs


@dataclass(frozen=True)
class JobState:
    succeeded: bool = False
    failed: bool = False
    message: str = ""


@dataclass(frozen=True)
class DeletionStep:
    delete_pods: tuple[str, ...] = ()
    create_job: bool = False
    remove_finalizer: bool = False
    event: tuple[EventReason, str] | None = None  # (reason, message)
    requeue_after: float | None = None


def finalizers_with(finalizers: Sequence[str], wanted: bool, ours: str = FINALIZER) -> list[str] | None:
    """The finalizer list with ours added (wanted) or removed; None when it already is as wanted."""
    if (ours in finalizers) == wanted:
        return None
    return [*finalizers, ours] if wanted else [f for f in finalizers if f != ours]


def job_state(job: Mapping[str, Any]) -> JobState:
    """A Job's outcome from its conditions (Complete / Failed, as the Job controller sets them)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        why = ": ".join(t for t in (cond.get("reason"), cond.get("message")) if t)
        if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return JobState(succeeded=True, message=why)
        if cond.get("type") in ("Failed", "FailureTarget"):
            return JobState(failed=True, message=why)
    return JobState()


def leftover_keys_hint(gcs: GcsFaultTolerance, namespace: str) -> str:
    return f"delete the keys matching 'RAY{namespace}@*' in {gcs.redis_address} yourself"


def deletion_step(gcs: GcsFaultTolerance | None, storage_namespace: str, pods: Iterable[PodState],
                  job: JobState | None, waited: float) -> DeletionStep:
    """The next step of deleting a cluster that carries FINALIZER. `job` is None while there is no cleanup
    Job; `waited`: seconds since the deletion was asked for."""
    if gcs is None:
        # GCS fault tolerance was switched off (or the spec no longer parses): nothing of ours to remove.
        return DeletionStep(remove_finalizer=True)
    if job is not None and job.succeeded:
        return DeletionStep(remove_finalizer=True, event=(
            EventReason.REDIS_CLEANED_UP,
            f"GCS keys of namespace {storage_namespace} removed from {gcs.redis_address}"))
    if job is not None and job.failed:
        return DeletionStep(remove_finalizer=True, event=(
            EventReason.REDIS_CLEANUP_FAILED, f"the cleanup Job failed ({job.message or 'no reason given'}); the GCS "
            f"keys may still be in Redis: {leftover_keys_hint(gcs, storage_namespace)}"))
    if waited >= gcs.cleanup_timeout_seconds:
        return DeletionStep(remove_finalizer=True, event=(
            EventReason.REDIS_CLEANUP_TIMED_OUT, f"the GCS keys were not confirmed removed within "
            f"{gcs.cleanup_timeout_seconds}s (spec.faultTolerance.gcs.cleanupTimeoutSeconds); deleting the cluster "
            f"anyway; {leftover_keys_hint(gcs, storage_namespace)}"))
    remaining = list(pods)
    to_delete = tuple(sorted(p.name for p in remaining if not p.deleting))
    # A pod stuck Terminating on a node that is gone or dead runs no GCS any more (the rule of reconcile/head.py):
    # the cleanup need not wait for the pod garbage collector, nor for ever on a node that never comes back.
    if any(p.node_lost is None for p in remaining):
        return DeletionStep(delete_pods=to_delete, requeue_after=POLL_SECONDS)
    return DeletionStep(delete_pods=to_delete, create_job=job is None, requeue_after=POLL_SECONDS)
