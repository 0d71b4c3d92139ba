"""Every Event reason and condition type the operator writes, each defined once. Pure.

docs/operations.md's tables of them are generated from here (`make generate`; a unit test fails when they
differ), so a new reason cannot be posted without being documented.
"""

from __future__ import annotations

from enum import StrEnum


class EventReason(StrEnum):
    """An Event's reason; `event_type` and `meaning` say how it is posted and what it tells a user."""

    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
    CREATE_FAILED = "CreateFailed"
    REPLACING = "Replacing"
    DISRUPTED = "Disrupted"
    INVALID_SPEC = "InvalidSpec"
    TEMPLATE_OVERRIDDEN = "TemplateOverridden"
    ROLLOUT_WAITING = "RolloutWaiting"
    SCALE_DOWN_WAITING = "ScaleDownWaiting"
    HEAD_WAITING = "HeadWaiting"
    SUSPEND_WAITING = "SuspendWaiting"
    SUSPEND_TIMED_OUT = "SuspendTimedOut"
    SERVICE_UPDATED = "ServiceUpdated"
    SERVICE_REPLACED = "ServiceReplaced"
    RAY_TOKEN_MISSING = "RayTokenMissing"
    AUTOSCALED = "Autoscaled"
    INFEASIBLE_DEMAND = "InfeasibleDemand"
    DRAIN_REFUSED = "DrainRefused"
    DRAINING = "Draining"
    RAY_VERSION_MISMATCH = "RayVersionMismatch"
    RAY_VERSION_UNSUPPORTED = "RayVersionUnsupported"
    REDIS_CLEANUP = "RedisCleanup"
    REDIS_CLEANED_UP = "RedisCleanedUp"
    REDIS_CLEANUP_FAILED = "RedisCleanupFailed"
    REDIS_CLEANUP_TIMED_OUT = "RedisCleanupTimedOut"
    # SwarmJob
    JOB_INITIALIZING = "Initializing"
    JOB_RESUMED = "Resumed"
    JOB_RETRYING = "Retrying"
    JOB_SUBMITTED = "Submitted"
    JOB_RUNNING = "Running"
    JOB_COMPLETE = "Complete"
    JOB_SUSPENDED = "Suspended"
    RAY_JOB_STOPPED = "RayJobStopped"
    RAY_JOB_FAILED = "RayJobFailed"
    RAY_JOB_LOST = "RayJobLost"
    CLUSTER_LOST = "ClusterLost"
    STATUS_UNREADABLE = "StatusUnreadable"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    SUBMIT_FAILED = "SubmitFailed"
    STOP_FAILED = "StopFailed"
    JOB_UNSCHEDULABLE = "Unschedulable"

    @property
    def event_type(self) -> str:
        return "Warning" if self in _WARNINGS else "Normal"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_WARNINGS = frozenset({
    EventReason.CREATE_FAILED, EventReason.REPLACING, EventReason.INVALID_SPEC, EventReason.TEMPLATE_OVERRIDDEN,
    EventReason.SERVICE_REPLACED, EventReason.RAY_TOKEN_MISSING, EventReason.INFEASIBLE_DEMAND,
    EventReason.RAY_VERSION_MISMATCH, EventReason.RAY_VERSION_UNSUPPORTED, EventReason.REDIS_CLEANUP_FAILED,
    EventReason.REDIS_CLEANUP_TIMED_OUT, EventReason.SUSPEND_TIMED_OUT, EventReason.JOB_RETRYING,
    EventReason.RAY_JOB_FAILED, EventReason.RAY_JOB_LOST, EventReason.CLUSTER_LOST, EventReason.STATUS_UNREADABLE,
    EventReason.DEADLINE_EXCEEDED, EventReason.BACKOFF_LIMIT_EXCEEDED, EventReason.SUBMIT_FAILED,
    EventReason.STOP_FAILED, EventReason.JOB_UNSCHEDULABLE,
})

_MEANINGS = {
    EventReason.CREATED: "pods, the head service or the Ray token Secret were created (how many of each)",
    EventReason.UPDATED: "pods took their template's new labels or annotations in place, without a restart",
    EventReason.DELETED: "pods were deleted on purpose: scaled down, suspended, rolled out, or drained by Ray",
    EventReason.CREATE_FAILED: "the API server refused a create (a quota, an admission webhook), or the name is "
                               "held by an object that is not this cluster's; retried",
    EventReason.REPLACING: "a worker or the head failed (or its Ray node died) and is being replaced, with backoff; "
                           "the message quotes the Ray container's reason, exit code and message",
    EventReason.DISRUPTED: "a worker or the head was disrupted (evicted by the kubelet or through the Eviction API, "
                           "its node shut down, deleted or NotReady too long), once per pod, and is replaced at "
                           "once; not a failure, no backoff",
    EventReason.INVALID_SPEC: "the spec cannot be served (the message names the field); `Valid=False`",
    EventReason.TEMPLATE_OVERRIDDEN: "a pod template sets values the operator sets itself; the operator's values win",
    EventReason.ROLLOUT_WAITING: "a rolling update waits (busy workers while Ray's state is unknown)",
    EventReason.SCALE_DOWN_WAITING: "workers to remove (replicas or maxReplicas lowered, suspend, a group removed) "
                                    "wait: while Ray's state is unknown, busy cannot be told from idle",
    EventReason.HEAD_WAITING: "a new head waits for the old head pod to be gone: its node is not known to be dead, "
                              "and two GCS servers must never run at once",
    EventReason.SUSPEND_WAITING: "a suspended cluster's head stays, its workers gone, while a Ray job submitted "
                                 "through its Jobs API has not ended (its driver runs there), or while that API "
                                 "cannot be read; at most updateStrategy.drainTimeoutSeconds from the suspension",
    EventReason.SUSPEND_TIMED_OUT: "a suspended cluster's head went at the bound (updateStrategy.drainTimeoutSeconds "
                                   "from the suspension) while Ray jobs still ran there, or their state was unknown",
    EventReason.SERVICE_UPDATED: "the head service's annotations, type or selector (a new head generation) were "
                                 "patched in place",
    EventReason.SERVICE_REPLACED: "the head service was re-created (headless and not cannot change in place)",
    EventReason.RAY_TOKEN_MISSING: "token auth is on but no usable token Secret exists yet; pods wait for it",
    EventReason.AUTOSCALED: "the autoscaler changed a group's target, with the demand that made it",
    EventReason.INFEASIBLE_DEMAND: "Ray asks for resources that fit no worker group: nothing is scaled for them",
    EventReason.DRAIN_REFUSED: "Ray refused an idle drain because the node got work: it keeps running",
    EventReason.DRAINING: "a busy worker that has to go (a rollout, a scale-down, suspend, its group removed) is "
                          "drained by Ray (PREEMPTION, a deadline) before its pod is deleted",
    EventReason.RAY_VERSION_MISMATCH: "the Ray the cluster runs is not spec.rayVersion",
    EventReason.RAY_VERSION_UNSUPPORTED: "the cluster's Ray is outside what the operator's GCS client was tested "
                                         "with",
    EventReason.REDIS_CLEANUP: "a deleted cluster's pods are gone; a Job removes its GCS keys from Redis",
    EventReason.REDIS_CLEANED_UP: "the cleanup Job removed the GCS keys; the finalizer goes",
    EventReason.REDIS_CLEANUP_FAILED: "the cleanup Job failed; the finalizer goes, the keys may remain (the "
                                      "message says how to remove them)",
    EventReason.REDIS_CLEANUP_TIMED_OUT: "the keys were not confirmed removed within cleanupTimeoutSeconds; the "
                                         "finalizer goes anyway",
    EventReason.JOB_INITIALIZING: "a SwarmJob starts its first attempt (its cluster comes up, then the submission)",
    EventReason.JOB_RESUMED: "a suspended SwarmJob was resumed: a new attempt starts (not counted as a failure)",
    EventReason.JOB_RETRYING: "a SwarmJob's attempt failed (the message says why); the next one starts, on a "
                              "fresh cluster if the job has its own",
    EventReason.JOB_SUBMITTED: "the operator posted the Ray job to the cluster's Jobs API (once per attempt)",
    EventReason.JOB_RUNNING: "Ray knows the SwarmJob's Ray job (PENDING or RUNNING)",
    EventReason.JOB_COMPLETE: "the SwarmJob's Ray job SUCCEEDED",
    EventReason.JOB_SUSPENDED: "`spec.suspend` is true: the Ray job was stopped and the job's own cluster deleted",
    EventReason.RAY_JOB_STOPPED: "the operator asked Ray to stop the job (deadline, suspend, deletion)",
    EventReason.RAY_JOB_FAILED: "the Ray job ended FAILED or STOPPED; the message has Ray's reason and the "
                                "driver's last log lines",
    EventReason.RAY_JOB_LOST: "Ray no longer knows a submitted job (its head restarted without GCS fault "
                              "tolerance): the attempt failed",
    EventReason.CLUSTER_LOST: "the SwarmCluster a submitted job ran on is gone: the attempt failed",
    EventReason.STATUS_UNREADABLE: "the Ray job's status could not be read for too long: the attempt failed",
    EventReason.DEADLINE_EXCEEDED: "activeDeadlineSeconds passed: the Ray job was stopped, no retries",
    EventReason.BACKOFF_LIMIT_EXCEEDED: "the last attempt allowed by backoffLimit failed",
    EventReason.SUBMIT_FAILED: "the Jobs API refused the submission (the message has Ray's answer); retried",
    EventReason.STOP_FAILED: "the Jobs API did not stop the Ray job (unreachable, or an error); the job's own "
                             "cluster is deleted anyway",
    EventReason.JOB_UNSCHEDULABLE: "the SwarmJob's demand fit no group of its cluster for a minute (its driver's "
                                   "entrypointResources, or on its own cluster what the autoscaler reports "
                                   "infeasible): it failed, no retries",
}


class ConditionType(StrEnum):
    """A condition in status.conditions; `meaning` says what True means."""

    VALID = "Valid"
    HEAD_READY = "HeadReady"
    WORKERS_READY = "WorkersReady"
    AUTOSCALING = "Autoscaling"
    SUSPENDED = "Suspended"
    REPLICA_FAILURE = "ReplicaFailure"
    ROLLOUT_COMPLETE = "RolloutComplete"

    @property
    def meaning(self) -> str:
        return _CONDITION_MEANINGS[self]


_CONDITION_MEANINGS = {
    ConditionType.VALID: "the spec was accepted (False: the message names the field at fault)",
    ConditionType.HEAD_READY: "the head pod is ready (False with reason `HeadFailed`, then `CrashLoop`, quoting why "
                              "it failed, while the head keeps failing)",
    ConditionType.WORKERS_READY: "every group has as many ready workers as its target (the message lists the "
                                 "groups short of it)",
    ConditionType.AUTOSCALING: "`autoscaling.enabled`: worker groups follow Ray's pending demand",
    ConditionType.SUSPENDED: "`spec.suspend` is true: no pods run (the message says what the suspension still "
                             "waits for: workers draining, then Ray jobs running on the head)",
    ConditionType.REPLICA_FAILURE: "workers failed recently (consecutive failures per group and each group's last "
                                   "failure in the message)",
    ConditionType.ROLLOUT_COMPLETE: "every pod runs the current spec (reason AllPodsUpdated); a GitOps health "
                                    "check waits for it",
}


class JobConditionType(StrEnum):
    """A condition in a SwarmJob's status.conditions, True while the deployment status of the same name holds
    (as a Kubernetes Job's Complete, Failed and Suspended)."""

    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
