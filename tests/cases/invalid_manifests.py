"""A corpus of invalid SwarmCluster manifests, shared by the unit and integration tiers.

Each case is the valid `base_manifest()` with one thing broken. It says

- `field`: the path the operator's SpecError must name (an error path equal to it or below it);
- `api_field`: a substring the real API server's rejection must contain, or None when the API
  server accepts the object and only the operator rejects it (pod-template overlays preserve
  unknown fields, so the schema cannot look inside them);
- `rejected_by`: which layer of the API server rejects it:
    "schema"    the structural OpenAPI schema (type, enum, pattern, bounds, required);
                tests/unit/test_crd_schema.py checks these with jsonschema;
    "cel"       an `x-kubernetes-validations` rule (only a real API server can evaluate it);
    "apiserver" generic API machinery outside the CRD schema: object-name validation,
                list-map key uniqueness;
    "operator"  nobody but the operator (api_field is None).

The api_field strings are best guesses of Kubernetes' message format, e.g.
`spec.workerGroups[0].replicas: Invalid value: -1: spec.workerGroups[0].replicas in body should
be greater than or equal to 0`; CEL errors name the rule's fieldPath (or the object's path) and
then the rule's message; a duplicate list-map key reads `spec.workerGroups[1]: Duplicate value: …`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

Layer = Literal["schema", "cel", "apiserver", "operator"]
LAYERS: tuple[Layer, ...] = ("schema", "cel", "apiserver", "operator")


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE: Any = _Delete()
"""Value for `mutated` that removes the key instead of setting it."""


def base_manifest() -> dict[str, Any]:
    """A valid cluster with a CPU group (index 0, fixed size) and a GPU group (index 1, autoscaled)."""
    return {
        "apiVersion": "swarm.io/v1alpha1",
        "kind": "SwarmCluster",
        "metadata": {"name": "demo"},
        "spec": {
            "rayVersion": "2.60.0",
            "image": "rayproject/ray:2.60.0",
            "head": {"resources": {"cpu": 1, "memory": "2Gi"}},
            "workerGroups": [
                {"name": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 4,
                 "resources": {"cpu": "500m", "memory": "1Gi"}},
                {"name": "gpu", "minReplicas": 0, "maxReplicas": 4,
                 "resources": {"cpu": 2, "memory": "4Gi", "gpu": 1}},
            ],
        },
    }


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _tokens(path: str) -> list[str | int]:
    out: list[str | int] = []
    pos = 0
    for m in _TOKEN.finditer(path):
        if m.start() not in (pos, pos + 1):  # only a "." may separate tokens
            raise ValueError(f"bad path {path!r}")
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if pos != len(path):
        raise ValueError(f"bad path {path!r}")
    return out


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with DELETE remove) `path` such as "spec.workerGroups[1].maxReplicas" in place.

    Missing intermediate objects are created; keys must not contain dots or brackets
    (set the enclosing object instead).
    """
    tokens = _tokens(path)
    node: Any = obj
    for token in tokens[:-1]:
        node = node[token] if isinstance(token, int) else node.setdefault(token, {})
    last = tokens[-1]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


def get_path(obj: Any, path: str) -> Any:
    """The value at `path`; raises LookupError (KeyError/IndexError) or TypeError when it is absent."""
    node = obj
    for token in _tokens(path):
        node = node[token]
    return node


def mutated(changes: Mapping[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of `base` (default: base_manifest()) with each path in `changes` set."""
    out = copy.deepcopy(base if base is not None else base_manifest())
    for path, value in changes.items():
        set_path(out, path, value)
    return out


@dataclasses.dataclass(frozen=True)
class InvalidCase:
    id: str
    manifest: dict[str, Any] = dataclasses.field(hash=False, compare=False, repr=False)
    field: str = ""
    api_field: str | None = None
    rejected_by: Layer = "operator"

    def __post_init__(self) -> None:
        if not self.field:
            raise ValueError(f"{self.id}: field is required")
        if self.rejected_by not in LAYERS:
            raise ValueError(f"{self.id}: unknown layer {self.rejected_by!r}")
        if (self.api_field is None) != (self.rejected_by == "operator"):
            raise ValueError(f"{self.id}: api_field is None exactly when only the operator rejects it")


def _case(id: str, changes: Mapping[str, Any], field: str, api_field: str | None, layer: Layer) -> InvalidCase:
    return InvalidCase(id=id, manifest=mutated(changes), field=field, api_field=api_field, rejected_by=layer)


W0 = "spec.workerGroups[0]"  # the CPU group, replicas 2 within [0, 4]
W1 = "spec.workerGroups[1]"  # the GPU group, no replicas, [0, 4], one GPU
HEAD = "spec.head"
FT = "spec.faultTolerance"
GCS = "spec.faultTolerance.gcs"
AS = "spec.autoscaling"


def _too_many_groups() -> list[dict[str, Any]]:
    return [{"name": f"g{i}", "maxReplicas": 1} for i in range(17)]


CASES: tuple[InvalidCase, ...] = (
    # --- replica bounds ---------------------------------------------------------------------
    _case("min-greater-than-max", {f"{W1}.minReplicas": 4, f"{W1}.maxReplicas": 2},
          f"{W1}.maxReplicas", f"{W1}.minReplicas", "cel"),
    _case("replicas-above-max", {f"{W0}.replicas": 5}, f"{W0}.replicas", f"{W0}.replicas", "cel"),
    _case("replicas-below-min", {f"{W0}.minReplicas": 3, f"{W0}.replicas": 1},
          f"{W0}.replicas", f"{W0}.replicas", "cel"),
    _case("replicas-above-default-max", {f"{W1}.maxReplicas": DELETE, f"{W1}.replicas": 11},
          f"{W1}.replicas", f"{W1}.replicas", "cel"),
    _case("replicas-negative", {f"{W0}.replicas": -1}, f"{W0}.replicas", f"{W0}.replicas", "schema"),
    _case("replicas-too-large", {f"{W0}.replicas": 10001}, f"{W0}.replicas", f"{W0}.replicas", "schema"),
    _case("max-replicas-too-large", {f"{W1}.maxReplicas": 20000},
          f"{W1}.maxReplicas", f"{W1}.maxReplicas", "schema"),
    _case("min-replicas-negative", {f"{W1}.minReplicas": -1}, f"{W1}.minReplicas", f"{W1}.minReplicas", "schema"),
    _case("replicas-string", {f"{W0}.replicas": "3"}, f"{W0}.replicas", f"{W0}.replicas", "schema"),
    _case("min-replicas-fractional", {f"{W1}.minReplicas": 1.5},
          f"{W1}.minReplicas", f"{W1}.minReplicas", "schema"),
    _case("max-replicas-bool", {f"{W1}.maxReplicas": True}, f"{W1}.maxReplicas", f"{W1}.maxReplicas", "schema"),
    # --- names --------------------------------------------------------------------------------
    _case("duplicate-group-names", {f"{W1}.name": "cpu"}, f"{W1}.name", W1, "apiserver"),
    _case("group-name-too-long", {f"{W0}.name": "g" * 31}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("group-name-uppercase", {f"{W1}.name": "GPU"}, f"{W1}.name", f"{W1}.name", "schema"),
    _case("group-name-trailing-dash", {f"{W0}.name": "cpu-"}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("group-name-underscore", {f"{W0}.name": "cpu_small"}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("group-name-empty", {f"{W1}.name": ""}, f"{W1}.name", f"{W1}.name", "schema"),
    _case("group-name-trailing-newline", {f"{W1}.name": "gpu\n"}, f"{W1}.name", f"{W1}.name", "schema"),
    _case("group-name-missing", {f"{W0}.name": DELETE}, f"{W0}.name", f"{W0}.name", "schema"),
    _case("group-name-number", {f"{W0}.name": 7}, f"{W0}.name", f"{W0}.name", "schema"),
    # 40 + 20 + len("--abcde") = 67 > 63: each name fits alone, the worker pod name does not.
    _case("cluster-plus-group-name-too-long",
          {"metadata.name": "c" * 40, f"{W0}.name": "g" * 20},
          f"{W0}.name", "spec.workerGroups", "cel"),
    _case("cluster-name-too-long", {"metadata.name": "x" * 46}, "metadata.name", "metadata.name", "cel"),
    _case("cluster-name-uppercase", {"metadata.name": "Demo"}, "metadata.name", "metadata.name", "apiserver"),
    _case("cluster-name-underscore", {"metadata.name": "my_cluster"}, "metadata.name", "metadata.name",
          "apiserver"),
    # A valid object name (DNS subdomain), but the head Service "<name>-head-svc" needs a DNS-1035 label.
    _case("cluster-name-dotted", {"metadata.name": "my.cluster"}, "metadata.name", "metadata.name", "cel"),
    _case("cluster-name-leading-digit", {"metadata.name": "1demo"}, "metadata.name", "metadata.name", "cel"),
    # --- cpu and memory ---------------------------------------------------------------------
    _case("head-cpu-zero-string", {f"{HEAD}.resources.cpu": "0"},
          f"{HEAD}.resources.cpu", f"{HEAD}.resources.cpu", "cel"),
    _case("worker-cpu-zero-int", {f"{W0}.resources.cpu": 0},
          f"{W0}.resources.cpu", f"{W0}.resources.cpu", "cel"),
    _case("worker-cpu-negative-millis", {f"{W0}.resources.cpu": "-500m"},
          f"{W0}.resources.cpu", f"{W0}.resources.cpu", "cel"),
    _case("head-cpu-negative-int", {f"{HEAD}.resources.cpu": -2},
          f"{HEAD}.resources.cpu", f"{HEAD}.resources.cpu", "cel"),
    _case("head-cpu-unparseable", {f"{HEAD}.resources.cpu": "two"},
          f"{HEAD}.resources.cpu", f"{HEAD}.resources.cpu", "cel"),
    _case("worker-cpu-empty-string", {f"{W1}.resources.cpu": ""},
          f"{W1}.resources.cpu", f"{W1}.resources.cpu", "cel"),
    _case("worker-cpu-list", {f"{W0}.resources.cpu": [1]},
          f"{W0}.resources.cpu", f"{W0}.resources.cpu", "schema"),
    _case("worker-memory-zero", {f"{W0}.resources.memory": "0Gi"},
          f"{W0}.resources.memory", f"{W0}.resources.memory", "cel"),
    _case("head-memory-negative", {f"{HEAD}.resources.memory": "-1Gi"},
          f"{HEAD}.resources.memory", f"{HEAD}.resources.memory", "cel"),
    _case("worker-memory-bad-suffix", {f"{W1}.resources.memory": "4GB"},
          f"{W1}.resources.memory", f"{W1}.resources.memory", "cel"),
    _case("worker-memory-two-dots", {f"{W1}.resources.memory": "1.5.5Gi"},
          f"{W1}.resources.memory", f"{W1}.resources.memory", "cel"),
    _case("head-memory-boolean", {f"{HEAD}.resources.memory": True},
          f"{HEAD}.resources.memory", f"{HEAD}.resources.memory", "schema"),
    _case("resources-not-object", {f"{W0}.resources": "big"}, f"{W0}.resources", f"{W0}.resources", "schema"),
    # --- GPUs ---------------------------------------------------------------------------------
    _case("gpu-negative", {f"{W1}.resources.gpu": -1}, f"{W1}.resources.gpu", f"{W1}.resources.gpu", "schema"),
    _case("gpu-fractional", {f"{W1}.resources.gpu": 0.5}, f"{W1}.resources.gpu", f"{W1}.resources.gpu", "schema"),
    _case("gpu-huge", {f"{W1}.resources.gpu": 65}, f"{W1}.resources.gpu", f"{W1}.resources.gpu", "schema"),
    _case("head-gpu-string", {f"{HEAD}.resources.gpu": "1"},
          f"{HEAD}.resources.gpu", f"{HEAD}.resources.gpu", "schema"),
    _case("gpu-resource-name-bang", {f"{W1}.resources.gpuResourceName": "nvidia.com/gpu!"},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    _case("gpu-resource-name-two-slashes", {f"{W1}.resources.gpuResourceName": "a/b/c"},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    _case("gpu-resource-name-empty", {f"{W1}.resources.gpuResourceName": ""},
          f"{W1}.resources.gpuResourceName", f"{W1}.resources.gpuResourceName", "schema"),
    # --- rayStartParams -----------------------------------------------------------------------
    _case("ray-start-params-num-cpus", {f"{HEAD}.rayStartParams": {"num-cpus": "4"}},
          f"{HEAD}.rayStartParams.num-cpus", f"{HEAD}.rayStartParams", "cel"),
    _case("ray-start-params-address", {f"{W0}.rayStartParams": {"address": "elsewhere:6379"}},
          f"{W0}.rayStartParams.address", f"{W0}.rayStartParams", "cel"),
    _case("ray-start-params-block", {f"{W1}.rayStartParams": {"block": ""}},
          f"{W1}.rayStartParams.block", f"{W1}.rayStartParams", "cel"),
    _case("ray-start-params-resources", {f"{W1}.rayStartParams": {"resources": '{"TPU": 1}'}},
          f"{W1}.rayStartParams.resources", f"{W1}.rayStartParams", "cel"),
    # The head service and workers use 6379 and the pod declares 8080: a user's flag would win silently.
    _case("ray-start-params-gcs-port", {f"{HEAD}.rayStartParams": {"port": "6380"}},
          f"{HEAD}.rayStartParams.port", f"{HEAD}.rayStartParams", "cel"),
    _case("ray-start-params-metrics-port", {f"{W0}.rayStartParams": {"metrics-export-port": "9000"}},
          f"{W0}.rayStartParams.metrics-export-port", f"{W0}.rayStartParams", "cel"),
    _case("ray-start-params-leading-dashes", {f"{HEAD}.rayStartParams": {"--object-store-memory": "100000000"}},
          f"{HEAD}.rayStartParams.--object-store-memory", f"{HEAD}.rayStartParams", "cel"),
    _case("ray-start-params-uppercase-key", {f"{W0}.rayStartParams": {"Include_Dashboard": "false"}},
          f"{W0}.rayStartParams.Include_Dashboard", f"{W0}.rayStartParams", "cel"),
    _case("ray-start-params-value-object", {f"{W0}.rayStartParams": {"object-store-memory": {"bytes": 1}}},
          f"{W0}.rayStartParams.object-store-memory", f"{W0}.rayStartParams.object-store-memory", "schema"),
    # Ray takes plain bytes here (and /dev/shm is sized from it); the CRD only says "a string".
    _case("ray-start-params-object-store-not-bytes", {f"{HEAD}.rayStartParams": {"object-store-memory": "2Gi"}},
          f"{HEAD}.rayStartParams.object-store-memory", None, "operator"),
    # --- rayResources -------------------------------------------------------------------------
    _case("ray-resources-negative", {f"{W1}.rayResources": {"TPU": -1}},
          f"{W1}.rayResources.TPU", f"{W1}.rayResources.TPU", "schema"),
    _case("ray-resources-string", {f"{W1}.rayResources": {"accelerator_type_T4": "1"}},
          f"{W1}.rayResources.accelerator_type_T4", f"{W1}.rayResources.accelerator_type_T4", "schema"),
    _case("ray-resources-builtin-gpu", {f"{W1}.rayResources": {"GPU": 2}},
          f"{W1}.rayResources.GPU", f"{W1}.rayResources", "cel"),
    _case("ray-resources-builtin-memory", {f"{W0}.rayResources": {"memory": 1}},
          f"{W0}.rayResources.memory", f"{W0}.rayResources", "cel"),
    # --- enums --------------------------------------------------------------------------------
    _case("service-type-unknown", {f"{HEAD}.serviceType": "External"},
          f"{HEAD}.serviceType", f"{HEAD}.serviceType", "schema"),
    _case("service-type-lowercase", {f"{HEAD}.serviceType": "clusterip"},
          f"{HEAD}.serviceType", f"{HEAD}.serviceType", "schema"),
    _case("update-strategy-unknown", {"spec.updateStrategy.type": "BlueGreen"},
          "spec.updateStrategy.type", "spec.updateStrategy.type", "schema"),
    _case("max-unavailable-zero", {"spec.updateStrategy.maxUnavailable": 0},
          "spec.updateStrategy.maxUnavailable", "spec.updateStrategy.maxUnavailable", "schema"),
    # --- autoscaling --------------------------------------------------------------------------
    _case("autoscaling-interval-too-small", {f"{AS}.intervalSeconds": 0.1},
          f"{AS}.intervalSeconds", f"{AS}.intervalSeconds", "schema"),
    _case("autoscaling-interval-too-large", {f"{AS}.intervalSeconds": 301},
          f"{AS}.intervalSeconds", f"{AS}.intervalSeconds", "schema"),
    _case("autoscaling-upscaling-speed-zero", {f"{AS}.upscalingSpeed": 0},
          f"{AS}.upscalingSpeed", f"{AS}.upscalingSpeed", "schema"),
    _case("autoscaling-idle-timeout-negative", {f"{AS}.idleTimeoutSeconds": -5},
          f"{AS}.idleTimeoutSeconds", f"{AS}.idleTimeoutSeconds", "schema"),
    _case("autoscaling-idle-timeout-over-a-day", {f"{AS}.idleTimeoutSeconds": 90000},
          f"{AS}.idleTimeoutSeconds", f"{AS}.idleTimeoutSeconds", "schema"),
    _case("autoscaling-idle-timeout-fractional", {f"{AS}.idleTimeoutSeconds": 1.5},
          f"{AS}.idleTimeoutSeconds", f"{AS}.idleTimeoutSeconds", "schema"),
    _case("autoscaling-stabilization-too-long", {f"{AS}.scaleDownStabilizationSeconds": 4000},
          f"{AS}.scaleDownStabilizationSeconds", f"{AS}.scaleDownStabilizationSeconds", "schema"),
    _case("autoscaling-pending-timeout-too-short", {f"{AS}.pendingTimeoutSeconds": 1},
          f"{AS}.pendingTimeoutSeconds", f"{AS}.pendingTimeoutSeconds", "schema"),
    _case("autoscaling-enabled-string", {f"{AS}.enabled": "yes"}, f"{AS}.enabled", f"{AS}.enabled", "schema"),
    _case("autoscaling-not-object", {AS: True}, AS, AS, "schema"),
    # --- fault tolerance ----------------------------------------------------------------------
    _case("backoff-initial-above-max", {f"{FT}.workerBackoffInitialSeconds": 120, f"{FT}.workerBackoffMaxSeconds": 60},
          f"{FT}.workerBackoffInitialSeconds", f"{FT}.workerBackoffInitialSeconds", "cel"),
    _case("backoff-initial-above-default-max", {f"{FT}.workerBackoffInitialSeconds": 400},
          f"{FT}.workerBackoffInitialSeconds", f"{FT}.workerBackoffInitialSeconds", "cel"),
    _case("backoff-max-below-one", {f"{FT}.workerBackoffMaxSeconds": 0.5},
          f"{FT}.workerBackoffMaxSeconds", f"{FT}.workerBackoffMaxSeconds", "schema"),
    _case("backoff-initial-negative", {f"{FT}.workerBackoffInitialSeconds": -1},
          f"{FT}.workerBackoffInitialSeconds", f"{FT}.workerBackoffInitialSeconds", "schema"),
    _case("gcs-without-redis-address", {GCS: {"redisPasswordSecret": {"name": "ray-redis", "key": "password"}}},
          f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-empty", {GCS: {}}, f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-address-without-port", {GCS: {"redisAddress": "redis.default.svc"}},
          f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-address-with-space", {GCS: {"redisAddress": "redis host:6379"}},
          f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-address-port-too-long", {GCS: {"redisAddress": "redis:123456"}},
          f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-secret-without-key", {GCS: {"redisAddress": "redis:6379", "redisPasswordSecret": {"name": "ray-redis"}}},
          f"{GCS}.redisPasswordSecret", f"{GCS}.redisPasswordSecret.key", "schema"),
    _case("gcs-secret-bad-name",
          {GCS: {"redisAddress": "redis:6379", "redisPasswordSecret": {"name": "Ray_Redis", "key": "password"}}},
          f"{GCS}.redisPasswordSecret.name", f"{GCS}.redisPasswordSecret.name", "schema"),
    _case("gcs-not-object", {GCS: "redis:6379"}, GCS, GCS, "schema"),
    _case("gcs-address-with-user", {GCS: {"redisAddress": "rediss://ray@redis:6379"}},
          f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-address-http-scheme", {GCS: {"redisAddress": "http://redis:6379"}},
          f"{GCS}.redisAddress", f"{GCS}.redisAddress", "schema"),
    _case("gcs-username-with-space", {GCS: {"redisAddress": "redis:6379", "redisUsername": "a b"}},
          f"{GCS}.redisUsername", f"{GCS}.redisUsername", "schema"),
    _case("gcs-ca-without-tls", {GCS: {"redisAddress": "redis:6379", "redisCA": {"secretName": "ca"}}},
          f"{GCS}.redisCA", f"{GCS}.redisCA", "cel"),
    _case("gcs-ca-two-sources",
          {GCS: {"redisAddress": "rediss://redis:6379", "redisCA": {"secretName": "a", "configMapName": "b"}}},
          f"{GCS}.redisCA", f"{GCS}.redisCA", "cel"),
    _case("gcs-cleanup-timeout-too-short", {GCS: {"redisAddress": "redis:6379", "cleanupTimeoutSeconds": 1}},
          f"{GCS}.cleanupTimeoutSeconds", f"{GCS}.cleanupTimeoutSeconds", "schema"),
    _case("auth-mode-unknown", {"spec.auth": {"mode": "password"}}, "spec.auth.mode", "spec.auth.mode", "schema"),
    _case("auth-token-secret-without-token-mode", {"spec.auth": {"tokenSecret": {"name": "mine"}}},
          "spec.auth.tokenSecret", "spec.auth.tokenSecret", "cel"),
    # --- top-level types ----------------------------------------------------------------------
    _case("spec-not-object", {"spec": "cluster"}, "spec", "spec", "schema"),
    _case("spec-missing", {"spec": DELETE}, "spec", "spec", "schema"),
    _case("head-not-object", {HEAD: ["ray"]}, HEAD, HEAD, "schema"),
    _case("suspend-string", {"spec.suspend": "no"}, "spec.suspend", "spec.suspend", "schema"),
    _case("image-empty", {"spec.image": ""}, "spec.image", "spec.image", "schema"),
    _case("image-number", {"spec.image": 42}, "spec.image", "spec.image", "schema"),
    _case("ray-version-latest", {"spec.rayVersion": "latest"}, "spec.rayVersion", "spec.rayVersion", "schema"),
    _case("worker-groups-not-list", {"spec.workerGroups": {"name": "cpu"}},
          "spec.workerGroups", "spec.workerGroups", "schema"),
    _case("worker-group-not-object", {W1: "gpu"}, W1, W1, "schema"),
    _case("too-many-worker-groups", {"spec.workerGroups": _too_many_groups()},
          "spec.workerGroups", "spec.workerGroups", "schema"),
    # --- pod template overlays (preserve unknown fields: only the operator looks inside) -------
    _case("template-not-object", {f"{HEAD}.template": "privileged"}, f"{HEAD}.template", f"{HEAD}.template",
          "schema"),
    _case("template-containers-not-list", {f"{W0}.template.spec.containers": {"name": "ray"}},
          f"{W0}.template.spec.containers", None, "operator"),
    _case("template-container-without-name", {f"{W1}.template.spec.containers": [{"image": "busybox"}]},
          f"{W1}.template.spec.containers[0].name", None, "operator"),
    _case("template-container-bad-name", {f"{HEAD}.template.spec.containers": [{"name": "Ray Main"}]},
          f"{HEAD}.template.spec.containers[0].name", None, "operator"),
    _case("template-container-not-object", {f"{W0}.template.spec.containers": ["ray"]},
          f"{W0}.template.spec.containers[0]", None, "operator"),
    _case("template-init-container-without-name", {f"{W0}.template.spec.initContainers": [{"image": "busybox"}]},
          f"{W0}.template.spec.initContainers[0].name", None, "operator"),
    _case("template-container-env-not-list",
          {f"{W0}.template.spec.containers": [{"name": "ray", "env": {"NAME": "value"}}]},
          f"{W0}.template.spec.containers[0].env", None, "operator"),
    # Found by the property tests: an unhashable merge key crashed the overlay merge.
    _case("template-container-env-name-not-a-value",
          {f"{W0}.template.spec.containers": [{"name": "ray", "env": [{"name": [], "value": "1"}]}]},
          f"{W0}.template.spec.containers[0].env[0].name", None, "operator"),
    _case("template-container-port-without-number",
          {f"{W0}.template.spec.containers": [{"name": "ray", "ports": [{"name": "http"}]}]},
          f"{W0}.template.spec.containers[0].ports[0].containerPort", None, "operator"),
    # Fields of the Ray container the operator sets: refused, never silently dropped.
    _case("template-ray-container-command", {f"{W0}.template.spec.containers": [{"name": "ray", "command": ["sh"]}]},
          f"{W0}.template.spec.containers[0].command", None, "operator"),
    _case("template-ray-container-resources",
          {f"{HEAD}.template.spec.containers": [{"name": "ray", "resources": {"limits": {"cpu": "8"}}}]},
          f"{HEAD}.template.spec.containers[0].resources", None, "operator"),
    _case("template-ray-container-probe",
          {f"{W1}.template.spec.containers": [{"name": "side", "image": "s"},
                                             {"name": "ray", "livenessProbe": {"exec": {"command": ["true"]}}}]},
          f"{W1}.template.spec.containers[1].livenessProbe", None, "operator"),
    _case("template-labels-non-string", {f"{W0}.template.metadata.labels": {"team": 7}},
          f"{W0}.template.metadata.labels.team", None, "operator"),
    _case("template-annotations-non-string", {f"{HEAD}.template.metadata.annotations": {"audit": True}},
          f"{HEAD}.template.metadata.annotations.audit", None, "operator"),
    _case("template-unknown-top-level-key", {f"{HEAD}.template": {"spec": {}, "containers": []}},
          f"{HEAD}.template.containers", None, "operator"),
    _case("template-metadata-not-object", {f"{W1}.template.metadata": "gpu"},
          f"{W1}.template.metadata", None, "operator"),
    _case("template-spec-not-object", {f"{W1}.template.spec": []}, f"{W1}.template.spec", None, "operator"),
    _case("template-volume-without-name", {f"{W1}.template.spec.volumes": [{"emptyDir": {}}]},
          f"{W1}.template.spec.volumes[0].name", None, "operator"),
    _case("template-tolerations-not-objects", {f"{W1}.template.spec.tolerations": ["nvidia.com/gpu"]},
          f"{W1}.template.spec.tolerations[0]", None, "operator"),
    _case("template-node-selector-non-string", {f"{HEAD}.template.spec.nodeSelector": {"gpu": True}},
          f"{HEAD}.template.spec.nodeSelector.gpu", None, "operator"),
)

# Requests/limits, accelerators, probe timings and the head service (issue 17).
R0 = f"{W0}.resources"
R1 = f"{W1}.resources"
CASES += (
    _case("resources-cpu-shorthand-and-request", {f"{HEAD}.resources.requests": {"cpu": "2"}},
          f"{HEAD}.resources.cpu", f"{HEAD}.resources.cpu", "cel"),
    _case("resources-memory-shorthand-and-limit", {f"{R0}.limits": {"memory": "2Gi"}},
          f"{R0}.memory", f"{R0}.memory", "cel"),
    _case("resources-request-above-limit", {f"{R0}.cpu": DELETE, f"{R0}.requests": {"cpu": 4},
                                            f"{R0}.limits": {"cpu": "2"}},
          f"{R0}.requests", f"{R0}.requests", "cel"),
    _case("resources-memory-request-above-limit", {f"{R1}.memory": DELETE, f"{R1}.requests": {"memory": "8Gi"},
                                                   f"{R1}.limits": {"memory": "4Gi"}},
          f"{R1}.requests", f"{R1}.requests", "cel"),
    _case("resources-extended-request-without-limit", {f"{R0}.requests": {"vpc.amazonaws.com/efa": 1}},
          f"{R0}.requests", f"{R0}.requests", "cel"),
    _case("resources-extended-request-unlike-limit", {f"{R0}.requests": {"rdma/hca": 1},
                                                      f"{R0}.limits": {"rdma/hca": 2}},
          f"{R0}.requests", f"{R0}.requests", "cel"),
    _case("resources-unknown-native-name", {f"{R0}.limits": {"gpu": 1}}, f"{R0}.limits", f"{R0}.limits", "cel"),
    _case("resources-kubernetes-io-name", {f"{R0}.limits": {"kubernetes.io/batteries": 1}},
          f"{R0}.limits", f"{R0}.limits", "cel"),
    _case("resources-accelerator-in-limits", {f"{R1}.limits": {"nvidia.com/gpu": 1}},
          f"{R1}.limits", f"{R1}.limits", "cel"),
    _case("resources-negative-ephemeral-storage", {f"{R0}.limits": {"ephemeral-storage": "-1Gi"}},
          f"{R0}.limits", f"{R0}.limits", "cel"),
    _case("resources-zero-memory-request", {f"{HEAD}.resources.memory": DELETE,
                                            f"{HEAD}.resources.requests": {"memory": 0}},
          f"{HEAD}.resources.requests", f"{HEAD}.resources.requests", "cel"),
    _case("resources-fractional-extended", {f"{R0}.limits": {"rdma/hca": "500m"}},
          f"{R0}.limits", f"{R0}.limits", "cel"),
    _case("resources-unknown-accelerator", {f"{R1}.accelerator": "cuda"},
          f"{R1}.accelerator", f"{R1}.accelerator", "schema"),
    _case("resources-negative-ray-cpus", {f"{HEAD}.resources.rayCpus": -1},
          f"{HEAD}.resources.rayCpus", f"{HEAD}.resources.rayCpus", "schema"),
    # Only the operator knows the group's own accelerator resource (gpuResourceName) and Ray name.
    _case("resources-own-accelerator-in-limits", {f"{R1}.gpuResourceName": "example.com/gpu",
                                                  f"{R1}.limits": {"example.com/gpu": 1}},
          f"{R1}.limits.example.com/gpu", None, "operator"),
    _case("ray-resources-repeat-the-accelerator", {f"{R1}.accelerator": "tpu", f"{W1}.rayResources": {"TPU": 4}},
          f"{W1}.rayResources.TPU", None, "operator"),
    _case("probe-liveness-window-too-short", {f"{HEAD}.probes.liveness": {"periodSeconds": 2, "failureThreshold": 3}},
          f"{HEAD}.probes.liveness", f"{HEAD}.probes.liveness.failureThreshold", "cel"),
    _case("probe-timeout-above-default-period", {f"{W1}.probes.readiness": {"timeoutSeconds": 5}},
          f"{W1}.probes.readiness", f"{W1}.probes.readiness.timeoutSeconds", "cel"),
    _case("probe-period-zero", {f"{W0}.probes.liveness.periodSeconds": 0},
          f"{W0}.probes.liveness.periodSeconds", f"{W0}.probes.liveness.periodSeconds", "schema"),
    _case("probe-failure-threshold-huge", {f"{HEAD}.probes.readiness.failureThreshold": 100000},
          f"{HEAD}.probes.readiness.failureThreshold", f"{HEAD}.probes.readiness.failureThreshold", "schema"),
    _case("service-annotation-operator-prefix",
          {f"{HEAD}.service.annotations": {"swarm.io/service-annotations": "[]"}},
          f"{HEAD}.service.annotations", f"{HEAD}.service.annotations", "cel"),
    _case("service-annotation-not-string", {f"{HEAD}.service.annotations": {"lb": 1}},
          f"{HEAD}.service.annotations.lb", f"{HEAD}.service.annotations.lb", "schema"),
)

CASES_BY_ID: dict[str, InvalidCase] = {c.id: c for c in CASES}
if len(CASES_BY_ID) != len(CASES):  # pragma: no cover - a typo in this file
    raise RuntimeError("duplicate case ids")
