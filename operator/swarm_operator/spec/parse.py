"""SwarmCluster object (a dict from the API) → frozen, typed, defaulted spec. No I/O.

The CRD schema rejects most bad input at the API server; this package re-checks the
same rules (the operator must not trust that the installed CRD is current) and the
ones a schema cannot express. Every error names the field path and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from swarm_operator.spec.fault_tolerance import read_fault_tolerance
from swarm_operator.spec.node import read_probes, read_ray_start_params, read_resources
from swarm_operator.spec.reader import Reader, SpecError, show
from swarm_operator.spec.rules import (
    AUTH_MODES,
    BUILTIN_RAY_RESOURCES,
    DEFAULT_IMAGE,
    DNS_1035_LABEL,
    DNS_LABEL,
    IMAGE,
    MAX_CLUSTER_NAME,
    MAX_GROUP_NAME,
    MAX_GROUPS,
    MAX_POD_NAME,
    MAX_RAY_QUANTITY,
    MAX_RAY_RESOURCES,
    MAX_REPLICAS,
    SECRET_KEY,
    SECRET_NAME,
    SERVICE_TYPES,
    TOKEN_SECRET_KEY,
    TOKEN_SECRET_SUFFIX,
    UPDATE_TYPES,
    VERSION_TEXT,
    WORKER_SUFFIX_LEN,
)
from swarm_operator.spec.template import read_service_annotations, read_template
from swarm_operator.spec.types import (
    AuthSpec,
    AutoscalingSpec,
    ClusterSpec,
    DisruptionSpec,
    HeadSpec,
    UpdateStrategy,
    WorkerGroupSpec,
)


def _head(r: Reader, spec: Mapping[str, Any]) -> HeadSpec:
    raw = r.mapping(spec, "head", "spec")
    return HeadSpec(
        resources=read_resources(r, raw, "spec.head"),
        ray_start_params=read_ray_start_params(r, raw, "spec.head"),
        service_type=r.choice(raw, "serviceType", "spec.head", "Headless", SERVICE_TYPES),
        template=read_template(r, raw, "spec.head"),
        probes=read_probes(r, raw, "spec.head"),
        service_annotations=read_service_annotations(r, raw),
        disruption_budget=r.boolean(r.mapping(raw, "podDisruptionBudget", "spec.head"), "enabled",
                                    "spec.head.podDisruptionBudget", True),
    )


def _worker_group(r: Reader, raw: Mapping[str, Any], path: str, cluster_name: str) -> WorkerGroupSpec:
    name = r.string(raw, "name", path, None)
    if name is None:
        r.fail(f"{path}.name", "is required")
        name = ""
    elif not DNS_LABEL.fullmatch(name) or len(name) > MAX_GROUP_NAME:
        r.fail(f"{path}.name", f"must be a DNS label of at most {MAX_GROUP_NAME} characters, got {show(name)}")
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
            r.fail(kpath, f"must be a whole number from 0 to 1e14, got {show(value)}")
        else:
            ray_resources[key] = float(value)
    resources = read_resources(r, raw, path)
    if resources.gpu and resources.ray_accelerator in ray_resources:
        r.fail(f"{path}.rayResources.{resources.ray_accelerator}", f"comes from resources.gpu with accelerator "
               f"{resources.accelerator_kind}, not rayResources")
    return WorkerGroupSpec(
        name=name, replicas=replicas, min_replicas=lo, max_replicas=hi,
        resources=resources, ray_resources=MappingProxyType(ray_resources),
        ray_start_params=read_ray_start_params(r, raw, path), template=read_template(r, raw, path),
        probes=read_probes(r, raw, path),
        termination_grace_period_seconds=r.integer(raw, "terminationGracePeriodSeconds", path, None, 0, 86400),
    )


def _worker_groups(r: Reader, spec: Mapping[str, Any], cluster_name: str) -> tuple[WorkerGroupSpec, ...]:
    raw = spec.get("workerGroups", [])
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.fail("spec.workerGroups", f"must be a list, got {show(raw)}")
        return ()
    if len(raw) > MAX_GROUPS:
        r.fail("spec.workerGroups", f"must have at most {MAX_GROUPS} groups, got {len(raw)}")
    groups: list[WorkerGroupSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"spec.workerGroups[{i}]"
        if not isinstance(item, Mapping):
            r.fail(path, f"must be an object, got {show(item)}")
            continue
        group = _worker_group(r, item, path, cluster_name)
        if group.name in seen:
            r.fail(f"{path}.name", f"duplicates spec.workerGroups[{seen[group.name]}].name ({group.name!r})")
        seen.setdefault(group.name, i)
        groups.append(group)
    return tuple(groups)


def _autoscaling(r: Reader, spec: Mapping[str, Any]) -> AutoscalingSpec:
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


def _auth(r: Reader, spec: Mapping[str, Any], cluster_name: str) -> AuthSpec | None:
    raw = r.mapping(spec, "auth", "spec")
    p = "spec.auth"
    mode = r.choice(raw, "mode", p, "disabled", AUTH_MODES)
    secret = r.mapping(raw, "tokenSecret", p)
    sname = r.string(secret, "name", f"{p}.tokenSecret", None)
    skey = r.string(secret, "key", f"{p}.tokenSecret", TOKEN_SECRET_KEY) or ""
    if sname is not None and not (SECRET_NAME.fullmatch(sname) and len(sname) <= 253):
        r.fail(f"{p}.tokenSecret.name", f"must be a Secret name, got {show(sname)}")
    if not (SECRET_KEY.fullmatch(skey) and len(skey) <= 253):
        r.fail(f"{p}.tokenSecret.key", f"must be a Secret key, got {show(skey)}")
    if secret and mode != "token":
        r.fail(f"{p}.tokenSecret", "is only used with mode: token")
    if mode != "token":
        return None
    return AuthSpec(mode=mode, secret_name=sname or f"{cluster_name}{TOKEN_SECRET_SUFFIX}", secret_key=skey,
                    operator_made=sname is None)


def _update_strategy(r: Reader, spec: Mapping[str, Any]) -> UpdateStrategy:
    raw = r.mapping(spec, "updateStrategy", "spec")
    p = "spec.updateStrategy"
    return UpdateStrategy(
        type=r.choice(raw, "type", p, "Rolling", UPDATE_TYPES),
        max_unavailable=r.integer(raw, "maxUnavailable", p, 1, 1, 1000) or 1,
        drain_timeout_seconds=r.integer(raw, "drainTimeoutSeconds", p, 600, 1, 86400) or 600,
    )


def _disruption(r: Reader, spec: Mapping[str, Any]) -> DisruptionSpec:
    raw = r.mapping(spec, "disruption", "spec")
    return DisruptionSpec(drain_on_cordon=r.boolean(raw, "drainOnCordon", "spec.disruption", False))


def parse_cluster(obj: Mapping[str, Any]) -> ClusterSpec:
    """Validate and default a SwarmCluster object; raises SpecError listing every bad field."""
    r = Reader()
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name") or ""
    if not isinstance(name, str) or not DNS_1035_LABEL.fullmatch(name) or len(name) > MAX_CLUSTER_NAME:
        r.fail("metadata.name", f"must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter) of at most "
               f"{MAX_CLUSTER_NAME} characters, got {show(name)}")
        name = str(name)
    raw_spec = obj.get("spec")
    if not isinstance(raw_spec, Mapping):
        r.fail("spec", f"must be an object, got {show(raw_spec)}")
        raise SpecError(r.errors)
    ray_version = r.string(raw_spec, "rayVersion", "spec", None)
    if ray_version is not None and not VERSION_TEXT.fullmatch(ray_version):
        r.fail("spec.rayVersion", f"must be a version such as 2.60.0, got {show(ray_version)}")
    image = r.string(raw_spec, "image", "spec", DEFAULT_IMAGE) or ""
    if not image.strip():
        r.fail("spec.image", "must not be empty")
    elif not IMAGE.fullmatch(image) or len(image) > 512:
        r.fail("spec.image", f"must be an image reference (printable ASCII, no spaces, at most 512), "
               f"got {show(image)}")
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
        fault_tolerance=read_fault_tolerance(r, raw_spec),
        update_strategy=_update_strategy(r, raw_spec),
        auth=_auth(r, raw_spec, name),
        disruption=_disruption(r, raw_spec),
    )
    if r.errors:
        raise SpecError(r.errors)
    return cluster
