"""Property tests (hypothesis): for any valid spec, names are DNS labels and Ray sees what Kubernetes reserved;
for any junk, parse_cluster fails only with SpecError."""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarm_operator.quantity import cpu_cores, memory_bytes
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.resources.service import build_head_service
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.rules import MAX_CLUSTER_NAME, MAX_GROUP_NAME
from swarm_operator.spec.types import ClusterSpec, Resources
from tests.cases.crd_schema import ROOT, schema_errors, walk
from tests.cases.invalid_manifests import base_manifest, get_path, set_path

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOWER = "abcdefghijklmnopqrstuvwxyz"
ALNUM = LOWER + "0123456789"
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes' generateName draws from
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


# --- valid manifests ----------------------------------------------------------------------------------


@st.composite
def dns_labels(draw: st.DrawFn, max_len: int, first: str = ALNUM) -> str:
    size = draw(st.integers(1, max_len))
    if size == 1:
        return draw(st.sampled_from(first))
    middle = draw(st.text(ALNUM + "-", min_size=size - 2, max_size=size - 2))
    return draw(st.sampled_from(first)) + middle + draw(st.sampled_from(ALNUM))


cpus = st.one_of(
    st.integers(1, 128),
    st.integers(1, 128_000).map(lambda m: f"{m}m"),
    st.tuples(st.integers(0, 64), st.integers(1, 9)).map(lambda t: f"{t[0]}.{t[1]}"),
)
memories = st.one_of(
    st.integers(1, 2**40),
    st.tuples(st.integers(1, 1024), st.sampled_from(["Ki", "Mi", "Gi", "k", "M", "G", ""])).map(
        lambda t: f"{t[0]}{t[1]}"),
    st.integers(1, 12).map(lambda e: f"1e{e}"),
)
gpu_names = st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "example.com/accel-v2"])


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["cpu"] = draw(cpus)
    if draw(st.booleans()):
        out["memory"] = draw(memories)
    if draw(st.booleans()):
        out["gpu"] = draw(st.integers(0, 64))
    if draw(st.booleans()):
        out["gpuResourceName"] = draw(gpu_names)
    return out


ray_resources = st.dictionaries(
    st.text(LOWER + "_", min_size=1, max_size=12).filter(lambda k: k not in ("memory",)),
    st.integers(0, 10**14),  # `ray start` takes whole numbers, at most 1e14
    max_size=3,
)
ray_start_params = st.fixed_dictionaries({}, optional={
    "object-store-memory": st.integers(1, 2**36).map(str),
    "include-dashboard": st.sampled_from(["true", "false"]),
    "disable-usage-stats": st.just(""),
})
templates = st.fixed_dictionaries({}, optional={
    "metadata": st.fixed_dictionaries({}, optional={
        "labels": st.dictionaries(st.sampled_from(["team", "swarm.io/cluster", "swarm.io/group", "app"]),
                                  st.text(ALNUM, max_size=10), max_size=3),
    }),
    "spec": st.fixed_dictionaries({}, optional={
        "nodeSelector": st.dictionaries(st.sampled_from(["zone", "pool"]), st.text(ALNUM, max_size=8)),
        "restartPolicy": st.sampled_from(["Always", "OnFailure", "Never"]),
        "containers": st.lists(st.sampled_from(["ray", "side", "main"]), max_size=2, unique=True).flatmap(
            # Sidecars need an image (the pod API requires one); the Ray container may override its own.
            lambda names: st.tuples(*(st.fixed_dictionaries(
                {"name": st.just(n), "image": st.just("busybox")},
                optional={"env": st.just([{"name": "X", "value": "1"}])}) for n in names)).map(list)),
    }),
})


@st.composite
def worker_groups(draw: st.DrawFn, cluster_name: str) -> list[dict[str, Any]]:
    max_len = min(MAX_GROUP_NAME, 56 - len(cluster_name))
    names = draw(st.lists(dns_labels(max_len), max_size=4, unique=True))
    groups = []
    for name in names:
        lo = draw(st.integers(0, 20))
        hi = draw(st.integers(lo, lo + 20))
        group: dict[str, Any] = {"name": name, "minReplicas": lo, "maxReplicas": hi}
        if draw(st.booleans()):
            group["replicas"] = draw(st.integers(lo, hi))
        if draw(st.booleans()):
            group["resources"] = draw(resources())
        if draw(st.booleans()):
            group["rayResources"] = draw(ray_resources)
        if draw(st.booleans()):
            group["rayStartParams"] = draw(ray_start_params)
        if draw(st.booleans()):
            group["template"] = draw(templates)
        groups.append(group)
    return groups


@st.composite
def valid_manifests(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(dns_labels(MAX_CLUSTER_NAME, first=LOWER))
    head: dict[str, Any] = {}
    if draw(st.booleans()):
        head["resources"] = draw(resources())
    if draw(st.booleans()):
        head["rayStartParams"] = draw(ray_start_params)
    if draw(st.booleans()):
        head["template"] = draw(templates)
    spec: dict[str, Any] = {"head": head, "workerGroups": draw(worker_groups(name))}
    if draw(st.booleans()):
        spec["faultTolerance"] = {"gcs": {"redisAddress": "redis:6379",
                                          "redisPasswordSecret": {"name": "redis", "key": "password"}}}
    namespace = draw(dns_labels(63, first=LOWER))
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster",
            "metadata": {"name": name, "namespace": namespace, "uid": "u"}, "spec": spec}


def render(cluster: ClusterSpec, suffix: str) -> list[dict[str, Any]]:
    return [build_head_pod(cluster), *(build_worker_pod(cluster, g, suffix) for g in cluster.worker_groups)]


suffixes = st.text(SUFFIX_ALPHABET, min_size=5, max_size=5)


@SETTINGS
@given(valid_manifests(), suffixes)
def test_valid_specs_render_dns_label_names(manifest: dict[str, Any], suffix: str) -> None:
    assert schema_errors(manifest) == [], "the generator must produce what the CRD accepts"
    cluster = parse_cluster(manifest)
    pods = render(cluster, suffix)
    for pod in pods:
        name = pod["metadata"]["name"]
        assert len(name) <= 63 and DNS_LABEL.fullmatch(name), name
        for key, value in pod["metadata"]["labels"].items():
            assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), (key, value)
    service = build_head_service(cluster)["metadata"]["name"]
    assert len(service) <= 63 and DNS_1035_LABEL.fullmatch(service), service
    assert len({p["metadata"]["name"] for p in pods}) == len(pods)


@SETTINGS
@given(valid_manifests())
def test_ray_resources_equal_container_limits(manifest: dict[str, Any]) -> None:
    cluster = parse_cluster(manifest)
    pairs: list[tuple[dict[str, Any], Resources, dict[str, float]]] = [
        (build_head_pod(cluster), cluster.head.resources, {})]
    pairs += [(build_worker_pod(cluster, g, "abcde"), g.resources, dict(g.ray_resources))
              for g in cluster.worker_groups]
    for pod, declared, custom in pairs:
        container = pod["spec"]["containers"][0]
        assert container["name"] == "ray"
        flags = dict(a[2:].partition("=")[::2] for a in container["args"] if a.startswith("--"))
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits
        assert int(flags["num-cpus"]) == math.ceil(cpu_cores(limits["cpu"]))
        assert int(flags["memory"]) == memory_bytes(limits["memory"])
        assert int(flags["num-gpus"]) == int(limits.get(declared.gpu_resource_name, "0"))
        assert int(flags["num-gpus"]) == declared.gpu
        assert json.loads(flags.get("resources", "{}")) == custom
        shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "shared-mem")
        assert int(shm["emptyDir"]["sizeLimit"]) == int(flags.get("object-store-memory", int(declared.memory * 0.3)))


# --- junk ------------------------------------------------------------------------------------------------

# Real field names, so junk reaches deep into the parser instead of being ignored at the top.
FIELD_NAMES = sorted({part for path, _ in walk(ROOT) for part in re.split(r"[.\[\]{}*]+", path) if part}
                     | {"name", "labels", "annotations", "containers", "initContainers", "volumes", "tolerations",
                        "nodeSelector", "env", "object-store-memory", "num-cpus", "GPU", "generation", "uid"})
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
                | st.sampled_from(["0", "-1", "500m", "1e1000000000", "4Gi", "nvidia.com/gpu", "", "a:1", "Rolling"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=5), max_leaves=25)


def _accepts_or_spec_error(manifest: dict[str, Any]) -> None:
    try:
        cluster = parse_cluster(manifest)
    except SpecError as exc:
        assert exc.errors and all(e.path for e in exc.errors)
        return
    # Whatever parses must also render, with valid names.
    for pod in render(cluster, "abcde"):
        assert DNS_LABEL.fullmatch(pod["metadata"]["name"]) and len(pod["metadata"]["name"]) <= 63
    build_head_service(cluster)


@SETTINGS
@given(st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"name": st.sampled_from(["demo", "x", "Bad", ""]) | json_scalars},
                                       optional={"generation": json_scalars, "namespace": json_scalars}),
     "spec": st.dictionaries(keys, json_values, max_size=8) | json_values},
))
def test_parse_fails_only_with_spec_error_on_junk(manifest: dict[str, Any]) -> None:
    _accepts_or_spec_error(manifest)


def _paths(obj: Any, prefix: str = "") -> list[str]:
    """Every path into a JSON-like object, in the corpus' path syntax."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if re.fullmatch(r"[^.\[\]]+", key):
                out += _paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, f"{prefix}[{i}]")
    return out


@SETTINGS
@given(st.data())
def test_one_junk_value_in_a_valid_manifest_fails_only_with_spec_error(data: st.DataObject) -> None:
    manifest = data.draw(valid_manifests() | st.just(base_manifest()), label="valid")
    path = data.draw(st.sampled_from(_paths(manifest)), label="path")
    junk = data.draw(json_values, label="junk")
    broken = copy.deepcopy(manifest)
    set_path(broken, path, junk)
    assert get_path(broken, path) == junk
    _accepts_or_spec_error(broken)
