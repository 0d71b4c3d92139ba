"""What a SwarmJob writes to its own SwarmCluster, as plain dicts. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarm_operator import GROUP, KIND, VERSION
from swarm_operator.jobs.names import ATTEMPT_LABEL, JOB_LABEL, cluster_name
from swarm_operator.jobs.spec import JobSpec, OwnCluster
from swarm_operator.kueue.workload import QUOTA_ANNOTATION
from swarm_operator.resources.pods import ray_shape
from swarm_operator.spec.types import ClusterSpec

JOB_KIND = "SwarmJob"


def job_owner_reference(job: JobSpec) -> dict[str, Any]:
    """The job owns its cluster: deleting the job (by hand or by its TTL) deletes the cluster, and its pods."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": JOB_KIND, "name": job.name, "uid": job.uid,
            "controller": True, "blockOwnerDeletion": True}


def build_job_cluster(job: JobSpec, attempt: int) -> dict[str, Any]:
    """The SwarmCluster of one attempt, from spec.clusterSpec; a queued job's says what its admission bounds (the
    cluster's turn puts it into status.autoscaler.quota)."""
    assert isinstance(job.cluster, OwnCluster)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": cluster_name(job.name, attempt),
            "namespace": job.namespace,
            "labels": {JOB_LABEL: job.name, ATTEMPT_LABEL: str(attempt)},
            **({"annotations": {QUOTA_ANNOTATION: job.cluster.quota}} if job.cluster.quota else {}),
            "ownerReferences": [job_owner_reference(job)],
        },
        "spec": {**job.cluster.spec, "suspend": False},
    }


def workers_to_zero(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch scaling every worker group of a cluster to zero (deletionPolicy DeleteWorkers); the list
    is sent whole, as a merge patch replaces lists."""
    groups = (cluster.get("spec") or {}).get("workerGroups") or []
    return {"spec": {"workerGroups": [{**g, "replicas": 0, "minReplicas": 0, "maxReplicas": 0} for g in groups]}}


def node_shapes(cluster: ClusterSpec) -> tuple[dict[str, float], ...]:
    """The Ray resources of the cluster's head and of one node of each group that may have any: where a job's
    driver could ever be placed."""
    head = ray_shape(cluster.head.resources, cluster.head.ray_start_params)
    return (head, *(ray_shape(g.resources, g.ray_start_params, g.ray_resources) for g in cluster.worker_groups
                    if g.max_replicas > 0))
