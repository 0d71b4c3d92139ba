"""SwarmJob object (a dict from the API) → frozen, typed, defaulted spec. No I/O.

The CRD rejects most bad input at the API server; this re-checks the same rules (the installed CRD may be
older than the operator) and validates `clusterSpec` as the SwarmCluster it becomes, so a job is refused
at once rather than failing when its cluster is made. Every error names the field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from swarm_operator.jobs.names import cluster_name
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import FieldError, Reader, SpecError, show
from swarm_operator.spec.rules import DNS_1035_LABEL, MAX_CLUSTER_NAME

SUBMISSION_MODES = ("HTTP", "SubmitterPod")
DELETION_POLICIES = ("DeleteCluster", "DeleteWorkers", "DeleteNone")
MAX_JOB_NAME = 45
MAX_JOB_NAME_OWN_CLUSTER = 38  # its cluster is <job>-<attempt>, at most 45 characters
MAX_BACKOFF_LIMIT = 100
MAX_SECONDS = 31_536_000  # a year
# Demand that fits no group fails the job after this long unless it fits by then: long enough for a shared
# cluster's owner to add a group, short enough that a job asking the impossible does not sit for good.
DEFAULT_UNSCHEDULABLE_GRACE_SECONDS = 60


@dataclass(frozen=True)
class EntrypointResources:
    """What the driver reserves in Ray (Jobs API entrypoint_num_cpus, _num_gpus, _resources)."""

    num_cpus: float = 0.0
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class OwnCluster:
    """spec.clusterSpec: the job makes a SwarmCluster of its own, one per attempt."""

    spec: Mapping[str, Any]  # as written; a SwarmCluster's spec (checked by parse_cluster)
    quota: str = ""  # what Kueue's admission bounds of it (kueue/workload.py's bounded_by_admission), "" unqueued


@dataclass(frozen=True)
class SharedCluster:
    """spec.clusterSelector: an existing SwarmCluster, never changed by the job."""

    name: str


@dataclass(frozen=True)
class JobSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    entrypoint: str
    runtime_env: Mapping[str, Any]
    metadata: Mapping[str, str]
    entrypoint_resources: EntrypointResources
    cluster: OwnCluster | SharedCluster
    submission_mode: str
    on_success: str  # a DELETION_POLICIES entry
    on_failure: str
    ttl_seconds_after_finished: int | None
    active_deadline_seconds: int | None
    backoff_limit: int
    suspend: bool
    unschedulable_grace_seconds: int  # demand that fits no group fails the job after this long


def _number(r: Reader, raw: Mapping[str, Any], key: str, path: str, hi: float) -> float:
    return r.number(raw, key, path, 0.0, 0.0, hi)


def _entrypoint_resources(r: Reader, spec: Mapping[str, Any]) -> EntrypointResources:
    raw = r.mapping(spec, "entrypointResources", "spec")
    path = "spec.entrypointResources"
    custom: dict[str, float] = {}
    for name, value in r.mapping(raw, "resources", path).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            r.fail(f"{path}.resources.{name}", f"must be a number ≥ 0, got {show(value)}")
        else:
            custom[str(name)] = float(value)
    return EntrypointResources(_number(r, raw, "numCpus", path, 100_000), _number(r, raw, "numGpus", path, 10_000),
                               MappingProxyType(custom))


def _metadata(r: Reader, spec: Mapping[str, Any]) -> Mapping[str, str]:
    raw = r.mapping(spec, "metadata", "spec")
    for key, value in raw.items():
        if not isinstance(value, str):
            r.fail(f"spec.metadata.{key}", f"must be a string, got {show(value)}")
    return MappingProxyType({str(k): v for k, v in raw.items() if isinstance(v, str)})


def _cluster(r: Reader, spec: Mapping[str, Any], job: str, namespace: str) -> OwnCluster | SharedCluster:
    own, selector = spec.get("clusterSpec"), spec.get("clusterSelector")
    if (own is None) == (selector is None):
        r.fail("spec.clusterSpec, spec.clusterSelector", "give exactly one (a cluster of the job's own, or an "
               "existing SwarmCluster)")
        return SharedCluster("")
    if selector is not None:
        if spec.get("deletionPolicy") is not None:
            r.fail("spec.deletionPolicy", "applies only to a job's own cluster (spec.clusterSpec)")
        name = r.string(r.mapping(spec, "clusterSelector", "spec"), "name", "spec.clusterSelector", "") or ""
        if not DNS_1035_LABEL.fullmatch(name) or len(name) > MAX_CLUSTER_NAME:
            r.fail("spec.clusterSelector.name", f"must name a SwarmCluster, got {show(name)}")
        return SharedCluster(name)
    if not isinstance(own, Mapping):
        r.fail("spec.clusterSpec", f"must be an object, got {show(own)}")
        return OwnCluster({})
    if len(job) > MAX_JOB_NAME_OWN_CLUSTER:
        r.fail("metadata.name", f"a SwarmJob with spec.clusterSpec must be at most {MAX_JOB_NAME_OWN_CLUSTER} "
               f"characters (its SwarmCluster is named <job>-<attempt>), got {len(job)}")
        return OwnCluster(own)
    # Checked as the cluster of the longest attempt name it may get, so that every attempt's pods are valid.
    try:
        parse_cluster({"metadata": {"name": cluster_name(job, 999_999), "namespace": namespace}, "spec": own})
    except SpecError as exc:
        for error in exc.errors:
            path = "spec.clusterSpec" + error.path.removeprefix("spec") if error.path.startswith("spec") else (
                "metadata.name")
            r.errors.append(FieldError(path, error.message))
    return OwnCluster(own)


def _grace(r: Reader, spec: Mapping[str, Any]) -> int:
    grace = r.integer(spec, "unschedulableGracePeriodSeconds", "spec", DEFAULT_UNSCHEDULABLE_GRACE_SECONDS, 0,
                      MAX_SECONDS)
    return DEFAULT_UNSCHEDULABLE_GRACE_SECONDS if grace is None else grace


def parse_job(obj: Mapping[str, Any]) -> JobSpec:
    """Validate and default a SwarmJob object; raises SpecError listing every bad field."""
    r = Reader()
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default")
    if not DNS_1035_LABEL.fullmatch(name) or len(name) > MAX_JOB_NAME:
        r.fail("metadata.name", f"must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter) of at most "
               f"{MAX_JOB_NAME} characters (its submitter pod is <job>-<attempt>-submitter), got {show(name)}")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError([FieldError("spec", f"must be an object, got {show(spec)}")])
    entrypoint = r.string(spec, "entrypoint", "spec", "") or ""
    if not entrypoint.strip():
        r.fail("spec.entrypoint", "must be a command, e.g. python train.py")
    runtime_env = r.mapping(spec, "runtimeEnv", "spec")
    policy = r.mapping(spec, "deletionPolicy", "spec")
    job = JobSpec(
        name=name,
        namespace=namespace,
        uid=str(meta.get("uid") or ""),
        generation=meta["generation"] if isinstance(meta.get("generation"), int) else 0,
        entrypoint=entrypoint,
        runtime_env=MappingProxyType(dict(runtime_env)),
        metadata=_metadata(r, spec),
        entrypoint_resources=_entrypoint_resources(r, spec),
        cluster=_cluster(r, spec, name, namespace),
        submission_mode=r.choice(spec, "submissionMode", "spec", "HTTP", SUBMISSION_MODES),
        on_success=r.choice(policy, "onSuccess", "spec.deletionPolicy", "DeleteCluster", DELETION_POLICIES),
        on_failure=r.choice(policy, "onFailure", "spec.deletionPolicy", "DeleteCluster", DELETION_POLICIES),
        ttl_seconds_after_finished=r.integer(spec, "ttlSecondsAfterFinished", "spec", None, 0, MAX_SECONDS),
        active_deadline_seconds=r.integer(spec, "activeDeadlineSeconds", "spec", None, 1, MAX_SECONDS),
        backoff_limit=r.integer(spec, "backoffLimit", "spec", 0, 0, MAX_BACKOFF_LIMIT) or 0,
        suspend=r.boolean(spec, "suspend", "spec", False),
        unschedulable_grace_seconds=_grace(r, spec),
    )
    if r.errors:
        raise SpecError(r.errors)
    return job
