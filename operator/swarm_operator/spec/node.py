"""What each Ray node is given: resources (requests, limits, accelerators, rayCpus), probe timings
and `ray start` flags."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any, TypeVar

from swarm_operator.quantity import QuantityError, cpu_cores, memory_bytes, parse_quantity
from swarm_operator.spec.reader import Reader, show
from swarm_operator.spec.rules import (
    ACCELERATOR_OF_RESOURCE,
    ACCELERATORS,
    DEFAULT_GPU_RESOURCE,
    FLAG_NAME,
    MAX_GPUS,
    MAX_RAY_QUANTITY,
    MAX_RAY_START_PARAM_VALUE,
    MAX_RAY_START_PARAMS,
    MAX_RESOURCE_ENTRIES,
    MIN_LIVENESS_WINDOW_SECONDS,
    NATIVE_RESOURCES,
    OPERATOR_OWNED_FLAGS,
    PROBE_DEFAULTS,
    PROBE_FIELDS,
    RESOURCE_NAME,
)
from swarm_operator.spec.types import Probes, ProbeTiming, Resources

_Amount = TypeVar("_Amount", Decimal, int)


def read_resources(r: Reader, obj: Mapping[str, Any], path: str) -> Resources:
    raw = r.mapping(obj, "resources", path)
    rpath = f"{path}.resources"
    cpu_raw = raw.get("cpu", 1)
    mem_raw = raw.get("memory", "2Gi")
    cpu = _amount(r, cpu_raw, f"{rpath}.cpu", cpu_cores, Decimal(1), "")
    mem = _amount(r, mem_raw, f"{rpath}.memory", memory_bytes, 2 * 2**30, " bytes")
    gpu = r.integer(raw, "gpu", rpath, 0, 0, MAX_GPUS) or 0
    gpu_name = r.string(raw, "gpuResourceName", rpath, DEFAULT_GPU_RESOURCE)
    if gpu_name is None:
        gpu_name = DEFAULT_GPU_RESOURCE
    elif not RESOURCE_NAME.fullmatch(gpu_name) or len(gpu_name) > 253:  # "" too: it is no default
        r.fail(f"{rpath}.gpuResourceName", f"must be a Kubernetes resource name such as nvidia.com/gpu, "
               f"got {show(gpu_name)}")
    return _resource_details(r, raw, rpath, Resources(cpu=cpu, memory=mem, gpu=gpu, gpu_resource_name=gpu_name,
                                                      cpu_text=str(cpu_raw), memory_text=str(mem_raw)))


def _amount(r: Reader, raw: object, path: str, parse: Callable[[Any], _Amount], default: _Amount,
            unit: str) -> _Amount:
    """The shorthand cpu or memory: a positive quantity within Ray's limit (`default` when unreadable)."""
    try:
        value = parse(raw)
    except QuantityError as exc:
        r.fail(path, str(exc))
        return default
    if value <= 0:
        r.fail(path, f"must be a positive quantity, got {show(raw)}")
    elif value > MAX_RAY_QUANTITY:
        r.fail(path, f"must be at most 100T{unit} (Ray's limit), got {show(raw)}")
    return value


def _resource_map(r: Reader, raw: Mapping[str, Any], key: str, rpath: str,
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
            r.fail(kpath, f"must be a positive quantity, got {show(value)}")
        elif quantity > MAX_RAY_QUANTITY:
            r.fail(kpath, f"must be at most 100T (Ray's limit), got {show(value)}")
        elif extended and quantity != int(quantity):
            r.fail(kpath, f"must be a whole number (an extended resource), got {show(value)}")
        else:
            out[name] = quantity
    return out


def _resource_details(r: Reader, raw: Mapping[str, Any], rpath: str, base: Resources) -> Resources:
    """requests/limits, the accelerator kind and rayCpus over the shorthand cpu/memory/gpu."""
    accelerator = r.string(raw, "accelerator", rpath, None)
    if accelerator is not None and accelerator not in ACCELERATORS:
        r.fail(f"{rpath}.accelerator", f"must be one of {', '.join(ACCELERATORS)}, got {show(accelerator)}")
        accelerator = None
    gpu_name = base.gpu_resource_name
    if accelerator is not None and "gpuResourceName" not in raw:
        gpu_name = ACCELERATORS[accelerator][0]
    accelerator_names = frozenset({*ACCELERATOR_OF_RESOURCE, gpu_name})
    requests = _resource_map(r, raw, "requests", rpath, accelerator_names)
    limits = _resource_map(r, raw, "limits", rpath, accelerator_names)
    for name in ("cpu", "memory"):
        if name in raw and (name in requests or name in limits):
            r.fail(f"{rpath}.{name}", f"give either {name} (request = limit; here {show(raw[name])}) or "
                   f"requests.{name} / limits.{name}, not both")
    for name in sorted(set(requests) & set(limits)):
        if requests[name] > limits[name]:
            r.fail(f"{rpath}.requests.{name}", f"must not exceed limits.{name} ({show(raw['requests'][name])} > "
                   f"{show(raw['limits'][name])})")
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


def _probe_timing(r: Reader, raw: Mapping[str, Any], key: str, ppath: str,
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


def read_probes(r: Reader, obj: Mapping[str, Any], path: str) -> Probes:
    raw = r.mapping(obj, "probes", path)
    ppath = f"{path}.probes"
    for unknown in sorted(set(raw) - {"readiness", "liveness"}):
        r.fail(f"{ppath}.{unknown}", "unknown field; probes are readiness and liveness")
    return Probes(readiness=_probe_timing(r, raw, "readiness", ppath, PROBE_DEFAULTS["readiness"]),
                  liveness=_probe_timing(r, raw, "liveness", ppath, PROBE_DEFAULTS["liveness"]))


def read_ray_start_params(r: Reader, obj: Mapping[str, Any], path: str) -> Mapping[str, str]:
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
            r.fail(kpath, f"must be a string, got {show(value)}")
            continue
        if len(str(value)) > MAX_RAY_START_PARAM_VALUE:
            r.fail(kpath, f"must be at most {MAX_RAY_START_PARAM_VALUE} characters, got {len(str(value))}")
            continue
        digits = str(value).lstrip("0")
        # (length first: int() refuses more than 4300 digits)
        if key == "object-store-memory" and not (re.fullmatch(r"[1-9][0-9]*", digits) and len(digits) <= 15
                                                 and int(digits) <= MAX_RAY_QUANTITY):
            # Ray takes plain bytes here (at most 1e14), and /dev/shm is sized from it.
            r.fail(kpath, f"must be a positive number of bytes of at most 1e14, got {show(value)}")
            continue
        out[key] = str(value)
    return MappingProxyType(out)
