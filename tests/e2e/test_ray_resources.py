"""What Ray is told about a node's resources, end to end: a head with `rayCpus: 0` takes no task, and a worker
group of TPUs (`accelerator: tpu`) is Ray's `TPU`, scaled from zero by TPU demand alone.

One autoscaling SwarmCluster for the module: the head (rayCpus 0), a cpu group, the sample's gpu group and a
tpu group, all from zero. The tpu group runs on a process node that advertises a fake `google.com/tpu`; its
Ray node is started with `--resources={"TPU": 1.0}`, which Ray 2.60 takes on a machine without TPUs (it checks
only the counts tasks ask for: 1, 2, 4 or 8) and hands the task TPU id 0.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import rayjobs
from localcluster.nodeagent import NodeAgentProcess
from tests.e2e.helpers import ProcessNodes, delete_swarmcluster
from tests.e2e.test_autoscaling import Scaled, autoscaling_manifest, result_line
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAME = "rr"


def manifest(pool: str) -> dict[str, Any]:
    m = autoscaling_manifest(pool, NAME, cpu_max=2, gpu_max=1)
    spec = m["spec"]
    spec["head"]["resources"]["rayCpus"] = 0
    cpu, gpu = spec["workerGroups"]
    del cpu["rayResources"]  # plain CPU tasks: with rayCpus 0 the head cannot take them, only a worker can
    tpu = copy.deepcopy(gpu)
    tpu.update(name="tpu", resources={"cpu": 1, "memory": "1Gi", "gpu": 1, "accelerator": "tpu"})
    del tpu["rayResources"]
    tolerations = tpu["template"]["spec"]["tolerations"]
    tolerations[:] = [t for t in tolerations if t["key"] != "nvidia.com/gpu"]
    tolerations.append({"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"})
    spec["workerGroups"].append(tpu)
    return m


@pytest.fixture(scope="module")
def cluster(core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any,
            process_nodes: ProcessNodes, tpu_node: NodeAgentProcess) -> Iterator[Scaled]:
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL,
                                                   manifest(process_nodes.pool))
    try:
        yield Scaled(core_v1, custom_objects, module_namespace, NAME)
    finally:
        delete_swarmcluster(core_v1, custom_objects, module_namespace, NAME)


def live_nodes(c: Scaled) -> dict[str, rayjobs.RayNode]:
    try:
        return {n.instance_id: n for n in rayjobs.ray_nodes(c.head_ip()) if n.alive}
    except subprocess.SubprocessError:  # the head's GCS is not up yet
        return {}


WHERE_JOB = """\
import json, socket, ray
ray.init()

@ray.remote(%s)
def where():
    return {"pod": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
            "accelerators": {k: v for k, v in ray.get_runtime_context().get_accelerator_ids().items() if v}}

result = ray.get(where.remote())
# The node's resources as the GCS holds them, read while the node is surely alive: once the job ends it idles
# out within the idle timeout, maybe before the test could ask.
result["total"] = next(n["Resources"] for n in ray.nodes() if n["NodeID"] == result["node"])
print("E2E-RESULT " + json.dumps(result))
"""


def test_a_head_with_ray_cpus_0_takes_no_task_and_a_worker_is_started_for_it(cluster: Scaled) -> None:
    c = cluster
    head = wait_for("the head as a Ray node", lambda: live_nodes(c).get(f"{NAME}-head"), timeout=120)
    assert head.total.get("CPU", 0) == 0, f"the head must offer Ray no CPU: {head.total}"
    assert c.target("cpu") == 0 and not c.pods("cpu")
    result = result_line(c.wait_job(c.submit(WHERE_JOB % "num_cpus=1"), timeout=180, while_waiting=c.pods))
    assert result["pod"].startswith(f"{NAME}-cpu-"), result
    assert result["node"] != head.node_id and result["total"].get("CPU") == 1.0, result
    assert c.max_pods["cpu"] == 1 and c.max_pods["gpu"] == 0 and c.max_pods.get("tpu", 0) == 0, c.max_pods
    assert any(m.startswith("cpu 0→1") for m in c.events("Autoscaled")), c.events("Autoscaled")


def test_tpu_demand_starts_the_tpu_group_whose_ray_node_offers_tpu(cluster: Scaled) -> None:
    c = cluster
    result = result_line(c.wait_job(c.submit(WHERE_JOB % 'num_cpus=1, resources={"TPU": 1}'), timeout=180,
                                     while_waiting=c.pods))
    assert result["pod"].startswith(f"{NAME}-tpu-"), result
    assert result["accelerators"] == {"TPU": ["0"]}, result
    assert result["total"].get("TPU") == 1.0 and "GPU" not in result["total"], result["total"]
    assert c.max_pods["tpu"] == 1 and c.max_pods["gpu"] == 0, c.max_pods
    assert any(m.startswith("tpu 0→1") for m in c.events("Autoscaled")), c.events("Autoscaled")
