"""The demo's Ray job: a script, applied as a SwarmJob on the demo's cluster, followed until it ends, and
shown with its logs and result."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from localcluster import rayjobs
from localcluster.demo_cluster import GROUP, NAMESPACE, VERSION
from localcluster.demo_output import note
from localcluster.errors import ClusterError
from swarm_operator.resources.pods import DASHBOARD_PORT

JOB_PLURAL = "swarmjobs"
JOB_NAME = "pi"
JOB_TIMEOUT = 180.0

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
