"""Requests/limits, extended resources, accelerator kinds, rayCpus, probe timings (builders and spec)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from swarm_operator.resources.pods import build_head_pod, build_worker_pod, head_hash, worker_hash
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.rules import PROBE_DEFAULTS
from tests.cases.invalid_manifests import DELETE, mutated
from tests.unit.test_builders import flags, make_cluster, ray

R0 = "spec.workerGroups[0].resources"  # the CPU group: cpu 500m, memory 1Gi
R1 = "spec.workerGroups[1].resources"  # the GPU group: cpu 2, memory 4Gi, gpu 1
GiB = 2**30


def cpu_worker(resources: dict[str, Any]) -> dict[str, Any]:
    c = make_cluster({R0: resources})
    return build_worker_pod(c, c.worker_groups[0], "abcde")


def gpu_worker(resources: dict[str, Any]) -> dict[str, Any]:
    c = make_cluster({R1: {"cpu": 2, "memory": "4Gi", "gpu": 1, **resources}})
    return build_worker_pod(c, c.worker_groups[1], "abcde")


@pytest.mark.parametrize(
    ("resources", "requests", "limits"),
    [
        pytest.param({"cpu": "500m", "memory": "1Gi"}, {"cpu": "500m", "memory": "1Gi"},
                     {"cpu": "500m", "memory": "1Gi"}, id="shorthand-request-equals-limit"),
        pytest.param({}, {"cpu": "1", "memory": "2Gi"}, {"cpu": "1", "memory": "2Gi"}, id="defaults"),
        pytest.param({"requests": {"cpu": "4"}, "memory": "8Gi"}, {"cpu": "4", "memory": "8Gi"}, {"memory": "8Gi"},
                     id="cpu-request-without-a-limit"),
        pytest.param({"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": 3, "memory": "6Gi"}},
                     {"cpu": "2", "memory": "4Gi"}, {"cpu": "3", "memory": "6Gi"}, id="requests-below-limits"),
        pytest.param({"limits": {"cpu": "2", "memory": "4Gi"}}, {"cpu": "2", "memory": "4Gi"},
                     {"cpu": "2", "memory": "4Gi"}, id="limit-only-request-is-the-limit"),
        pytest.param({"cpu": 1, "memory": "1Gi", "requests": {"ephemeral-storage": "20Gi"},
                      "limits": {"ephemeral-storage": "50Gi"}},
                     {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "20Gi"},
                     {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "50Gi"}, id="ephemeral-storage"),
        pytest.param({"cpu": 1, "memory": "1Gi", "limits": {"vpc.amazonaws.com/efa": 1, "rdma/hca": "2"}},
                     {"cpu": "1", "memory": "1Gi", "vpc.amazonaws.com/efa": "1", "rdma/hca": "2"},
                     {"cpu": "1", "memory": "1Gi", "vpc.amazonaws.com/efa": "1", "rdma/hca": "2"},
                     id="extended-resources"),
    ],
)
def test_container_requests_and_limits(resources: dict[str, Any], requests: dict[str, str],
                                       limits: dict[str, str]) -> None:
    got = ray(cpu_worker(resources))["resources"]
    assert got == {"requests": requests, "limits": limits}


@pytest.mark.parametrize(
    ("resources", "num_cpus", "memory"),
    [
        pytest.param({"cpu": "500m", "memory": "1Gi"}, "1", str(GiB), id="shorthand"),
        pytest.param({"requests": {"cpu": "1500m", "memory": "1Gi"}}, "2", str(GiB), id="request-rounded-up"),
        pytest.param({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "3", "memory": "3Gi"}},
                     "3", str(3 * GiB), id="the-limit-when-set"),
        pytest.param({"requests": {"cpu": "2"}, "memory": "1Gi", "rayCpus": 8}, "8", str(GiB), id="ray-cpus-wins"),
    ],
)
def test_ray_gets_the_limit_else_the_request(resources: dict[str, Any], num_cpus: str, memory: str) -> None:
    f = flags(cpu_worker(resources))
    assert (f["num-cpus"], f["memory"]) == (num_cpus, memory)


def test_head_takes_no_work_with_ray_cpus_zero_but_still_requests_cpu() -> None:
    pod = build_head_pod(make_cluster({"spec.head.resources": {"cpu": 4, "memory": "8Gi", "rayCpus": 0}}))
    assert flags(pod)["num-cpus"] == "0"
    assert ray(pod)["resources"]["requests"]["cpu"] == "4"


@pytest.mark.parametrize(
    ("resources", "k8s_name", "num_gpus", "ray_resources"),
    [
        pytest.param({}, "nvidia.com/gpu", "1", None, id="nvidia-default"),
        pytest.param({"accelerator": "amd"}, "amd.com/gpu", "1", None, id="amd"),
        pytest.param({"accelerator": "tpu", "gpu": 4}, "google.com/tpu", "0", {"TPU": 4.0}, id="tpu"),
        pytest.param({"accelerator": "neuron", "gpu": 2}, "aws.amazon.com/neuroncore", "0", {"neuron_cores": 2.0},
                     id="neuron"),
        pytest.param({"gpuResourceName": "google.com/tpu"}, "google.com/tpu", "0", {"TPU": 1.0},
                     id="tpu-inferred-from-the-resource-name"),
        pytest.param({"accelerator": "nvidia", "gpuResourceName": "nvidia.com/mig-1g.5gb"}, "nvidia.com/mig-1g.5gb",
                     "1", None, id="gpu-resource-name-wins-over-the-kinds-name"),
    ],
)
def test_accelerator_kind_sets_the_device_and_rays_resource(resources: dict[str, Any], k8s_name: str,
                                                            num_gpus: str, ray_resources: dict[str, float] | None
                                                            ) -> None:
    pod = gpu_worker(resources)
    res = ray(pod)["resources"]
    count = str(resources.get("gpu", 1))
    assert res["limits"][k8s_name] == res["requests"][k8s_name] == count
    f = flags(pod)
    assert f["num-gpus"] == num_gpus
    assert (json.loads(f["resources"]) if "resources" in f else None) == ray_resources


def test_accelerator_joins_the_groups_own_ray_resources() -> None:
    c = make_cluster({R1: {"cpu": 2, "memory": "4Gi", "gpu": 4, "accelerator": "tpu"},
                      "spec.workerGroups[1].rayResources": {"tpu_slice": 1}})
    assert json.loads(flags(build_worker_pod(c, c.worker_groups[1], "abcde"))["resources"]) == {
        "TPU": 4.0, "tpu_slice": 1.0}


def test_operator_error_names_the_requests_field() -> None:
    with pytest.raises(SpecError) as info:
        parse_cluster(mutated({f"{R0}.cpu": DELETE, f"{R0}.requests": {"cpu": "4"}, f"{R0}.limits": {"cpu": 2}}))
    assert [str(e) for e in info.value.errors] == [f"{R0}.requests.cpu: must not exceed limits.cpu ('4' > 2)"]


@pytest.mark.parametrize(
    ("probes", "kind", "expected"),
    [
        pytest.param({}, "livenessProbe", dict(PROBE_DEFAULTS["liveness"]), id="liveness-defaults"),
        pytest.param({}, "readinessProbe", dict(PROBE_DEFAULTS["readiness"]), id="readiness-defaults"),
        pytest.param({"liveness": {"periodSeconds": 5, "failureThreshold": 120}}, "livenessProbe",
                     {**PROBE_DEFAULTS["liveness"], "periodSeconds": 5, "failureThreshold": 120},
                     id="liveness-like-kuberay"),
        pytest.param({"readiness": {"initialDelaySeconds": 20, "timeoutSeconds": 3}}, "readinessProbe",
                     {**PROBE_DEFAULTS["readiness"], "initialDelaySeconds": 20, "timeoutSeconds": 3},
                     id="readiness-override"),
    ],
)
@pytest.mark.parametrize("owner", ["head", "worker"])
def test_probe_timings_override_the_defaults_field_by_field(probes: dict[str, Any], kind: str,
                                                            expected: dict[str, int], owner: str) -> None:
    if owner == "head":
        pod = build_head_pod(make_cluster({"spec.head.probes": probes}))
    else:
        c = make_cluster({"spec.workerGroups[0].probes": probes})
        pod = build_worker_pod(c, c.worker_groups[0], "abcde")
    probe = ray(pod)[kind]
    assert {k: v for k, v in probe.items() if k != "httpGet"} == expected


def test_defaults_are_unchanged() -> None:
    """The operator's own timings, as before overrides existed (liveness 10 s × 12, readiness 3 s × 3)."""
    assert dict(PROBE_DEFAULTS["liveness"]) == {"initialDelaySeconds": 30, "periodSeconds": 10,
                                                "timeoutSeconds": 2, "failureThreshold": 12}
    assert dict(PROBE_DEFAULTS["readiness"]) == {"initialDelaySeconds": 2, "periodSeconds": 3,
                                                 "timeoutSeconds": 2, "failureThreshold": 3}


@pytest.mark.parametrize(
    ("changes", "head_changes", "worker_changes"),
    [
        pytest.param({"spec.head.service.annotations": {"a": "b"}}, False, False, id="service-annotations"),
        pytest.param({"spec.head.serviceType": "LoadBalancer"}, False, False, id="service-type"),
        pytest.param({"spec.head.probes.liveness.failureThreshold": 60}, True, False, id="head-probe"),
        pytest.param({"spec.workerGroups[0].probes.readiness.periodSeconds": 5}, False, True, id="worker-probe"),
        pytest.param({f"{R0}.requests": {"ephemeral-storage": "1Gi"}}, False, True, id="worker-ephemeral"),
        pytest.param({"spec.head.resources.rayCpus": 0}, True, False, id="head-ray-cpus"),
        pytest.param({f"{R1}.accelerator": "nvidia"}, False, False, id="explicit-default-accelerator-is-a-change"),
    ],
)
def test_what_restarts_pods(changes: dict[str, Any], head_changes: bool, worker_changes: bool) -> None:
    before, after = make_cluster(), make_cluster(changes)
    assert (head_hash(after) != head_hash(before)) is head_changes
    assert (worker_hash(after, after.worker_groups[0]) != worker_hash(before, before.worker_groups[0])) \
        is worker_changes


def test_a_spec_without_new_fields_keeps_its_hash() -> None:
    """The hash over a spec that uses none of requests/limits/accelerator/rayCpus/probes is the one the
    previous release computed (its golden value), so upgrading the operator restarts no pod."""
    c = make_cluster()
    assert (head_hash(c), worker_hash(c, c.worker_groups[0]), worker_hash(c, c.worker_groups[1])) == (
        "d76248e8d1", "7fc2ad0d9e", "1501b54cfc")
