"""The rules a SwarmCluster's fields follow: patterns, bounds, allowed values and defaults.

The CRD schema states the same rules (tests/unit/test_crd_schema.py keeps the two equal); the operator
re-checks them because it must not trust that the installed CRD is current.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from swarm_operator import GROUP

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
# Label and annotation keys with this prefix are the operator's: a template or the head service may not set them.
PREFIX = f"{GROUP}/"
# The Ray container of every pod the operator builds; in a template overlay, the container of this name is merged
# into it (resources/overlay.py) and may not set the fields below.
RAY_CONTAINER = "ray"
# Fields of the Ray container the operator sets, and where the user says what they want instead.
OPERATOR_CONTAINER_FIELDS: Mapping[str, str] = MappingProxyType({
    "command": "the operator runs `ray start --block`; give ray start flags in rayStartParams",
    "args": "the operator runs `ray start --block`; give ray start flags in rayStartParams",
    "resources": "the operator sets them from resources (head.resources, workerGroups[].resources); set them there",
    "readinessProbe": "the operator probes Ray's own health endpoints",
    "livenessProbe": "the operator probes Ray's own health endpoints",
})
