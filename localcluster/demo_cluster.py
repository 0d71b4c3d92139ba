"""The demo's SwarmCluster on the local Kubernetes: its namespace and CRDs served, its pods, until its Ray
cluster is up (or why it is not), and its deletion down to the last pod process."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from localcluster import diagnose, rayjobs, versions
from localcluster.cluster import LocalCluster
from localcluster.demo_output import note, print_table, say
from localcluster.errors import ClusterError
from localcluster.nodeagent import network, pod_usage

NAMESPACE = "swarm-demo"
GROUP, VERSION, PLURAL = "swarm.io", "v1alpha1", "swarmclusters"
READY_TIMEOUT = 180.0


def kubectl(lc: LocalCluster, *args: str) -> str:
    cmd = [str(versions.tool_path("kubectl")), f"--kubeconfig={lc.kubeconfig}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ClusterError(f"`kubectl {' '.join(args)}` failed: {out.stderr.strip()}")
    return out.stdout


def wait_established(lc: LocalCluster, crd_name: str, timeout: float = 60.0) -> None:
    """Until the CRD is served. (`kubectl wait --for=condition=Established` fails at once on a CRD whose status
    has no conditions yet, right after it was applied.)"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # No conditions at all yet makes kubectl's jsonpath fail: keep asking.
            if "Established=True" in kubectl(lc, "get", f"crd/{crd_name}", "-o",
                                             "jsonpath={range .status.conditions[*]}{.type}={.status} {end}"):
                return
        except ClusterError:
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"CRD {crd_name} not Established after {timeout:.0f}s")
        time.sleep(0.2)


def ensure_namespace(core: Any) -> None:
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    # Pods name the service account "default", which the controller manager adds a moment later.
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", NAMESPACE)
            return
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def expected_pods(manifest: dict[str, Any]) -> int:
    """The head plus each group's starting size (replicas, else minReplicas: the operator's rule)."""
    groups = manifest["spec"].get("workerGroups", [])
    return 1 + sum(int(g.get("replicas", g.get("minReplicas", 0))) for g in groups)


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def cluster_pods(core: Any, name: str) -> list[Any]:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"swarm.io/cluster={name}").items
    return sorted(pods, key=lambda p: (p.metadata.labels.get("swarm.io/node-type") != "head", p.metadata.name))


def phase(custom: Any, name: str) -> str:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    return str((obj.get("status") or {}).get("phase") or "…")


def wait_for_ray_cluster(core: Any, custom: Any, name: str, want: int) -> tuple[str, list[rayjobs.RayNode]]:
    """Until the SwarmCluster is Running and the GCS sees one live Ray node per pod, named after it.

    Prints a line whenever what it sees changes. Returns the head's IP and the live Ray nodes.
    """
    start = time.monotonic()
    last = ""
    while True:
        elapsed = time.monotonic() - start
        pods = cluster_pods(core, name)
        ready = [p for p in pods if is_ready(p)]
        head = next((p for p in pods if p.metadata.labels.get("swarm.io/node-type") == "head"), None)
        nodes: list[rayjobs.RayNode] = []
        # Asked only once every pod is ready (each question costs a Python start-up with ray).
        if head is not None and head.status.pod_ip and len(ready) == want:
            try:
                nodes = [n for n in rayjobs.ray_nodes(head.status.pod_ip) if n.alive]
            except subprocess.SubprocessError:
                nodes = []  # the GCS is not answering yet
        cluster_phase = phase(custom, name)
        line = (f"SwarmCluster {cluster_phase}; pods ready {len(ready)}/{want} ("
                + ", ".join(f"{p.metadata.name} {p.status.phase}{' ready' if is_ready(p) else ''}" for p in pods)
                + ")" + (f"; Ray nodes in the GCS {len(nodes)}/{want}" if len(ready) == want else ""))
        if line != last:
            note(f"{elapsed:5.1f}s  {line}")
            last = line
        names = {p.metadata.name for p in pods}
        if (cluster_phase == "Running" and len(ready) == want == len(pods) and head is not None
                and {n.instance_id for n in nodes} == names):
            return str(head.status.pod_ip), nodes
        if elapsed > READY_TIMEOUT:
            print_why_not_up(core, custom, name, [p for p in pods if is_ready(p)])
            raise ClusterError(f"the Ray cluster was not up after {READY_TIMEOUT:.0f}s; last seen: {line}")
        time.sleep(1.0)


def print_why_not_up(core: Any, custom: Any, name: str, ready: list[Any]) -> None:
    """The cluster's conditions, last events and the failing pod's last log lines (localcluster/diagnose.py)."""
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    events = core.api_client.sanitize_for_serialization(core.list_namespaced_event(NAMESPACE).items)
    say("why the Ray cluster is not up")
    print(diagnose.report(obj.get("status") or {}, events, NAMESPACE, name, [p.metadata.uid for p in ready]),
          flush=True)


def print_pods(pods: list[Any]) -> None:
    rows = [["POD", "ROLE", "NODE", "IP", "PHASE", "READY"]]
    for p in pods:
        labels = p.metadata.labels
        role = "head" if labels.get("swarm.io/node-type") == "head" else f"worker ({labels.get('swarm.io/group')})"
        rows.append([p.metadata.name, role, p.spec.node_name or "-", p.status.pod_ip or "-", p.status.phase,
                     "yes" if is_ready(p) else "no"])
    print_table(rows)


def pod_processes() -> tuple[int, int]:
    """Processes and network namespaces of the demo's pods on this host."""
    usage = [u for u in pod_usage() if u.namespace == NAMESPACE]
    return sum(len(u.pids) for u in usage), len({u.netns for u in usage} & set(network.agent_netns()))


def delete_cluster(core: Any, custom: Any, name: str) -> None:
    procs, netns = pod_processes()
    start = time.monotonic()
    custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    while cluster_pods(core, name) or pod_processes() != (0, 0):
        if time.monotonic() - start > 60:
            raise ClusterError(f"pods of {name} still there 60s after deleting it")
        time.sleep(0.5)
    after = pod_processes()
    note(f"pods gone after {time.monotonic() - start:.1f}s: processes {procs} → {after[0]}, "
         f"network namespaces {netns} → {after[1]}")
