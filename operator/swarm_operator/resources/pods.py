"""Head and worker pods of a SwarmCluster. Pure: spec in, pod dict out.

Every Ray container runs `ray start --block` with --num-cpus/--num-gpus/--memory taken from
the declared resources, so what Ray schedules on equals what Kubernetes reserved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from swarm_operator.config import DEFAULT_CLUSTER_DOMAIN
from swarm_operator.resources import labels, revision
from swarm_operator.resources.overlay import apply_overlay, overridden
from swarm_operator.spec.rules import PROBE_DEFAULTS, RAY_CONTAINER
from swarm_operator.spec.types import (
    AuthSpec,
    ClusterSpec,
    GcsFaultTolerance,
    Probes,
    ProbeTiming,
    Resources,
    WorkerGroupSpec,
)

GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
METRICS_PORT = 8080
# The head's ports by name, in this order on the head pod and on the head service.
HEAD_PORTS: Mapping[str, int] = MappingProxyType({"gcs": GCS_PORT, "dashboard": DASHBOARD_PORT,
                                                  "client": CLIENT_PORT, "metrics": METRICS_PORT})
DASHBOARD_AGENT_PORT = 52365
OBJECT_STORE_FRACTION = 0.3  # Ray's own default share of memory for the object store
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"
REDIS_CA_VOLUME = "redis-ca"
REDIS_CA_DIR = "/run/swarm/redis-ca"  # under /run, like the service account's /var/run/secrets
REDIS_CA_FILE = "ca.crt"


def ray_num_cpus(res: Resources) -> int:
    """`ray start --num-cpus` takes whole CPUs: rayCpus when given (0 keeps work off the head), else the
    CPU limit, or the request without a limit, rounded up (500m → 1)."""
    if res.ray_cpus is not None:
        return res.ray_cpus
    return max(1, math.ceil(res.cpu))


def ray_accelerators(res: Resources) -> tuple[int, dict[str, float]]:
    """(`--num-gpus`, accelerators for `--resources`): GPUs of any vendor are Ray's GPU, TPUs its TPU,
    Neuron cores its neuron_cores …; Ray reads the count of the non-GPU kinds from --resources."""
    if res.ray_accelerator == "GPU" or not res.gpu:
        return res.gpu, {}
    return 0, {res.ray_accelerator: float(res.gpu)}


def object_store_bytes(res: Resources, ray_start_params: Mapping[str, str]) -> int:
    explicit = ray_start_params.get("object-store-memory")
    if explicit is not None and explicit.isdigit():
        return int(explicit)
    return int(res.memory * OBJECT_STORE_FRACTION)


def ray_shape(res: Resources, ray_start_params: Mapping[str, str],
              custom_resources: Mapping[str, float] | None = None) -> dict[str, float]:
    """The Ray resources a node advertises: what `ray start` is told by :func:`ray_start_args` (whole CPUs,
    so a fractional CPU limit rounds up), as Ray's GCS reports them. The autoscaler plans with it."""
    shape: dict[str, float] = {"CPU": float(ray_num_cpus(res)), "memory": float(res.memory),
                               "object_store_memory": float(object_store_bytes(res, ray_start_params))}
    num_gpus, accelerators = ray_accelerators(res)
    if num_gpus:
        shape["GPU"] = float(num_gpus)
    shape.update(accelerators)  # TPU, neuron_cores …: demand for them maps to this group
    shape.update(custom_resources or {})
    return shape


def container_resources(res: Resources) -> dict[str, Any]:
    """The shorthand cpu/memory (and the defaults) set request = limit (Guaranteed QoS); requests and limits,
    where given, are taken as Kubernetes takes them, a missing request being the limit (as the API server
    defaults it, so the built pod equals the stored one). Accelerators: request = limit = gpu."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, text in (("cpu", res.cpu_text), ("memory", res.memory_text)):
        if name not in res.requests and name not in res.limits:
            requests[name] = limits[name] = text
    limits.update(res.limits)
    requests.update(res.limits)
    requests.update(res.requests)
    if res.gpu:
        requests[res.gpu_resource_name] = limits[res.gpu_resource_name] = str(res.gpu)
    return {"requests": requests, "limits": limits}


def ray_start_args(res: Resources, params: dict[str, str], extra: list[str],
                   custom_resources: dict[str, float] | None = None) -> list[str]:
    num_gpus, accelerators = ray_accelerators(res)
    custom_resources = {**(custom_resources or {}), **accelerators}
    args = ["start", "--block", *extra,
            f"--num-cpus={ray_num_cpus(res)}", f"--num-gpus={num_gpus}", f"--memory={res.memory}",
            f"--metrics-export-port={METRICS_PORT}"]
    if "object-store-memory" not in params:
        # Explicit, equal to /dev/shm's size: Ray would otherwise size its store from what it
        # sees of the host's memory and fall back to /tmp when /dev/shm is smaller.
        args.append(f"--object-store-memory={object_store_bytes(res, params)}")
    if custom_resources:
        args.append("--resources=" + json.dumps(dict(custom_resources), sort_keys=True, separators=(",", ":")))
    for key in sorted(params):
        args.append(f"--{key}" if params[key] == "" else f"--{key}={params[key]}")
    return args


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def storage_namespace(cluster: ClusterSpec) -> str:
    """Where the head's GCS keeps its tables in Redis (and what the cleanup Job removes): one Redis may serve
    several clusters, and a re-created cluster of the same name must not find its predecessor's state."""
    return cluster.uid or f"{cluster.namespace}/{cluster.name}"


def _gcs_env(gcs: GcsFaultTolerance | None, cluster: ClusterSpec) -> list[dict[str, Any]]:
    if gcs is None:
        return []
    env: list[dict[str, Any]] = [
        _env("RAY_REDIS_ADDRESS", gcs.redis_address),
        _env("RAY_external_storage_namespace", storage_namespace(cluster)),
    ]
    if gcs.password_secret_name and gcs.password_secret_key:
        env.append({"name": REDIS_PASSWORD_ENV, "valueFrom": {"secretKeyRef": {
            "name": gcs.password_secret_name, "key": gcs.password_secret_key}}})
    return env


def redis_ca_volume(gcs: GcsFaultTolerance | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                            list[dict[str, Any]]]:
    """The CA bundle of a rediss:// Redis as a file: (volumes, volumeMounts, env). Ray's Redis client reads
    the path from RAY_REDIS_CA_CERT; only the GCS server (head) and the key cleanup talk to Redis."""
    if gcs is None or gcs.redis_ca is None:
        return [], [], []
    ca = gcs.redis_ca
    items = [{"key": ca.key, "path": REDIS_CA_FILE}]
    source = ({"secret": {"secretName": ca.name, "items": items}} if ca.kind == "Secret"
              else {"configMap": {"name": ca.name, "items": items}})
    return ([{"name": REDIS_CA_VOLUME, **source}],
            [{"name": REDIS_CA_VOLUME, "mountPath": REDIS_CA_DIR, "readOnly": True}],
            [_env("RAY_REDIS_CA_CERT", f"{REDIS_CA_DIR}/{REDIS_CA_FILE}")])


def auth_env(auth: AuthSpec | None) -> list[dict[str, Any]]:
    """Token authentication: every Ray node reads the cluster's token from its Secret (never from the pod spec)."""
    if auth is None:
        return []
    return [_env("RAY_AUTH_MODE", auth.mode),
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": auth.secret_name,
                                                                      "key": auth.secret_key}}}]


def _probe(path: str, port: int, kind: str, timing: ProbeTiming) -> dict[str, Any]:
    """The operator's timings (PROBE_DEFAULTS), each overridden by the spec's probes.<kind> where given."""
    defaults = PROBE_DEFAULTS[kind]
    return {"httpGet": {"path": path, "port": port}, "timeoutSeconds": defaults["timeoutSeconds"],
            **{k: v for k, v in defaults.items() if k != "timeoutSeconds"}, **timing.fields()}


def _pod(cluster: ClusterSpec, name: str, pod_labels: dict[str, str], res: Resources, args: list[str],
         env: list[dict[str, Any]], ports: list[dict[str, Any]], probe_path: str, probe_port: int, probes: Probes,
         template: Any, parts: dict[str, Any], *, volumes: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], []),
         grace_seconds: int | None = None) -> dict[str, Any]:
    """`volumes`: more (volumes, volumeMounts of the Ray container) the operator needs, before the overlay;
    `grace_seconds`: the pod's terminationGracePeriodSeconds (None: Kubernetes' default)."""
    params_shm = object_store_bytes(res, {})
    for a in args:
        if a.startswith("--object-store-memory="):
            params_shm = int(a.split("=", 1)[1])
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": {**pod_labels, labels.TEMPLATE_HASH: revision.revision_hash(parts)},
            "annotations": revision.revision_annotations(parts, template),
            "ownerReferences": [labels.owner_reference(cluster.name, cluster.uid)],
        },
        "spec": {
            # The operator, not the kubelet, replaces Ray nodes: a restarted raylet could not rejoin cleanly.
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "containers": [{
                "name": RAY_CONTAINER,
                "image": cluster.image,
                "command": ["ray"],
                "args": args,
                "env": env,
                "ports": ports,
                "resources": container_resources(res),
                "readinessProbe": _probe(probe_path, probe_port, "readiness", probes.readiness),
                "livenessProbe": _probe(probe_path, probe_port, "liveness", probes.liveness),
                "volumeMounts": [{"name": "shared-mem", "mountPath": "/dev/shm"}, *volumes[1]],
            }],
            # The object store lives in /dev/shm; the container runtime's 64 MiB default is far too small.
            "volumes": [{"name": "shared-mem", "emptyDir": {"medium": "Memory", "sizeLimit": str(params_shm)}},
                        *volumes[0]],
        },
    }
    if grace_seconds is not None:
        pod["spec"]["terminationGracePeriodSeconds"] = grace_seconds
    return apply_overlay(pod, template)


def head_hash(cluster: ClusterSpec) -> str:
    return revision.revision_hash(revision.head_parts(cluster))


def worker_hash(cluster: ClusterSpec, group: WorkerGroupSpec) -> str:
    return revision.revision_hash(revision.worker_parts(cluster, group))


def head_address(cluster: ClusterSpec, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """The GCS address workers join: the head service's cluster DNS name."""
    svc = labels.head_service_name(cluster.name)
    return f"{svc}.{cluster.namespace}.svc.{cluster_domain}:{GCS_PORT}"


def build_head_pod(cluster: ClusterSpec, generation: int = 0) -> dict[str, Any]:
    """The head of `generation` (reconcile/head.py decides it): its name and its generation label follow from it."""
    head = cluster.head
    name = labels.head_pod_name(cluster.name, generation)
    extra = [
        "--head", f"--port={GCS_PORT}", "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
        f"--ray-client-server-port={CLIENT_PORT}",
    ]
    gcs = cluster.fault_tolerance.gcs
    if gcs and gcs.password_secret_name:
        extra.append(f"--redis-password=$({REDIS_PASSWORD_ENV})")
    if gcs and gcs.redis_username:
        extra.append(f"--redis-username={gcs.redis_username}")
    ca_volumes, ca_mounts, ca_env = redis_ca_volume(gcs)
    env = [
        _env("RAY_CLOUD_INSTANCE_ID", name),
        _env("RAY_NODE_TYPE_NAME", labels.HEAD),
        # The operator reads demand from GCS autoscaler state; v2 mode puts request_resources there too.
        _env("RAY_enable_autoscaler_v2", "1"),
        _env("RAY_USAGE_STATS_ENABLED", "0"),
        *_gcs_env(gcs, cluster),
        *ca_env,
        *auth_env(cluster.auth),
    ]
    ports = [{"name": name, "containerPort": port} for name, port in HEAD_PORTS.items()]
    pod_labels = {**labels.common_labels(cluster.name), **labels.head_selector(cluster.name),
                  labels.HEAD_GENERATION: str(generation)}
    return _pod(cluster, name, pod_labels, head.resources,
                ray_start_args(head.resources, dict(head.ray_start_params), extra), env, ports,
                "/api/gcs_healthz", DASHBOARD_PORT, head.probes, head.template, revision.head_parts(cluster),
                volumes=(ca_volumes, ca_mounts))


# A worker's grace period unless its group says otherwise: twice Kubernetes' 30 s, so that the preStop's drain
# lets short tasks finish, yet a node drain or a spot reclaim (GCE gives 30 s, EC2 120 s) is not held long.
DEFAULT_WORKER_GRACE_SECONDS = 60
# The preStop of a worker's Ray container: Ray drains the node (PREEMPTION, the grace period as deadline), so it
# schedules nothing more there and lets running tasks finish; then it waits until the raylet is gone (it exits
# once a drained node is idle) or the grace period ends, whichever is first. It never fails the stop: a head that
# does not answer within the short GCS timeouts leaves the kubelet to stop the pod as usual. "Its raylet" is a
# raylet in the pod's own network namespace: where the pod sees the host's processes (hostPID, or a process node of
# the local cluster), a raylet of another pod must not hold this one for its whole grace period. With no raylet of
# its own (a node Ray drained already, now DEAD) there is nothing to drain, and `ray drain-node` without a node id
# asks the local Ray for it: on process nodes such a stop took the whole 60 s grace period (the e2e suspend test).
# The wait ends too once the head's GCS port stops answering: the cluster is being deleted (its head goes with its
# workers) and a raylet that lost its GCS lingers for Ray's reconnect timeout (60 s), held by nothing left to drain.
# The drain call itself gets the same short reconnect timeout (and a hard bound): a GCS that goes down while it
# answers would otherwise hold the call, and the stop, for those 60 s (seen on process nodes).
PRESTOP_DRAIN = """\
own=$(readlink /proc/self/ns/net)
own_raylet() {
  for comm in $(grep -lsx raylet /proc/[0-9]*/comm); do
    [ "$(readlink "${comm%/comm}/ns/net" 2>/dev/null)" = "$own" ] && return 0
  done
  return 1
}
head_answers() {
  python -c 'import socket, sys; h, p = sys.argv[1].rsplit(":", 1); socket.create_connection((h, int(p)), 2)' "$1" \\
    2>/dev/null
}
own_raylet || exit 0
RAY_py_gcs_connect_timeout_s=5 RAY_gcs_rpc_server_connect_timeout_s=5 RAY_gcs_rpc_server_reconnect_timeout_s=5 \\
  timeout 20 ray drain-node --address="$1" \\
  --reason=DRAIN_NODE_REASON_PREEMPTION --reason-message="pod $RAY_CLOUD_INSTANCE_ID is stopping (preStop)" \\
  --deadline-remaining-seconds="$2" >/dev/null 2>&1 || exit 0
end=$(( $(date +%s) + $2 ))
while [ "$(date +%s)" -lt "$end" ] && own_raylet && head_answers "$1"; do sleep 1; done
"""


def prestop_drain(address: str, grace_seconds: int) -> dict[str, Any]:
    """The Ray container's lifecycle: drain its Ray node when the kubelet stops the pod (see PRESTOP_DRAIN)."""
    return {"preStop": {"exec": {"command": ["/bin/sh", "-c", PRESTOP_DRAIN, "prestop", address,
                                             str(grace_seconds)]}}}


# Ray (2.60 on) drains its own node once more when `ray start --block` gets SIGTERM, for up to this many seconds
# (Ray's default 30), through the head's GCS. After our preStop that drain has nothing left to do: the preStop
# drained already, with the whole grace period as deadline, and returned once the raylet ended or the head stopped
# answering. In the second case (the cluster is being deleted: its head goes with its workers) Ray's drain call
# would wait on the unreachable GCS for up to those 30 s, holding the pod's deletion. Off wherever our preStop
# drains; the template's own value for it wins.
SIGTERM_DRAIN_ENV = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"


def _env_default(container: dict[str, Any], name: str, value: str) -> None:
    """``name=value`` in the container's env unless it has a value for ``name`` (its template's) already; first,
    as the template's own entries come last."""
    env = container.setdefault("env", [])
    if not any(e.get("name") == name for e in env):
        env.insert(0, _env(name, value))


def build_worker_pod(cluster: ClusterSpec, group: WorkerGroupSpec, suffix: str,
                     cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> dict[str, Any]:
    pod = _worker_pod(cluster, group, suffix, cluster_domain)
    # After the overlay: the template's grace period wins, and so does a lifecycle of its own for the container
    # (then Ray's own drain on SIGTERM stays as the template left it), and its own value for SIGTERM_DRAIN_ENV.
    ray = next(c for c in pod["spec"]["containers"] if c["name"] == RAY_CONTAINER)
    if "lifecycle" not in ray:
        ray["lifecycle"] = prestop_drain(head_address(cluster, cluster_domain),
                                         int(pod["spec"]["terminationGracePeriodSeconds"]))
        _env_default(ray, SIGTERM_DRAIN_ENV, "0")
    return pod


def _worker_pod(cluster: ClusterSpec, group: WorkerGroupSpec, suffix: str, cluster_domain: str) -> dict[str, Any]:
    """A worker pod with its template applied, before the defaults that yield to the template."""
    name = labels.worker_pod_name(cluster.name, group.name, suffix)
    env = [
        _env("RAY_CLOUD_INSTANCE_ID", name),
        _env("RAY_NODE_TYPE_NAME", group.name),
        _env("RAY_USAGE_STATS_ENABLED", "0"),
        *auth_env(cluster.auth),
    ]
    if cluster.fault_tolerance.gcs is not None:
        # With GCS fault tolerance workers wait for a replaced head instead of exiting.
        env.append(_env("RAY_gcs_rpc_server_reconnect_timeout_s", "600"))
    pod_labels = {**labels.common_labels(cluster.name), **labels.worker_selector(cluster.name, group.name)}
    join = f"--address={head_address(cluster, cluster_domain)}"
    args = ray_start_args(group.resources, dict(group.ray_start_params), [join], dict(group.ray_resources))
    grace = (DEFAULT_WORKER_GRACE_SECONDS if group.termination_grace_period_seconds is None
             else group.termination_grace_period_seconds)
    return _pod(cluster, name, pod_labels, group.resources, args, env,
                [{"name": "metrics", "containerPort": METRICS_PORT}],
                "/api/local_raylet_healthz", DASHBOARD_AGENT_PORT, group.probes, group.template,
                revision.worker_parts(cluster, group), grace_seconds=grace)


def template_overrides(cluster: ClusterSpec) -> list[str]:
    """Every value the cluster's pod templates give that the operator's own wins over (docs/crd.md, "Pod template
    overlays"), by its path in the spec: for a Warning Event."""
    out: list[str] = []
    head = cluster.head
    if head.template:
        plain = build_head_pod(replace(cluster, head=replace(head, template=MappingProxyType({}))))
        out += [f"spec.head.template.{p}" for p in overridden(plain, head.template)]
    for i, group in enumerate(cluster.worker_groups):
        if group.template:
            # Before the defaults that yield to a template: a template giving one of those overrides nothing.
            plain = _worker_pod(cluster, replace(group, template=MappingProxyType({})), "x", DEFAULT_CLUSTER_DOMAIN)
            out += [f"spec.workerGroups[{i}].template.{p}" for p in overridden(plain, group.template)]
    return out
