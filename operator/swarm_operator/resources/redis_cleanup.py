"""The Job that removes a deleted cluster's GCS keys from its Redis. Pure: spec in, Job dict out.

It runs Ray's own cleanup (`ray._private.gcs_utils.cleanup_redis_storage`, the function KubeRay's cleanup
Job runs too) in the cluster's image, with the head's Redis settings: address (TLS for rediss://), user,
password from the same Secret, the CA bundle, and the storage namespace the head wrote under. It is
scheduled like the head (the head template's node selector, tolerations, affinity, pull secrets …), so it
runs wherever the head could reach Redis.
"""

from __future__ import annotations

from typing import Any

from swarm_operator.resources import labels
from swarm_operator.resources.pods import REDIS_PASSWORD_ENV, redis_ca_volume, storage_namespace
from swarm_operator.spec.rules import PREFIX, RAY_CONTAINER
from swarm_operator.spec.types import ClusterSpec

JOB_SUFFIX = "-redis-cleanup"
DEADLINE_MARGIN_SECONDS = 60
CLEANUP_LABEL = f"{PREFIX}redis-cleanup"  # on the Job and its pod: which cluster's keys it removes
# Pod spec fields of the head template that say where a pod may run and how it pulls its image.
SCHEDULING_FIELDS = ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "priorityClassName",
                     "runtimeClassName", "serviceAccountName", "securityContext", "schedulerName")
# Exit 0 only when Ray says the keys are gone (it answers True also when there were none).
SCRIPT = """\
import os, sys
from ray._private.gcs_utils import cleanup_redis_storage
from ray._private.services import get_address
host, port, tls = get_address(os.environ["RAY_REDIS_ADDRESS"])
namespace = os.environ["RAY_external_storage_namespace"]
ok = cleanup_redis_storage(host=host, port=int(port), password=os.environ.get("REDIS_PASSWORD", ""),
                           use_ssl=tls, storage_namespace=namespace, username=os.environ.get("REDIS_USERNAME", ""))
print(f"swarm-operator: GCS keys of namespace {namespace} removed: {ok}", flush=True)
sys.exit(0 if ok else 1)
"""


def job_name(cluster: str) -> str:
    return f"{cluster}{JOB_SUFFIX}"


def build_cleanup_job(cluster: ClusterSpec) -> dict[str, Any]:
    gcs = cluster.fault_tolerance.gcs
    assert gcs is not None, "only clusters with GCS fault tolerance keep keys in Redis"
    env: list[dict[str, Any]] = [
        {"name": "RAY_REDIS_ADDRESS", "value": gcs.redis_address},
        {"name": "RAY_external_storage_namespace", "value": storage_namespace(cluster)},
        {"name": "REDIS_USERNAME", "value": gcs.redis_username or ""},
    ]
    if gcs.password_secret_name and gcs.password_secret_key:
        env.append({"name": REDIS_PASSWORD_ENV, "valueFrom": {"secretKeyRef": {
            "name": gcs.password_secret_name, "key": gcs.password_secret_key}}})
    volumes, mounts, ca_env = redis_ca_volume(gcs)
    head_spec = cluster.head.template.get("spec") or {}
    pod_labels = {CLEANUP_LABEL: cluster.name}
    container: dict[str, Any] = {"name": RAY_CONTAINER, "image": cluster.image, "command": ["python", "-c", SCRIPT],
                                 "env": [*env, *ca_env],
                                 "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                               "limits": {"memory": "512Mi"}}}
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "enableServiceLinks": False, "containers": [container],
                                **{k: head_spec[k] for k in SCHEDULING_FIELDS if k in head_spec}}
    if volumes:
        pod_spec["volumes"] = volumes
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(cluster.name),
            "namespace": cluster.namespace,
            "labels": {**labels.common_labels(cluster.name), CLEANUP_LABEL: cluster.name},
            # Removed with the cluster by the garbage collector once the finalizer is gone.
            "ownerReferences": [labels.owner_reference(cluster.name, cluster.uid)],
        },
        "spec": {
            "backoffLimit": 2,
            # A backstop only: the operator gives up at cleanupTimeoutSeconds after the deletion (before this
            # ends, the Job starting later), and the garbage collector then removes the Job with the cluster.
            "activeDeadlineSeconds": gcs.cleanup_timeout_seconds + DEADLINE_MARGIN_SECONDS,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }
