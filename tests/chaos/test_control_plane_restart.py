"""kube-apiserver, then (separately) etcd, killed and restarted under a running operator: the
operator is not restarted, its watches reconnect, and it converges on changes made afterwards.

Spec changes reach the operator only through its SwarmCluster watch (its periodic re-list runs
only every few minutes), so convergence on a deleted cluster, a new one and two scaled ones proves
the watches came back; a watch that could not resume re-lists without reporting deletions, which
the operator must notice on its own.
The deletion comes first, while the operator's watch may still be reconnecting: a cluster
deleted in that gap must be noticed as gone too, not served on from the operator's cache.
Converged also means at rest: no pod or service created or deleted over 3 s, and no pod of a
cluster nobody touched replaced.
"""

from __future__ import annotations

import time

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from localcluster.chaos import restart_component
from localcluster.cluster import LocalCluster
from swarm_operator.resources import labels
from tests.chaos.conftest import OperatorFactory
from tests.chaos.helpers import (
    Api,
    Model,
    Want,
    child_writes,
    failed_reconciles,
    log_lines,
    manifest,
    wait_converged,
    writes_while_at_rest,
)

# Long enough that the operator's watches and requests fail, not just stall; short enough that the
# scheduler and controller manager keep their leader leases (renew deadline 10 s; they exit when lost).
DOWN_SECONDS = 2.0
CONVERGE_AFTER_RESTART = 45.0


def _wait_writable(api: Api, timeout: float = 60.0) -> float:
    """Until the API server accepts a write again (after etcd comes back, reads can succeed first)."""
    start = time.monotonic()
    while True:
        try:
            api.core.patch_namespace(api.ns, {"metadata": {"annotations": {"chaos/probe": str(time.time())}}})
            return time.monotonic() - start
        except (ApiException, HTTPError, OSError):
            if time.monotonic() - start > timeout:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_operator_recovers_from_a_control_plane_restart(component: str, api: Api, operator_factory: OperatorFactory,
                                                         local_cluster: LocalCluster) -> None:
    op = operator_factory()
    op.start()
    model = Model({f"r{i}": Want({"w": 2}) for i in range(4)})
    model.clusters["r4"] = Want({"w": 1}, autoscaling=True)
    for name, want in model.clusters.items():
        api.create(manifest(name, want.groups, autoscaling=want.autoscaling))
    wait_converged(api, model, "before the restart", timeout=60, extra=op.log_tail)
    assert op.proc is not None
    pid = op.proc.pid

    untouched = {p["metadata"]["name"]: p["metadata"]["uid"] for p in api.pods()
                 if p["metadata"]["labels"].get(labels.CLUSTER) in ("r3", "r4")}
    started = time.monotonic()
    restart_component(local_cluster, component, down_seconds=DOWN_SECONDS)
    writable = _wait_writable(api)
    back = time.monotonic() - started

    # Changes the operator can learn only from its watches: a cluster deleted (first: while its watch
    # may still be reconnecting), a new one, two scaled, a worker pod deleted behind its back.
    api.delete("r2")
    del model.clusters["r2"]
    api.create(manifest("r5", {"w": 2}))
    model.clusters["r5"] = Want({"w": 2})
    api.set_replicas("r0", {"w": 4})
    model.clusters["r0"].groups["w"] = 4
    # Up, not down: a lower count would wait for Ray to tell busy workers from idle ones, and there is no Ray here.
    api.set_replicas("r1", {"w": 3})
    model.clusters["r1"].groups["w"] = 3
    victim = next(p["metadata"]["name"] for p in api.pods()
                  if p["metadata"]["labels"].get(labels.CLUSTER) == "r3"
                  and p["metadata"]["labels"].get(labels.NODE_TYPE) == labels.WORKER)
    api.core.delete_namespaced_pod(victim, api.ns)
    changed = time.monotonic()
    took = wait_converged(api, model, f"after the {component} restart", timeout=CONVERGE_AFTER_RESTART,
                          extra=lambda: f"pods and services the operator created or deleted so far: "
                          f"{child_writes(op.metrics()):.0f}\n{local_cluster.status()}\n{op.log_tail(8)}")
    assert local_cluster.running(), f"a control-plane component died:\n{local_cluster.status()}"
    busy = writes_while_at_rest(op.metrics)
    assert busy == 0, (f"the operator keeps creating or deleting children of a converged namespace: {busy:.0f} "
                       f"requests in 3 s (a cluster deleted while its watch was down, still served?)")
    assert op.proc.poll() is None and op.proc.pid == pid, "the operator must ride it out, not restart"
    assert op.healthy()
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in api.pods()}
    replaced = sorted(name for name, uid in untouched.items() if name != victim and now.get(name) != uid)
    assert not replaced, f"pods of clusters nobody touched were replaced: {replaced}"
    log = op.log_path.read_text(errors="replace")
    errors = failed_reconciles(op.metrics())
    print(f"{component}: down {DOWN_SECONDS:.0f}s, API writable again {back:.1f}s after the kill "
          f"(waited {writable:.1f}s for a write); converged {took:.1f}s after the changes "
          f"({time.monotonic() - changed:.1f}s); reconcile errors while it was down: {errors:.0f}; "
          f"log lines with 'failed'/'Traceback': {len(log_lines(log, ('failed', 'Traceback')))}")
