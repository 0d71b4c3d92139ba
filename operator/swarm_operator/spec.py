"""SwarmCluster object (a dict from the API) → frozen, typed, defaulted spec. No I/O.

The CRD schema rejects most bad input at the API server; this module re-checks the
same rules (the operator must not trust that the installed CRD is current) and the
ones a schema cannot express. Every error names the field path and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from swarm_operator.quantity import QuantityError, cpu_cores, memory_bytes

# Patterns are used with fullmatch: "$" alone would also accept a trailing newline.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The head service is named after the cluster, and Service names are DNS-1035 labels (start with a letter).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
FLAG_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
REDIS_ADDRESS = re.compile(r"^[^\s:]+:[0-9]{1,5}$")
VERSION_TEXT = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?([a-z0-9.+-]*)?$")

# Generated names: head pod "<c>-head", service "<c>-head-svc", worker "<c>-<g>-<5 chars>".
MAX_CLUSTER_NAME = 45
MAX_GROUP_NAME = 30
WORKER_SUFFIX_LEN = 5
MAX_POD_NAME = 63
MAX_GROUPS = 16
MAX_REPLICAS = 10000
MAX_GPUS = 64

# The pod's ports, probes and the head service depend on the flags after "resources": a user value
# would silently win over the operator's (the last flag counts) and break them.
OPERATOR_OWNED_FLAGS = frozenset({"block", "address", "head", "num-cpus", "num-gpus", "memory", "resources",
                                  "port", "dashboard-host", "dashboard-port", "ray-client-server-port",
                                  "metrics-export-port", "redis-password"})
BUILTIN_RAY_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
SERVICE_TYPES = ("Headless", "ClusterIP", "NodePort", "LoadBalancer")
UPDATE_TYPES = ("Rolling", "IdleFirst", "OnDelete")
DEFAULT_IMAGE = "rayproject/ray:2.60.0"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """One or more fields are invalid; str() lists them, one per line, each naming its path."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class Resources:
    cpu: Decimal  # cores
    memory: int  # bytes
    gpu: int
    gpu_resource_name: str
    cpu_text: str  # as the user wrote it, for the pod's requests/limits
    memory_text: str


@dataclass(frozen=True)
class HeadSpec:
    resources: Resources
    ray_start_params: Mapping[str, str]
    service_type: str
    template: Mapping[str, Any]


@dataclass(frozen=True)
class WorkerGroupSpec:
    name: str
    replicas: int | None
    min_replicas: int
    max_replicas: int
    resources: Resources
    ray_resources: Mapping[str, float]
    ray_start_params: Mapping[str, str]
    template: Mapping[str, Any]

    def initial_replicas(self) -> int:
        """The target before any autoscaler decision: replicas, else minReplicas."""
        return self.min_replicas if self.replicas is None else self.replicas

    def ray_shape(self) -> dict[str, float]:
        """The Ray resources one worker of this group advertises."""
        shape: dict[str, float] = {"CPU": float(self.resources.cpu), "memory": float(self.resources.memory)}
        if self.resources.gpu:
            shape["GPU"] = float(self.resources.gpu)
        shape.update(self.ray_resources)
        return shape


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool = False
    idle_timeout_seconds: int = 60
    interval_seconds: float = 5.0
    upscaling_speed: float = 1.0
    conserve_gpu_nodes: bool = True
    scale_down_stabilization_seconds: int = 30
    pending_timeout_seconds: int = 120


@dataclass(frozen=True)
class GcsFaultTolerance:
    redis_address: str
    password_secret_name: str | None
    password_secret_key: str | None


@dataclass(frozen=True)
class FaultToleranceSpec:
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    gcs: GcsFaultTolerance | None = None


@dataclass(frozen=True)
class UpdateStrategy:
    type: str = "Rolling"
    max_unavailable: int = 1


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    ray_version: str | None
    image: str
    suspend: bool
    head: HeadSpec
    worker_groups: tuple[WorkerGroupSpec, ...]
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)
    fault_tolerance: FaultToleranceSpec = field(default_factory=FaultToleranceSpec)
    update_strategy: UpdateStrategy = field(default_factory=UpdateStrategy)

    def group(self, name: str) -> WorkerGroupSpec | None:
        return next((g for g in self.worker_groups if g.name == name), None)


class _Reader:
    """Collects every error instead of stopping at the first, so users fix a manifest in one go."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def mapping(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", f"must be an object, got {_show(value)}")
            return {}
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"must be true or false, got {_show(value)}")
            return default
        return value

    def integer(self, obj: Mapping[str, Any], key: str, path: str, default: int | None,
                lo: int, hi: int) -> int | None:
        value = obj.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"must be an integer, got {_show(value)}")
            return default
        if not lo <= value <= hi:
            self.fail(f"{path}.{key}", f"must be between {lo} and {hi}, got {value}")
            return default
        return value

    def number(self, obj: Mapping[str, Any], key: str, path: str, default: float, lo: float, hi: float) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path}.{key}", f"must be a number, got {_show(value)}")
            return default
        if not lo <= value <= hi:
            self.fail(f"{path}.{key}", f"must be between {lo:g} and {hi:g}, got {value:g}")
            return default
        return float(value)

    def string(self, obj: Mapping[str, Any], key: str, path: str, default: str | None) -> str | None:
        value = obj.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", f"must be a string, got {_show(value)}")
            return default
        return value

    def choice(self, obj: Mapping[str, Any], key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.string(obj, key, path, default)
        if value not in allowed:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {_show(value)}")
            return default
        return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _resources(r: _Reader, obj: Mapping[str, Any], path: str) -> Resources:
    raw = r.mapping(obj, "resources", path)
    rpath = f"{path}.resources"
    cpu_raw = raw.get("cpu", 1)
    mem_raw = raw.get("memory", "2Gi")
    cpu = Decimal(1)
    mem = 2 * 2**30
    try:
        cpu = cpu_cores(cpu_raw)
        if cpu <= 0:
            r.fail(f"{rpath}.cpu", f"must be a positive quantity, got {_show(cpu_raw)}")
    except QuantityError as exc:
        r.fail(f"{rpath}.cpu", str(exc))
    try:
        mem = memory_bytes(mem_raw)
        if mem <= 0:
            r.fail(f"{rpath}.memory", f"must be a positive quantity, got {_show(mem_raw)}")
    except QuantityError as exc:
        r.fail(f"{rpath}.memory", str(exc))
    gpu = r.integer(raw, "gpu", rpath, 0, 0, MAX_GPUS) or 0
    gpu_name = r.string(raw, "gpuResourceName", rpath, DEFAULT_GPU_RESOURCE)
    if gpu_name is None:
        gpu_name = DEFAULT_GPU_RESOURCE
    elif not RESOURCE_NAME.fullmatch(gpu_name) or len(gpu_name) > 253:  # "" too: it is no default
        r.fail(f"{rpath}.gpuResourceName", f"must be a Kubernetes resource name such as nvidia.com/gpu, "
               f"got {_show(gpu_name)}")
    return Resources(cpu=cpu, memory=mem, gpu=gpu, gpu_resource_name=gpu_name,
                     cpu_text=str(cpu_raw), memory_text=str(mem_raw))


def _ray_start_params(r: _Reader, obj: Mapping[str, Any], path: str) -> Mapping[str, str]:
    raw = r.mapping(obj, "rayStartParams", path)
    out: dict[str, str] = {}
    for key, value in raw.items():
        kpath = f"{path}.rayStartParams.{key}"
        if not isinstance(key, str) or not FLAG_NAME.fullmatch(key):
            r.fail(kpath, "must be a ray start flag name such as object-store-memory (lower-case, no leading dashes)")
            continue
        if key in OPERATOR_OWNED_FLAGS:
            r.fail(kpath, "is set by the operator; use resources / rayResources instead")
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            r.fail(kpath, f"must be a string, got {_show(value)}")
            continue
        if key == "object-store-memory" and not re.fullmatch(r"0*[1-9][0-9]*", str(value)):
            # Ray takes plain bytes here, and /dev/shm is sized from it.
            r.fail(kpath, f"must be a positive number of bytes, got {_show(value)}")
            continue
        out[key] = str(value)
    return MappingProxyType(out)


def _template(r: _Reader, obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """A pod template overlay: metadata and spec objects, containers a list of named objects."""
    raw = obj.get("template")
    tpath = f"{path}.template"
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        r.fail(tpath, f"must be a pod template object, got {_show(raw)}")
        return MappingProxyType({})
    unknown = sorted(set(raw) - {"metadata", "spec"})
    if unknown:
        r.fail(f"{tpath}.{unknown[0]}", "unknown field; a pod template has only metadata and spec")
    meta = r.mapping(raw, "metadata", tpath)
    for key in ("labels", "annotations"):
        values = r.mapping(meta, key, f"{tpath}.metadata")
        for k, v in values.items():
            if not isinstance(v, str):
                r.fail(f"{tpath}.metadata.{key}.{k}", f"must be a string, got {_show(v)}")
    spec = r.mapping(raw, "spec", tpath)
    for list_key in ("containers", "initContainers", "volumes", "tolerations", "imagePullSecrets"):
        items = spec.get(list_key)
        if items is None:
            continue
        lpath = f"{tpath}.spec.{list_key}"
        if not isinstance(items, list):
            r.fail(lpath, f"must be a list, got {_show(items)}")
            continue
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                r.fail(f"{lpath}[{i}]", f"must be an object, got {_show(item)}")
            elif list_key in ("containers", "initContainers", "volumes") and not (
                isinstance(item.get("name"), str) and DNS_LABEL.fullmatch(item["name"])
            ):
                r.fail(f"{lpath}[{i}].name", f"must be a DNS label, got {_show(item.get('name'))}")
            elif list_key in ("containers", "initContainers"):
                # The overlay appends these to the operator's lists; anything else would replace them.
                for field_key in ("env", "envFrom", "volumeMounts", "ports"):
                    entries = item.get(field_key)
                    if entries is not None and not isinstance(entries, list):
                        r.fail(f"{lpath}[{i}].{field_key}", f"must be a list, got {_show(entries)}")
                        continue
                    # Entries are merged by their key (name, or containerPort): it must be a plain value.
                    merge_key = "containerPort" if field_key == "ports" else "name"
                    for j, entry in enumerate(entries or []):
                        epath = f"{lpath}[{i}].{field_key}[{j}]"
                        if not isinstance(entry, Mapping):
                            r.fail(epath, f"must be an object, got {_show(entry)}")
                        elif field_key != "envFrom" and not isinstance(entry.get(merge_key), str | int):
                            r.fail(f"{epath}.{merge_key}", f"must be set, got {_show(entry.get(merge_key))}")
    for map_key in ("nodeSelector",):
        values = r.mapping(spec, map_key, f"{tpath}.spec")
        for k, v in values.items():
            if not isinstance(v, str):
                r.fail(f"{tpath}.spec.{map_key}.{k}", f"must be a string, got {_show(v)}")
    return MappingProxyType(dict(raw))


def _head(r: _Reader, spec: Mapping[str, Any]) -> HeadSpec:
    raw = r.mapping(spec, "head", "spec")
    return HeadSpec(
        resources=_resources(r, raw, "spec.head"),
        ray_start_params=_ray_start_params(r, raw, "spec.head"),
        service_type=r.choice(raw, "serviceType", "spec.head", "Headless", SERVICE_TYPES),
        template=_template(r, raw, "spec.head"),
    )


def _worker_group(r: _Reader, raw: Mapping[str, Any], path: str, cluster_name: str) -> WorkerGroupSpec:
    name = r.string(raw, "name", path, None)
    if name is None:
        r.fail(f"{path}.name", "is required")
        name = ""
    elif not DNS_LABEL.fullmatch(name) or len(name) > MAX_GROUP_NAME:
        r.fail(f"{path}.name", f"must be a DNS label of at most {MAX_GROUP_NAME} characters, got {_show(name)}")
    elif len(cluster_name) + len(name) + 2 + WORKER_SUFFIX_LEN > MAX_POD_NAME:
        r.fail(f"{path}.name", f"cluster name + group name must be at most {MAX_POD_NAME - 2 - WORKER_SUFFIX_LEN} "
               f"characters so pod names stay DNS labels ({len(cluster_name)} + {len(name)})")
    replicas = r.integer(raw, "replicas", path, None, 0, MAX_REPLICAS)
    lo = r.integer(raw, "minReplicas", path, 0, 0, MAX_REPLICAS) or 0
    hi = r.integer(raw, "maxReplicas", path, 10, 0, MAX_REPLICAS)
    hi = 10 if hi is None else hi
    if lo > hi:
        r.fail(f"{path}.maxReplicas", f"must be ≥ minReplicas ({hi} < {lo})")
    elif replicas is not None and not lo <= replicas <= hi:
        r.fail(f"{path}.replicas", f"must lie within [minReplicas, maxReplicas] = [{lo}, {hi}], got {replicas}")
    ray_resources: dict[str, float] = {}
    for key, value in r.mapping(raw, "rayResources", path).items():
        kpath = f"{path}.rayResources.{key}"
        if key in BUILTIN_RAY_RESOURCES:
            r.fail(kpath, "comes from resources, not rayResources")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            r.fail(kpath, f"must be a non-negative number, got {_show(value)}")
        else:
            ray_resources[key] = float(value)
    return WorkerGroupSpec(
        name=name, replicas=replicas, min_replicas=lo, max_replicas=hi,
        resources=_resources(r, raw, path), ray_resources=MappingProxyType(ray_resources),
        ray_start_params=_ray_start_params(r, raw, path), template=_template(r, raw, path),
    )


def _worker_groups(r: _Reader, spec: Mapping[str, Any], cluster_name: str) -> tuple[WorkerGroupSpec, ...]:
    raw = spec.get("workerGroups", [])
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.fail("spec.workerGroups", f"must be a list, got {_show(raw)}")
        return ()
    if len(raw) > MAX_GROUPS:
        r.fail("spec.workerGroups", f"must have at most {MAX_GROUPS} groups, got {len(raw)}")
    groups: list[WorkerGroupSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"spec.workerGroups[{i}]"
        if not isinstance(item, Mapping):
            r.fail(path, f"must be an object, got {_show(item)}")
            continue
        group = _worker_group(r, item, path, cluster_name)
        if group.name in seen:
            r.fail(f"{path}.name", f"duplicates spec.workerGroups[{seen[group.name]}].name ({group.name!r})")
        seen.setdefault(group.name, i)
        groups.append(group)
    return tuple(groups)


def _autoscaling(r: _Reader, spec: Mapping[str, Any]) -> AutoscalingSpec:
    raw = r.mapping(spec, "autoscaling", "spec")
    p = "spec.autoscaling"
    return AutoscalingSpec(
        enabled=r.boolean(raw, "enabled", p, False),
        idle_timeout_seconds=r.integer(raw, "idleTimeoutSeconds", p, 60, 0, 86400) or 0,
        interval_seconds=r.number(raw, "intervalSeconds", p, 5.0, 0.5, 300),
        upscaling_speed=r.number(raw, "upscalingSpeed", p, 1.0, 0.01, 1000),
        conserve_gpu_nodes=r.boolean(raw, "conserveGpuNodes", p, True),
        scale_down_stabilization_seconds=r.integer(raw, "scaleDownStabilizationSeconds", p, 30, 0, 3600) or 0,
        pending_timeout_seconds=r.integer(raw, "pendingTimeoutSeconds", p, 120, 5, 3600) or 120,
    )


def _fault_tolerance(r: _Reader, spec: Mapping[str, Any]) -> FaultToleranceSpec:
    raw = r.mapping(spec, "faultTolerance", "spec")
    p = "spec.faultTolerance"
    initial = r.number(raw, "workerBackoffInitialSeconds", p, 1.0, 0, 3600)
    cap = r.number(raw, "workerBackoffMaxSeconds", p, 300.0, 1, 86400)
    if initial > cap:
        r.fail(f"{p}.workerBackoffInitialSeconds", f"must not exceed workerBackoffMaxSeconds ({initial:g} > {cap:g})")
    gcs = None
    if raw.get("gcs") is not None:
        g = r.mapping(raw, "gcs", p)
        gp = f"{p}.gcs"
        address = r.string(g, "redisAddress", gp, None)
        if address is None:
            r.fail(f"{gp}.redisAddress", "is required when gcs fault tolerance is set")
        elif not REDIS_ADDRESS.fullmatch(address):
            r.fail(f"{gp}.redisAddress", f"must be host:port, got {_show(address)}")
        secret = r.mapping(g, "redisPasswordSecret", gp)
        sname = r.string(secret, "name", f"{gp}.redisPasswordSecret", None)
        skey = r.string(secret, "key", f"{gp}.redisPasswordSecret", None)
        if secret and (not sname or not skey):
            r.fail(f"{gp}.redisPasswordSecret", "needs both name and key")
        if sname and not (SECRET_NAME.fullmatch(sname) and len(sname) <= 253):
            r.fail(f"{gp}.redisPasswordSecret.name", f"must be a Secret name, got {_show(sname)}")
        if skey and not (SECRET_KEY.fullmatch(skey) and len(skey) <= 253):
            r.fail(f"{gp}.redisPasswordSecret.key", f"must be a Secret key, got {_show(skey)}")
        gcs = GcsFaultTolerance(redis_address=address or "", password_secret_name=sname, password_secret_key=skey)
    return FaultToleranceSpec(backoff_initial_seconds=initial, backoff_max_seconds=cap, gcs=gcs)


def _update_strategy(r: _Reader, spec: Mapping[str, Any]) -> UpdateStrategy:
    raw = r.mapping(spec, "updateStrategy", "spec")
    p = "spec.updateStrategy"
    return UpdateStrategy(
        type=r.choice(raw, "type", p, "Rolling", UPDATE_TYPES),
        max_unavailable=r.integer(raw, "maxUnavailable", p, 1, 1, 1000) or 1,
    )


def parse_cluster(obj: Mapping[str, Any]) -> ClusterSpec:
    """Validate and default a SwarmCluster object; raises SpecError listing every bad field."""
    r = _Reader()
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name") or ""
    if not isinstance(name, str) or not DNS_1035_LABEL.fullmatch(name) or len(name) > MAX_CLUSTER_NAME:
        r.fail("metadata.name", f"must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter) of at most "
               f"{MAX_CLUSTER_NAME} characters, got {_show(name)}")
        name = str(name)
    raw_spec = obj.get("spec")
    if not isinstance(raw_spec, Mapping):
        r.fail("spec", f"must be an object, got {_show(raw_spec)}")
        raise SpecError(r.errors)
    ray_version = r.string(raw_spec, "rayVersion", "spec", None)
    if ray_version is not None and not VERSION_TEXT.fullmatch(ray_version):
        r.fail("spec.rayVersion", f"must be a version such as 2.60.0, got {_show(ray_version)}")
    image = r.string(raw_spec, "image", "spec", DEFAULT_IMAGE) or ""
    if not image.strip():
        r.fail("spec.image", "must not be empty")
    cluster = ClusterSpec(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        uid=str(meta.get("uid") or ""),
        generation=meta["generation"] if isinstance(meta.get("generation"), int) else 0,
        ray_version=ray_version,
        image=image,
        suspend=r.boolean(raw_spec, "suspend", "spec", False),
        head=_head(r, raw_spec),
        worker_groups=_worker_groups(r, raw_spec, name),
        autoscaling=_autoscaling(r, raw_spec),
        fault_tolerance=_fault_tolerance(r, raw_spec),
        update_strategy=_update_strategy(r, raw_spec),
    )
    if r.errors:
        raise SpecError(r.errors)
    return cluster
