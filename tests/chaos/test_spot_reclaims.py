"""A storm of spot reclaims across 50 SwarmClusters converges with no backoff delay (issue 27).

Every cluster's workers run on this test's own fake spot nodes, its head elsewhere. At one moment, seeded: some
spot nodes are deleted (their pods with them), and a share of the workers on the others is reclaimed one of the ways
Kubernetes writes it (the kubelet's node-pressure eviction, a graceful node shutdown, the DisruptionTarget condition,
the Eviction API). Each group's failure backoff starts at BACKOFF_INITIAL_SECONDS: had the operator counted a single
reclaim as a failure, that group would wait that long for its replacement. Every group is back to its count well
within it, no group counts a failure, and the operator's counters and Events say "disrupted", never "failed":
each reclaimed worker exactly once, under its cause. The Eviction API writes DisruptionTarget and deletes the pod in
one go, so the operator may first see such a worker already deleting, or only gone: it counts it as `evicted` all
the same.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from localcluster.chaos import failed_status_patch
from localcluster.nodes import wait_nodes_ready
from localcluster.operator_process import OperatorProcess
from swarm_operator.reconcile.disruption import NODE_SHUTDOWN_MESSAGE, Cause
from swarm_operator.resources import labels
from swarm_operator.times import timestamp
from tests.chaos.conftest import OperatorFactory
from tests.chaos.helpers import Api, Model, Want, manifest, metric_values, seed, wait_converged
from tests.integration.helpers import Nodes, evict

N_CLUSTERS = 50
WORKERS = 4  # per cluster, one group
SPOT_NODES = 10
NODES_RECLAIMED = 2  # deleted outright, with every pod on them
RECLAIMED_SHARE = 0.4  # of the workers on the nodes that stay
# A replacement counted as a failure waits at least this long (the group's first backoff step).
BACKOFF_INITIAL_SECONDS = 60
# Every group back to its count within this many seconds of the storm: below that first step, and below the
# pod garbage collector's 40 s before it deletes the pods of a deleted node (so the replacements are ours).
AT_ONCE_SECONDS = 30.0


def _name(i: int) -> str:
    return f"s{i:02d}"


def _conditions_patch(reason: str, message: str) -> dict[str, Any]:
    now = timestamp(time.time())
    return {"status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": reason,
                                       "message": message, "lastTransitionTime": now}]}}


def reclaim_ways(api: Api) -> dict[str, tuple[Cause, Callable[[dict[str, Any]], None]]]:
    """Each way a spot reclaim reaches a pod: the cause the operator must count it under, and how it is written."""
    core = api.core

    def status(patch: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        return lambda pod: core.patch_namespaced_pod_status(pod["metadata"]["name"], api.ns, patch)

    def failed(reason: str, message: str) -> Callable[[dict[str, Any]], None]:
        def write(pod: dict[str, Any]) -> None:
            names = [c["name"] for c in pod["spec"]["containers"]]
            core.patch_namespaced_pod_status(pod["metadata"]["name"], api.ns,
                                             failed_status_patch(names, exit_code=137, reason=reason, message=message))
        return write

    def eviction(pod: dict[str, Any]) -> None:
        assert evict(core, api.ns, pod["metadata"]["name"]) == 201, "workers have no budget"

    return {
        "kubelet eviction": (Cause.EVICTED, failed("Evicted", "The node was low on resource: memory.")),
        "node shutdown": (Cause.NODE_SHUTDOWN, failed("Terminated", NODE_SHUTDOWN_MESSAGE)),
        "DisruptionTarget": (Cause.DISRUPTION_TARGET, status(_conditions_patch(
            "TerminationByKubelet", "Pod was terminated in response to imminent node shutdown (spot reclaim)."))),
        "Eviction API": (Cause.EVICTED, eviction),
    }


@pytest.fixture
def spot(core_v1: Any) -> Iterator[Nodes]:
    pool = Nodes(core_v1, SPOT_NODES)
    yield pool
    pool.remove()


def workers(api: Api) -> list[dict[str, Any]]:
    return [p for p in api.pods() if (p["metadata"].get("labels") or {}).get(labels.NODE_TYPE) == labels.WORKER]


def groups_short(api: Api) -> list[str]:
    """Clusters whose group is not back to WORKERS Running workers (none being deleted), or whose status does not
    say so yet."""
    running = Counter(p["metadata"]["labels"][labels.CLUSTER] for p in workers(api)
                      if not p["metadata"].get("deletionTimestamp")
                      and (p.get("status") or {}).get("phase") == "Running")
    out = []
    for name, c in sorted(api.clusters().items()):
        st = c.get("status") or {}
        if running[name] != WORKERS or st.get("workers") != f"{WORKERS}/{WORKERS}":
            out.append(f"{name}: {running[name]} running, status {st.get('workers')}")
    return out


@pytest.mark.timeout(240)
def test_a_storm_of_spot_reclaims_across_50_clusters_is_replaced_at_once(
        api: Api, operator_factory: OperatorFactory, spot: Nodes) -> None:
    rng = random.Random(seed())
    op: OperatorProcess = operator_factory()
    op.start()
    wait_nodes_ready(api.core.api_client, spot.names)
    model = Model()
    for i in range(N_CLUSTERS):
        body = manifest(_name(i), {"w": WORKERS})
        body["spec"]["workerGroups"][0]["template"] = spot.selector()
        body["spec"]["head"]["template"] = spot.avoided()  # a lost head would recycle its workers: not this test's
        body["spec"]["faultTolerance"] = {"workerBackoffInitialSeconds": BACKOFF_INITIAL_SECONDS,
                                          "workerBackoffMaxSeconds": 600}
        api.create(body)
        model.clusters[_name(i)] = Want({"w": WORKERS})
    up = wait_converged(api, model, "before the storm", timeout=120, extra=op.log_tail)
    print(f"{N_CLUSTERS} clusters of {WORKERS} workers Running in {up:.0f}s")

    # The storm, decided before any of it is written.
    lost_nodes = rng.sample(spot.names, NODES_RECLAIMED)
    pods = workers(api)
    on_lost = [p for p in pods if p["spec"].get("nodeName") in lost_nodes]
    staying = [p for p in pods if p["spec"].get("nodeName") not in lost_nodes]
    ways = reclaim_ways(api)
    picked = [(p, rng.choice(sorted(ways))) for p in rng.sample(staying, int(len(staying) * RECLAIMED_SHARE))]
    print(f"seed {seed()}: {len(on_lost)} workers on {NODES_RECLAIMED} deleted nodes; "
          + ", ".join(f"{n} {w}" for w, n in sorted(Counter(w for _, w in picked).items())))

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # at once, as a reclaim of a whole spot pool arrives
        done = [pool.submit(api.core.delete_node, n) for n in lost_nodes]
        done += [pool.submit(ways[way][1], p) for p, way in picked]
        for f in done:
            f.result()
    written = time.monotonic() - started

    short: list[str] = []
    deadline = started + AT_ONCE_SECONDS
    while time.monotonic() < deadline:
        short = groups_short(api)
        if not short:
            break
        time.sleep(0.5)
    took = time.monotonic() - started
    assert not short, (f"not every group back to {WORKERS} within {AT_ONCE_SECONDS:.0f}s of the storm (seed "
                       f"{seed()}): " + "; ".join(short[:20]) + "\n" + op.log_tail(60))
    print(f"storm written in {written:.1f}s; every group back to {WORKERS} Running {took:.1f}s after it began")

    # No group counted a failure, and no backoff was set.
    for name, c in api.clusters().items():
        (group,) = (c.get("status") or {})["workerGroups"]
        assert (group.get("consecutiveFailures", 0), group.get("restarts", 0)) == (0, 0), (name, group)
        assert "backoffUntil" not in group, (name, group)

    # The counters: each reclaimed worker once, under its cause as written, never a replacement of a failure.
    metrics = op.metrics()
    counted = Counter[str]()
    for label_text, value in metric_values(metrics, "swarm_pod_disruptions_total").items():
        cause = next(part.split('"')[1] for part in label_text.split(",") if part.startswith("cause="))
        counted[cause] += int(value)
    wanted = Counter({Cause.NODE_DELETED.value: len(on_lost)})
    wanted.update(ways[way][0].value for _, way in picked)
    assert +counted == +wanted, (counted, wanted)
    assert sum(metric_values(metrics, "swarm_worker_replacements_total").values()) == 0
    by_api = sum(1 for _, way in picked if way == "Eviction API")
    print(f"disruptions counted by cause: {dict(counted)} ({by_api} Eviction API evictions among the evicted)")

    # The Events: "disrupted (why)" once for every reclaimed worker, no "failed".
    events = api.events()
    messages = [e["message"] for e in events if e.get("reason") == "Disrupted"]
    assert sum(m.count(" disrupted (") for m in messages) == sum(wanted.values()), messages[:10]
    assert sum(m.count(" disrupted (evicted through the Eviction API)") for m in messages) == by_api, messages[:10]
    assert not [e["message"] for e in events if e.get("reason") == "Replacing"], "a reclaim counted as a failure"

    # And in the end nothing is left over: the deleted nodes' pods go with the pod garbage collector.
    cleaned = wait_converged(api, model, "after the storm", timeout=90, extra=op.log_tail)
    print(f"the deleted nodes' pods gone {cleaned:.0f}s later")
    # Every cluster deleted while the operator runs, so that the spot nodes leave with nothing on them.
    for name in model.clusters:
        api.delete(name)
    model.clusters.clear()
    wait_converged(api, model, "after deleting every cluster", timeout=90, extra=op.log_tail)
