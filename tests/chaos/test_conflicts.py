"""Conflicting writes: another writer racing the operator on a cluster's status, and objects of
the names the operator wants already existing. Each conflict (409) is the operator's to absorb:
it retries, it never counts a failed reconcile, and the cluster converges.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from swarm_operator import GROUP, PLURAL, VERSION
from swarm_operator.resources import labels
from tests.chaos.conftest import OperatorFactory
from tests.chaos.helpers import (
    Api,
    Model,
    Want,
    failed_reconciles,
    log_lines,
    manifest,
    metric_values,
    problems,
    seed,
    wait_converged,
)

HAMMER_SECONDS = 10.0
# Below the operator's 60 s resync: a conflict must be retried on its own, not found again a minute later.
CONVERGE = 25.0


def _no_reconcile_failures(metrics: str, log: str) -> str:
    """'' when the operator counted no failed reconcile and logged none; else what it counted and logged."""
    failed = failed_reconciles(metrics)
    kinds = metric_values(metrics, "swarm_reconcile_errors_total")
    lines = log_lines(log, ("reconcile of", "Traceback"))
    if failed or kinds or lines:
        return f"failed reconciles: {failed:.0f} {kinds}; log:\n" + "\n".join(lines[:20])
    return ""


class StatusHammer(threading.Thread):
    """A second writer of status: read, wait a moment (the operator writes meanwhile), then replace the
    status with the resourceVersion it read, saying the cluster is Pending with nothing ready. Every
    other write uses a resourceVersion from an earlier read: stale, so the API server answers 409."""

    def __init__(self, api: Api, names: list[str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.api, self.names, self.rng = api, names, rng
        self.stop = threading.Event()
        self.accepted = self.conflicts = 0
        self.errors: list[str] = []

    def run(self) -> None:
        old: dict[str, str] = {}
        while not self.stop.is_set():
            for name in self.names:
                try:
                    body = self.api.get(name)
                    rv = body["metadata"]["resourceVersion"]
                    time.sleep(self.rng.uniform(0.0, 0.05))
                    if self.rng.random() < 0.5 and name in old:
                        body["metadata"]["resourceVersion"] = old[name]
                    old[name] = rv
                    status: dict[str, Any] = body.setdefault("status", {})
                    status.update(phase="Pending", workers="0/0", readyWorkers=0)
                    self.api.custom.replace_namespaced_custom_object_status(GROUP, VERSION, self.api.ns, PLURAL,
                                                                            name, body, _preload_content=False)
                    self.accepted += 1
                except ApiException as exc:
                    if exc.status == 409:
                        self.conflicts += 1
                    else:
                        self.errors.append(f"{exc.status} {exc.reason}")


@pytest.mark.timeout(120)
def test_a_second_status_writer_is_outlasted(api: Api, operator_factory: OperatorFactory) -> None:
    op = operator_factory()
    op.start()
    model = Model({f"h{i}": Want({"w": 2}) for i in range(3)})
    for name, want in model.clusters.items():
        api.create(manifest(name, want.groups))
    wait_converged(api, model, "before the second writer", extra=op.log_tail)

    hammer = StatusHammer(api, sorted(model.clusters), random.Random(seed()))
    hammer.start()
    # Meanwhile the operator has work that changes status: scale one cluster up, step by step (a lower count
    # would wait for Ray to tell busy workers from idle ones, and there is no Ray here).
    deadline = time.monotonic() + HAMMER_SECONDS
    for n in (3, 4, 5):
        api.set_replicas("h0", {"w": n})
        time.sleep(max(0.0, (deadline - time.monotonic()) / 3))
    model.clusters["h0"].groups["w"] = 5
    time.sleep(max(0.0, deadline - time.monotonic()))
    hammer.stop.set()
    hammer.join(10)
    assert not hammer.errors, hammer.errors
    assert hammer.accepted and hammer.conflicts, (hammer.accepted, hammer.conflicts)

    took = wait_converged(api, model, "after the second writer stopped", timeout=CONVERGE, extra=op.log_tail)
    failures = _no_reconcile_failures(op.metrics(), op.log_path.read_text(errors="replace"))
    assert not failures, failures
    print(f"second writer: {hammer.accepted} status writes accepted, {hammer.conflicts} refused (409); "
          f"status right again {took:.1f}s after it stopped")


def _foreign_pod(name: str, cluster_labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": cluster_labels},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("labelled", [True, False], ids=["leftover-with-cluster-labels", "foreign-unlabelled"])
def test_names_already_taken_are_retried_until_free(labelled: bool, api: Api,
                                                    operator_factory: OperatorFactory) -> None:
    """The head pod's and head service's names are taken when the cluster is created (a predecessor
    of the same name still terminating, or someone else's objects). While they are taken the
    operator adopts nothing, does not churn the workers, and reports nothing as created that the
    API server refused; once they are free it creates its own, on its own, without a failed reconcile,
    well before its periodic resync would find them missing."""
    name = "taken"
    held = {labels.CLUSTER: name, labels.NODE_TYPE: labels.HEAD} if labelled else {"app": "someone-else"}
    head = labels.head_pod_name(name)
    svc = labels.head_service_name(name)
    api.core.create_namespaced_pod(api.ns, _foreign_pod(head, held))
    api.core.create_namespaced_service(api.ns, {"metadata": {"name": svc, "labels": held},
                                                "spec": {"clusterIP": "None", "ports": [{"port": 6379}]}})
    op = operator_factory()
    op.start()
    api.create(manifest(name, {"w": 2}))
    model = Model({name: Want({"w": 2})})
    workers: set[str] = set()
    hold = time.monotonic() + 4.0  # several turns meet the 409s
    while time.monotonic() < hold:
        workers |= {p["metadata"]["name"] for p in api.pods()
                    if p["metadata"]["labels"].get(labels.NODE_TYPE) == labels.WORKER}
        time.sleep(0.2)
    still = problems(api, model)
    assert f"{name}: 0 heads, want 1" in still, still  # the operator adopted nothing
    found: list[str] = []
    if len(workers) > 2:
        found.append(f"workers churned while {head} was taken: {len(workers)} worker pods in 4 s, want at most 2")
    claimed = [e["message"] for e in api.events() if e.get("reason") == "Created"
               and e["involvedObject"]["name"] == name and f"head {head}" in e["message"]]
    if claimed:
        found.append(f"{len(claimed)} 'Created' events claim the head while its name was taken (409): {claimed[:3]}")
    api.core.delete_namespaced_pod(head, api.ns, grace_period_seconds=0)
    api.core.delete_namespaced_service(svc, api.ns)
    try:
        took = wait_converged(api, model, f"after {head} and {svc} were freed", timeout=CONVERGE,
                              extra=lambda: op.log_tail(10))
    except AssertionError as exc:
        found.append(str(exc))
        took = float("nan")
    failures = _no_reconcile_failures(op.metrics(), op.log_path.read_text(errors="replace"))
    if failures:
        found.append(failures)
    print(f"labelled={labelled}: {len(workers)} worker pods while the name was taken; "
          f"converged {took:.1f}s after the names were freed")
    assert not found, "\n".join(found)
