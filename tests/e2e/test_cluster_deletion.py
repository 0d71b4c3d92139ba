"""Deleting a SwarmCluster leaves nothing of its Ray cluster on the host: no process, no network namespace.

A module of its own: the SwarmCluster it deletes is its own, so the other module's healing
tests never share a cluster with it.
"""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.nodeagent import network
from tests.e2e.helpers import (
    ProcessNodes,
    delete_swarmcluster,
    pod_processes,
    sample_manifest,
    still_alive,
    wait_ray_cluster,
)
from tests.integration.helpers import GROUP, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_deleting_the_swarmcluster_ends_every_process_and_network_namespace_it_had(
        core_v1: Any, custom_objects: Any, module_namespace: str, operator: Any,
        process_nodes: ProcessNodes) -> None:
    manifest = sample_manifest(process_nodes.pool)
    name = manifest["metadata"]["name"]
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL, manifest)
    rc = wait_ray_cluster(core_v1, module_namespace, name, want=3, timeout=180)
    procs, netns = pod_processes(module_namespace)
    # A head runs about 20 processes (GCS, dashboard, raylet, agents), a worker about 5.
    assert len(netns) == len(rc.pods) == 3 and len(procs) >= 10, (netns, procs)

    took = delete_swarmcluster(core_v1, custom_objects, module_namespace, name)
    # The agent removes a pod's namespace before it finalizes the pod object; still, wait rather than assume the
    # order (with room for a loaded 2-core machine).
    wait_for("the pods' processes and namespaces gone", lambda: pod_processes(module_namespace) == (set(), set()),
             timeout=30)
    left_procs, left_netns = still_alive(procs), netns & set(network.agent_netns())
    print(f"\n[e2e] SwarmCluster deleted, pods gone after {took:.1f}s: processes {len(procs)} → {len(left_procs)}, "
          f"network namespaces {len(netns)} → {len(left_netns)}")
    assert not left_procs and not left_netns
