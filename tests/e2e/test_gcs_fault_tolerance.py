"""GCS fault tolerance on a real Redis: the head dies, the cluster keeps its job history and detached actors,
and deleting the cluster removes its keys from Redis.

Redis runs with TLS, an ACL user and a password (tests/e2e/redis_server.py): the cluster's spec uses rediss://,
redisCA, redisUsername and redisPasswordSecret, so the head's GCS and the cleanup Job both go through all of them.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
from typing import Any

import pytest

from localcluster import rayjobs
from tests.e2e.helpers import POOL_LABEL, ProcessNodes, cluster_pods, raylet_pid, wait_ray_cluster
from tests.e2e.redis_server import Redis
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TOLERATE_PROCESS_NODES = [{"key": "swarm.io/process-node", "operator": "Exists", "effect": "NoSchedule"}]

# A detached actor on the worker (its custom resource "keeper"), which must outlive the head.
CREATE_ACTOR = """\
import ray
ray.init()

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

c = Counter.options(name="keeper", namespace="gcsft", lifetime="detached", resources={"keeper": 1},
                    num_cpus=0).remote()
print("COUNT", ray.get(c.incr.remote()))
"""
USE_ACTOR = """\
import ray
ray.init(namespace="gcsft")
c = ray.get_actor("keeper")
print("COUNT", ray.get(c.incr.remote()))
"""


def _manifest(pool: str, redis: Redis) -> dict[str, Any]:
    placement = {"nodeSelector": {"swarm.io/process-node": "true", POOL_LABEL: pool},
                 "tolerations": TOLERATE_PROCESS_NODES}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": "gcsft"},
        "spec": {
            "head": {"resources": {"cpu": 1, "memory": "1Gi"}, "template": {"spec": placement}},
            "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                              "resources": {"cpu": 1, "memory": "1Gi"}, "rayResources": {"keeper": 1},
                              "template": {"spec": placement}}],
            "faultTolerance": {"gcs": redis.gcs_spec()},
        },
    }


def _job(head_ip: str, script: str) -> tuple[str, dict[str, Any], str]:
    job_id = rayjobs.submit_job(head_ip, "python -c " + shlex.quote(script))
    info = rayjobs.wait_job(head_ip, job_id, timeout=120)
    return job_id, info, rayjobs.job_logs(head_ip, job_id)


def test_the_head_dies_and_the_cluster_keeps_its_jobs_and_detached_actors_then_deletion_removes_its_keys(
        core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any, process_nodes: ProcessNodes,
        redis: Redis) -> None:
    ns = module_namespace
    redis.add_credentials(core_v1, ns)
    obj = custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                         _manifest(process_nodes.pool, redis))
    uid = obj["metadata"]["uid"]
    rc = wait_ray_cluster(core_v1, ns, "gcsft", want=2, timeout=240)
    stored = custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gcsft")
    assert "swarm.io/redis-cleanup" in stored["metadata"].get("finalizers", [])

    first_job, info, logs = _job(rc.head_ip, CREATE_ACTOR)
    assert info["status"] == "SUCCEEDED" and "COUNT 1" in logs, logs
    keys = redis.keys(uid)
    assert keys, "the GCS wrote nothing to Redis under the cluster's namespace (its uid)"

    head = next(n for n, p in rc.pods.items() if p.metadata.labels["swarm.io/node-type"] == "head")
    worker = next(n for n in rc.pods if n != head)
    worker_uid = rc.pods[worker].metadata.uid
    os.kill(raylet_pid(ns, head), signal.SIGKILL)
    killed = time.monotonic()
    wait_for("the failed head replaced", lambda: any(
        p.metadata.name == head and p.metadata.uid != rc.pods[head].metadata.uid and p.status.pod_ip
        for p in cluster_pods(core_v1, ns, "gcsft")), timeout=120, every=1.0)
    after = wait_ray_cluster(core_v1, ns, "gcsft", want=2, timeout=240)
    print(f"\n[e2e] head killed → a new head with the worker rejoined after {time.monotonic() - killed:.0f}s")
    assert after.pods[worker].metadata.uid == worker_uid, "with GCS fault tolerance the worker is kept"

    jobs = {j["submission_id"]: j for j in rayjobs.list_jobs(after.head_ip)}
    assert jobs.get(first_job, {}).get("status") == "SUCCEEDED", f"job history lost: {sorted(jobs)}"
    _, info, logs = _job(after.head_ip, USE_ACTOR)
    # 2: the same actor process, with its state, not a new one.
    assert info["status"] == "SUCCEEDED" and "COUNT 2" in logs, logs

    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gcsft")
    deleted = time.monotonic()

    def gone() -> bool:
        try:
            custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gcsft")
        except Exception as exc:
            return getattr(exc, "status", None) == 404
        return False

    wait_for("the SwarmCluster gone after its cleanup", gone, timeout=240, every=1.0)
    print(f"[e2e] deletion with Redis cleanup took {time.monotonic() - deleted:.0f}s")
    events = core_v1.list_namespaced_event(ns, field_selector="involvedObject.name=gcsft").items
    reasons = {e.reason: e.message for e in events}
    assert "RedisCleanedUp" in reasons, reasons
    assert redis.keys(uid) == [], "the cluster's GCS keys are still in Redis"
