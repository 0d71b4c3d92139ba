"""SwarmCluster object (a dict from the API) → frozen, typed, defaulted spec. No I/O.

The CRD schema rejects most bad input at the API server; this module re-checks the
same rules (the operator must not trust that the installed CRD is current) and the
ones a schema cannot express. Every error names the field path and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from swarm_operator.quantity import QuantityError, cpu_cores, memory_bytes, parse_quantity
from swarm_operator.resources.labels import PREFIX
from swarm_operator.resources.overlay import OPERATOR_CONTAINER_FIELDS, RAY_CONTAINER

# Patterns are used with fullmatch: "$" alone would also accept a trailing newline.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The head service is named after the cluster, and Service names are DNS-1035 labels (start with a letter).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# An extended resource (the GPU's): domain-prefixed. "cpu" or "memory" would replace the pod's own limits.
RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
# An image reference has no whitespace, control or non-ASCII characters (the pod API refuses surrounding spaces).
IMAGE = re.compile(r"^[!-~]+$")
# Label and annotation keys (Kubernetes "qualified names"), label values, as the pod API checks them.
QUALIFIED_NAME = re.compile(
    r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/)?([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Environment variable names: printable ASCII except "=" (Kubernetes ≥ 1.34).
ENV_NAME = re.compile(r"^[ -<>-~]+$")
FLAG_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
# host:port, redis://host:port, or rediss://host:port (TLS): what Ray's own address parser takes. No user@: the
# user and password come from redisUsername and redisPasswordSecret only.
REDIS_ADDRESS = re.compile(r"^(rediss?://)?[^\s:/@]+:[0-9]{1,5}$")
# A Redis ACL user name: any printable character but a space (Redis refuses spaces in user names).
REDIS_USERNAME = re.compile(r"^[!-~]+$")
VERSION_TEXT = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?([a-z0-9.+-]*)?$")

# Generated names: head pod "<c>-head", service "<c>-head-svc", worker "<c>-<g>-<5 chars>".
MAX_CLUSTER_NAME = 45
MAX_GROUP_NAME = 30
WORKER_SUFFIX_LEN = 5
MAX_POD_NAME = 63
MAX_GROUPS = 16
MAX_REPLICAS = 10000
MAX_GPUS = 64
# `ray start` refuses more than this of any resource (ray_constants.MAX_RESOURCE_QUANTITY), bytes included.
MAX_RAY_QUANTITY = 10**14
MAX_RAY_START_PARAMS = 64
MAX_RAY_START_PARAM_VALUE = 4096
MAX_RAY_RESOURCES = 32
# Kubernetes: all annotations of an object together (keys and values, in bytes).
MAX_ANNOTATIONS_BYTES = 256 * 1024

# The pod's ports, probes and the head service depend on the flags after "resources": a user value
# would silently win over the operator's (the last flag counts) and break them.
OPERATOR_OWNED_FLAGS = frozenset({"block", "address", "head", "num-cpus", "num-gpus", "memory", "resources",
                                  "port", "dashboard-host", "dashboard-port", "ray-client-server-port",
                                  "metrics-export-port", "redis-password", "redis-username"})
BUILTIN_RAY_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
SERVICE_TYPES = ("Headless", "ClusterIP", "NodePort", "LoadBalancer")
UPDATE_TYPES = ("Rolling", "IdleFirst", "OnDelete")
# Ray's own names (RAY_AUTH_MODE).
AUTH_MODES = ("disabled", "token")
TOKEN_SECRET_KEY = "token"
TOKEN_SECRET_SUFFIX = "-ray-token"
DEFAULT_REDIS_CLEANUP_TIMEOUT = 300
DEFAULT_IMAGE = "rayproject/ray:2.60.0"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# Accelerator kind → (the device plugin's Kubernetes resource, the Ray resource Ray 2.60 schedules it as:
# ray/_private/accelerators/*.py get_resource_name()). GPUs go to `ray start --num-gpus`, the others to
# --resources, where Ray's accelerator managers read the count from.
ACCELERATORS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "nvidia": ("nvidia.com/gpu", "GPU"),
    "amd": ("amd.com/gpu", "GPU"),
    "intel": ("gpu.intel.com/i915", "GPU"),
    "tpu": ("google.com/tpu", "TPU"),
    "neuron": ("aws.amazon.com/neuroncore", "neuron_cores"),
    "gaudi": ("habana.ai/gaudi", "HPU"),
})
ACCELERATOR_OF_RESOURCE: Mapping[str, str] = MappingProxyType({k8s: kind for kind, (k8s, _) in ACCELERATORS.items()})
# requests/limits keys: the native ones Ray nodes need, or a domain-prefixed extended resource (EFA, RDMA …).
NATIVE_RESOURCES = ("cpu", "memory", "ephemeral-storage")
MAX_RESOURCE_ENTRIES = 16
# Probe timing bounds. A liveness probe that fails kills the Ray container (the head: every worker too
# without GCS fault tolerance), so it must tolerate at least this long an unanswered health check.
PROBE_FIELDS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "initialDelaySeconds": (0, 3600), "periodSeconds": (1, 300), "timeoutSeconds": (1, 60),
    "failureThreshold": (1, 1000),
})
MIN_LIVENESS_WINDOW_SECONDS = 30
# The operator's probe timings, kept when not overridden (KubeRay's head liveness: 5 s × 120 = 600 s).
PROBE_DEFAULTS: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "readiness": MappingProxyType({"initialDelaySeconds": 2, "periodSeconds": 3, "timeoutSeconds": 2,
                                   "failureThreshold": 3}),
    "liveness": MappingProxyType({"initialDelaySeconds": 30, "periodSeconds": 10, "timeoutSeconds": 2,
                                  "failureThreshold": 12}),
})
# Head service annotations the operator applied last time, so it can remove those dropped from the spec
# while leaving other writers' (cloud controllers') annotations alone.
MAX_SERVICE_ANNOTATIONS = 64


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
    # Added after the first release. Left out of repr: the pod hash is taken over it, and a spec that uses
    # none of these must keep its hash, so that upgrading the operator restarts no pod.
    requests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    limits: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    accelerator: str | None = field(default=None, repr=False)  # as written; None: from gpu_resource_name
    ray_cpus: int | None = field(default=None, repr=False)  # `ray start --num-cpus` when set

    @property
    def accelerator_kind(self) -> str:
        """The given kind, else the one whose device plugin resource gpuResourceName names, else nvidia."""
        return self.accelerator or ACCELERATOR_OF_RESOURCE.get(self.gpu_resource_name, "nvidia")

    @property
    def ray_accelerator(self) -> str:
        """The Ray resource the accelerators are scheduled as: GPU, TPU, neuron_cores, HPU."""
        return ACCELERATORS[self.accelerator_kind][1]

    def hash_extras(self) -> dict[str, Any]:
        """The fields left out of repr, only those given: empty for a spec that uses none of them."""
        extras: dict[str, Any] = {"requests": dict(self.requests), "limits": dict(self.limits),
                                  "accelerator": self.accelerator, "rayCpus": self.ray_cpus}
        return {k: v for k, v in extras.items() if v not in (None, {})}


@dataclass(frozen=True)
class ProbeTiming:
    """Overrides of the operator's probe timings; None keeps the operator's default."""

    initial_delay_seconds: int | None = None
    period_seconds: int | None = None
    timeout_seconds: int | None = None
    failure_threshold: int | None = None

    def fields(self) -> dict[str, int]:
        """The given fields under their Kubernetes names."""
        named = {"initialDelaySeconds": self.initial_delay_seconds, "periodSeconds": self.period_seconds,
                 "timeoutSeconds": self.timeout_seconds, "failureThreshold": self.failure_threshold}
        return {k: v for k, v in named.items() if v is not None}


@dataclass(frozen=True)
class Probes:
    readiness: ProbeTiming = field(default_factory=ProbeTiming)
    liveness: ProbeTiming = field(default_factory=ProbeTiming)

    def hash_extras(self) -> dict[str, Any]:
        """Only the given fields: no overrides, no change to the pod hash."""
        extras = {"readiness": self.readiness.fields(), "liveness": self.liveness.fields()}
        return {k: v for k, v in extras.items() if v}


@dataclass(frozen=True)
class HeadSpec:
    resources: Resources
    ray_start_params: Mapping[str, str]
    service_type: str
    template: Mapping[str, Any]
    probes: Probes = field(default_factory=Probes)
    service_annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


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
    probes: Probes = field(default_factory=Probes)

    def initial_replicas(self) -> int:
        """The target before any autoscaler decision: replicas, else minReplicas."""
        return self.min_replicas if self.replicas is None else self.replicas


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool = False
    idle_timeout_seconds: int = 60
    interval_seconds: float = 5.0
    upscaling_speed: float = 1.0
    conserve_gpu_nodes: bool = True
    scale_down_stabilization_seconds: int = 30
    pending_timeout_seconds: int = 600


@dataclass(frozen=True)
class KeyRef:
    """One key of a Secret or a ConfigMap."""

    kind: str  # "Secret" | "ConfigMap"
    name: str
    key: str


@dataclass(frozen=True)
class GcsFaultTolerance:
    redis_address: str  # host:port, redis://host:port or rediss://host:port
    password_secret_name: str | None
    password_secret_key: str | None
    redis_username: str | None = None
    redis_ca: KeyRef | None = None  # the CA bundle that signed the Redis server's certificate (rediss://)
    cleanup_timeout_seconds: int = DEFAULT_REDIS_CLEANUP_TIMEOUT

    @property
    def tls(self) -> bool:
        return self.redis_address.startswith("rediss://")


@dataclass(frozen=True)
class AuthSpec:
    """Ray token authentication: every Ray node and the operator's autoscaler use the token in one Secret key."""

    mode: str  # AUTH_MODES
    secret_name: str
    secret_key: str
    operator_made: bool  # no tokenSecret given: the operator makes "<cluster>-ray-token" itself

    @property
    def token(self) -> bool:
        return self.mode == "token"


@dataclass(frozen=True)
class FaultToleranceSpec:
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    gcs: GcsFaultTolerance | None = None


@dataclass(frozen=True)
class UpdateStrategy:
    type: str = "Rolling"
    max_unavailable: int = 1
    drain_timeout_seconds: int = 600  # a busy worker's Ray drain, before its pod is deleted anyway


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
    auth: AuthSpec | None = None  # None: no token authentication

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
        elif cpu > MAX_RAY_QUANTITY:
            r.fail(f"{rpath}.cpu", f"must be at most 100T (Ray's limit), got {_show(cpu_raw)}")
    except QuantityError as exc:
        r.fail(f"{rpath}.cpu", str(exc))
    try:
        mem = memory_bytes(mem_raw)
        if mem <= 0:
            r.fail(f"{rpath}.memory", f"must be a positive quantity, got {_show(mem_raw)}")
        elif mem > MAX_RAY_QUANTITY:
            r.fail(f"{rpath}.memory", f"must be at most 100T bytes (Ray's limit), got {_show(mem_raw)}")
    except QuantityError as exc:
        r.fail(f"{rpath}.memory", str(exc))
    gpu = r.integer(raw, "gpu", rpath, 0, 0, MAX_GPUS) or 0
    gpu_name = r.string(raw, "gpuResourceName", rpath, DEFAULT_GPU_RESOURCE)
    if gpu_name is None:
        gpu_name = DEFAULT_GPU_RESOURCE
    elif not RESOURCE_NAME.fullmatch(gpu_name) or len(gpu_name) > 253:  # "" too: it is no default
        r.fail(f"{rpath}.gpuResourceName", f"must be a Kubernetes resource name such as nvidia.com/gpu, "
               f"got {_show(gpu_name)}")
    return _resource_details(r, raw, rpath, Resources(cpu=cpu, memory=mem, gpu=gpu, gpu_resource_name=gpu_name,
                                                      cpu_text=str(cpu_raw), memory_text=str(mem_raw)))


def _resource_map(r: _Reader, raw: Mapping[str, Any], key: str, rpath: str,
                  accelerator_names: frozenset[str]) -> dict[str, Decimal]:
    """requests or limits: resource name → quantity, as Kubernetes takes them."""
    values = r.mapping(raw, key, rpath)
    if len(values) > MAX_RESOURCE_ENTRIES:
        r.fail(f"{rpath}.{key}", f"must have at most {MAX_RESOURCE_ENTRIES} resources, got {len(values)}")
    out: dict[str, Decimal] = {}
    for name, value in values.items():
        kpath = f"{rpath}.{key}.{name}"
        extended = isinstance(name, str) and "/" in name
        if not isinstance(name, str) or not (name in NATIVE_RESOURCES or (
                extended and RESOURCE_NAME.fullmatch(name) and len(name) <= 253
                and not name.split("/")[0].endswith("kubernetes.io"))):
            r.fail(kpath, "must be cpu, memory, ephemeral-storage or a domain-prefixed extended resource such as "
                   "vpc.amazonaws.com/efa")
            continue
        if name in accelerator_names:
            r.fail(kpath, "is an accelerator: give the count in resources.gpu (Ray's --num-gpus and the "
                   "autoscaler read it) and the kind in resources.accelerator")
            continue
        try:
            quantity = parse_quantity(value)
        except QuantityError as exc:
            r.fail(kpath, str(exc))
            continue
        if quantity < 0 or (name in ("cpu", "memory") and quantity == 0):
            r.fail(kpath, f"must be a positive quantity, got {_show(value)}")
        elif quantity > MAX_RAY_QUANTITY:
            r.fail(kpath, f"must be at most 100T (Ray's limit), got {_show(value)}")
        elif extended and quantity != int(quantity):
            r.fail(kpath, f"must be a whole number (an extended resource), got {_show(value)}")
        else:
            out[name] = quantity
    return out


def _resource_details(r: _Reader, raw: Mapping[str, Any], rpath: str, base: Resources) -> Resources:
    """requests/limits, the accelerator kind and rayCpus over the shorthand cpu/memory/gpu."""
    accelerator = r.string(raw, "accelerator", rpath, None)
    if accelerator is not None and accelerator not in ACCELERATORS:
        r.fail(f"{rpath}.accelerator", f"must be one of {', '.join(ACCELERATORS)}, got {_show(accelerator)}")
        accelerator = None
    gpu_name = base.gpu_resource_name
    if accelerator is not None and "gpuResourceName" not in raw:
        gpu_name = ACCELERATORS[accelerator][0]
    accelerator_names = frozenset({*ACCELERATOR_OF_RESOURCE, gpu_name})
    requests = _resource_map(r, raw, "requests", rpath, accelerator_names)
    limits = _resource_map(r, raw, "limits", rpath, accelerator_names)
    for name in ("cpu", "memory"):
        if name in raw and (name in requests or name in limits):
            r.fail(f"{rpath}.{name}", f"give either {name} (request = limit; here {_show(raw[name])}) or "
                   f"requests.{name} / limits.{name}, not both")
    for name in sorted(set(requests) & set(limits)):
        if requests[name] > limits[name]:
            r.fail(f"{rpath}.requests.{name}", f"must not exceed limits.{name} ({_show(raw['requests'][name])} > "
                   f"{_show(raw['limits'][name])})")
        elif "/" in name and requests[name] != limits[name]:
            r.fail(f"{rpath}.requests.{name}", f"must equal limits.{name}: Kubernetes does not overcommit "
                   "extended resources")
    for name in sorted(n for n in requests if "/" in n and n not in limits):
        r.fail(f"{rpath}.requests.{name}", f"needs limits.{name} too (equal): Kubernetes does not overcommit "
               "extended resources")
    ray_cpus = r.integer(raw, "rayCpus", rpath, None, 0, MAX_RAY_QUANTITY)
    cpu = limits.get("cpu", requests.get("cpu", base.cpu))
    memory_q = limits.get("memory", requests.get("memory"))
    memory = base.memory if memory_q is None else math.ceil(memory_q)
    return replace(base, cpu=cpu, memory=memory, gpu_resource_name=gpu_name,
                   requests=MappingProxyType({k: str(raw["requests"][k]) for k in requests}),
                   limits=MappingProxyType({k: str(raw["limits"][k]) for k in limits}),
                   accelerator=accelerator, ray_cpus=ray_cpus)


def _probe_timing(r: _Reader, raw: Mapping[str, Any], key: str, ppath: str,
                  defaults: Mapping[str, int]) -> ProbeTiming:
    values = r.mapping(raw, key, ppath)
    path = f"{ppath}.{key}"
    for unknown in sorted(set(values) - set(PROBE_FIELDS)):
        r.fail(f"{path}.{unknown}", f"unknown field; probe timings are {', '.join(PROBE_FIELDS)}")
    got = {name: r.integer(values, name, path, None, lo, hi) for name, (lo, hi) in PROBE_FIELDS.items()}
    timing = ProbeTiming(initial_delay_seconds=got["initialDelaySeconds"], period_seconds=got["periodSeconds"],
                         timeout_seconds=got["timeoutSeconds"], failure_threshold=got["failureThreshold"])
    merged = {**defaults, **timing.fields()}
    if merged["timeoutSeconds"] > merged["periodSeconds"]:
        r.fail(f"{path}.timeoutSeconds", f"must not exceed periodSeconds ({merged['timeoutSeconds']} > "
               f"{merged['periodSeconds']}): probes would overlap")
    if key == "liveness" and merged["periodSeconds"] * merged["failureThreshold"] < MIN_LIVENESS_WINDOW_SECONDS:
        r.fail(f"{path}.failureThreshold", f"periodSeconds × failureThreshold must be at least "
               f"{MIN_LIVENESS_WINDOW_SECONDS} s, got {merged['periodSeconds']} × {merged['failureThreshold']}: a "
               "shorter liveness window restarts a Ray node that is only busy")
    return timing


def _probes(r: _Reader, obj: Mapping[str, Any], path: str) -> Probes:
    raw = r.mapping(obj, "probes", path)
    ppath = f"{path}.probes"
    for unknown in sorted(set(raw) - {"readiness", "liveness"}):
        r.fail(f"{ppath}.{unknown}", "unknown field; probes are readiness and liveness")
    return Probes(readiness=_probe_timing(r, raw, "readiness", ppath, PROBE_DEFAULTS["readiness"]),
                  liveness=_probe_timing(r, raw, "liveness", ppath, PROBE_DEFAULTS["liveness"]))


def _service_annotations(r: _Reader, head: Mapping[str, Any]) -> Mapping[str, str]:
    service = r.mapping(head, "service", "spec.head")
    for unknown in sorted(set(service) - {"annotations"}):
        r.fail(f"spec.head.service.{unknown}", "unknown field; the head service takes annotations (its type is "
               "spec.head.serviceType)")
    annotations = r.mapping(service, "annotations", "spec.head.service")
    path = "spec.head.service.annotations"
    if len(annotations) > MAX_SERVICE_ANNOTATIONS:
        r.fail(path, f"must have at most {MAX_SERVICE_ANNOTATIONS} annotations, got {len(annotations)}")
    _string_map(r, annotations, path, label_values=False)
    for key in annotations:
        if isinstance(key, str) and key.startswith(PREFIX):
            r.fail(f"{path}.{key}", f"the {PREFIX} prefix is the operator's")
    size = sum(len(str(k).encode()) + len(v.encode()) for k, v in annotations.items() if isinstance(v, str))
    if size > MAX_ANNOTATIONS_BYTES // 2:
        r.fail(path, f"must be at most {MAX_ANNOTATIONS_BYTES // 2} bytes together, got {size}")
    return MappingProxyType({k: v for k, v in annotations.items() if isinstance(v, str)})


def _ray_start_params(r: _Reader, obj: Mapping[str, Any], path: str) -> Mapping[str, str]:
    raw = r.mapping(obj, "rayStartParams", path)
    out: dict[str, str] = {}
    if len(raw) > MAX_RAY_START_PARAMS:
        r.fail(f"{path}.rayStartParams", f"must have at most {MAX_RAY_START_PARAMS} flags, got {len(raw)}")
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
        if len(str(value)) > MAX_RAY_START_PARAM_VALUE:
            r.fail(kpath, f"must be at most {MAX_RAY_START_PARAM_VALUE} characters, got {len(str(value))}")
            continue
        digits = str(value).lstrip("0")
        # (length first: int() refuses more than 4300 digits)
        if key == "object-store-memory" and not (re.fullmatch(r"[1-9][0-9]*", digits) and len(digits) <= 15
                                                 and int(digits) <= MAX_RAY_QUANTITY):
            # Ray takes plain bytes here (at most 1e14), and /dev/shm is sized from it.
            r.fail(kpath, f"must be a positive number of bytes of at most 1e14, got {_show(value)}")
            continue
        out[key] = str(value)
    return MappingProxyType(out)


def _qualified_name_ok(key: object) -> bool:
    """A label or annotation key: [prefix/]name, prefix a DNS subdomain ≤ 253, name ≤ 63."""
    if not isinstance(key, str):
        return False
    m = QUALIFIED_NAME.fullmatch(key)
    if m is None:
        return False
    return len(m.group(6)) <= 63 and len(m.group(2) or "") <= 253


def _string_map(r: _Reader, values: Mapping[str, Any], path: str, *, label_values: bool) -> None:
    """Labels or a node selector (label_values) or annotations: keys qualified names, values strings."""
    for k, v in values.items():
        if not isinstance(v, str):
            r.fail(f"{path}.{k}", f"must be a string, got {_show(v)}")
        elif not _qualified_name_ok(k):
            r.fail(f"{path}.{k}", f"key must be a qualified name such as example.com/team (letters, digits, '-', "
                   f"'_', '.'; at most 63 after an optional DNS prefix), got key {_show(k)}")
        elif label_values and not (LABEL_VALUE.fullmatch(v) and len(v) <= 63):
            r.fail(f"{path}.{k}", f"must be a label value (at most 63 letters, digits, '-', '_', '.', starting and "
                   f"ending alphanumeric), got {_show(v)}")


def _container(r: _Reader, item: Mapping[str, Any], cpath: str, *, needs_image: bool) -> None:
    image = item.get("image")
    if (image is not None or needs_image) and not (isinstance(image, str) and IMAGE.fullmatch(image)):
        r.fail(f"{cpath}.image", f"must be an image reference (a sidecar needs one), got {_show(image)}")
    # The overlay appends these to the operator's lists; anything else would replace them.
    for field_key in ("env", "envFrom", "volumeMounts", "ports"):
        entries = item.get(field_key)
        if entries is not None and not isinstance(entries, list):
            r.fail(f"{cpath}.{field_key}", f"must be a list, got {_show(entries)}")
            continue
        # Entries are merged by their key (name, or containerPort): it must be a plain value.
        merge_key = "containerPort" if field_key == "ports" else "name"
        for j, entry in enumerate(entries or []):
            epath = f"{cpath}.{field_key}[{j}]"
            if not isinstance(entry, Mapping):
                r.fail(epath, f"must be an object, got {_show(entry)}")
                continue
            value = entry.get(merge_key)
            if field_key == "envFrom":
                continue
            if not isinstance(value, str | int):
                r.fail(f"{epath}.{merge_key}", f"must be set, got {_show(value)}")
            elif field_key == "ports" and (isinstance(value, bool) or not isinstance(value, int)
                                           or not 1 <= value <= 65535):
                r.fail(f"{epath}.{merge_key}", f"must be a port number from 1 to 65535, got {_show(value)}")
            elif field_key == "env" and not (isinstance(value, str) and ENV_NAME.fullmatch(value)):
                r.fail(f"{epath}.{merge_key}", f"must be printable ASCII without '=', got {_show(value)}")


def _template(r: _Reader, obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """A pod template overlay, checked as far as the pod API would refuse the pods built from it."""
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
    _string_map(r, r.mapping(meta, "labels", f"{tpath}.metadata"), f"{tpath}.metadata.labels", label_values=True)
    annotations = r.mapping(meta, "annotations", f"{tpath}.metadata")
    _string_map(r, annotations, f"{tpath}.metadata.annotations", label_values=False)
    size = sum(len(str(k).encode()) + len(v.encode()) for k, v in annotations.items() if isinstance(v, str))
    if size > MAX_ANNOTATIONS_BYTES:
        r.fail(f"{tpath}.metadata.annotations", f"must be at most {MAX_ANNOTATIONS_BYTES} bytes together "
               f"(Kubernetes' limit for a pod), got {size}")
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
                # The Ray container is the one named "ray"; every other one is a sidecar and needs an image.
                is_ray = list_key == "containers" and item.get("name") == RAY_CONTAINER
                _container(r, item, f"{lpath}[{i}]", needs_image=not is_ray)
                for owned in (sorted(set(item) & set(OPERATOR_CONTAINER_FIELDS)) if is_ray else ()):
                    r.fail(f"{lpath}[{i}].{owned}", f"is set by the operator: {OPERATOR_CONTAINER_FIELDS[owned]}")
    _string_map(r, r.mapping(spec, "nodeSelector", f"{tpath}.spec"), f"{tpath}.spec.nodeSelector", label_values=True)
    return MappingProxyType(dict(raw))


def _head(r: _Reader, spec: Mapping[str, Any]) -> HeadSpec:
    raw = r.mapping(spec, "head", "spec")
    return HeadSpec(
        resources=_resources(r, raw, "spec.head"),
        ray_start_params=_ray_start_params(r, raw, "spec.head"),
        service_type=r.choice(raw, "serviceType", "spec.head", "Headless", SERVICE_TYPES),
        template=_template(r, raw, "spec.head"),
        probes=_probes(r, raw, "spec.head"),
        service_annotations=_service_annotations(r, raw),
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
    raw_resources = r.mapping(raw, "rayResources", path)
    if len(raw_resources) > MAX_RAY_RESOURCES:
        r.fail(f"{path}.rayResources", f"must have at most {MAX_RAY_RESOURCES} resources, got {len(raw_resources)}")
    for key, value in raw_resources.items():
        kpath = f"{path}.rayResources.{key}"
        if key in BUILTIN_RAY_RESOURCES:
            r.fail(kpath, "comes from resources, not rayResources")
        elif (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_RAY_QUANTITY
              or value != int(value)):
            # `ray start` takes whole numbers only, at most 1e14 ("Resource quantities must all be whole numbers").
            r.fail(kpath, f"must be a whole number from 0 to 1e14, got {_show(value)}")
        else:
            ray_resources[key] = float(value)
    resources = _resources(r, raw, path)
    if resources.gpu and resources.ray_accelerator in ray_resources:
        r.fail(f"{path}.rayResources.{resources.ray_accelerator}", f"comes from resources.gpu with accelerator "
               f"{resources.accelerator_kind}, not rayResources")
    return WorkerGroupSpec(
        name=name, replicas=replicas, min_replicas=lo, max_replicas=hi,
        resources=resources, ray_resources=MappingProxyType(ray_resources),
        ray_start_params=_ray_start_params(r, raw, path), template=_template(r, raw, path),
        probes=_probes(r, raw, path),
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
        pending_timeout_seconds=r.integer(raw, "pendingTimeoutSeconds", p, 600, 5, 3600) or 600,
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
            r.fail(f"{gp}.redisAddress", f"must be host:port, redis://host:port or rediss://host:port (TLS), "
                   f"got {_show(address)}")
        secret = r.mapping(g, "redisPasswordSecret", gp)
        sname = r.string(secret, "name", f"{gp}.redisPasswordSecret", None)
        skey = r.string(secret, "key", f"{gp}.redisPasswordSecret", None)
        if secret and (not sname or not skey):
            r.fail(f"{gp}.redisPasswordSecret", "needs both name and key")
        if sname and not (SECRET_NAME.fullmatch(sname) and len(sname) <= 253):
            r.fail(f"{gp}.redisPasswordSecret.name", f"must be a Secret name, got {_show(sname)}")
        if skey and not (SECRET_KEY.fullmatch(skey) and len(skey) <= 253):
            r.fail(f"{gp}.redisPasswordSecret.key", f"must be a Secret key, got {_show(skey)}")
        gcs = GcsFaultTolerance(redis_address=address or "", password_secret_name=sname, password_secret_key=skey,
                                **_gcs_redis_options(r, g, gp, address or ""))
    return FaultToleranceSpec(backoff_initial_seconds=initial, backoff_max_seconds=cap, gcs=gcs)


def _gcs_redis_options(r: _Reader, g: Mapping[str, Any], gp: str, address: str) -> dict[str, Any]:
    """The Redis user, the CA of a rediss:// server, and how long deletion waits for the key cleanup."""
    username = r.string(g, "redisUsername", gp, None)
    if username is not None and not (REDIS_USERNAME.fullmatch(username) and len(username) <= 256):
        r.fail(f"{gp}.redisUsername", f"must be a Redis user name (printable, no spaces, at most 256), "
               f"got {_show(username)}")
    ca = None
    raw_ca = r.mapping(g, "redisCA", gp)
    if g.get("redisCA") is not None:
        cpath = f"{gp}.redisCA"
        secret = r.string(raw_ca, "secretName", cpath, None)
        config_map = r.string(raw_ca, "configMapName", cpath, None)
        key = r.string(raw_ca, "key", cpath, "ca.crt") or ""
        if (secret is None) == (config_map is None):
            r.fail(cpath, "needs exactly one of secretName and configMapName")
        name = secret or config_map or ""
        if name and not (SECRET_NAME.fullmatch(name) and len(name) <= 253):
            r.fail(f"{cpath}.{'secretName' if secret else 'configMapName'}", f"must be an object name, "
                   f"got {_show(name)}")
        if not (SECRET_KEY.fullmatch(key) and len(key) <= 253):
            r.fail(f"{cpath}.key", f"must be a key name, got {_show(key)}")
        if address and not address.startswith("rediss://"):
            r.fail(cpath, "is only used with TLS: redisAddress must start with rediss://")
        ca = KeyRef("Secret" if secret else "ConfigMap", name, key)
    timeout = r.integer(g, "cleanupTimeoutSeconds", gp, DEFAULT_REDIS_CLEANUP_TIMEOUT, 10, 3600)
    return {"redis_username": username, "redis_ca": ca,
            "cleanup_timeout_seconds": DEFAULT_REDIS_CLEANUP_TIMEOUT if timeout is None else timeout}


def _auth(r: _Reader, spec: Mapping[str, Any], cluster_name: str) -> AuthSpec | None:
    raw = r.mapping(spec, "auth", "spec")
    p = "spec.auth"
    mode = r.choice(raw, "mode", p, "disabled", AUTH_MODES)
    secret = r.mapping(raw, "tokenSecret", p)
    sname = r.string(secret, "name", f"{p}.tokenSecret", None)
    skey = r.string(secret, "key", f"{p}.tokenSecret", TOKEN_SECRET_KEY) or ""
    if sname is not None and not (SECRET_NAME.fullmatch(sname) and len(sname) <= 253):
        r.fail(f"{p}.tokenSecret.name", f"must be a Secret name, got {_show(sname)}")
    if not (SECRET_KEY.fullmatch(skey) and len(skey) <= 253):
        r.fail(f"{p}.tokenSecret.key", f"must be a Secret key, got {_show(skey)}")
    if secret and mode != "token":
        r.fail(f"{p}.tokenSecret", "is only used with mode: token")
    if mode != "token":
        return None
    return AuthSpec(mode=mode, secret_name=sname or f"{cluster_name}{TOKEN_SECRET_SUFFIX}", secret_key=skey,
                    operator_made=sname is None)


def _update_strategy(r: _Reader, spec: Mapping[str, Any]) -> UpdateStrategy:
    raw = r.mapping(spec, "updateStrategy", "spec")
    p = "spec.updateStrategy"
    return UpdateStrategy(
        type=r.choice(raw, "type", p, "Rolling", UPDATE_TYPES),
        max_unavailable=r.integer(raw, "maxUnavailable", p, 1, 1, 1000) or 1,
        drain_timeout_seconds=r.integer(raw, "drainTimeoutSeconds", p, 600, 1, 86400) or 600,
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
    elif not IMAGE.fullmatch(image) or len(image) > 512:
        r.fail("spec.image", f"must be an image reference (printable ASCII, no spaces, at most 512), "
               f"got {_show(image)}")
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
        auth=_auth(r, raw_spec, name),
    )
    if r.errors:
        raise SpecError(r.errors)
    return cluster
