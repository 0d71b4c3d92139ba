"""The node agent's command line: ``[run] --kubeconfig K --node NAME …``, ``logs POD …``, ``status``.

``python -m localcluster.nodeagent`` runs it; ``python -m localcluster logs`` forwards to ``logs``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

import kubernetes

from localcluster.nodeagent import network, paths
from localcluster.nodeagent.agent import NodeAgent
from localcluster.nodeagent.agentlog import AgentError, log
from localcluster.nodeagent.node import parse_taint
from localcluster.nodeagent.process import follow, pod_usage, read_logs


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"want KEY=VALUE, got {text!r}")
    return key, value


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.nodeagent",
                                     description="Register a process node and run the pods bound to it.")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True, help="the Node's name")
    parser.add_argument("--cpu", default="8", help="CPU capacity (a quantity)")
    parser.add_argument("--memory", default="16Gi", help="memory capacity (a quantity)")
    parser.add_argument("--gpus", type=int, default=0, help="fake GPUs to advertise")
    parser.add_argument("--gpu-resource", default="nvidia.com/gpu")
    parser.add_argument("--pods", type=int, default=110, help="pod capacity")
    parser.add_argument("--pod-cidr", help=f"this node's pod range inside {network.CLUSTER_CIDR} "
                                           "(default: the first free /24)")
    parser.add_argument("--label", type=_key_value, action="append", default=[], help="KEY=VALUE node label")
    parser.add_argument("--taint", type=parse_taint, action="append", default=[], help="KEY[=VALUE]:EFFECT")
    parser.add_argument("--keep-node", action="store_true", help="leave the Node object when stopping")
    parser.add_argument("--shutdown-grace", type=float, default=10.0,
                        help="longest grace period given to each pod when the agent stops")
    ns = parser.parse_args(argv)
    capacity = {"cpu": ns.cpu, "memory": ns.memory, "pods": str(ns.pods)}
    if ns.gpus:
        capacity[ns.gpu_resource] = str(ns.gpus)
    api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=ns.kubeconfig, persist_config=False)
    # Every pod worker talks to the API server: more connections than urllib3's default 4.
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
    agent = NodeAgent(api, ns.node, capacity, labels=dict(ns.label), taints=ns.taint, pod_cidr=ns.pod_cidr,
                      keep_node=ns.keep_node, shutdown_grace=ns.shutdown_grace)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log(f"signal {signal.Signals(signum).name}: stopping")
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The main thread must stay free to take signals: the agent runs in a thread of its own.
    failure: list[BaseException] = []

    def target() -> None:
        try:
            agent.run()
        except BaseException as exc:
            failure.append(exc)
            agent.stop_event.set()

    worker = threading.Thread(target=target, name="agent")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    if failure:
        exc = failure[0]
        if isinstance(exc, AgentError | network.NetworkError):
            log(f"ERROR: {exc}")
            return 1
        raise exc
    return 0


def logs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.nodeagent logs",
                                     description="Print what a pod on a process node wrote.")
    parser.add_argument("pod")
    parser.add_argument("-n", "--namespace")
    parser.add_argument("-c", "--container")
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("--agent", action="store_true", help="the agent's notes on the pod instead (pod.log)")
    ns = parser.parse_args(argv)
    try:
        if ns.agent or ns.follow:
            dirs = paths.pod_log_dirs(ns.pod, ns.namespace)
            if not dirs:
                raise FileNotFoundError(f"no logs of pod {ns.pod!r} on this host")
            if ns.agent:
                print((dirs[0].parent / "pod.log").read_text(errors="replace"), end="")
                return 0
            files = sorted(dirs[0].glob(f"{ns.container or '*'}.log"))
            if len(files) != 1:
                raise FileNotFoundError(f"pod {ns.pod!r} has containers {[f.stem for f in files]}: pick one with -c")
            follow(files[0])
        print(read_logs(ns.pod, ns.namespace, ns.container), end="")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def status(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="python -m localcluster.nodeagent status",
                            description="Process nodes of this host, their pods and memory.").parse_args(argv)
    for agent_file in sorted(paths.nodes_root().glob("*.agent.json")):
        info = json.loads(agent_file.read_text())
        alive = network.identity_alive(info)
        print(f"node {info['node']}: pid {info['pid']} {'running' if alive else 'GONE'}, pod CIDR {info['podCIDR']}")
    usage = pod_usage()
    print(f"{'node':<16}{'pod':<48}{'address':<16}{'procs':>6}{'PSS MiB':>10}")
    for u in usage:
        print(f"{u.node:<16}{u.namespace + '/' + u.name:<48}{u.address:<16}{len(u.pids):>6}{u.pss_kib / 1024:>10.0f}")
    procs, pss = sum(len(u.pids) for u in usage), sum(u.pss_kib for u in usage) / 1024
    print(f"{'total':<80}{procs:>6}{pss:>10.0f}")
    print(f"network namespaces: {len(network.agent_netns())}, veths: {len(network.agent_veths())}, "
          f"bridge {network.BRIDGE}: {'up' if network.bridge_exists() else 'absent'}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["logs"]:
        return logs(argv[1:])
    if argv[:1] == ["status"]:
        return status(argv[1:])
    return run(argv[1:] if argv[:1] == ["run"] else argv)
