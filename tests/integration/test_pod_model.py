"""Requests ≠ limits, extended resources, rayCpus and probe timings reach the pods; the head service's
annotations and type are reconciled in place — the operator against a real API server on kwok's nodes."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from localcluster.operator_process import OperatorProcess
from tests.integration.helpers import Cluster, manifest, ready_status, wait_for

pytestmark = pytest.mark.integration

LB = "service.beta.kubernetes.io/aws-load-balancer-internal"


def _ray_container(pod: client.V1Pod) -> client.V1Container:
    return next(c for c in pod.spec.containers if c.name == "ray")


def test_requests_differ_from_limits_and_the_head_takes_no_cpus(swc: Cluster, operator: OperatorProcess) -> None:
    body = manifest("res", replicas=2)
    body["spec"]["head"]["resources"] = {"cpu": 1, "memory": "1Gi", "rayCpus": 0}
    body["spec"]["workerGroups"][0]["resources"] = {
        "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "1Gi", "ephemeral-storage": "2Gi"},
    }
    body["spec"]["workerGroups"][0]["probes"] = {"liveness": {"periodSeconds": 5, "failureThreshold": 120}}
    swc.create(body)
    wait_for("cluster Running 2/2", ready_status(swc, "res", 2))
    for worker in swc.workers("res"):
        ray = _ray_container(worker)
        assert ray.resources.requests == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
        assert ray.resources.limits == {"memory": "1Gi", "ephemeral-storage": "2Gi"}  # no CPU limit
        assert worker.status.qos_class == "Burstable"
        assert "--num-cpus=1" in ray.args and f"--memory={2**30}" in ray.args  # the limit; 500m rounded up
        probe = ray.liveness_probe
        assert (probe.period_seconds, probe.failure_threshold, probe.timeout_seconds) == (5, 120, 2)
    head = _ray_container(swc.heads("res")[0])
    assert "--num-cpus=0" in head.args
    assert head.resources.requests["cpu"] == "1"


def test_extended_resources_reach_the_pod_as_written(swc: Cluster, operator: OperatorProcess) -> None:
    """EFA and RDMA devices no kwok node offers: the pod stays Pending, but the API server took it as built."""
    body = manifest("efa", replicas=1)
    body["spec"]["workerGroups"][0]["resources"] = {
        "cpu": 1, "memory": "1Gi", "gpu": 2, "accelerator": "neuron",
        "limits": {"vpc.amazonaws.com/efa": 1, "rdma/hca": 2}, "requests": {"rdma/hca": 2},
    }
    swc.create(body)
    worker = wait_for("worker pod", lambda: (swc.workers("efa") or [None])[0])
    ray = _ray_container(worker)
    expected = {"cpu": "1", "memory": "1Gi", "vpc.amazonaws.com/efa": "1", "rdma/hca": "2",
                "aws.amazon.com/neuroncore": "2"}
    assert ray.resources.requests == expected and ray.resources.limits == expected
    assert "--num-gpus=0" in ray.args and '--resources={"neuron_cores":2.0}' in ray.args


def _service(swc: Cluster, name: str) -> client.V1Service:
    return swc.core.read_namespaced_service(f"{name}-head-svc", swc.ns)


def _annotations(svc: client.V1Service) -> dict[str, str]:
    return dict(svc.metadata.annotations or {})


def test_head_service_annotations_and_type_are_patched_in_place(swc: Cluster, operator: OperatorProcess) -> None:
    body = manifest("svc", replicas=1)
    body["spec"]["head"].update(serviceType="ClusterIP", service={"annotations": {LB: "true", "team": "ml"}})
    swc.create(body)
    wait_for("cluster Running", ready_status(swc, "svc", 1))
    first = _service(swc, "svc")
    assert _annotations(first)[LB] == "true" and first.spec.type == "ClusterIP"
    head_uid = swc.heads("svc")[0].metadata.uid
    # Another writer's annotation, which the operator must leave alone.
    swc.core.patch_namespaced_service("svc-head-svc", swc.ns, {"metadata": {"annotations": {"other": "kept"}}})

    swc.patch("svc", {"spec": {"head": {"service": {"annotations": {LB: "false", "team": None}}}}})
    wait_for("annotation changed and dropped", lambda: (lambda a: a.get(LB) == "false" and "team" not in a)(
        _annotations(_service(swc, "svc"))))
    assert _annotations(_service(swc, "svc"))["other"] == "kept"

    swc.patch("svc", {"spec": {"head": {"serviceType": "NodePort"}}})
    wait_for("NodePort", lambda: _service(swc, "svc").spec.type == "NodePort")
    swc.patch("svc", {"spec": {"head": {"serviceType": "ClusterIP"}}})
    wait_for("ClusterIP again", lambda: _service(swc, "svc").spec.type == "ClusterIP")
    now = _service(swc, "svc")
    assert (now.metadata.uid, now.spec.cluster_ip) == (first.metadata.uid, first.spec.cluster_ip), "patched in place"
    assert all(p.node_port is None for p in now.spec.ports)
    assert swc.heads("svc")[0].metadata.uid == head_uid, "a service change never restarts the head"
    # The Event follows the patch's answer: the service shows the change a moment before the Event is there.
    wait_for("a ServiceUpdated Event", lambda: any(e.reason == "ServiceUpdated" and "NodePort → ClusterIP" in e.message
                                                   for e in swc.events("svc")), timeout=10)


def test_headless_to_cluster_ip_recreates_the_service_with_a_warning(swc: Cluster,
                                                                       operator: OperatorProcess) -> None:
    swc.create(manifest("hl", replicas=1))
    wait_for("cluster Running", ready_status(swc, "hl", 1))
    before = _service(swc, "hl")
    assert before.spec.cluster_ip == "None"
    head_uid = swc.heads("hl")[0].metadata.uid
    swc.patch("hl", {"spec": {"head": {"serviceType": "ClusterIP"}}})

    def replaced() -> Any:
        try:
            svc = _service(swc, "hl")
        except client.ApiException:
            return None
        return svc if svc.metadata.uid != before.metadata.uid and svc.spec.cluster_ip != "None" else None

    wait_for("a new ClusterIP service", replaced)
    # The Warning follows the new service's creation (cluster_effects.sync_service).
    warnings = wait_for("a ServiceReplaced Warning", lambda: [
        e for e in swc.events("hl") if e.type == "Warning" and e.reason == "ServiceReplaced"], timeout=10)
    assert "spec.head.serviceType" in warnings[0].message, warnings[0].message
    assert swc.heads("hl")[0].metadata.uid == head_uid
