"""observe_pod / failure_reason / owned_by: pod dicts → the facts the planner decides on."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.reconcile.observe import failure_reason, observe_pod, owned_by, slim_pod
from swarm_operator.resources import labels
from swarm_operator.resources.pods import build_worker_pod, head_hash, worker_hash
from tests.unit.operator_fixtures import NOW, UID, cluster, head_pod, iso, with_state, worker_pod

C = cluster()
NOT_ON_PATH = 'unable to start container process: exec: "ray": executable file not found in $PATH'


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param({}, None, id="running-ready"),
        pytest.param({"phase": "Pending", "ready": False, "node": None}, None, id="pending"),
        pytest.param({"ready": False}, None, id="running-not-ready"),
        pytest.param({"phase": "Failed", "ready": False}, "pod Failed", id="failed-bare"),
        pytest.param({"phase": "Failed", "ready": False, "reason": "Evicted",
                      "message": "The node was low on resource: memory."},
                     "pod Evicted: The node was low on resource: memory.", id="evicted-message-wins"),
        pytest.param({"phase": "Failed", "ready": False, "terminated": ("OOMKilled", 137)},
                     "pod Failed: Ray container ended (OOMKilled, exit code 137)", id="failed-with-container-detail"),
        pytest.param({"phase": "Failed", "ready": False, "reason": "Evicted", "message": "disk pressure",
                      "terminated": ("Error", 1)},
                     "pod Evicted: disk pressure", id="failed-message-beats-container"),
        pytest.param({"phase": "Succeeded", "ready": False, "terminated": ("Completed", 0)},
                     "pod Succeeded (Ray node exited)", id="succeeded-drained-node"),
        pytest.param({"ready": False, "terminated": ("Error", 1)},
                     "Ray container ended (Error, exit code 1)", id="running-ray-container-ended"),
        pytest.param({"ready": False, "terminated": ("Error", 1), "container": "sidecar"}, None,
                     id="running-sidecar-ended-is-not-a-failure"),
        pytest.param({"phase": "Failed", "ready": False, "terminated": ("StartError", 128, NOT_ON_PATH)},
                     f"pod Failed: Ray container ended (StartError, exit code 128): {NOT_ON_PATH}",
                     id="start-error-says-why"),
        pytest.param({"phase": "Failed", "ready": False, "terminated": ("Error", 1, "Traceback\n  line\n" + "x" * 300)},
                     "pod Failed: Ray container ended (Error, exit code 1): Traceback line " + "x" * 184 + "…",
                     id="long-message-one-line-of-200"),
    ],
)
def test_failure_reason(state: dict[str, Any], expected: str | None) -> None:
    assert failure_reason(worker_pod(C, **state)) == expected


@pytest.mark.parametrize(("terminated", "expected"), [
    (("StartError", 128, NOT_ON_PATH), True),
    (("ContainerCannotRun", 128), True),
    (("Error", 127), False),  # a shell's "command not found": the command ran
    (("OOMKilled", 137), False),
])
def test_start_failed(terminated: tuple[str, int] | tuple[str, int, str], expected: bool) -> None:
    assert observe_pod(worker_pod(C, phase="Failed", ready=False, terminated=terminated)).start_failed is expected
    assert not observe_pod(worker_pod(C, phase="Failed", ready=False, terminated=terminated,
                                      container="sidecar")).start_failed


def test_failure_reason_defaults_missing_terminated_reason() -> None:
    pod = worker_pod(C, ready=False)
    pod["status"]["containerStatuses"] = [{"name": "ray", "state": {"terminated": {"exitCode": 0}}}]
    assert failure_reason(pod) == "Ray container ended (Terminated, exit code 0)"


@pytest.mark.parametrize(
    ("pod", "field", "expected"),
    [
        pytest.param(head_pod(C), "node_type", labels.HEAD, id="head-type"),
        pytest.param(head_pod(C), "group", None, id="head-has-no-group"),
        pytest.param(head_pod(C), "template_hash", head_hash(C), id="head-hash"),
        pytest.param(worker_pod(C), "node_type", labels.WORKER, id="worker-type"),
        pytest.param(worker_pod(C), "group", "cpu", id="worker-group"),
        pytest.param(worker_pod(C), "name", "demo-cpu-aaaaa", id="worker-name"),
        pytest.param(worker_pod(C), "template_hash", worker_hash(C, C.worker_groups[0]), id="worker-hash"),
        pytest.param(worker_pod(C), "ready", True, id="ready"),
        pytest.param(worker_pod(C, ready=False), "ready", False, id="ready-condition-false"),
        pytest.param(worker_pod(C, phase="Pending"), "ready", False, id="ready-condition-but-not-running"),
        pytest.param(worker_pod(C, phase="Failed"), "ready", False, id="ready-condition-but-failed"),
        pytest.param(worker_pod(C), "deleting", False, id="not-deleting"),
        pytest.param(worker_pod(C, deleting=True), "deleting", True, id="deleting"),
        pytest.param(worker_pod(C, created=NOW - 5), "created", NOW - 5, id="created"),
        pytest.param(worker_pod(C), "scheduled", True, id="scheduled"),
        pytest.param(worker_pod(C, phase="Pending", node=None), "scheduled", False, id="unscheduled"),
        pytest.param(worker_pod(C, phase="Pending", node=None), "phase", "Pending", id="phase"),
        pytest.param(worker_pod(C, phase="Failed"), "failure", "pod Failed", id="failure"),
    ],
)
def test_observe_pod_fields(pod: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(observe_pod(pod), field) == expected


@pytest.mark.parametrize(
    ("state", "alive"),
    [
        pytest.param({}, True, id="healthy"),
        pytest.param({"phase": "Pending", "ready": False}, True, id="pending-is-alive"),
        pytest.param({"deleting": True}, False, id="deleting"),
        pytest.param({"phase": "Failed", "ready": False}, False, id="failed"),
        pytest.param({"phase": "Succeeded", "ready": False}, False, id="succeeded"),
    ],
)
def test_alive(state: dict[str, Any], alive: bool) -> None:
    assert observe_pod(worker_pod(C, **state)).alive is alive


def test_observe_pod_without_status_or_timestamps() -> None:
    """A pod straight from a create call (no status yet) counts as Pending, unscheduled, alive."""
    s = observe_pod(build_worker_pod(C, C.worker_groups[0], "zzzzz"))
    assert (s.phase, s.ready, s.scheduled, s.created, s.failure, s.alive) == ("Pending", False, False, 0.0, None, True)


@pytest.mark.parametrize(
    ("refs", "uid", "expected"),
    [
        pytest.param(None, UID, False, id="no-owner"),
        pytest.param([], UID, False, id="empty-owners"),
        pytest.param([{"uid": UID}], UID, True, id="owner"),
        pytest.param([{"uid": "old-uid"}], UID, False, id="earlier-cluster-same-name"),
        pytest.param([{"uid": "other"}, {"uid": UID}], UID, True, id="second-owner"),
    ],
)
def test_owned_by(refs: list[dict[str, str]] | None, uid: str, expected: bool) -> None:
    pod = with_state(worker_pod(C))
    if refs is None:
        del pod["metadata"]["ownerReferences"]
    else:
        pod["metadata"]["ownerReferences"] = refs
    assert owned_by(pod, uid) is expected


def test_builders_set_the_owner() -> None:
    assert owned_by(head_pod(C), UID) and owned_by(worker_pod(C), UID)


# -- the autoscaler's drain mark, and the slim cached pod --------------------------------------------


def annotated(annotations: dict[str, str] | None, **state: Any) -> dict[str, Any]:
    pod = worker_pod(C, **state)
    if annotations is None:
        pod["metadata"].pop("annotations", None)
    else:
        pod["metadata"]["annotations"] = dict(annotations)
    return pod


@pytest.mark.parametrize(
    ("annotations", "drained"),
    [
        pytest.param(None, False, id="no-annotations"),
        pytest.param({}, False, id="empty"),
        pytest.param({labels.DRAINED: iso(NOW)}, True, id="drained-at"),
        pytest.param({labels.DRAINED: ""}, True, id="present-even-if-empty"),
        pytest.param({"example.com/drained-at": iso(NOW), "swarm.io/other": "x"}, False, id="other-annotations"),
    ],
)
def test_drained_from_the_annotation(annotations: dict[str, str] | None, drained: bool) -> None:
    assert observe_pod(annotated(annotations)).drained is drained


def test_drained_is_the_swarm_annotation() -> None:
    assert labels.DRAINED == "swarm.io/drained-at"


@pytest.mark.parametrize(
    ("annotations", "kept"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({"prometheus.io/scrape": "true", "x.swarm.io/y": "1", "swarm.io": "1"}, None,
                     id="only-foreign-annotations-dropped-entirely"),
        pytest.param({labels.DRAINED: iso(NOW), "prometheus.io/scrape": "true", "swarm.io/note": "n"},
                     {labels.DRAINED: iso(NOW), "swarm.io/note": "n"}, id="swarm-annotations-kept"),
    ],
)
def test_slim_pod_keeps_only_swarm_annotations(annotations: dict[str, str] | None,
                                               kept: dict[str, str] | None) -> None:
    slim = slim_pod(annotated(annotations))
    assert slim["metadata"].get("annotations") == kept


SLIM_STATES = [
    pytest.param({}, id="running"),
    pytest.param({"phase": "Pending", "ready": False, "node": None}, id="pending"),
    pytest.param({"deleting": True}, id="deleting"),
    pytest.param({"phase": "Failed", "ready": False, "reason": "Evicted", "message": "disk"}, id="evicted"),
    pytest.param({"phase": "Succeeded", "ready": False, "terminated": ("Completed", 0)}, id="succeeded"),
    pytest.param({"ready": False, "terminated": ("OOMKilled", 137)}, id="ray-container-ended"),
    pytest.param({"phase": "Failed", "ready": False, "terminated": ("StartError", 128, NOT_ON_PATH * 40)},
                 id="start-error-long-message"),
]


@pytest.mark.parametrize("state", SLIM_STATES)
@pytest.mark.parametrize("annotations", [None, {labels.DRAINED: iso(NOW)}], ids=["plain", "drained"])
def test_slim_pod_observes_the_same(state: dict[str, Any], annotations: dict[str, str] | None) -> None:
    """Everything the operator reads survives slimming: observe_pod and owned_by agree on both forms."""
    full = annotated(annotations, resource_version="42", **state)
    full["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    full["status"]["podIP"] = "10.1.2.3"
    slim = slim_pod(full)
    assert observe_pod(slim) == observe_pod(full)
    assert owned_by(slim, UID) and not owned_by(slim, "other")
    assert slim["metadata"]["resourceVersion"] == "42"
    assert slim["status"]["podIP"] == "10.1.2.3"
    assert "managedFields" not in slim["metadata"]
    assert "containers" not in slim["spec"]
