"""A SwarmCluster on kind: Ray in containers under the kubelet, across nodes through flannel.

One SwarmCluster for the module (head and a CPU worker on the CPU node, a GPU worker on the GPU node), so the
healing tests run against a cluster that is already up, as a user's would be. Every test leaves it whole again.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import rayjobs, versions
from localcluster.kind_tier import KindTier
from swarm_operator.resources.pods import object_store_bytes
from swarm_operator.spec.parse import parse_cluster
from tests.e2e.helpers import cluster_pods, delete_swarmcluster, started_on
from tests.e2e.test_autoscaling import result_line
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for
from tests.kind.helpers import RayCluster, kill_ray_container, run_job, swarmcluster, wait_ray_cluster, watch_job

pytestmark = [pytest.mark.kind, pytest.mark.timeout(420)]

# A deleted cluster's pods are gone within this many seconds, well under the workers' 60 s grace period, which they
# took while Ray's own drain on SIGTERM waited for the deleted head's GCS (measured on this machine: 62 s before, 35 s
# with that drain off; one run each).
DELETED_WITHIN = 45

# A task on the GPU worker and tasks on the CPU worker (only it has the `slot` resource): two kind nodes; each
# says where it ran.
JOB = """\
import json, os, socket
import ray

ray.init()

@ray.remote(num_gpus=1)
def on_gpu():
    return socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES")

@ray.remote(num_cpus=1, resources={"slot": 1})
def where(x):
    return socket.gethostname(), x * x

pod, cuda = ray.get(on_gpu.remote())
spread = ray.get([where.remote(i) for i in range(6)])
print("E2E-RESULT " + json.dumps({"gpu_pod": pod, "cuda": cuda, "hosts": sorted({h for h, _ in spread}),
                                   "squares": [s for _, s in spread]}))
"""

# In a worker's container: the object store's file system, before and after an object of 64 MiB is put there.
SHM_PROBE = """\
import json, os
import ray

def used():
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize

ray.init(address="auto")
st = os.statvfs("/dev/shm")
before = used()
ref = ray.put(b"x" * (64 << 20))
after = used()
print(json.dumps({"size": st.f_blocks * st.f_frsize, "before": before, "after": after}))
"""


@pytest.fixture(scope="module")
def sample(kind_tier: KindTier, core_v1: Any, custom_objects: Any, namespaces: Any) -> Iterator[dict[str, Any]]:
    namespace = namespaces.new("kind-ray")
    manifest = swarmcluster("basic", kind_tier.ray_image)
    obj = custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    obj["applied_at"] = time.monotonic()
    yield obj
    delete_swarmcluster(core_v1, custom_objects, namespace, obj["metadata"]["name"])
    namespaces.delete(namespace)


def _up(kind_tier: KindTier, core_v1: Any, sample: dict[str, Any], timeout: float = 240.0) -> RayCluster:
    meta = sample["metadata"]
    return wait_ray_cluster(kind_tier, core_v1, meta["namespace"], meta["name"], want=3, timeout=timeout)


def _group_pod(rc: RayCluster, group: str) -> str:
    return next(n for n, p in rc.pods.items() if p.metadata.labels.get("swarm.io/group") == group)


def test_the_cluster_reaches_running_with_each_pool_on_its_node(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, sample: dict[str, Any]) -> None:
    meta = sample["metadata"]
    rc = _up(kind_tier, core_v1, sample, timeout=300)
    status = wait_for("phase Running", lambda: (s := custom_objects.get_namespaced_custom_object(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]).get("status", {})).get("phase") == "Running" and s,
        timeout=60)
    print(f"\n[kind] kubectl apply → Running with 3 Ray nodes in containers after "
          f"{time.monotonic() - sample['applied_at']:.0f}s")
    cpu_node, gpu_node = kind_tier.cluster.node("cpu"), kind_tier.cluster.node("gpu")
    placed = {n: p.spec.node_name for n, p in rc.pods.items()}
    assert placed == {rc.head: cpu_node, _group_pod(rc, "cpu"): cpu_node, _group_pod(rc, "gpu"): gpu_node}
    assert status["gpus"] == 1 and status["head"]["podIP"] == rc.head_ip
    for name, pod in rc.pods.items():
        assert rc.nodes[name].ip == pod.status.pod_ip, "a Ray node's address is its pod's (flannel's subnet)"
        (container,) = pod.status.container_statuses
        assert container.image.endswith(kind_tier.ray_image.split("/", 1)[1]) and container.ready


def test_a_job_through_the_jobs_api_runs_tasks_on_both_kind_workers(
        kind_tier: KindTier, core_v1: Any, sample: dict[str, Any]) -> None:
    namespace = sample["metadata"]["namespace"]
    rc = _up(kind_tier, core_v1, sample)
    with kind_tier.dashboard(namespace, rc.head) as dashboard:
        job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(JOB))
        info = rayjobs.wait_job(dashboard, job, timeout=180)
        logs = rayjobs.job_logs(dashboard, job)
    assert info["status"] == "SUCCEEDED", logs
    result = result_line(logs)
    assert result["gpu_pod"] == _group_pod(rc, "gpu") and result["cuda"] == "0", logs
    assert result["squares"] == [i * i for i in range(6)]
    assert result["hosts"] == [_group_pod(rc, "cpu")], logs
    nodes_used = {rc.pods[pod].spec.node_name for pod in [result["gpu_pod"], *result["hosts"]]}
    assert nodes_used == {kind_tier.cluster.node("cpu"), kind_tier.cluster.node("gpu")}


def test_the_object_store_sits_in_a_memory_dev_shm_of_the_size_the_operator_gave(
        kind_tier: KindTier, core_v1: Any, sample: dict[str, Any]) -> None:
    namespace = sample["metadata"]["namespace"]
    rc = _up(kind_tier, core_v1, sample)
    worker = _group_pod(rc, "cpu")
    spec = parse_cluster(sample)
    group = next(g for g in spec.worker_groups if g.name == "cpu")
    wanted = object_store_bytes(group.resources, dict(group.ray_start_params))
    mounts = kind_tier.exec(namespace, worker, "cat", "/proc/mounts")
    (shm,) = [line.split() for line in mounts.splitlines() if line.split()[1] == "/dev/shm"]
    assert shm[2] == "tmpfs", f"/dev/shm is {shm}"
    probe = json.loads(kind_tier.exec(namespace, worker, "python", "-c", SHM_PROBE).strip().splitlines()[-1])
    # tmpfs rounds its size up to whole pages.
    assert wanted <= probe["size"] < wanted + 4096, (probe, wanted)
    assert probe["after"] - probe["before"] >= 64 << 20, f"the object did not land in /dev/shm: {probe}"
    assert rc.nodes[worker].total["object_store_memory"] == pytest.approx(wanted, rel=0.01)


# A task that grows past its worker's memory limit (1 GiB), 32 MiB at a time, and is not retried; the driver
# prints what Ray told it.
OVERRUN_JOB = """\
import json, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1}, max_retries=0)
def grow():
    hoard = []
    for _ in range(128):
        hoard.append(bytearray(32 << 20))
        time.sleep(0.25)  # Ray's memory monitor looks every 250 ms: give it the chance before the kernel's killer
    return len(hoard)

try:
    ray.get(grow.remote())
    error = None
except Exception as exc:
    error = {"type": type(exc).__name__, "message": str(exc)[:2000]}
print("E2E-RESULT " + json.dumps({"error": error}))
"""


def test_a_task_past_its_workers_memory_limit_is_told_why_and_the_cluster_heals(
        kind_tier: KindTier, core_v1: Any, sample: dict[str, Any]) -> None:
    namespace, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    before = _up(kind_tier, core_v1, sample)
    logs = run_job(kind_tier, namespace, before.head, OVERRUN_JOB, timeout=240)
    error = result_line(logs)["error"]
    assert error is not None, f"4 GiB fit in a 1 GiB container?\n{logs}"
    # Ray's memory monitor killed the task (it reads the container's cgroup limit: OutOfMemoryError); or the
    # kernel killed Ray's worker process (Ray's error names the OOM killer); or the kernel killed the container,
    # and the operator's Event says OOMKilled.
    events: list[str] = []

    def told() -> bool:
        if error["type"] == "OutOfMemoryError" or "OOM killer" in error["message"]:
            return True
        # The driver hears of its lost worker as soon as the container dies; the operator's Event follows its
        # own turn over the pod, maybe after the job has ended.
        events[:] = [e.message for e in core_v1.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}").items if e.reason == "Replacing"]
        return any("OOMKilled" in m for m in events)

    try:
        wait_for("the user told about memory", told, timeout=60)
    except AssertionError:
        raise AssertionError(f"the user is not told about memory: {error}; Replacing events: {events}") from None
    print(f"\n[kind] memory overrun: {error['type']}: {error['message'][:300]}")
    after = _up(kind_tier, core_v1, sample)
    assert after.head == before.head


def test_a_killed_worker_container_fails_its_pod_and_the_operator_replaces_it(
        kind_tier: KindTier, core_v1: Any, sample: dict[str, Any]) -> None:
    namespace, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    before = _up(kind_tier, core_v1, sample)
    victim = _group_pod(before, "cpu")
    kill_ray_container(kind_tier, before.pods[victim])
    start = time.monotonic()

    def replaced() -> list[str]:
        events = core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [e.message for e in events if e.reason == "Replacing" and victim in e.message]

    # restartPolicy Never: the kubelet does not restart the container; the operator replaces the pod and says what
    # the kubelet reported (it may act before the pod's phase turns Failed: the container's end is enough). The
    # reason is Error, or OOMKilled when the kernel killed a process of that container before (the memory test).
    why = wait_for(f"the operator replacing {victim}", replaced, timeout=90)
    assert re.search(r"Ray container ended \((Error|OOMKilled), exit code 137\)", why[0]), why
    after = _up(kind_tier, core_v1, sample)
    print(f"\n[kind] worker container killed → replaced, cluster whole after {time.monotonic() - start:.0f}s")
    new = set(after.pods) - set(before.pods)
    assert len(new) == 1 and victim not in after.pods
    assert after.pods[new.pop()].metadata.labels["swarm.io/group"] == "cpu"
    assert after.head_ip == before.head_ip


def test_a_deleted_head_is_replaced_and_the_cluster_serves_a_job_again(
        kind_tier: KindTier, core_v1: Any, sample: dict[str, Any]) -> None:
    namespace = sample["metadata"]["namespace"]
    before = _up(kind_tier, core_v1, sample)
    old_uid = before.pods[before.head].metadata.uid
    core_v1.delete_namespaced_pod(before.head, namespace)
    start = time.monotonic()
    after = wait_for("a new head and its workers", lambda: _new_head(kind_tier, core_v1, sample, old_uid),
                     timeout=300, every=2)
    print(f"\n[kind] head deleted → new head, workers rejoined after {time.monotonic() - start:.0f}s")
    assert not (set(after.pods) - {after.head}) & set(before.pods), "an old worker is still there"
    with kind_tier.dashboard(namespace, after.head) as dashboard:
        job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(JOB))
        info = rayjobs.wait_job(dashboard, job, timeout=180)
    assert info["status"] == "SUCCEEDED"


def _new_head(kind_tier: KindTier, core_v1: Any, sample: dict[str, Any], old_uid: str) -> RayCluster | None:
    try:
        rc = _up(kind_tier, core_v1, sample, timeout=10)
    except AssertionError:
        return None
    return rc if rc.pods[rc.head].metadata.uid != old_uid else None


# A GPU task of TASK_SECONDS that may not be retried and leaves the GPU worker's CPU free (num_cpus=0); it says
# where it ran and when it ended.
GPU_TASK = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=0, num_gpus=1, max_retries=0)
def work(seconds):
    print("E2E-" + "STARTED " + socket.gethostname(), flush=True)  # split: the logs echo this source
    time.sleep(seconds)
    return {"pod": socket.gethostname(), "finished": time.time()}

print("E2E-RESULT " + json.dumps(ray.get(work.remote(%d))))
"""
# Small tasks spread over every node Ray may schedule on: the head, the CPU worker, the GPU worker (its CPU).
SPREAD = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=0.25, scheduling_strategy="SPREAD")
def where():
    time.sleep(1)
    return socket.gethostname()

print("E2E-RESULT " + json.dumps({"pods": sorted(set(ray.get([where.remote() for _ in range(9)])))}))
"""
TASK_SECONDS = 25


def _drain(kind_tier: KindTier, node: str, *args: str, timeout: int) -> subprocess.Popen[str]:
    return subprocess.Popen([str(versions.tool_path("kubectl")), "--kubeconfig", str(kind_tier.cluster.kubeconfig),
                             "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={timeout}s",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kubectl_drain_of_a_busy_gpu_workers_node_drains_ray_first_and_the_heads_is_refused(
        kind_tier: KindTier, core_v1: Any, sample: dict[str, Any]) -> None:
    """`kubectl drain` of the GPU node (issue #27): the evicted worker's Ray node is DRAINING while its task, which
    allows no retry, runs on and finishes, and new tasks go to the other nodes; a drain of the head's node is
    refused by the head's PodDisruptionBudget. Both nodes are uncordoned, and the cluster whole, afterwards."""
    namespace, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    before = _up(kind_tier, core_v1, sample)
    gpu_pod = _group_pod(before, "gpu")
    gpu_node, cpu_node = kind_tier.cluster.node("gpu"), kind_tier.cluster.node("cpu")
    # Before any drain, SPREAD puts tasks on the GPU worker too: what the drain must change.
    spread = result_line(run_job(kind_tier, namespace, before.head, SPREAD, timeout=120))["pods"]
    assert gpu_pod in spread, spread
    try:
        with kind_tier.dashboard(namespace, before.head) as dashboard:
            job = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(GPU_TASK % TASK_SECONDS))
            busy = wait_for("the GPU task started", lambda: started_on(rayjobs.job_logs(dashboard, job)), timeout=90)
            assert busy == gpu_pod
            drain = _drain(kind_tier, gpu_node, timeout=150)
            drained_at = time.time()
            draining_at, after_drain = 0.0, None

            def watch_draining(now: float) -> None:
                nonlocal draining_at, after_drain
                if not draining_at and any(n.instance_id == busy and n.status == "DRAINING" for n in
                                           kind_tier.ray_nodes(namespace, before.head, before.head_ip)):
                    draining_at = now
                    # New work while the busy node drains: it must go to the other nodes.
                    after_drain = rayjobs.submit_job(dashboard, "python -c " + shlex.quote(SPREAD))

            info, logs = watch_job(dashboard, job, TASK_SECONDS + 90, watch_draining)
            assert info.get("status") == "SUCCEEDED", logs
            result = result_line(logs)
            assert result["pod"] == busy, result
            assert after_drain is not None, "the evicted worker's Ray node never showed DRAINING"
            assert rayjobs.wait_job(dashboard, after_drain, timeout=120)["status"] == "SUCCEEDED"
            elsewhere = result_line(rayjobs.job_logs(dashboard, after_drain))["pods"]
        print(f"\n[kind] kubectl drain: Ray node DRAINING {draining_at - drained_at:.1f}s after it began; the task "
              f"done {result['finished'] - drained_at:.1f}s after it; new tasks ran on {elsewhere}")
        assert drained_at <= draining_at < result["finished"], (draining_at, drained_at, result)
        assert busy not in elsewhere and elsewhere, elsewhere
        out, _ = drain.communicate(timeout=150)
        assert drain.returncode == 0, out
        assert busy not in {p.metadata.name for p in cluster_pods(core_v1, namespace, name)}
        # The head's node: the eviction of the head (the only pod asked for) is refused while its budget allows none.
        refused = _drain(kind_tier, cpu_node, f"--pod-selector=swarm.io/cluster={name},swarm.io/node-type=head",
                         timeout=12)
        out, _ = refused.communicate(timeout=60)
        assert refused.returncode != 0 and "disruption budget" in out, out
        head = core_v1.read_namespaced_pod(before.head, namespace)
        assert head.metadata.uid == before.pods[before.head].metadata.uid and head.metadata.deletion_timestamp is None
    finally:
        for node in (gpu_node, cpu_node):
            kind_tier.cluster.kubectl("uncordon", node)
    after = _up(kind_tier, core_v1, sample)
    assert after.head == before.head and _group_pod(after, "gpu") != gpu_pod


def test_a_deleted_cluster_is_gone_in_seconds_not_grace_periods(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, sample: dict[str, Any]) -> None:
    """Last in this module: it deletes the module's cluster. The garbage collector stops the head and the workers
    at once; each worker's preStop then finds the head gone, and neither it nor Ray's own drain on SIGTERM may wait
    for a GCS that no longer answers (that took the workers up to their 60 s grace period)."""
    namespace, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    _up(kind_tier, core_v1, sample)
    took = delete_swarmcluster(core_v1, custom_objects, namespace, name, timeout=90)
    print(f"\n[kind] SwarmCluster deleted → its 3 pods gone after {took:.0f}s")
    assert took < DELETED_WITHIN, f"{took:.0f}s"
