"""The node agent's pure parts: $(VAR) expansion, container env, quantities, DNS records, probes,
downward-API files, token renewal times, the API server's address inside pods."""

from __future__ import annotations

import base64
import ipaddress
from decimal import Decimal
from typing import Any

import pytest

from localcluster.nodeagent import apiproxy
from localcluster.nodeagent.containers import crash_loop_delay, exit_code, runs_again
from localcluster.nodeagent.dns import DnsTable, Record, render_hosts, resolv_conf, slice_records
from localcluster.nodeagent.launch import exec_error
from localcluster.nodeagent.node import KWOK_ANNOTATION, node_object, parse_taint
from localcluster.nodeagent.podspec import (
    ConfigError,
    command_line,
    container_env,
    container_port,
    decode_secret,
    downward_value,
    expand,
    quantity,
    token_refresh_at,
)
from localcluster.nodeagent.podstatus import Conditions
from localcluster.nodeagent.probes import Probe

POD_NET = ipaddress.IPv4Network("10.250.0.0/16")


@pytest.mark.parametrize(("text", "env", "want"), [
    ("$(A)", {"A": "1"}, "1"),
    ("x$(A)y$(B)", {"A": "1", "B": "2"}, "x1y2"),
    ("$(MISSING)", {}, "$(MISSING)"),
    ("$$(A)", {"A": "1"}, "$(A)"),
    ("$$$(A)", {"A": "1"}, "$1"),
    ("$(A", {"A": "1"}, "$(A"),
    ("$A", {"A": "1"}, "$A"),
    ("cost: 5$", {}, "cost: 5$"),
    ("$()", {}, "$()"),
    ("--address=$(HEAD):6379", {"HEAD": "h.ns.svc.cluster.local"}, "--address=h.ns.svc.cluster.local:6379"),
])
def test_expand_follows_kubernetes_rules(text: str, env: dict[str, str], want: str) -> None:
    assert expand(text, env) == want


@pytest.mark.parametrize(("text", "want"), [
    ("1", Decimal(1)), ("500m", Decimal("0.5")), ("1Gi", Decimal(2**30)), ("2k", Decimal(2000)),
    ("1.5Mi", Decimal(1.5 * 2**20)), ("3e3", Decimal(3000)), ("100n", Decimal("1e-7")),
])
def test_quantity(text: str, want: Decimal) -> None:
    assert quantity(text) == want


@pytest.mark.parametrize("text", ["", "1Q", "abc", "1..2"])
def test_quantity_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError):
        quantity(text)


POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "proc-0", "serviceAccountName": "default"},
    "status": {"podIP": "10.250.1.5", "hostIP": "10.250.0.1"},
}
SECRETS: dict[tuple[str, str], dict[str, str]] = {("Secret", "creds"): {"pw": "hunter2"},
                                                  ("ConfigMap", "cfg"): {"LEVEL": "debug", "bad key": "x"}}


def _lookup(kind: str, name: str) -> dict[str, str] | None:
    return SECRETS.get((kind, name))


def test_container_env_resolves_every_source_in_order() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "URL", "value": "http://$(IP):$(PORT)/$(POD)"},
            {"name": "PORT", "value": "80"},
        ],
        "resources": {"limits": {"memory": "1Gi"}},
    }
    env = container_env(POD, container, _lookup, {"cpu": "8", "memory": "16Gi"})
    assert env == {"CFG_LEVEL": "debug", "POD": "p", "IP": "10.250.1.5", "APP": "web", "PW": "hunter2",
                   "MEM_MI": "1024", "CPUS": "8",
                   # PORT is defined after URL: like Kubernetes, its reference stays as written.
                   "URL": "http://10.250.1.5:$(PORT)/p", "PORT": "80"}


@pytest.mark.parametrize("ref", [{"name": "nope", "key": "pw"}, {"name": "creds", "key": "nokey"}])
def test_missing_secret_is_a_config_error(ref: dict[str, str]) -> None:
    container = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": ref}}]}
    with pytest.raises(ConfigError):
        container_env(POD, container, _lookup, {})


def test_command_line_expands_and_needs_a_command() -> None:
    c = {"name": "ray", "command": ["ray"], "args": ["start", "--password=$(PW)", "$$(literal)"]}
    assert command_line(c, {"PW": "x"}) == ["ray", "start", "--password=x", "$(literal)"]
    with pytest.raises(ConfigError, match="no images"):
        command_line({"name": "c"}, {})


def test_container_port_by_number_or_name() -> None:
    c = {"name": "c", "ports": [{"name": "dashboard", "containerPort": 8265}]}
    assert container_port(c, 80) == 80
    assert container_port(c, "81") == 81
    assert container_port(c, "dashboard") == 8265
    with pytest.raises(ValueError):
        container_port(c, "nope")


def _slice(ns: str, name: str, service: str, *endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": list(endpoints)}


def test_slice_records_keep_ready_pod_network_addresses_only() -> None:
    s = _slice("ns", "head-svc-x", "head-svc",
               {"addresses": ["10.250.1.1"], "conditions": {"ready": True}, "hostname": "h0"},
               {"addresses": ["10.250.1.2"], "conditions": {"ready": False}},
               {"addresses": ["10.250.1.3"]},  # no condition: ready
               {"addresses": ["192.0.2.2"], "conditions": {"ready": True}})  # not a pod address
    assert slice_records(s, POD_NET) == [Record("ns", "head-svc", "10.250.1.1", "h0"),
                                         Record("ns", "head-svc", "10.250.1.3")]


def test_dns_table_applies_events_and_reports_changes() -> None:
    table = DnsTable(POD_NET)
    a = _slice("ns", "a-1", "a", {"addresses": ["10.250.1.1"]})
    assert table.replace_all([a])
    assert not table.replace_all([a])
    b = _slice("ns", "b-1", "b", {"addresses": ["10.250.1.2"]})
    assert table.apply("ADDED", b)
    assert not table.apply("MODIFIED", b)
    assert [r.service for r in table.records()] == ["a", "b"]
    assert table.apply("DELETED", a)
    assert not table.apply("DELETED", a)
    assert [r.service for r in table.records()] == ["b"]


def test_hosts_file_names_services_in_every_form() -> None:
    records = [Record("ns", "head-svc", "10.250.1.1"), Record("other", "db", "10.250.2.9", "db-0")]
    hosts = render_hosts("ns", "10.250.1.7", "w", "sub", records).splitlines()
    assert "10.250.1.7\tw.sub.ns.svc.cluster.local w" in hosts
    assert "10.250.1.1\thead-svc.ns.svc.cluster.local head-svc.ns.svc head-svc.ns head-svc" in hosts
    # Another namespace's service has no short name here; its endpoint's hostname is addressable.
    assert "10.250.2.9\tdb-0.db.other.svc.cluster.local db.other.svc.cluster.local db.other.svc db.other" in hosts
    assert "nameserver 127.0.0.1" in resolv_conf("ns")
    # The API server, relayed at the pod's loopback; the short name only in namespace default.
    assert "127.0.0.1\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default" in hosts
    assert render_hosts("default", "10.250.1.7", "w", None, []).splitlines()[-1].endswith(" kubernetes")


def test_api_server_inside_pods_is_what_in_cluster_clients_expect() -> None:
    env = apiproxy.service_env()
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "443")
    assert env["KUBERNETES_PORT"] == env["KUBERNETES_PORT_443_TCP"] == "tcp://127.0.0.1:443"
    assert apiproxy.api_address("https://127.0.0.1:32764") == ("127.0.0.1", 32764)
    assert apiproxy.api_address("https://api.example") == ("api.example", 443)


@pytest.mark.parametrize(("issued", "expires", "want"), [
    (1000.0, 1000.0 + 3607, 1000.0 + 0.8 * 3607),  # what the admission asks for: renewed after ~48 min
    (0.0, 600.0, 480.0),
    (0.0, 365 * 86400.0, 86400.0),  # an extended one-year token still turns over daily
])
def test_token_refresh_at(issued: float, expires: float, want: float) -> None:
    assert token_refresh_at(issued, expires) == pytest.approx(want)


def test_downward_api_files() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"b": "2", "a": "1"}, "annotations": {}},
        "spec": {"containers": [{"name": "main", "resources": {"limits": {"memory": "1Gi"}}}]},
    }
    assert downward_value(pod, {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}, {}) == "ns"
    assert downward_value(pod, {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}, {}) == \
        'a="1"\nb="2"'
    assert downward_value(pod, {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}, {}) == ""
    mem = {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory", "divisor": "1Mi"}}
    assert downward_value(pod, mem, {}) == "1024"
    with pytest.raises(ConfigError):
        downward_value(pod, {"path": "x", "resourceFieldRef": {"containerName": "nope", "resource": "limits.cpu"}}, {})


def test_readiness_probe_thresholds() -> None:
    p = Probe("readiness", {"periodSeconds": 2, "failureThreshold": 2, "successThreshold": 2,
                            "initialDelaySeconds": 5}, started=100.0)
    assert p.verdict is False and not p.due(104.0) and p.due(105.0)
    assert not p.record(True, 105.0) and p.verdict is False  # one success of two
    assert not p.due(106.0) and p.due(107.0)
    assert p.record(True, 107.0) and p.verdict is True
    assert not p.record(False, 109.0) and p.verdict is True  # one failure of two
    assert p.record(False, 111.0) and p.verdict is False


def test_liveness_starts_passing_and_startup_undecided() -> None:
    live = Probe("liveness", {"failureThreshold": 1}, started=0.0)
    assert live.verdict is True
    assert live.record(False, 1.0) and live.verdict is False
    startup = Probe("startup", {}, started=0.0)
    assert startup.verdict is None
    assert startup.record(True, 1.0) and startup.verdict is True


def test_node_object_is_not_for_kwok_and_advertises_gpus() -> None:
    node = node_object("proc-0", {"cpu": "8", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"}, {"x": "y"},
                       [parse_taint("dedicated=ray:NoSchedule")], "10.250.1.0/24", "10.250.0.1")
    assert KWOK_ANNOTATION not in node["metadata"]["annotations"]
    assert node["metadata"]["labels"]["swarm.io/gpu"] == "true" and node["metadata"]["labels"]["x"] == "y"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["spec"]["taints"] == [{"key": "dedicated", "value": "ray", "effect": "NoSchedule"}]
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


@pytest.mark.parametrize("text", ["novalue", "k=v:Sometimes", ":NoSchedule"])
def test_parse_taint_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError):
        parse_taint(text)


def test_exit_codes_and_secrets() -> None:
    assert exit_code(0) == 0 and exit_code(3) == 3 and exit_code(-9) == 137 and exit_code(-15) == 143
    data = {"pw": base64.b64encode(b"hunter2").decode()}
    assert decode_secret(data, {"extra": "x"}) == {"pw": "hunter2", "extra": "x"}


@pytest.mark.parametrize(("program", "found", "exc", "want"), [
    ("ray", None, FileNotFoundError(2, "No such file or directory"),
     'exec: "ray": executable file not found in $PATH'),
    ("/opt/ray/bin/ray", None, FileNotFoundError(2, "No such file or directory"),
     'exec: "/opt/ray/bin/ray": no such file or directory'),
    # Found on PATH, yet exec failed: its interpreter is missing, or it is not executable.
    ("ray", "/venv/bin/ray", FileNotFoundError(2, "No such file or directory"),
     'exec: "/venv/bin/ray": no such file or directory'),
    ("ray", "/venv/bin/ray", PermissionError(13, "Permission denied"), 'exec: "/venv/bin/ray": permission denied'),
])
def test_exec_errors_read_as_runc_words_them(program: str, found: str | None, exc: OSError, want: str) -> None:
    assert exec_error(program, found, exc) == want


@pytest.mark.parametrize(("code", "init", "policy", "again"), [
    (0, False, "Always", True), (1, False, "Always", True), (0, False, "OnFailure", False),
    (1, False, "OnFailure", True), (1, False, "Never", False),
    (0, True, "Always", False), (1, True, "Always", True), (1, True, "OnFailure", True), (1, True, "Never", False),
])
def test_what_runs_again_after_an_exit(code: int, init: bool, policy: str, again: bool) -> None:
    assert runs_again(code, init, policy) is again


def test_crash_loop_back_off_doubles_up_to_five_minutes() -> None:
    assert [crash_loop_delay(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def test_pod_conditions_move_their_time_only_on_a_change_and_keep_others() -> None:
    conditions = Conditions()
    conditions.set("Ready", False)
    (first,) = conditions.merged([])
    conditions.set("Ready", False)
    theirs = {"type": "PodScheduled", "status": "True"}
    assert conditions.merged([theirs, {"type": "Ready", "status": "True"}]) == [theirs, first]
