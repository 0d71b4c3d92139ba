"""The typed, defaulted spec of a SwarmCluster: frozen values that the builders, planner and
autoscaler read. Made only by `spec.parse.parse_cluster`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from swarm_operator.spec.rules import ACCELERATOR_OF_RESOURCE, ACCELERATORS, DEFAULT_REDIS_CLEANUP_TIMEOUT


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
    disruption_budget: bool = True  # head.podDisruptionBudget.enabled: the operator keeps a PDB for the head


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
    termination_grace_period_seconds: int | None = None  # None: the operator's default (resources/pods.py)

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
class DisruptionSpec:
    drain_on_cordon: bool = False  # a plain cordon drains the node's Ray nodes too


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
    disruption: DisruptionSpec = field(default_factory=DisruptionSpec)

    def group(self, name: str) -> WorkerGroupSpec | None:
        return next((g for g in self.worker_groups if g.name == name), None)
