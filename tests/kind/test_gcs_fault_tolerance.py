"""GCS fault tolerance on kind with Redis as a pod: the head's container is killed, a new head reads the cluster's
state back from Redis, the worker stays, and a detached actor on it survives."""

from __future__ import annotations

import time
from typing import Any

import pytest

from localcluster.kind_tier import KindTier
from tests.e2e.helpers import cluster_pods, delete_swarmcluster
from tests.e2e.test_gcs_fault_tolerance import CREATE_ACTOR, USE_ACTOR
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for
from tests.kind.helpers import kill_ray_container, pool_template, run_job, swarmcluster, wait_ray_cluster

pytestmark = [pytest.mark.kind, pytest.mark.timeout(480)]

NAME = "gcsft"


def redis_objects(image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Redis pod on the CPU worker, and its Service (the head reaches it by cluster DNS)."""
    labels = {"app": "redis"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "redis", "labels": labels},
           "spec": {**pool_template("cpu")["spec"], "containers": [{
               "name": "redis", "image": image, "imagePullPolicy": "Never", "ports": [{"containerPort": 6379}],
               "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
               "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1}}]}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis"},
               "spec": {"selector": labels, "ports": [{"port": 6379, "targetPort": 6379}]}}
    return pod, service


def test_a_killed_head_comes_back_from_redis_and_a_detached_actor_survives(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, namespace: str) -> None:
    pod, service = redis_objects(kind_tier.redis_image)
    core_v1.create_namespaced_pod(namespace, pod)
    core_v1.create_namespaced_service(namespace, service)
    manifest = swarmcluster(NAME, kind_tier.ray_image, cpu=(1, 1))
    spec = manifest["spec"]
    spec["workerGroups"] = spec["workerGroups"][:1]
    spec["workerGroups"][0]["rayResources"] = {"keeper": 1}
    spec["autoscaling"] = {"enabled": False}
    spec["faultTolerance"] = {"gcs": {"redisAddress": f"redis.{namespace}.svc.cluster.local:6379"}}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    try:
        rc = wait_ray_cluster(kind_tier, core_v1, namespace, NAME, want=2)
        logs = run_job(kind_tier, namespace, rc.head, CREATE_ACTOR, timeout=180)
        assert "COUNT 1" in logs, logs
        worker = next(n for n in rc.pods if n != rc.head)
        kill_ray_container(kind_tier, rc.pods[rc.head])
        killed = time.monotonic()
        wait_for("the killed head replaced", lambda: any(
            p.metadata.name == rc.head and p.metadata.uid != rc.pods[rc.head].metadata.uid and p.status.pod_ip
            for p in cluster_pods(core_v1, namespace, NAME)), timeout=180, every=1.0)
        after = wait_ray_cluster(kind_tier, core_v1, namespace, NAME, want=2)
        print(f"\n[kind] head killed → a new head, the worker rejoined after {time.monotonic() - killed:.0f}s")
        assert after.pods[worker].metadata.uid == rc.pods[worker].metadata.uid, "with GCS FT the worker is kept"
        logs = run_job(kind_tier, namespace, after.head, USE_ACTOR, timeout=180)
        assert "COUNT 2" in logs, f"the detached actor did not survive the head:\n{logs}"
    finally:
        delete_swarmcluster(core_v1, custom_objects, namespace, NAME, timeout=240)
