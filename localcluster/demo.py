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
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from localcluster import build, versions
from localcluster.cluster import LocalCluster
from localcluster.demo_cluster import (
    GROUP,
    NAMESPACE,
    VERSION,
    cluster_pods,
    delete_cluster,
    ensure_namespace,
    expected_pods,
    kubectl,
    print_pods,
    wait_established,
    wait_for_ray_cluster,
)
from localcluster.demo_job import JOB_NAME, JOB_PLURAL, print_job, run_job
from localcluster.demo_output import note, print_ray_nodes, say, step
from localcluster.errors import ClusterError
from localcluster.nodeagent import NodeAgentProcess, network, paths
from localcluster.operator_process import OperatorProcess
from swarm_operator.resources.pods import DASHBOARD_PORT, GCS_PORT

ROOT = Path(__file__).resolve().parent.parent
CRDS = {ROOT / "crds" / "swarmcluster.yaml": "swarmclusters.swarm.io",
        ROOT / "crds" / "swarmjob.yaml": "swarmjobs.swarm.io"}
SAMPLE = ROOT / "manifests" / "samples" / "local-gpu-cpu.yaml"
# What keeps pods that cannot run Ray (no command: kwok-style test pods) off process nodes;
# the sample tolerates it. GPU nodes are usually tainted too; the sample's gpu group tolerates that.
PROCESS_TAINT = "swarm.io/process-node=true:NoSchedule"
GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"


def preflight() -> str | None:
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return "process nodes need root (network namespaces, veth pairs): run it as root"
    if shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        return "process nodes need iproute2's `ip` (apt-get install iproute2)"
    return None


def sample_manifest() -> dict[str, Any]:
    return dict(yaml.safe_load(SAMPLE.read_text()))


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
