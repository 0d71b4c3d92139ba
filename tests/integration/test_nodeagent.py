"""Process nodes: pods bound to a node agent's Node run as real processes with their own IPs.

Needs root (network namespaces) and iproute2, on top of the API server of the other
integration tests. The Ray test starts a real head and worker from the operator's own
pod builders; two Ray nodes stay well inside the tier's budget of about six.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import diagnose
from localcluster.nodeagent import NodeAgentProcess, network, pod_usage, read_logs
from localcluster.nodeagent.process import PodUsage
from localcluster.operator_process import OperatorProcess
from swarm_operator.resources.pods import DASHBOARD_PORT, GCS_PORT, build_head_pod, build_worker_pod
from swarm_operator.resources.service import build_head_service
from swarm_operator.spec.parse import parse_cluster
from swarm_operator.times import parse_time
from tests.integration.helpers import GROUP, PLURAL, VERSION, Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# Every process and network namespace the pods of this module ever had (processes as (pid,
# start time)): none may outlive the module. Other agents on this host are not this module's.
SEEN: set[tuple[int, str | None]] = set()
SEEN_NETNS: set[str] = set()


def _remember(usage: list[PodUsage]) -> None:
    for u in usage:
        SEEN.update((pid, network.proc_start_time(pid)) for pid in u.pids)
        SEEN_NETNS.add(u.netns)


def _alive(pid: int, start: str | None) -> bool:
    return start is not None and network.proc_start_time(pid) == start


@pytest.fixture(scope="module")
def process_node(kubeconfig: str) -> Iterator[NodeAgentProcess]:
    if os.geteuid() != 0:
        pytest.skip("process nodes need root (network namespaces)")
    if shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.skip("process nodes need iproute2's `ip`")
    agent = NodeAgentProcess(kubeconfig, f"proc-{uuid.uuid4().hex[:6]}", cpu="8", memory="16Gi", gpus=2)
    start = time.monotonic()
    agent.start()
    print(f"\n[nodeagent] node {agent.node} registered and serving in {time.monotonic() - start:.1f}s")
    yield agent
    assert agent.stop() == 0, agent.log_tail()
    assert not SEEN_NETNS & set(network.agent_netns()), "network namespaces left behind"
    assert not [p for p in SEEN if _alive(*p)], "pod processes outlived the agent"


def _pod(node: str, name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "local", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        # Through the scheduler, as the operator's pods go: a selector, not spec.nodeName.
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "restartPolicy": "Never",
                 "containers": [container], **spec},
    }


def _status(core: Any, namespace: str, name: str) -> Any:
    return core.read_namespaced_pod(name, namespace).status


def _is_ready(status: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _ready_status(core: Any, namespace: str, name: str) -> Any:
    status = _status(core, namespace, name)
    return status if _is_ready(status) else None


# What the operator's autoscaler reads: GCS resource state (in a process of its own: importing
# ray into pytest would leave its threads behind).
GCS_PROBE = """
import json, sys
from ray._raylet import GcsClient
from ray.autoscaler.v2.sdk import get_cluster_resource_state
state = get_cluster_resource_state(GcsClient(address=sys.argv[1]))
print(json.dumps({n.instance_id: {"type": n.ray_node_type_name, "ip": n.node_ip_address,
                                  "cpu": n.total_resources.get("CPU")} for n in state.node_states}))
"""


def _gcs_nodes(address: str) -> dict[str, Any]:
    """Ray nodes by instance id, as GCS reports them."""
    out = subprocess.run([sys.executable, "-c", GCS_PROBE, address], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return dict(json.loads(out))


def _gone(core: Any, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


def _usage(namespace: str, name: str) -> PodUsage | None:
    usage = [u for u in pod_usage() if u.namespace == namespace]  # the test's own namespace: its pods only
    _remember(usage)
    return next((u for u in usage if (u.namespace, u.name) == (namespace, name)), None)


def test_node_is_registered_ready_and_not_managed_by_kwok(core_v1: Any, process_node: NodeAgentProcess) -> None:
    node = core_v1.read_node(process_node.node)
    assert not any(k.startswith("kwok.x-k8s.io") for k in node.metadata.annotations or {})
    assert node.status.capacity["nvidia.com/gpu"] == "2"
    assert node.status.allocatable["cpu"] == "8"
    assert node.metadata.labels["swarm.io/gpu"] == "true"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert not node.spec.taints
    # The agent, not kwok, holds the node's lease.
    coord: Any = client.CoordinationV1Api(core_v1.api_client)
    assert coord.read_namespaced_lease(process_node.node, "kube-node-lease").spec.holder_identity == process_node.node


def test_plain_pod_runs_ready_with_its_own_reachable_ip(core_v1: Any, namespace: str,
                                                       process_node: NodeAgentProcess) -> None:
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}})
    web = _pod(process_node.node, "web", ["python", "-m", "http.server", "$(PORT)"], container={
        "env": [{"name": "PORT", "value": "8080"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GREETING", "value": "pod $(POD_IP) says $$(not expanded)"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    })
    start = time.monotonic()
    core_v1.create_namespaced_pod(namespace, web)
    running = wait_for("web Running", lambda: (s := _status(core_v1, namespace, "web")).phase == "Running" and s,
                       timeout=30, every=0.05)
    t_running = time.monotonic() - start
    status = wait_for("web Ready", lambda: _ready_status(core_v1, namespace, "web"), timeout=30, every=0.05)
    t_ready = time.monotonic() - start
    print(f"\n[nodeagent] plain pod: Running after {t_running:.2f}s, Ready after {t_ready:.2f}s")
    assert running.pod_ip == status.pod_ip
    ip = status.pod_ip
    assert ipaddress.IPv4Address(ip) in network.CLUSTER_CIDR
    assert status.host_ip == str(network.GATEWAY.ip)
    assert status.container_statuses[0].ready and status.container_statuses[0].state.running
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
        assert resp.status == 200
    usage = _usage(namespace, "web")
    assert usage is not None and usage.address == ip and usage.pids
    environ = open(f"/proc/{usage.pids[0]}/environ", "rb").read().split(b"\0")  # noqa: SIM115
    assert b"TOKEN=s3cret" in environ
    assert f"GREETING=pod {ip} says $(not expanded)".encode() in environ
    assert f"POD_IP={ip}".encode() in environ


def test_failing_command_fails_the_pod_with_its_exit_code(core_v1: Any, namespace: str,
                                                          process_node: NodeAgentProcess) -> None:
    core_v1.create_namespaced_pod(namespace, _pod(process_node.node, "crash",
                                                  ["sh", "-c", "echo about to fail; echo oops >&2; exit 1"]))
    status = wait_for("crash Failed", lambda: (s := _status(core_v1, namespace, "crash")).phase == "Failed" and s,
                      timeout=30)
    term = status.container_statuses[0].state.terminated
    assert term.exit_code == 1 and term.reason == "Error"
    assert not _is_ready(status)
    assert read_logs("crash", namespace) == "about to fail\noops\n"
    wait_for("crash's network namespace removed", lambda: _usage(namespace, "crash") is None, timeout=10)


def test_command_missing_from_the_containers_path_is_a_start_error(core_v1: Any, namespace: str,
                                                                    process_node: NodeAgentProcess) -> None:
    """As under a kubelet: the container's own PATH (here a directory without `true`) decides, and a
    command that cannot be exec'd is StartError with runc's words, not a bare exit code."""
    pod = _pod(process_node.node, "no-exec", ["true"], container={"env": [{"name": "PATH", "value": "/nonexistent"}]})
    core_v1.create_namespaced_pod(namespace, pod)
    status = wait_for("no-exec Failed", lambda: (s := _status(core_v1, namespace, "no-exec")).phase == "Failed" and s,
                      timeout=30)
    term = status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("StartError", 128)
    assert 'exec: "true": executable file not found in $PATH' in term.message
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=no-exec").items
    assert any(e.reason == "Failed" and "executable file not found" in e.message for e in events)


def test_successful_command_succeeds(core_v1: Any, namespace: str, process_node: NodeAgentProcess) -> None:
    core_v1.create_namespaced_pod(namespace, _pod(process_node.node, "ok", ["true"]))
    status = wait_for("ok Succeeded", lambda: (s := _status(core_v1, namespace, "ok")).phase == "Succeeded" and s,
                      timeout=30)
    assert status.container_statuses[0].state.terminated.exit_code == 0


def test_init_container_memory_volume_and_restart_on_failure(core_v1: Any, namespace: str,
                                                             process_node: NodeAgentProcess) -> None:
    # The init container leaves a file in a shared memory-backed emptyDir; the main container
    # fails on its first run (leaving a mark there) and succeeds on the second, after back-off.
    main = "cat /data/greeting; test -e /data/ran && exit 0; touch /data/ran; exit 3"
    pod = _pod(process_node.node, "retry", ["sh", "-c", main], restartPolicy="OnFailure",
               container={"volumeMounts": [{"name": "data", "mountPath": "/dev/shm"}]},
               initContainers=[{"name": "init", "image": "local", "command": ["sh", "-c", "echo hi > /data/greeting"],
                                "volumeMounts": [{"name": "data", "mountPath": "/dev/shm"}]}],
               volumes=[{"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}])
    # /dev/shm is the one mount point every host has; the commands see it as /data through a link.
    for c in [pod["spec"]["containers"][0], pod["spec"]["initContainers"][0]]:
        c["command"][2] = "ln -sfn /dev/shm /tmp/data; " + c["command"][2].replace("/data", "/tmp/data")
    core_v1.create_namespaced_pod(namespace, pod)
    status = wait_for("retry Succeeded", lambda: (s := _status(core_v1, namespace, "retry")).phase == "Succeeded"
                      and s, timeout=60)
    assert status.init_container_statuses[0].state.terminated.exit_code == 0
    main_status = status.container_statuses[0]
    assert main_status.restart_count == 1
    assert main_status.last_state.terminated.exit_code == 3
    assert read_logs("retry", namespace, "main") == "hi\nhi\n"


def test_liveness_failure_kills_the_container_and_fails_the_pod(core_v1: Any, namespace: str,
                                                                process_node: NodeAgentProcess) -> None:
    probe = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    core_v1.create_namespaced_pod(namespace, _pod(process_node.node, "unhealthy", ["sleep", "600"],
                                                  container={"livenessProbe": probe},
                                                  terminationGracePeriodSeconds=1))
    status = wait_for("unhealthy Failed",
                      lambda: (s := _status(core_v1, namespace, "unhealthy")).phase == "Failed" and s, timeout=30)
    assert status.container_statuses[0].state.terminated.exit_code == 128 + 15  # SIGTERM


def test_deletion_stops_every_process_then_removes_namespace_and_pod(core_v1: Any, namespace: str,
                                                                      process_node: NodeAgentProcess) -> None:
    # A main process that ignores SIGTERM, and a child that left its process group: only the
    # grace period's end (SIGKILL) and the namespace sweep stop them.
    script = "trap '' TERM; setsid sleep 600 & sleep 600 & wait"
    core_v1.create_namespaced_pod(namespace, _pod(process_node.node, "stubborn", ["sh", "-c", script],
                                                  terminationGracePeriodSeconds=2))
    wait_for("stubborn Running", lambda: _status(core_v1, namespace, "stubborn").phase == "Running", timeout=30)

    def all_three() -> PodUsage | None:
        u = _usage(namespace, "stubborn")
        return u if u is not None and len(u.pids) >= 3 else None

    usage = wait_for("three processes in the pod", all_three, timeout=10)
    start = time.monotonic()
    core_v1.delete_namespaced_pod("stubborn", namespace)
    wait_for("stubborn deleted", lambda: _gone(core_v1, namespace, "stubborn"), timeout=30, every=0.05)
    took = time.monotonic() - start
    print(f"\n[nodeagent] deletion with a 2s grace period took {took:.2f}s")
    assert took >= 1.9, "the grace period was not honoured"
    assert not [p for p in SEEN if p[0] in usage.pids and _alive(*p)], "processes survived"
    assert usage.netns not in network.agent_netns()


def test_cluster_dns_resolves_headless_services_and_follows_changes(core_v1: Any, namespace: str,
                                                                    process_node: NodeAgentProcess) -> None:
    names = ["web", f"web.{namespace}", f"web.{namespace}.svc", f"web.{namespace}.svc.cluster.local"]
    # The client starts before the service has any endpoint: it sees the name appear.
    resolver = ("import socket, sys, time\n"
                "deadline = time.time() + 60\n"
                "while True:\n"
                "    try:\n"
                "        print(' '.join(socket.gethostbyname(n) for n in sys.argv[1:]), flush=True); break\n"
                "    except OSError:\n"
                "        if time.time() > deadline: raise\n"
                "        time.sleep(0.2)\n")
    core_v1.create_namespaced_pod(namespace, _pod(process_node.node, "client", ["python", "-c", resolver, *names]))
    wait_for("client Running", lambda: _status(core_v1, namespace, "client").phase == "Running", timeout=30)
    core_v1.create_namespaced_service(namespace, {"metadata": {"name": "web"}, "spec": {
        "clusterIP": "None", "selector": {"app": "server"}, "ports": [{"name": "http", "port": 8080}]}})
    server = _pod(process_node.node, "server", ["python", "-m", "http.server", "8080"], container={
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}})
    core_v1.create_namespaced_pod(namespace, server)
    server_ip = wait_for("server Ready", lambda: _ready_status(core_v1, namespace, "server"), timeout=30).pod_ip
    wait_for("client Succeeded", lambda: _status(core_v1, namespace, "client").phase == "Succeeded", timeout=60)
    assert read_logs("client", namespace).split() == [server_ip] * len(names)


# In-cluster config, as every client library does it (client-go, kopf, the kubernetes client): the
# service account's files and KUBERNETES_SERVICE_HOST/PORT, TLS verified against that ca.crt. Stdlib only.
IN_CLUSTER_CHECK = """
import errno, json, os, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read().strip()
ns = open(sa + "/namespace").read().strip()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
server = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
def call(base, path, auth=True, context=ctx, body=None):
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"} if auth else {}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, context=context, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, None
out = {"server": server, "namespace": ns}
status, pods = call(server, "/api/v1/namespaces/%s/pods" % ns)
out["pods"] = [status, sorted(p["metadata"]["name"] for p in pods["items"]) if pods else None]
out["by_name"] = call("https://kubernetes.default.svc", "/api/v1/namespaces/%s/pods" % ns)[0]
out["anonymous"] = call(server, "/api/v1/namespaces/%s/pods" % ns, auth=False)[0]
out["secrets"] = call(server, "/api/v1/namespaces/%s/secrets" % ns)[0]
status, review = call(server, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                      body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
info = review["status"]["userInfo"] if review else {}
out["user"] = [status, info.get("username"), (info.get("extra") or {}).get("authentication.kubernetes.io/pod-name")]
try:
    call(server, "/version", context=ssl.create_default_context())
    out["system_ca"] = "trusted"
except urllib.error.URLError as exc:
    out["system_ca"] = type(exc.reason).__name__
try:
    open(sa + "/token", "w")
    out["token_file"] = "writable"
except OSError as exc:
    out["token_file"] = errno.errorcode[exc.errno]
out["host_run_visible"] = os.path.exists("/run/netns")
print(json.dumps(out))
"""


def test_service_account_in_cluster_config_reaches_the_api_server(core_v1: Any, namespace: str,
                                                                  process_node: NodeAgentProcess) -> None:
    rbac: Any = client.RbacAuthorizationV1Api(core_v1.api_client)
    core_v1.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                    "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    core_v1.create_namespaced_pod(namespace, _pod(process_node.node, "incluster", ["python", "-c", IN_CLUSTER_CHECK],
                                                  serviceAccountName="reader"))
    status = wait_for("incluster finished", lambda: (s := _status(core_v1, namespace, "incluster")).phase
                      in ("Succeeded", "Failed") and s, timeout=60)
    logs = read_logs("incluster", namespace)
    assert status.phase == "Succeeded", logs
    seen = json.loads(logs.strip().splitlines()[-1])
    assert seen["server"] == "https://127.0.0.1:443" and seen["namespace"] == namespace
    # The token, the CA and the relayed address work together: TLS verified, the Role's grant honoured.
    assert seen["pods"] == [200, ["incluster"]]
    assert seen["by_name"] == 200  # https://kubernetes.default.svc, as kopf's own service-account login uses
    assert seen["anonymous"] in (401, 403) and seen["secrets"] == 403
    # The token is the pod's own: issued for its service account and bound to the pod.
    assert seen["user"] == [201, f"system:serviceaccount:{namespace}:reader", ["incluster"]]
    assert seen["system_ca"] == "SSLCertVerificationError"  # the mounted ca.crt is what makes TLS verify
    assert seen["token_file"] == "EROFS"  # the volume is mounted read-only, as the admission asked
    assert seen["host_run_visible"] is False  # the pod's own /run, where the mount point was made


def test_a_head_that_cannot_start_shows_as_crash_loop_with_why(operator: OperatorProcess, swc: Cluster,
                                                                process_node: NodeAgentProcess) -> None:
    """What a kubelet shows for an image without Ray, on a process node: the Ray container's PATH (set in the
    template) holds no `ray`. The operator replaces the failing head and says why in HeadReady and an Event."""
    selector = {"nodeSelector": {"kubernetes.io/hostname": process_node.node}}
    no_ray = {**selector, "containers": [{"name": "ray", "env": [{"name": "PATH", "value": "/nonexistent/bin"}]}]}
    swc.create({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": "noray"},
        "spec": {"rayVersion": "2.60.0",
                 "head": {"resources": {"cpu": 1, "memory": "1Gi"}, "template": {"spec": no_ray}},
                 "workerGroups": [{"name": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 1,
                                   "resources": {"cpu": 1, "memory": "1Gi"}, "template": {"spec": selector}}]},
    })
    start = time.monotonic()

    def crash_loop() -> dict[str, Any] | None:
        status = swc.status("noray")
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "HeadReady"), {})
        return status if cond.get("reason") == "CrashLoop" else None

    status = wait_for("HeadReady=False CrashLoop", crash_loop, timeout=30, every=0.2)
    print(f"\n[nodeagent] CrashLoop after {time.monotonic() - start:.1f}s")
    cond = next(c for c in status["conditions"] if c["type"] == "HeadReady")
    assert cond["status"] == "False" and status["phase"] != "Running"
    assert status["head"]["consecutiveFailures"] >= 2
    assert "(StartError, exit code 128)" in cond["message"], cond
    assert 'exec: "ray": executable file not found in $PATH' in cond["message"], cond
    assert "spec.image" in cond["message"]
    replacing = [e.message for e in swc.events("noray") if e.reason == "Replacing"]
    assert any("StartError, exit code 128" in m and "executable file not found" in m for m in replacing), replacing
    # What `make demo` prints when it gives up: the condition, the events, the failing pod's own last words.
    events = swc.core.api_client.sanitize_for_serialization(swc.core.list_namespaced_event(swc.ns).items)
    report = diagnose.report(swc.status("noray"), events, swc.ns, "noray", [])
    assert "HeadReady=False CrashLoop: head failed" in report and "Warning Replacing SwarmCluster/noray" in report
    assert report.splitlines()[-1].endswith('exec: "ray": executable file not found in $PATH'), report
    # From the second failure in a row the next head waits, as under the kubelet's CrashLoopBackOff: no head pod
    # until status.head.backoffUntil, then one (without the wait, a head is made again about once a second).
    status = wait_for("status.head.backoffUntil", lambda: (s := swc.status("noray"))["head"].get("backoffUntil") and s,
                      timeout=60, every=0.2)
    until = parse_time(status["head"]["backoffUntil"])
    assert "crash-loop backoff" in next(c for c in status["conditions"] if c["type"] == "HeadReady")["message"]

    def head_pods() -> list[Any]:
        return [p for p in swc.core.list_namespaced_pod(swc.ns).items if p.metadata.name == "noray-head"
                and p.metadata.deletion_timestamp is None and p.status.phase != "Failed"]

    while time.time() < until - 1:
        assert not head_pods(), f"a head was made during the backoff (until {status['head']['backoffUntil']})"
        time.sleep(0.5)
    made = wait_for("the next head after the backoff", head_pods, timeout=30, every=0.2)[0]
    assert made.metadata.creation_timestamp.timestamp() >= until - 1


def test_ray_head_and_worker_from_the_operator_builders(core_v1: Any, custom_objects: Any, namespace: str,
                                                        process_node: NodeAgentProcess) -> None:
    selector = {"spec": {"nodeSelector": {"kubernetes.io/hostname": process_node.node}}}
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmCluster", "metadata": {"name": "rc"},
        "spec": {"rayVersion": "2.60.0",
                 "head": {"resources": {"cpu": 1, "memory": "1Gi"}, "template": selector},
                 "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 1,
                                   "resources": {"cpu": 1, "memory": "1Gi"}, "template": selector}]},
    }
    # A real SwarmCluster owns the pods (no operator runs here): deleting it cascades through the
    # garbage collector, and the agent must then stop everything.
    obj = custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    cluster = parse_cluster(obj)
    start = time.monotonic()
    core_v1.create_namespaced_service(namespace, build_head_service(cluster))
    core_v1.create_namespaced_pod(namespace, build_head_pod(cluster))
    worker = build_worker_pod(cluster, cluster.worker_groups[0], "x7k2q")
    core_v1.create_namespaced_pod(namespace, worker)
    head_ip = wait_for("head Ready", lambda: _ready_status(core_v1, namespace, "rc-head"), timeout=90,
                       every=0.1).pod_ip
    t_head = time.monotonic() - start
    wait_for("worker Ready", lambda: _is_ready(_status(core_v1, namespace, worker["metadata"]["name"])),
             timeout=90, every=0.1)
    t_worker = time.monotonic() - start

    nodes = wait_for("two Ray nodes in GCS", lambda: (n := _gcs_nodes(f"{head_ip}:{GCS_PORT}")) and len(n) == 2 and n,
                     timeout=60, every=1)
    worker_ip = _status(core_v1, namespace, worker["metadata"]["name"]).pod_ip
    assert nodes == {"rc-head": {"type": "head", "ip": head_ip, "cpu": 1.0},
                     worker["metadata"]["name"]: {"type": "cpu", "ip": worker_ip, "cpu": 1.0}}

    # A driver through the Jobs API: it runs on the head and sees both nodes.
    entry = ("python -c \"import ray, json; ray.init(); "
             "print(json.dumps(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))\"")
    base = f"http://{head_ip}:{DASHBOARD_PORT}/api/jobs/"
    req = urllib.request.Request(base, data=json.dumps({"entrypoint": entry}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        job = json.load(resp)["submission_id"]

    def job_status() -> str | None:
        with urllib.request.urlopen(base + job, timeout=10) as resp:
            st = str(json.load(resp)["status"])
        return st if st in ("SUCCEEDED", "FAILED", "STOPPED") else None

    assert wait_for("the job to finish", job_status, timeout=120, every=0.5) == "SUCCEEDED"
    with urllib.request.urlopen(base + job + "/logs", timeout=10) as resp:
        logs = json.load(resp)["logs"]
    assert json.dumps(sorted([head_ip, worker_ip])) in logs

    head_use, worker_use = _usage(namespace, "rc-head"), _usage(namespace, worker["metadata"]["name"])
    assert head_use is not None and worker_use is not None
    print(f"\n[nodeagent] ray head Ready after {t_head:.1f}s, worker after {t_worker:.1f}s; "
          f"PSS head {head_use.pss_kib / 1024:.0f} MiB ({len(head_use.pids)} processes), "
          f"worker {worker_use.pss_kib / 1024:.0f} MiB ({len(worker_use.pids)} processes)")
    assert "Ray runtime started" in read_logs("rc-head", namespace)

    # Deleting the SwarmCluster: the garbage collector deletes the pods, the agent stops them.
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rc",
                                                   propagation_policy="Background")
    for name in ("rc-head", worker["metadata"]["name"]):
        wait_for(f"{name} deleted", lambda: _gone(core_v1, namespace, name), timeout=90)  # noqa: B023 (called at once)
    assert not network.netns_pids(head_use.netns) and not network.netns_pids(worker_use.netns)
    assert not {head_use.netns, worker_use.netns} & set(network.agent_netns())


def test_stopping_an_agent_stops_its_pods_and_leaves_nothing(kubeconfig: str, core_v1: Any, namespace: str,
                                                             process_node: NodeAgentProcess) -> None:
    other = NodeAgentProcess(kubeconfig, f"proc-{uuid.uuid4().hex[:6]}", cpu="2", memory="2Gi").start()
    try:
        core_v1.create_namespaced_pod(namespace, _pod(other.node, "orphan", ["sleep", "600"]))
        wait_for("orphan Running", lambda: _status(core_v1, namespace, "orphan").phase == "Running", timeout=30)
        usage = _usage(namespace, "orphan")
        assert usage is not None and usage.pids
    finally:
        assert other.stop() == 0, other.log_tail()
    status = _status(core_v1, namespace, "orphan")
    assert status.phase == "Failed" and status.reason == "Terminated"
    assert usage.netns not in network.agent_netns()
    assert not network.netns_pids(usage.netns)
    assert not [p for p in SEEN if p[0] in usage.pids and _alive(*p)]
    assert network.bridge_exists(), "the bridge went while another agent still uses it"
    wait_for(f"node {other.node} deleted", lambda: other.node not in
             {n.metadata.name for n in core_v1.list_node().items}, timeout=10)
