"""The operator's own pod on kind: deleted in the middle of a scale-up, and upgraded with `helm upgrade`.

Each test has its own SwarmCluster in its own namespace; the operator is the session's Helm release.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.kind_tier import OPERATOR_IMAGE, KindTier, install_operator
from tests.e2e.helpers import cluster_pods, delete_swarmcluster
from tests.e2e.test_autoscaling import Scaled, result_line
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for
from tests.kind.helpers import run_job, swarmcluster, wait_ray_cluster

pytestmark = [pytest.mark.kind, pytest.mark.timeout(480)]

THREE_SLOTS = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1})
def work():
    time.sleep(15)
    return socket.gethostname()

print("E2E-RESULT " + json.dumps({"pods": sorted(set(ray.get([work.remote() for _ in range(3)])))}))
"""


@pytest.fixture
def cluster_ns(namespaces: Any) -> Iterator[str]:
    name = namespaces.new("kind-op")
    yield name
    namespaces.delete(name)


def operator_pods(kind_tier: KindTier, core: Any) -> list[Any]:
    return [p for p in core.list_namespaced_pod(kind_tier.operator_namespace,
                                                label_selector=f"app.kubernetes.io/instance={kind_tier.release}").items
            if p.metadata.deletion_timestamp is None]


def test_the_operator_pod_deleted_mid_scale_up_converges_without_duplicates(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, cluster_ns: str) -> None:
    manifest = swarmcluster("midscale", kind_tier.ray_image, cpu=(0, 4), gpu=(0, 1), idle_timeout=30)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, cluster_ns, PLURAL, manifest)
    scaled = Scaled(core_v1, custom_objects, cluster_ns, "midscale")
    seen: set[str] = set()

    def watch() -> None:
        pods = scaled.pods("cpu")
        seen.update(p.metadata.name for p in pods)
        if pods and not deleted:
            (old,) = operator_pods(kind_tier, core_v1)
            core_v1.delete_namespaced_pod(old.metadata.name, kind_tier.operator_namespace, grace_period_seconds=0)
            deleted.append(old.metadata.name)

    deleted: list[str] = []
    try:
        head = wait_ray_cluster(kind_tier, core_v1, cluster_ns, "midscale", want=1).head
        logs = run_job(kind_tier, cluster_ns, head, THREE_SLOTS, timeout=360, while_waiting=watch)
        assert deleted, "the scale-up never started"
        assert len(result_line(logs)["pods"]) == 3, logs
        new = wait_for("a new operator pod", lambda: [p for p in operator_pods(kind_tier, core_v1)
                                                      if p.metadata.name not in deleted], timeout=120)
        assert new
        # Three tasks of one slot: three cpu workers, and never a fourth made by a restarted operator that forgot
        # what its predecessor had asked for.
        assert len(seen) == 3 and scaled.max_pods["cpu"] == 3, (sorted(seen), scaled.max_pods)
        assert scaled.max_pods["gpu"] == 0
    finally:
        delete_swarmcluster(core_v1, custom_objects, cluster_ns, "midscale")


def test_helm_upgrade_to_a_new_operator_image_restarts_no_ray_pod(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, cluster_ns: str) -> None:
    manifest = swarmcluster("upgrade", kind_tier.ray_image, cpu=(1, 1), gpu=(0, 0))
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, cluster_ns, PLURAL, manifest)
    try:
        before = wait_ray_cluster(kind_tier, core_v1, cluster_ns, "upgrade", want=2)
        uids = {name: pod.metadata.uid for name, pod in before.pods.items()}
        (old_operator,) = operator_pods(kind_tier, core_v1)
        assert kind_tier.upgrade_image is not None, "the session's tier is made with upgrade=True"
        tag = kind_tier.upgrade_image.result(timeout=600)  # built and loaded behind the set-up
        try:
            install_operator(kind_tier, tag)
            (new_operator,) = wait_for("one operator pod of the new image", lambda: [
                p for p in operator_pods(kind_tier, core_v1) if p.spec.containers[0].image.endswith(tag)
                and p.status.phase == "Running"] if len(operator_pods(kind_tier, core_v1)) == 1 else None,
                timeout=180)
            assert new_operator.metadata.uid != old_operator.metadata.uid
            # Give the new operator a few of its turns over the cluster: it must find nothing to change.
            time.sleep(20)
            after = wait_ray_cluster(kind_tier, core_v1, cluster_ns, "upgrade", want=2)
            assert {name: pod.metadata.uid for name, pod in after.pods.items()} == uids
            assert all(cs.restart_count == 0 for p in cluster_pods(core_v1, cluster_ns, "upgrade")
                       for cs in p.status.container_statuses)
        finally:
            install_operator(kind_tier, OPERATOR_IMAGE)  # the rest of the session runs the image under test
    finally:
        delete_swarmcluster(core_v1, custom_objects, cluster_ns, "upgrade")
