"""What the end-to-end tests share: the sample on this session's process nodes, waiting for its
Ray cluster, and looking at pods as processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from localcluster import rayjobs
from localcluster.nodeagent import NodeAgentProcess, network, pod_usage
from tests.integration.helpers import GROUP, PLURAL, REPO, VERSION, wait_for

SAMPLE = REPO / "manifests" / "samples" / "local-gpu-cpu.yaml"
POOL_LABEL = "swarm.io/pool"

# A driver with one long task that may not be retried (max_retries=0): it succeeds only if the worker it runs on
# lives until it finishes. `slot` keeps it off the head (which has a CPU too): give each worker one slot.
LONG_TASK = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1}, max_retries=0)
def work(seconds):
    print("E2E-" + "STARTED " + socket.gethostname(), flush=True)  # split: the logs echo this source
    time.sleep(seconds)
    return {"pod": socket.gethostname(), "finished": time.time()}

print("E2E-RESULT " + json.dumps(ray.get(work.remote(%d))))
"""


@dataclass(frozen=True)
class ProcessNodes:
    """The session's process nodes; both carry ``POOL_LABEL: pool``, which the tests' pods select."""

    pool: str
    cpu: NodeAgentProcess
    gpu: NodeAgentProcess


def sample_manifest(pool: str) -> dict[str, Any]:
    """The demo's sample, pinned to the process nodes of ``pool``, every group at its minimum.

    Pinned sizes (maxReplicas = minReplicas): these tests are about healing, and a job's
    queued tasks would otherwise let the autoscaler add nodes (and memory) while they run.
    """
    manifest: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    spec = manifest["spec"]
    for part in [spec["head"], *spec["workerGroups"]]:
        part["template"]["spec"]["nodeSelector"][POOL_LABEL] = pool
    for group in spec["workerGroups"]:
        group["maxReplicas"] = group["minReplicas"]
    return manifest


def job_cluster_spec(pool: str) -> dict[str, Any]:
    """A SwarmJob's clusterSpec on the process nodes of ``pool``: a head alone (1 CPU), where drivers run."""
    placement = {"nodeSelector": {"swarm.io/process-node": "true", POOL_LABEL: pool},
                 "tolerations": [{"key": "swarm.io/process-node", "operator": "Exists", "effect": "NoSchedule"}]}
    return {"head": {"resources": {"cpu": 1, "memory": "2Gi"}, "template": {"spec": placement}}}


def started_on(logs: str) -> str | None:
    """The pod LONG_TASK's task started on, from the job's logs (None: not yet)."""
    line = next((ln for ln in logs.splitlines() if "E2E-STARTED " in ln), None)
    return line.split("E2E-STARTED ", 1)[1].strip() if line else None


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def cluster_pods(core: Any, namespace: str, name: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"swarm.io/cluster={name}").items)


@dataclass(frozen=True)
class RayCluster:
    head_ip: str
    pods: dict[str, Any]  # by name: every pod of the SwarmCluster, all Ready
    nodes: dict[str, rayjobs.RayNode]  # the live Ray nodes, by instance id (= pod name)
    dead: dict[str, rayjobs.RayNode]  # Ray nodes the GCS reports DEAD

    @property
    def head(self) -> str:
        """The head pod's name."""
        return next(n for n, p in self.pods.items() if p.metadata.labels.get("swarm.io/node-type") == "head")


def _nodes_from_host(head: Any) -> list[rayjobs.RayNode]:
    return rayjobs.ray_nodes(head.status.pod_ip)


def wait_ray_cluster(core: Any, namespace: str, name: str, want: int, timeout: float = 120.0,
                     ray_nodes: Callable[[Any], list[rayjobs.RayNode]] = _nodes_from_host) -> RayCluster:
    """Until ``want`` pods are Ready, none is being deleted, and the head's GCS reports exactly
    those pods (by instance id) as its live Ray nodes. ``ray_nodes(head pod)`` asks the GCS: from this
    host by default (process nodes' pods are on its bridge); the kind tier asks from inside the head."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        pods = {p.metadata.name: p for p in cluster_pods(core, namespace, name)}
        heads = [p for p in pods.values() if p.metadata.labels.get("swarm.io/node-type") == "head"]
        settled = [p for p in pods.values() if is_ready(p) and p.metadata.deletion_timestamp is None]
        seen = f"pods {sorted(pods)}, {len(settled)} ready and not deleting"
        if len(pods) == want == len(settled) and len(heads) == 1:
            try:
                nodes = ray_nodes(heads[0])
            except (subprocess.SubprocessError, RuntimeError) as exc:  # RuntimeError: kubectl exec's
                seen += f"; the GCS does not answer: {str(exc)[-300:]}"
            else:
                live = {n.instance_id: n for n in nodes if n.alive}
                if set(live) == set(pods):
                    return RayCluster(heads[0].status.pod_ip, pods, live,
                                      {n.instance_id: n for n in nodes if not n.alive})
                seen += f"; live Ray nodes {sorted(live)}"
        time.sleep(1.0)
    raise AssertionError(f"{name}: no {want} ready pods that are each a live Ray node after {timeout:.0f}s; "
                         f"last seen: {seen}")


def delete_swarmcluster(core: Any, custom: Any, namespace: str, name: str, timeout: float = 90.0) -> float:
    """Delete the SwarmCluster and wait until its pods are gone; returns how long that took."""
    start = time.monotonic()
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    wait_for(f"the pods of {name} gone", lambda: not cluster_pods(core, namespace, name), timeout=timeout)
    return time.monotonic() - start


def pod_processes(namespace: str) -> tuple[set[tuple[int, str]], set[str]]:
    """Processes ((pid, start time): a pid alone could be reused) and network namespaces of
    the pods of ``namespace`` on this host's process nodes."""
    procs: set[tuple[int, str]] = set()
    netns: set[str] = set()
    for u in pod_usage():
        if u.namespace != namespace:
            continue
        netns.add(u.netns)
        for pid in u.pids:
            start = network.proc_start_time(pid)
            if start is not None:
                procs.add((pid, start))
    return procs, netns


def still_alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    return {(pid, start) for pid, start in procs if network.proc_start_time(pid) == start}


def raylet_pid(namespace: str, pod: str) -> int:
    """The PID of the raylet inside a pod (found among the processes of its network namespace)."""
    usage = next((u for u in pod_usage() if (u.namespace, u.name) == (namespace, pod)), None)
    assert usage is not None, f"pod {namespace}/{pod} runs no processes on this host"
    for pid in usage.pids:
        try:
            exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if Path(exe.decode()).name == "raylet":
            return pid
    raise AssertionError(f"no raylet among the processes {usage.pids} of pod {pod}")
