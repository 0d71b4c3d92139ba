"""`make demo`: the main job end to end, with real Ray.

A local Kubernetes, two process nodes (one CPU node, one "GPU" node with fake
``nvidia.com/gpu``), the CRDs, the operator, and the GPU + CPU sample sized for this machine
(manifests/samples/local-gpu-cpu.yaml); the sample becomes a Ray cluster, a small job goes
in as a SwarmJob on that cluster (the operator submits it through Ray's Jobs API and follows it), and a
summary shows the pods, the Ray nodes with their resources (from the GCS), the SwarmJob's status and the
job's result and logs. At the end everything stops and the cluster
goes down (if the demo brought it up).

Run as ``python -m localcluster.demo``, as root (process nodes create network namespaces).
DEMO_KEEP=1 leaves it all running and prints how to look around and clean up.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import build, diagnose, rayjobs, versions
from localcluster.cluster import LocalCluster
from localcluster.errors import ClusterError
from localcluster.nodeagent import NodeAgentProcess, network, paths, pod_usage
from localcluster.operator_process import OperatorProcess
from swarm_operator.resources.pods import DASHBOARD_PORT, GCS_PORT

ROOT = Path(__file__).resolve().parent.parent
CRDS = {ROOT / "crds" / "swarmcluster.yaml": "swarmclusters.swarm.io",
        ROOT / "crds" / "swarmjob.yaml": "swarmjobs.swarm.io"}
SAMPLE = ROOT / "manifests" / "samples" / "local-gpu-cpu.yaml"
NAMESPACE = "swarm-demo"
GROUP, VERSION, PLURAL, JOB_PLURAL = "swarm.io", "v1alpha1", "swarmclusters", "swarmjobs"
JOB_NAME = "pi"
JOB_TIMEOUT = 180.0
# What keeps pods that cannot run Ray (no command: kwok-style test pods) off process nodes;
# the sample tolerates it. GPU nodes are usually tainted too; the sample's gpu group tolerates that.
PROCESS_TAINT = "swarm.io/process-node=true:NoSchedule"
GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
READY_TIMEOUT = 180.0

# The job: a Monte Carlo estimate of pi with one task pinned to each Ray node (so every pod
# does some of the work, and no task waits: waiting tasks are demand the autoscaler would
# answer with more nodes), then a task that needs a GPU, which only the gpu worker has.
# Its last line is the result as JSON.
JOB = """\
import json, os, random, socket
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init()

@ray.remote(num_cpus=1)
def inside_circle(n):
    rng = random.Random()
    return socket.gethostname(), sum(rng.random() ** 2 + rng.random() ** 2 <= 1 for _ in range(n))

@ray.remote(num_gpus=1)
def gpu_task():
    return socket.gethostname(), ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

n = 400_000
nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
counts = dict(ray.get([
    inside_circle.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(n)
    for node in nodes]))
pi = 4 * sum(counts.values()) / (n * len(nodes))
gpu_pod, gpu_ids, cuda = ray.get(gpu_task.remote())
print(f"pi is about {pi:.4f}: {n:,} samples on each of {sorted(counts)}")
print(f"the GPU task ran on {gpu_pod}: GPU ids {gpu_ids}, CUDA_VISIBLE_DEVICES={cuda}")
print(json.dumps({"pi": round(pi, 4), "pods_sampling": sorted(counts), "gpu_task_pod": gpu_pod}))
"""


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def note(msg: str) -> None:
    print(f"    {msg}", flush=True)


@contextmanager
def step(msg: str) -> Iterator[None]:
    say(msg)
    start = time.monotonic()
    yield
    note(f"({time.monotonic() - start:.1f}s)")


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


def preflight() -> str | None:
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return "process nodes need root (network namespaces, veth pairs): run it as root"
    if shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        return "process nodes need iproute2's `ip` (apt-get install iproute2)"
    return None


def sample_manifest() -> dict[str, Any]:
    return dict(yaml.safe_load(SAMPLE.read_text()))


def expected_pods(manifest: dict[str, Any]) -> int:
    """The head plus each group's starting size (replicas, else minReplicas: the operator's rule)."""
    groups = manifest["spec"].get("workerGroups", [])
    return 1 + sum(int(g.get("replicas", g.get("minReplicas", 0))) for g in groups)


def _ready(pod: Any) -> bool:
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
        ready = [p for p in pods if _ready(p)]
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
                + ", ".join(f"{p.metadata.name} {p.status.phase}{' ready' if _ready(p) else ''}" for p in pods)
                + ")" + (f"; Ray nodes in the GCS {len(nodes)}/{want}" if len(ready) == want else ""))
        if line != last:
            note(f"{elapsed:5.1f}s  {line}")
            last = line
        names = {p.metadata.name for p in pods}
        if (cluster_phase == "Running" and len(ready) == want == len(pods) and head is not None
                and {n.instance_id for n in nodes} == names):
            return str(head.status.pod_ip), nodes
        if elapsed > READY_TIMEOUT:
            print_why_not_up(core, custom, name, [p for p in pods if _ready(p)])
            raise ClusterError(f"the Ray cluster was not up after {READY_TIMEOUT:.0f}s; last seen: {line}")
        time.sleep(1.0)


def print_why_not_up(core: Any, custom: Any, name: str, ready: list[Any]) -> None:
    """The cluster's conditions, last events and the failing pod's last log lines (localcluster/diagnose.py)."""
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    events = core.api_client.sanitize_for_serialization(core.list_namespaced_event(NAMESPACE).items)
    say("why the Ray cluster is not up")
    print(diagnose.report(obj.get("status") or {}, events, NAMESPACE, name, [p.metadata.uid for p in ready]),
          flush=True)


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def _num(value: float) -> str:
    return f"{value:g}"


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        note("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def print_pods(pods: list[Any]) -> None:
    rows = [["POD", "ROLE", "NODE", "IP", "PHASE", "READY"]]
    for p in pods:
        labels = p.metadata.labels
        role = "head" if labels.get("swarm.io/node-type") == "head" else f"worker ({labels.get('swarm.io/group')})"
        rows.append([p.metadata.name, role, p.spec.node_name or "-", p.status.pod_ip or "-", p.status.phase,
                     "yes" if _ready(p) else "no"])
    print_table(rows)


def print_ray_nodes(nodes: list[rayjobs.RayNode]) -> None:
    rows = [["RAY NODE (instance_id)", "TYPE", "IP", "STATE", "CPU", "GPU", "MEMORY", "OBJECT STORE", "OTHER"]]
    standard = {"CPU", "GPU", "memory", "object_store_memory"}
    for n in sorted(nodes, key=lambda n: (n.node_type != "head", n.instance_id)):
        t = n.total
        other = ", ".join(f"{k}={_num(v)}" for k, v in sorted(t.items()) if k not in standard
                          and not k.startswith("node:"))
        rows.append([n.instance_id, n.node_type, n.ip, n.status, _num(t.get("CPU", 0)), _num(t.get("GPU", 0)),
                     _gib(t.get("memory", 0)), _gib(t.get("object_store_memory", 0)), other or "-"])
    print_table(rows)


def swarmjob(cluster: str, entrypoint: str) -> dict[str, Any]:
    """JOB as a SwarmJob on the demo's cluster (clusterSelector: the job never touches the cluster)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmJob", "metadata": {"name": JOB_NAME},
            "spec": {"entrypoint": entrypoint, "clusterSelector": {"name": cluster},
                     "metadata": {"submitted_by": "make demo"}, "activeDeadlineSeconds": int(JOB_TIMEOUT)}}


def run_job(custom: Any, cluster: str, head_ip: str) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """Apply JOB as a SwarmJob and follow its status until it ends. Returns (its status, Ray's job info,
    the entrypoint, the driver's logs)."""
    entrypoint = "python -c " + shlex.quote(JOB)
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, JOB_PLURAL, swarmjob(cluster, entrypoint))
    start = time.monotonic()
    last = ""
    while True:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, JOB_PLURAL, JOB_NAME).get(
            "status") or {}
        line = (f"SwarmJob {JOB_NAME}: {status.get('jobDeploymentStatus') or '…'}, Ray job "
                f"{status.get('jobStatus') or '-'}" + (f" ({status['jobId']})" if status.get("jobId") else ""))
        if line != last:
            note(f"{time.monotonic() - start:5.1f}s  {line}")
            last = line
        if status.get("jobDeploymentStatus") in ("Complete", "Failed"):
            break
        if time.monotonic() - start > JOB_TIMEOUT + 30:
            raise ClusterError(f"the SwarmJob did not end after {JOB_TIMEOUT + 30:.0f}s; last seen: {line}")
        time.sleep(0.5)
    job_id = str(status["jobId"])
    note(f"the operator posted it to http://{head_ip}:{DASHBOARD_PORT}/api/jobs/ as {job_id}")
    return status, rayjobs.job_info(head_ip, job_id), entrypoint, rayjobs.job_logs(head_ip, job_id)


def print_job(info: dict[str, Any], entrypoint: str, logs: str) -> None:
    took = (info["end_time"] - info["start_time"]) / 1000 if info.get("end_time") else 0.0
    note(f"job {info['submission_id']}: {info['status']} in {took:.1f}s — {info.get('message') or ''}".rstrip())
    note("the job's script:")
    for line in JOB.splitlines():
        note(f"  | {line}")
    # Ray echoes the entrypoint into the logs; the script was just shown, so name it only.
    logs = logs.replace(entrypoint, "python -c <the script above>")
    note("its logs (GET …/api/jobs/<id>/logs):")
    for line in logs.rstrip().splitlines():
        note(f"  | {line}")
    result = next((ln for ln in reversed(logs.splitlines()) if ln.startswith("{")), None)
    if result is not None:
        note(f"result: {json.dumps(json.loads(result), indent=None)}")


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


def start_agent(stack: ExitStack, agent: NodeAgentProcess, keep: bool) -> NodeAgentProcess:
    info_file = paths.agent_file(agent.node)
    if info_file.exists() and network.identity_alive(json.loads(info_file.read_text())):
        # A second agent for the same node would clean up the first one's pods as leftovers.
        raise ClusterError(f"node {agent.node} already has a running agent ({info_file}): "
                           "an earlier DEMO_KEEP=1 run? Stop it first (see its instructions)")
    agent.start()
    if not keep:
        def stop() -> None:
            note(f"node agent {agent.node} stopped (exit {agent.stop()})")

        stack.callback(stop)
    return agent


def print_keep_instructions(lc: LocalCluster, op: OperatorProcess, agents: list[NodeAgentProcess],
                            head_ip: str) -> None:
    procs = [op.proc, *(a.proc for a in agents)]
    pids = " ".join(str(p.pid) for p in procs if p is not None)
    env = f"SWARM_LOCALCLUSTER_NAME={lc.name} " if "SWARM_LOCALCLUSTER_NAME" in os.environ else ""
    dashboard = f"http://{head_ip}:{DASHBOARD_PORT}"
    # kubectl from the build cache, python and ray from the environment the demo ran in.
    path = f"{versions.tool_path('kubectl').parent}:{Path(sys.executable).parent}"
    say("DEMO_KEEP=1: everything keeps running. Look around:")
    print(f"""\
    cd {ROOT}; export KUBECONFIG={lc.kubeconfig} PATH={path}:$PATH
    kubectl get swarmclusters,swarmjobs,pods -n {NAMESPACE} -o wide
    python -m localcluster logs -n {NAMESPACE} POD     # what a pod's containers wrote
    python -m localcluster.nodeagent status          # the pods' processes: IPs, PIDs, memory
    ray job submit --address {dashboard} -- python -c 'import ray; ray.init(); print(ray.cluster_resources())'
    the Ray dashboard: {dashboard}; the operator's log: {op.log_path}
  Clean up: stop the operator and the node agents (the agents stop their pods), then the cluster:
    kill {pids}
    {env}python -m localcluster down""", flush=True)


def demo(lc: LocalCluster, keep: bool) -> None:
    """Everything after the cluster is up; what it starts it stops again (unless ``keep``)."""
    manifest = sample_manifest()
    name = str(manifest["metadata"]["name"])
    kubeconfig = str(lc.kubeconfig)
    with ExitStack() as stack:
        api = stack.enter_context(lc.api_client())
        core: Any = client.CoreV1Api(api)
        custom: Any = client.CustomObjectsApi(api)

        with step("starting two process nodes: the pods bound to them run as local processes"):
            cpu_node = start_agent(stack, NodeAgentProcess(kubeconfig, f"{lc.name}-proc-cpu", cpu="4", memory="8Gi",
                                                           taints=[PROCESS_TAINT]), keep)
            gpu_node = start_agent(stack, NodeAgentProcess(kubeconfig, f"{lc.name}-proc-gpu", cpu="2", memory="4Gi",
                                                           gpus=2, taints=[PROCESS_TAINT, GPU_TAINT]), keep)
            for a in (cpu_node, gpu_node):
                note(f"{a.node}: cpu {a.cpu}, memory {a.memory}, nvidia.com/gpu {a.gpus}, "
                     f"taints {', '.join(a.taints)} (log: {a.log_file})")

        with step("installing the SwarmCluster and SwarmJob CRDs"):
            for crd, crd_name in CRDS.items():
                kubectl(lc, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
                wait_established(lc, crd_name)
            ensure_namespace(core)

        log_path = versions.cache_root() / "logs" / f"demo-{lc.name}-operator.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        op = OperatorProcess(kubeconfig, [NAMESPACE], log_path)
        with step(f"starting swarm-operator for namespace {NAMESPACE} (log: {log_path})"):
            op.start()
        if not keep:
            def stop_operator() -> None:
                op.stop()
                note("operator stopped")

            stack.callback(stop_operator)

        want = expected_pods(manifest)
        with step(f"applying {SAMPLE.relative_to(ROOT)}; waiting for its Ray cluster ({want} nodes)"):
            kubectl(lc, "apply", "-n", NAMESPACE, "-f", str(SAMPLE))
            head_ip, nodes = wait_for_ray_cluster(core, custom, name, want)

        say(f"pods of SwarmCluster {name} (namespace {NAMESPACE})")
        print_pods(cluster_pods(core, name))
        say(f"Ray nodes, as the GCS at {head_ip}:{GCS_PORT} reports them")
        print_ray_nodes(nodes)

        with step(f"applying SwarmJob {JOB_NAME} (clusterSelector: {name}); the operator submits and follows it"):
            status, info, entrypoint, logs = run_job(custom, name, head_ip)
        say(f"kubectl get swarmjob {JOB_NAME}")
        for line in kubectl(lc, "get", "swj", JOB_NAME, "-n", NAMESPACE).splitlines():
            note(line)
        print_job(info, entrypoint, logs)
        if status.get("jobDeploymentStatus") != "Complete":
            raise ClusterError(f"the SwarmJob ended {status.get('jobDeploymentStatus')}: {status.get('message')}")

        if keep:
            print_keep_instructions(lc, op, [cpu_node, gpu_node], head_ip)
            return
        with step(f"deleting SwarmJob {JOB_NAME}, then SwarmCluster {name}: the garbage collector deletes its "
                  "pods, the agents stop them"):
            custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, JOB_PLURAL, JOB_NAME)
            delete_cluster(core, custom, name)
        say("stopping the operator and the node agents")


def main() -> int:
    started = time.monotonic()
    why_not = preflight()
    if why_not:
        print(f"[demo] {why_not}", file=sys.stderr)
        return 1
    keep = os.environ.get("DEMO_KEEP") == "1"
    with step("building the control plane (cached by version; a cold build takes 15–30 min)"):
        build.build_all()
    lc = LocalCluster.from_env()
    print(f"[demo] the local cluster {lc.name!r}: etcd, kube-apiserver, controller-manager, scheduler, kwok "
          "(brought down at the end unless it was running already or DEMO_KEEP=1)", flush=True)
    with lc.borrowed(keep=keep):
        demo(lc, keep)
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ClusterError, build.BuildError, RuntimeError, TimeoutError) as exc:
        # Whatever was started has been stopped by now (the ExitStack unwound).
        print(f"\n[demo] FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
