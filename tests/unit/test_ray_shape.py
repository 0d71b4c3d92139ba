"""resources.pods.ray_shape: the Ray resources a node advertises, the one definition the pods' `ray start`
flags and the autoscaler's capacity model share (fractional CPUs round up to whole ones)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from swarm_operator.resources.pods import build_head_pod, ray_shape
from swarm_operator.spec.types import ClusterSpec
from tests.unit.operator_fixtures import cluster, group, worker_pod

GI = 1024**3
STORE_1GI = float(int(GI * 0.3))  # Ray's default object store: 30% of memory

CASES = [
    pytest.param({"cpu": "1", "memory": "1Gi"}, {}, {},
                 {"CPU": 1.0, "memory": float(GI), "object_store_memory": STORE_1GI}, id="cpu-memory-object-store"),
    pytest.param({"cpu": "500m", "memory": "1Gi"}, {}, {},
                 {"CPU": 1.0, "memory": float(GI), "object_store_memory": STORE_1GI}, id="fractional-cpu-rounds-up"),
    pytest.param({"cpu": "250m", "memory": "1Gi"}, {}, {},
                 {"CPU": 1.0, "memory": float(GI), "object_store_memory": STORE_1GI}, id="quarter-cpu-rounds-up"),
    pytest.param({"cpu": "2500m", "memory": "2Gi"}, {}, {},
                 {"CPU": 3.0, "memory": 2.0 * GI, "object_store_memory": float(int(2 * GI * 0.3))},
                 id="fractional-cpu-above-one-rounds-up"),
    pytest.param({"cpu": "1.5", "memory": "1Gi"}, {}, {},
                 {"CPU": 2.0, "memory": float(GI), "object_store_memory": STORE_1GI}, id="decimal-cpu-rounds-up"),
    pytest.param({"cpu": "1", "memory": "1Gi", "gpu": 2}, {}, {},
                 {"CPU": 1.0, "GPU": 2.0, "memory": float(GI), "object_store_memory": STORE_1GI}, id="gpu"),
    pytest.param({"cpu": "1", "memory": "1Gi"}, {}, {"accel": 2, "tpu_group_a": 1},
                 {"CPU": 1.0, "memory": float(GI), "object_store_memory": STORE_1GI, "accel": 2.0, "tpu_group_a": 1.0},
                 id="custom-ray-resources"),
    pytest.param({"cpu": "1", "memory": "1Gi"}, {"object-store-memory": "100000000"}, {},
                 {"CPU": 1.0, "memory": float(GI), "object_store_memory": 1e8}, id="explicit-object-store-memory"),
]


def with_group(resources: dict[str, Any], params: dict[str, str], custom: dict[str, float]) -> ClusterSpec:
    extra: dict[str, Any] = {"resources": resources}
    if params:
        extra["rayStartParams"] = params
    if custom:
        extra["rayResources"] = custom
    return cluster(groups=[group("g", **extra)])


def start_flags(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


@pytest.mark.parametrize(("resources", "params", "custom", "expected"), CASES)
def test_ray_shape(resources: dict[str, Any], params: dict[str, str], custom: dict[str, float],
                   expected: dict[str, float]) -> None:
    g = with_group(resources, params, custom).worker_groups[0]
    assert ray_shape(g.resources, g.ray_start_params, g.ray_resources) == expected


@pytest.mark.parametrize(("resources", "params", "custom", "expected"), CASES)
def test_a_workers_ray_start_flags_say_its_shape(resources: dict[str, Any], params: dict[str, str],
                                                 custom: dict[str, float], expected: dict[str, float]) -> None:
    """What the autoscaler plans with is what `ray start` is told, flag for flag."""
    c = with_group(resources, params, custom)
    f = start_flags(worker_pod(c, "g")["spec"]["containers"][0]["args"])
    told = {"CPU": float(f["num-cpus"]), "memory": float(f["memory"]),
            "object_store_memory": float(f["object-store-memory"])}
    if f["num-gpus"] != "0":
        told["GPU"] = float(f["num-gpus"])
    told.update({k: float(v) for k, v in json.loads(f.get("resources", "{}")).items()})
    assert told == expected


@pytest.mark.parametrize("cpu", ["250m", "1", "2500m"])
def test_the_heads_ray_start_flags_say_its_shape(cpu: str) -> None:
    c = cluster({"head": {"resources": {"cpu": cpu, "memory": "2Gi"}}})
    f = start_flags(build_head_pod(c)["spec"]["containers"][0]["args"])
    shape = ray_shape(c.head.resources, c.head.ray_start_params)
    assert (float(f["num-cpus"]), float(f["memory"]), float(f["object-store-memory"])) \
        == (shape["CPU"], shape["memory"], shape["object_store_memory"])
