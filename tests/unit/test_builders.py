"""Pure builders: labels, head pod, head service, worker pods, and the pod-template overlay rules."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from swarm_operator.resources import labels
from swarm_operator.resources.overlay import apply_overlay, overridden
from swarm_operator.resources.pods import (
    SIGTERM_DRAIN_ENV,
    build_head_pod,
    build_worker_pod,
    head_address,
    head_hash,
    template_overrides,
    worker_hash,
)
from swarm_operator.resources.service import build_head_service
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.rules import OPERATOR_CONTAINER_FIELDS
from swarm_operator.spec.types import ClusterSpec, WorkerGroupSpec
from tests.cases.invalid_manifests import mutated
from tests.unit.operator_fixtures import cluster as fixture_cluster
from tests.unit.operator_fixtures import group as group_spec

NS = "ns"
UID = "uid-1"
SUFFIX = "x7k2p"
GiB = 2**30


def make_cluster(changes: dict[str, Any] | None = None) -> ClusterSpec:
    """The corpus' base manifest (head; groups cpu [0] and gpu [1]) in namespace ns with uid uid-1."""
    return parse_cluster(mutated({"metadata.namespace": NS, "metadata.uid": UID, **(changes or {})}))


def group(cluster: ClusterSpec, name: str) -> WorkerGroupSpec:
    g = cluster.group(name)
    assert g is not None
    return g


def worker(changes: dict[str, Any] | None = None, name: str = "gpu") -> dict[str, Any]:
    c = make_cluster(changes)
    return build_worker_pod(c, group(c, name), SUFFIX)


def head(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return build_head_pod(make_cluster(changes))


def ray(pod: dict[str, Any]) -> dict[str, Any]:
    container = pod["spec"]["containers"][0]
    assert container["name"] == "ray"
    return container  # type: ignore[no-any-return]


def flags(pod: dict[str, Any]) -> dict[str, str]:
    """`ray start` flags as name → value ("" for a bare flag); fails on a repeated flag."""
    c = ray(pod)
    assert c["command"] == ["ray"]
    assert c["args"][:2] == ["start", "--block"]
    out: dict[str, str] = {}
    for arg in c["args"][2:]:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        assert name not in out, f"--{name} given twice"
        out[name] = value
    return out


def env(pod: dict[str, Any]) -> dict[str, Any]:
    items = ray(pod)["env"]
    names = [e["name"] for e in items]
    assert len(names) == len(set(names)), f"duplicate env: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in items}


# --- labels and names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("got", "expected"),
    [
        (labels.cluster_selector("demo"), {"swarm.io/cluster": "demo"}),
        (labels.head_selector("demo"), {"swarm.io/cluster": "demo", "swarm.io/node-type": "head"}),
        (labels.worker_selector("demo", "gpu"),
         {"swarm.io/cluster": "demo", "swarm.io/node-type": "worker", "swarm.io/group": "gpu"}),
        (labels.head_pod_name("demo"), "demo-head"),
        (labels.head_service_name("demo"), "demo-head-svc"),
        (labels.worker_pod_name("demo", "gpu", "abcde"), "demo-gpu-abcde"),
        (labels.selector_string({"b": "2", "a": "1"}), "a=1,b=2"),
        (labels.common_labels("demo")["app.kubernetes.io/managed-by"], "swarm-operator"),
        (labels.common_labels("demo")["swarm.io/cluster"], "demo"),
    ],
)
def test_labels_and_names(got: object, expected: object) -> None:
    assert got == expected


def test_owner_reference() -> None:
    assert labels.owner_reference("demo", "u") == {
        "apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster", "name": "demo", "uid": "u",
        "controller": True, "blockOwnerDeletion": True,
    }


def test_template_hash_is_short_stable_and_order_independent() -> None:
    h = labels.template_hash("img", {"a": 1, "b": 2})
    assert len(h) == 10 and int(h, 16) >= 0
    assert h == labels.template_hash("img", {"b": 2, "a": 1})
    assert h != labels.template_hash("img", {"a": 1, "b": 3})
    assert h != labels.template_hash("img2", {"a": 1, "b": 2})


@pytest.mark.parametrize(
    ("pod_of", "node_type", "group_label"),
    [(lambda: head(), "head", None), (lambda: worker(), "worker", "gpu")],
    ids=["head", "worker"],
)
def test_pod_labels(pod_of: Any, node_type: str, group_label: str | None) -> None:
    meta = pod_of()["metadata"]
    assert meta["labels"]["swarm.io/cluster"] == "demo"
    assert meta["labels"]["swarm.io/node-type"] == node_type
    assert meta["labels"].get("swarm.io/group") == group_label
    assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
    assert meta["namespace"] == NS


# --- ray start and resources ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "memory", "gpu", "num_cpus", "mem_bytes"),
    [
        ("500m", "1Gi", 0, 1, GiB),  # a fraction of a CPU is one Ray CPU
        (1, "2Gi", 0, 1, 2 * GiB),
        ("1500m", "1500Mi", 2, 2, 1500 * 2**20),
        (3, "1G", 0, 3, 10**9),
        ("0.1", "512Mi", 8, 1, 512 * 2**20),
        ("2.5", "3e9", 1, 3, 3 * 10**9),
        ("64", "256Gi", 4, 64, 256 * GiB),
        (2, 1073741824, 1, 2, GiB),
    ],
)
def test_worker_ray_resources_follow_declared_resources(
    cpu: Any, memory: Any, gpu: int, num_cpus: int, mem_bytes: int
) -> None:
    pod = worker({"spec.workerGroups[1].resources": {"cpu": cpu, "memory": memory, "gpu": gpu}})
    f = flags(pod)
    assert (f["num-cpus"], f["num-gpus"], f["memory"]) == (str(num_cpus), str(gpu), str(mem_bytes))
    res = ray(pod)["resources"]
    expected = {"cpu": str(cpu), "memory": str(memory)}
    if gpu:
        expected["nvidia.com/gpu"] = str(gpu)
    assert res == {"requests": expected, "limits": expected}  # Guaranteed QoS: requests == limits


@pytest.mark.parametrize(("cpu", "memory", "gpu", "num_cpus"), [("250m", "3Gi", 0, 1), (4, "8Gi", 1, 4)])
def test_head_ray_resources_follow_declared_resources(cpu: Any, memory: str, gpu: int, num_cpus: int) -> None:
    pod = head({"spec.head.resources": {"cpu": cpu, "memory": memory, "gpu": gpu}})
    f = flags(pod)
    assert (f["num-cpus"], f["num-gpus"]) == (str(num_cpus), str(gpu))
    assert ray(pod)["resources"]["limits"].get("nvidia.com/gpu") == (str(gpu) if gpu else None)


def test_gpu_limit_uses_the_configured_resource_name() -> None:
    pod = worker({"spec.workerGroups[1].resources": {"cpu": 2, "memory": "4Gi", "gpu": 2,
                                                     "gpuResourceName": "amd.com/gpu"}})
    limits = ray(pod)["resources"]["limits"]
    assert limits["amd.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in limits
    assert flags(pod)["num-gpus"] == "2"


def test_ray_resources_flag_is_compact_sorted_json() -> None:
    pod = worker({"spec.workerGroups[1].rayResources": {"zeta": 1, "TPU": 4, "slice": 2}})
    assert flags(pod)["resources"] == '{"TPU":4.0,"slice":2.0,"zeta":1.0}'
    assert json.loads(flags(pod)["resources"]) == {"TPU": 4.0, "slice": 2.0, "zeta": 1.0}
    assert "resources" not in flags(worker())
    assert "resources" not in flags(head())


def test_ray_start_params_are_appended_sorted_with_bare_flags() -> None:
    pod = worker({"spec.workerGroups[1].rayStartParams": {"object-store-memory": "100000000",
                                                          "disable-usage-stats": ""}})
    args = ray(pod)["args"]
    assert args[-2:] == ["--disable-usage-stats", "--object-store-memory=100000000"]


def test_head_flags() -> None:
    f = flags(head())
    assert f["head"] == ""
    assert f["port"] == "6379"
    assert f["dashboard-host"] == "0.0.0.0"
    assert f["dashboard-port"] == "8265"
    assert f["ray-client-server-port"] == "10001"
    assert f["metrics-export-port"] == "8080"
    assert "address" not in f


def test_worker_joins_the_head_service_by_dns() -> None:
    c = make_cluster()
    assert head_address(c) == "demo-head-svc.ns.svc.cluster.local:6379"
    f = flags(build_worker_pod(c, group(c, "cpu"), SUFFIX))
    assert f["address"] == "demo-head-svc.ns.svc.cluster.local:6379"
    assert f["metrics-export-port"] == "8080"
    assert "head" not in f and "dashboard-host" not in f


def test_the_join_address_follows_the_cluster_domain() -> None:
    c = make_cluster()
    f = flags(build_worker_pod(c, group(c, "cpu"), SUFFIX, "k8s.corp"))
    assert f["address"] == "demo-head-svc.ns.svc.k8s.corp:6379"


@pytest.mark.parametrize(("build", "name", "node_type"),
                         [(lambda: head(), "demo-head", "head"), (lambda: worker(), f"demo-gpu-{SUFFIX}", "gpu"),
                          (lambda: worker(name="cpu"), f"demo-cpu-{SUFFIX}", "cpu")],
                         ids=["head", "gpu-worker", "cpu-worker"])
def test_ray_node_identity_env(build: Any, name: str, node_type: str) -> None:
    pod = build()
    assert pod["metadata"]["name"] == name
    e = env(pod)
    assert e["RAY_CLOUD_INSTANCE_ID"] == pod["metadata"]["name"]
    assert e["RAY_NODE_TYPE_NAME"] == node_type


def test_head_enables_autoscaler_v2_state() -> None:
    assert env(head())["RAY_enable_autoscaler_v2"] == "1"


@pytest.mark.parametrize(
    ("changes", "size"),
    [
        ({}, int(4 * GiB * 0.3)),
        ({"spec.workerGroups[1].resources.memory": "10Gi"}, int(10 * GiB * 0.3)),
        ({"spec.workerGroups[1].rayStartParams": {"object-store-memory": "500000000"}}, 500000000),
    ],
    ids=["default-30-percent", "bigger-pod", "explicit-object-store"],
)
def test_dev_shm_is_sized_for_the_object_store(changes: dict[str, Any], size: int) -> None:
    pod = worker(changes)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in ray(pod)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": str(size)}


@pytest.mark.parametrize(
    ("build", "path", "port"),
    [(lambda: head(), "/api/gcs_healthz", 8265), (lambda: worker(), "/api/local_raylet_healthz", 52365)],
    ids=["head", "worker"],
)
def test_probes(build: Any, path: str, port: int) -> None:
    c = ray(build())
    for kind in ("readinessProbe", "livenessProbe"):
        assert c[kind]["httpGet"] == {"path": path, "port": port}
    live, ready = c["livenessProbe"], c["readinessProbe"]
    # Liveness kills the pod (restartPolicy Never): it must be far more patient than readiness.
    assert live["initialDelaySeconds"] >= ready["initialDelaySeconds"]
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]


@pytest.mark.parametrize("build", [lambda c: build_head_pod(c), lambda c: build_worker_pod(c, c.worker_groups[0], "a"),
                                   lambda c: build_head_service(c)], ids=["head", "worker", "service"])
def test_owner_references(build: Any) -> None:
    obj = build(make_cluster())
    assert obj["metadata"]["ownerReferences"] == [labels.owner_reference("demo", UID)]


@pytest.mark.parametrize("build", [lambda: head(), lambda: worker()], ids=["head", "worker"])
def test_pods_are_never_restarted_in_place(build: Any) -> None:
    spec = build()["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["enableServiceLinks"] is False


def test_image_comes_from_the_cluster() -> None:
    assert ray(worker({"spec.image": "example.com/ray:custom"}))["image"] == "example.com/ray:custom"
    assert ray(head({"spec.image": "example.com/ray:custom"}))["image"] == "example.com/ray:custom"


# --- GCS fault tolerance ----------------------------------------------------------------------------

GCS_WITH_SECRET = {"spec.faultTolerance.gcs": {"redisAddress": "redis:6379",
                                               "redisPasswordSecret": {"name": "s", "key": "k"}}}
GCS_NO_SECRET = {"spec.faultTolerance.gcs": {"redisAddress": "redis:6379"}}


def test_gcs_fault_tolerance_with_password() -> None:
    pod = head(GCS_WITH_SECRET)
    e = env(pod)
    assert e["RAY_REDIS_ADDRESS"] == "redis:6379"
    assert e["RAY_external_storage_namespace"] == UID
    assert e["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert flags(pod)["redis-password"] == "$(REDIS_PASSWORD)"
    assert env(worker(GCS_WITH_SECRET))["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600"


def test_gcs_fault_tolerance_without_password() -> None:
    pod = head(GCS_NO_SECRET)
    assert env(pod)["RAY_REDIS_ADDRESS"] == "redis:6379"
    assert "REDIS_PASSWORD" not in env(pod)
    assert "redis-password" not in flags(pod)


def test_without_gcs_fault_tolerance_nothing_mentions_redis() -> None:
    assert not [k for k in env(head()) if "REDIS" in k or "external_storage" in k]
    assert "RAY_gcs_rpc_server_reconnect_timeout_s" not in env(worker())


# --- head service ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_type", "k8s_type", "cluster_ip"),
    [("Headless", "ClusterIP", "None"), ("ClusterIP", "ClusterIP", None), ("NodePort", "NodePort", None),
     ("LoadBalancer", "LoadBalancer", None)],
)
def test_head_service_type(service_type: str, k8s_type: str, cluster_ip: str | None) -> None:
    svc = build_head_service(make_cluster({"spec.head.serviceType": service_type}))
    assert svc["spec"]["type"] == k8s_type
    assert svc["spec"].get("clusterIP") == cluster_ip


def test_head_service_selects_the_head_only() -> None:
    c = make_cluster()
    svc = build_head_service(c)
    assert svc["metadata"]["name"] == "demo-head-svc"
    assert svc["metadata"]["namespace"] == NS
    selector = svc["spec"]["selector"]
    head_labels = build_head_pod(c)["metadata"]["labels"]
    worker_labels = build_worker_pod(c, c.worker_groups[0], "a")["metadata"]["labels"]
    assert selector.items() <= head_labels.items()
    assert not selector.items() <= worker_labels.items()
    assert svc["spec"]["publishNotReadyAddresses"] is True


def test_head_service_ports_match_the_head_container() -> None:
    c = make_cluster()
    svc_ports = {p["name"]: (p["port"], p["targetPort"]) for p in build_head_service(c)["spec"]["ports"]}
    assert svc_ports == {"gcs": (6379, 6379), "dashboard": (8265, 8265), "client": (10001, 10001),
                         "metrics": (8080, 8080)}
    container_ports = {p["name"]: p["containerPort"] for p in ray(build_head_pod(c))["ports"]}
    assert {name: target for name, (_, target) in svc_ports.items()} == container_ports


# --- overlay rules --------------------------------------------------------------------------------------

T = "spec.workerGroups[1].template"


def test_user_labels_merge_but_selector_labels_win() -> None:
    pod = worker({f"{T}.metadata": {
        "labels": {"team": "ml", "swarm.io/cluster": "evil", "swarm.io/node-type": "head",
                   "swarm.io/group": "cpu", "swarm.io/template-hash": "0"},
        "annotations": {"owner": "ml-team"},
    }})
    got = pod["metadata"]["labels"]
    assert got["team"] == "ml"
    assert (got["swarm.io/cluster"], got["swarm.io/node-type"], got["swarm.io/group"]) == ("demo", "worker", "gpu")
    assert got["swarm.io/template-hash"] != "0"
    annotations = pod["metadata"]["annotations"]
    assert annotations["owner"] == "ml-team"
    assert set(annotations) == {"owner", "swarm.io/revision", "swarm.io/template-metadata"}


@pytest.mark.parametrize("owned", sorted(OPERATOR_CONTAINER_FIELDS))
def test_fields_the_operator_sets_are_refused_naming_the_field(owned: str) -> None:
    with pytest.raises(SpecError) as caught:
        worker({f"{T}.spec.containers": [{"name": "ray", owned: ["x"]}]})
    paths = [e.path for e in caught.value.errors]
    assert paths == [f"{T}.spec.containers[0].{owned}"]
    assert "is set by the operator" in str(caught.value)


def test_a_sidecar_may_set_what_the_ray_container_may_not() -> None:
    pod = worker({f"{T}.spec.containers": [{"name": "proxy", "image": "envoy", "command": ["envoy"],
                                            "resources": {"limits": {"cpu": "1"}}}]})
    assert pod["spec"]["containers"][1]["command"] == ["envoy"]


def test_the_merge_itself_never_takes_operator_fields() -> None:
    # Defence in depth below spec/template.py's refusal: the merge keeps ours even if handed them.
    plain = build_worker_pod(make_cluster(), group(make_cluster(), "gpu"), SUFFIX)
    pod = apply_overlay(plain, {"spec": {"containers": [{
        "name": "ray", "command": ["sleep"], "args": ["infinity"],
        "resources": {"limits": {"cpu": "64"}}, "readinessProbe": {"exec": {"command": ["true"]}},
        "livenessProbe": None, "image": "example.com/ray:patched", "imagePullPolicy": "Always",
        "securityContext": {"runAsNonRoot": True},
    }]}})
    c, p = ray(pod), ray(plain)
    for key in ("command", "args", "resources", "readinessProbe", "livenessProbe"):
        assert c[key] == p[key], key
    assert c["image"] == "example.com/ray:patched"  # the user's other fields win
    assert c["imagePullPolicy"] == "Always"
    assert c["securityContext"] == {"runAsNonRoot": True}


def test_env_and_mounts_are_appended_and_ours_win_on_clashes() -> None:
    pod = worker({f"{T}.spec.containers": [{
        "name": "ray",
        "env": [{"name": "FOO", "value": "1"}, {"name": "RAY_CLOUD_INSTANCE_ID", "value": "evil"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "ports": [{"containerPort": 9999, "name": "extra"}, {"containerPort": 8080, "name": "mine"}],
    }]})
    names = [e["name"] for e in ray(pod)["env"]]
    assert names[-1] == "FOO"
    assert names.count("RAY_CLOUD_INSTANCE_ID") == 1
    assert env(pod)["RAY_CLOUD_INSTANCE_ID"] == pod["metadata"]["name"]
    assert [m["mountPath"] for m in ray(pod)["volumeMounts"]] == ["/dev/shm", "/data"]
    assert [(p["name"], p["containerPort"]) for p in ray(pod)["ports"]] == [("metrics", 8080), ("extra", 9999)]


def test_sidecars_are_appended() -> None:
    pod = worker({f"{T}.spec.containers": [
        {"name": "log-shipper", "image": "fluent-bit"},
        {"name": "ray", "env": [{"name": "X", "value": "y"}]},
        {"name": "proxy", "image": "envoy"},
    ]})
    assert [c["name"] for c in pod["spec"]["containers"]] == ["ray", "log-shipper", "proxy"]
    assert pod["spec"]["containers"][1]["image"] == "fluent-bit"
    assert env(pod)["X"] == "y"


def test_without_a_ray_container_every_container_is_a_sidecar() -> None:
    # A template holding only a logging sidecar must not replace the Ray container's image.
    pod = worker({f"{T}.spec.containers": [{"name": "log-shipper", "image": "fluent-bit"},
                                           {"name": "side", "image": "s"}]})
    assert [c["name"] for c in pod["spec"]["containers"]] == ["ray", "log-shipper", "side"]
    assert ray(pod)["image"] == make_cluster().image
    assert flags(pod)["num-gpus"] == "1"


H = "spec.head.template"


@pytest.mark.parametrize(("template", "paths"), [
    pytest.param({"metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}},
                  "spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "x"},
                           "containers": [{"name": "ray", "env": [{"name": "FOO", "value": "1"}]},
                                          {"name": "side", "image": "s", "env": [{"name": "RAY_CLOUD_INSTANCE_ID"}]}],
                           "volumes": [{"name": "data", "emptyDir": {}}]}},
                 [], id="nothing-overridden-nothing-reported"),
    pytest.param({"metadata": {"labels": {"swarm.io/cluster": "evil", "app.kubernetes.io/name": "ray"},
                               "annotations": {"swarm.io/revision": "{}"}}},
                 [f"{H}.metadata.labels.swarm.io/cluster", f"{H}.metadata.annotations.swarm.io/revision"],
                 id="operator-labels-and-annotations-not-an-equal-value"),
    pytest.param({"spec": {"restartPolicy": "Always"}}, [f"{H}.spec.restartPolicy"], id="restart-policy"),
    pytest.param({"spec": {"containers": [{"name": "side", "image": "s"}, {"name": "ray", "env": [
        {"name": "X", "value": "1"}, {"name": "RAY_CLOUD_INSTANCE_ID", "value": "evil"}],
        "ports": [{"containerPort": 6379, "name": "mine"}],
        "volumeMounts": [{"name": "shared-mem", "mountPath": "/shm"}]}]}},
                 [f"{H}.spec.containers[1].env[1] (RAY_CLOUD_INSTANCE_ID)", f"{H}.spec.containers[1].volumeMounts[0] "
                  "(shared-mem)", f"{H}.spec.containers[1].ports[0] (6379)"], id="ray-container-list-clashes"),
    pytest.param({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "shared-mem", "emptyDir": {}}]}},
                 [f"{H}.spec.volumes[1] (shared-mem)"], id="volume-name-clash"),
])
def test_what_the_operator_keeps_over_a_template_is_named(template: dict[str, Any], paths: list[str]) -> None:
    assert template_overrides(make_cluster({H: template})) == paths


def test_overrides_are_named_per_group_and_match_what_the_overlay_drops() -> None:
    template = {"spec": {"restartPolicy": "OnFailure", "volumes": [{"name": "shared-mem", "hostPath": {"path": "/"}}]}}
    c = make_cluster({f"{T}": template})
    assert template_overrides(c) == [f"{T}.spec.restartPolicy", f"{T}.spec.volumes[0] (shared-mem)"]
    pod = build_worker_pod(c, group(c, "gpu"), SUFFIX)
    assert pod["spec"]["restartPolicy"] == "Never" and "hostPath" not in pod["spec"]["volumes"][0]
    assert overridden(pod, {}) == []


def test_volumes_are_appended_and_ours_win() -> None:
    pod = worker({f"{T}.spec.volumes": [{"name": "data", "emptyDir": {}},
                                        {"name": "shared-mem", "hostPath": {"path": "/evil"}}]})
    volumes = pod["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["shared-mem", "data"]
    assert "emptyDir" in volumes[0] and "hostPath" not in volumes[0]


def test_restart_policy_is_kept() -> None:
    assert worker({f"{T}.spec.restartPolicy": "Always"})["spec"]["restartPolicy"] == "Never"
    assert head({"spec.head.template.spec.restartPolicy": "OnFailure"})["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("nodeSelector", {"accelerator": "t4"}),
        ("tolerations", [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
        ("affinity", {"nodeAffinity": {}}),
        ("serviceAccountName", "ray"),
        ("priorityClassName", "high"),
        ("securityContext", {"fsGroup": 100}),
        ("imagePullSecrets", [{"name": "regcred"}]),
        ("enableServiceLinks", True),
    ],
)
def test_other_pod_fields_come_from_the_user(key: str, value: Any) -> None:
    assert worker({f"{T}.spec.{key}": value})["spec"][key] == value
    assert head({f"spec.head.template.spec.{key}": value})["spec"][key] == value


def test_overlay_does_not_modify_its_inputs() -> None:
    pod = build_head_pod(make_cluster())
    overlay: dict[str, Any] = {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "ray", "env": [{"name": "E"}]}], "volumes": [{"name": "v"}],
                 "nodeSelector": {"x": "y"}},
    }
    pod_before, overlay_before = copy.deepcopy(pod), copy.deepcopy(overlay)
    out = apply_overlay(pod, overlay)
    assert pod == pod_before and overlay == overlay_before
    assert out != pod
    out["spec"]["nodeSelector"]["x"] = "changed"
    assert overlay["spec"]["nodeSelector"] == {"x": "y"}


def test_empty_overlay_changes_nothing() -> None:
    pod = build_head_pod(make_cluster())
    assert apply_overlay(pod, {}) == pod


# --- template hash ---------------------------------------------------------------------------------------

W1 = "spec.workerGroups[1]"


@pytest.mark.parametrize(
    ("changes", "head_changes", "worker_changes"),
    [
        ({"spec.image": "rayproject/ray:2.61.0"}, True, True),
        ({f"{T}.spec.tolerations": [{"key": "gpu", "operator": "Exists"}]}, False, True),
        ({f"{W1}.resources.memory": "8Gi"}, False, True),
        ({f"{W1}.rayStartParams": {"object-store-memory": "100000000"}}, False, True),
        ({f"{W1}.rayResources": {"TPU": 1}}, False, True),
        ({"spec.head.template.spec.nodeSelector": {"role": "head"}}, True, False),
        ({"spec.head.resources.cpu": 2}, True, False),
        ({"spec.faultTolerance.gcs": {"redisAddress": "redis:6379"}}, True, True),
        ({f"{W1}.replicas": 3}, False, False),
        ({f"{W1}.minReplicas": 1, f"{W1}.maxReplicas": 9}, False, False),
        ({"spec.autoscaling.enabled": True}, False, False),
        ({"spec.suspend": True}, False, False),
        ({"spec.workerGroups[0].resources.cpu": 3}, False, False),
        ({"spec.head.serviceType": "ClusterIP"}, False, False),
    ],
    ids=["image", "worker-template", "worker-resources", "worker-params", "ray-resources", "head-template",
         "head-resources", "gcs", "replicas", "min-max", "autoscaling", "suspend", "other-group", "service-type"],
)
def test_template_hash_changes_with_the_pod_template_only(
    changes: dict[str, Any], head_changes: bool, worker_changes: bool
) -> None:
    before, after = make_cluster(), make_cluster(changes)
    assert (head_hash(after) != head_hash(before)) is head_changes
    assert (worker_hash(after, group(after, "gpu")) != worker_hash(before, group(before, "gpu"))) is worker_changes


def test_pods_carry_their_template_hash() -> None:
    c = make_cluster()
    assert build_head_pod(c)["metadata"]["labels"]["swarm.io/template-hash"] == head_hash(c)
    gpu = group(c, "gpu")
    assert build_worker_pod(c, gpu, SUFFIX)["metadata"]["labels"]["swarm.io/template-hash"] == worker_hash(c, gpu)
    assert worker_hash(c, gpu) != worker_hash(c, group(c, "cpu"))


# -- a worker's grace period and its preStop drain ------------------------------------------------------------

def grace_cluster(group_fields: dict[str, Any]) -> ClusterSpec:
    return fixture_cluster(groups=[group_spec("cpu", 1, **group_fields)])


@pytest.mark.parametrize(
    ("group_fields", "grace", "prestop"),
    [
        pytest.param({}, 60, True, id="default-60s"),
        pytest.param({"terminationGracePeriodSeconds": 300}, 300, True, id="the-groups-field"),
        pytest.param({"terminationGracePeriodSeconds": 300, "template": {"spec": {"terminationGracePeriodSeconds": 9}}},
                     9, True, id="the-template-wins"),
        pytest.param({"template": {"spec": {"containers": [{"name": "ray", "lifecycle": {"preStop": {
            "exec": {"command": ["true"]}}}}]}}}, 60, False, id="a-lifecycle-of-its-own-wins"),
    ],
)
def test_a_worker_drains_its_ray_node_when_stopped(group_fields: dict[str, Any], grace: int, prestop: bool) -> None:
    c = grace_cluster(group_fields)
    pod = build_worker_pod(c, c.worker_groups[0], "abcde")
    assert pod["spec"]["terminationGracePeriodSeconds"] == grace
    command = pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    if prestop:
        # The drain's deadline is the grace period the pod really has; the head's address is the one it joins.
        assert command[0:2] == ["/bin/sh", "-c"] and "ray drain-node" in command[2]
        assert "DRAIN_NODE_REASON_PREEMPTION" in command[2]
        assert command[3:] == ["prestop", "demo-head-svc.ns.svc.cluster.local:6379", str(grace)]
    else:
        assert command == ["true"]
    assert "lifecycle" not in build_head_pod(c)["spec"]["containers"][0]


def _sigterm_drain(pod: dict[str, Any]) -> list[str]:
    return [e["value"] for e in pod["spec"]["containers"][0].get("env", []) if e["name"] == SIGTERM_DRAIN_ENV]


@pytest.mark.parametrize(
    ("ray_container", "wanted", "overrides"),
    [
        pytest.param({}, ["0"], [], id="our-prestop-drains-so-rays-own-sigterm-drain-is-off"),
        pytest.param({"env": [{"name": SIGTERM_DRAIN_ENV, "value": "30"}]}, ["30"], [],
                     id="the-templates-value-wins-and-is-not-reported-overridden"),
        pytest.param({"lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}, [], [],
                     id="a-lifecycle-of-its-own-keeps-rays-drain"),
    ],
)
def test_rays_own_drain_on_sigterm_is_off_only_where_our_prestop_drained(
        ray_container: dict[str, Any], wanted: list[str], overrides: list[str]) -> None:
    """Ray drains its node again on SIGTERM, through the head's GCS, for up to 30 s: after our preStop there is
    nothing left to drain, and on a deleted cluster's workers (their head gone) that call only waited on the
    unreachable GCS. A container with a preStop of its own keeps Ray's drain, its only one."""
    c = grace_cluster({"template": {"spec": {"containers": [{"name": "ray", **ray_container}]}}})
    assert _sigterm_drain(build_worker_pod(c, c.worker_groups[0], "abcde")) == wanted
    assert template_overrides(c) == overrides
    assert _sigterm_drain(build_head_pod(c)) == []


@pytest.mark.parametrize(("own_netns", "head_up", "drained", "held"), [
    pytest.param(True, True, True, True, id="its-own-raylet-is-drained-and-holds-it"),
    pytest.param(False, True, False, False, id="another-pods-raylet-neither"),
    pytest.param(True, False, True, False, id="a-head-gone-holds-nothing"),
])
def test_the_prestop_drains_and_waits_for_the_raylet_of_its_own_network_namespace_only(
        tmp_path: Path, own_netns: bool, head_up: bool, drained: bool, held: bool) -> None:
    """The script itself, with a `ray` that accepts the drain (and says it was asked), a process named raylet, and
    a listening socket for the head's GCS port: in this network namespace the node is drained and the stop held
    until the grace period ends; in another one (a pod beside it, where processes are shared: hostPID, a process
    node) there is no raylet of its own, so no drain and no wait; with the head gone (its cluster deleted) the
    drain is asked but nothing holds the stop."""
    unshare = shutil.which("unshare")
    if not own_netns and (os.geteuid() != 0 or unshare is None):
        pytest.skip("a network namespace of its own needs root and unshare")
    asked = tmp_path / "drain-asked"
    (tmp_path / "ray").write_text(f"#!/bin/sh\ntouch {asked}\nexit 0\n")
    (tmp_path / "ray").chmod(0o755)
    (tmp_path / "python").symlink_to(sys.executable)
    shutil.copy("/bin/sleep", tmp_path / "raylet")
    # "Another pod's" case runs the script in a network namespace of its own, so that no raylet on this machine (the
    # fake one here, or another test run's) is its own.
    elsewhere = [] if own_netns else [str(unshare), "--net"]
    with socket.create_server(("127.0.0.1", 0)) as gcs, subprocess.Popen([str(tmp_path / "raylet"), "30"]) as proc:
        address = f"127.0.0.1:{gcs.getsockname()[1]}"
        if not head_up:
            gcs.close()
        try:
            time.sleep(0.3)
            c = grace_cluster({"terminationGracePeriodSeconds": 3})
            command = build_worker_pod(c, c.worker_groups[0], "abcde")["spec"]["containers"][0]["lifecycle"][
                "preStop"]["exec"]["command"]
            assert command[-2] == "demo-head-svc.ns.svc.cluster.local:6379", command
            started = time.monotonic()
            subprocess.run([*elsewhere, *command[:-2], address, command[-1]],
                           env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=True, timeout=20)
            took = time.monotonic() - started
        finally:
            proc.kill()
    assert (asked.exists(), took >= 2) == (drained, held), took


def test_the_grace_period_field_rolls_the_group_only_once_set() -> None:
    unset, default, longer = (grace_cluster(f) for f in ({}, {"terminationGracePeriodSeconds": 60},
                                                        {"terminationGracePeriodSeconds": 300}))
    hashes = [worker_hash(c, c.worker_groups[0]) for c in (unset, default, longer)]
    assert len(set(hashes)) == 3, "setting it (even to the default) or changing it replaces the group's pods"
