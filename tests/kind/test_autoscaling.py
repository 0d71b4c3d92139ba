"""Autoscaling from zero on kind: Ray's demand → the operator (in its pod) reads the head's GCS across the pod
network → worker pods on the right kind node → idle → drained → removed.

One SwarmCluster for the module, both groups from zero. CPU work asks for the custom resource `slot`, which only
cpu workers have, so the head's own CPU never absorbs the demand the tests are about.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.kind_tier import KindTier
from tests.e2e.helpers import delete_swarmcluster, is_ready
from tests.e2e.test_autoscaling import GPU_JOB, Scaled, result_line
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for
from tests.kind.helpers import run_job, swarmcluster

pytestmark = [pytest.mark.kind, pytest.mark.timeout(480)]

IDLE_TIMEOUT = 10

CPU_JOB = """\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={"slot": 1})
def work(seconds):
    time.sleep(seconds)
    return socket.gethostname()

print("E2E-RESULT " + json.dumps({"pods": sorted(set(ray.get([work.remote(20), work.remote(20)])))}))
"""

# A task on a cpu worker returns 32 MiB: its primary copy lives in that worker's object store, and the driver
# holds the reference for HOLD seconds (longer than the idle timeout) before it lets go.
HOLD = 3 * IDLE_TIMEOUT + 15
HOLDING_JOB = f"""\
import json, socket, time, ray
ray.init()

@ray.remote(num_cpus=1, resources={{"slot": 1}})
def make():
    return socket.gethostname(), b"x" * (32 << 20)

ref = make.remote()
pod = ray.get(ref)[0]
print("KIND-HOLDING " + pod, flush=True)
time.sleep({HOLD})
print("E2E-RESULT " + json.dumps({{"pod": pod, "size": len(ray.get(ref)[1])}}))
"""


@pytest.fixture(scope="module")
def scaled(kind_tier: KindTier, core_v1: Any, custom_objects: Any, namespaces: Any) -> Iterator[Scaled]:
    namespace = namespaces.new("kind-scale")
    manifest = swarmcluster("scale", kind_tier.ray_image, cpu=(0, 3), gpu=(0, 2), idle_timeout=IDLE_TIMEOUT)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    yield Scaled(core_v1, custom_objects, namespace, "scale")
    delete_swarmcluster(core_v1, custom_objects, namespace, "scale")
    namespaces.delete(namespace)


def _head(c: Scaled) -> str:
    def ready() -> str | None:
        heads = [p for p in c.pods() if p.metadata.labels.get("swarm.io/node-type") == "head" and is_ready(p)]
        return heads[0].metadata.name if heads else None
    name: str = wait_for("a ready head", ready, timeout=240, every=1)
    return name


def test_cpu_tasks_start_only_cpu_workers(kind_tier: KindTier, scaled: Scaled) -> None:
    head = _head(scaled)
    assert not scaled.pods("cpu") and not scaled.pods("gpu"), "both groups start at zero"
    logs = run_job(kind_tier, scaled.ns, head, CPU_JOB, timeout=300, while_waiting=scaled.pods)
    pods = result_line(logs)["pods"]
    assert len(pods) == 2 and all(p.startswith("scale-cpu-") for p in pods), logs
    assert scaled.max_pods["gpu"] == 0, "CPU demand must not start GPU workers"
    assert scaled.max_pods["cpu"] == 2, f"two tasks of one slot, maxReplicas 3: {scaled.max_pods}"
    cpu_node = kind_tier.cluster.node("cpu")
    assert all(p.spec.node_name == cpu_node for p in scaled.pods("cpu"))


def test_gpu_tasks_start_the_gpu_group_on_the_gpu_node(kind_tier: KindTier, scaled: Scaled) -> None:
    # Where each gpu pod was bound, noted while the job runs: once it has ended its worker idles out
    # (IDLE_TIMEOUT), maybe before a look afterwards.
    placed: dict[str, str] = {}

    def watch() -> None:
        placed.update({p.metadata.name: p.spec.node_name for p in scaled.pods("gpu") if p.spec.node_name})

    logs = run_job(kind_tier, scaled.ns, _head(scaled), GPU_JOB, timeout=300, while_waiting=watch)
    pod = result_line(logs)["pod"]
    assert pod.startswith("scale-gpu-"), logs
    assert scaled.max_pods["gpu"] == 1, f"one GPU task, maxReplicas 2: {scaled.max_pods}"
    assert placed.get(pod) == kind_tier.cluster.node("gpu"), placed
    assert any("gpu 0→1" in m for m in scaled.events("Autoscaled")), scaled.events("Autoscaled")


def test_idle_workers_are_drained_and_removed(scaled: Scaled) -> None:
    wait_for("every worker idled out", lambda: not scaled.pods("cpu") and not scaled.pods("gpu"),
             timeout=IDLE_TIMEOUT + 120, every=1)
    groups = {g["name"]: g for g in scaled.status()["workerGroups"]}
    assert groups["cpu"]["restarts"] == 0 and groups["gpu"]["restarts"] == 0, "removed by drain, not by failure"
    assert groups["cpu"]["desiredReplicas"] == 0 and groups["gpu"]["desiredReplicas"] == 0, groups


def test_a_worker_holding_a_referenced_object_is_kept(kind_tier: KindTier, scaled: Scaled) -> None:
    head = _head(scaled)
    survived: list[bool] = []
    started = time.monotonic()
    holder: list[str] = []

    def watch() -> None:
        names = {p.metadata.name for p in scaled.pods("cpu")}
        if holder and time.monotonic() - started > IDLE_TIMEOUT * 2:
            survived.append(holder[0] in names)
        elif not holder and len(names) == 1:
            holder.extend(names)

    logs = run_job(kind_tier, scaled.ns, head, HOLDING_JOB, timeout=HOLD + 240, while_waiting=watch)
    result = result_line(logs)
    assert result["size"] == 32 << 20
    assert holder == [result["pod"]], (holder, logs)
    assert survived and all(survived), "the worker holding the object was removed while it was referenced"
    # Once the driver let go, the worker idles out like any other.
    wait_for("the holder removed after the job", lambda: not scaled.pods("cpu"), timeout=IDLE_TIMEOUT + 120)
