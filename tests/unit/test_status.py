"""status.py: phase and conditions, lastTransitionTime kept, round trip through status, invalid specs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from swarm_operator.reasons import ConditionType
from swarm_operator.reconcile.backoff import GroupHealth
from swarm_operator.reconcile.observe import PodState
from swarm_operator.spec.types import ClusterSpec
from swarm_operator.status import (
    AutoscalerReport,
    Persisted,
    autoscaler_status,
    cluster_status,
    differs,
    invalid_status,
    merge_conditions,
    persisted_from_status,
    persisted_to_status,
)
from tests.unit.operator_fixtures import NOW, cluster, group, head, iso, worker, workers

C = cluster()  # one group "cpu", 2 replicas
TWO = cluster(groups=[group("cpu", 1), group("gpu", 2, gpu=4)])
FAILING = {"cpu": GroupHealth(restarts=3, consecutive_failures=2, last_failure=NOW - 10, backoff_until=NOW + 2)}


def status_of(c: ClusterSpec, pods: list[PodState], *, health: dict[str, GroupHealth] | None = None,
              desired: dict[str, int] | None = None, old: dict[str, Any] | None = None, now: float = NOW,
              head_restarts: int = 0, head_ip: str | None = None) -> dict[str, Any]:
    want = desired if desired is not None else {g.name: g.initial_replicas() for g in c.worker_groups}
    return cluster_status(c, pods, Persisted(health or {}, want, head_restarts), old or {}, now, head_ip)


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def flags(valid: str = "True", head: str = "True", workers_: str = "True", auto: str = "False",
          suspended: str = "False", failure: str = "False", rollout: str = "True") -> dict[str, str]:
    return {"Valid": valid, "HeadReady": head, "WorkersReady": workers_, "Autoscaling": auto,
            "Suspended": suspended, "ReplicaFailure": failure, "RolloutComplete": rollout}


@pytest.mark.parametrize(
    ("c", "pods", "health", "phase", "conds"),
    [
        pytest.param(C, [head(C), *workers(C, 2)], None, "Running", flags(), id="running"),
        pytest.param(C, [], None, "Pending", flags(head="False", workers_="False", rollout="False"),
                     id="nothing-yet"),
        pytest.param(C, [head(C, phase="Pending", ready=False), *workers(C, 2)], None, "Pending",
                     flags(head="False"), id="head-not-ready"),
        pytest.param(C, [head(C), *workers(C, 1)], None, "Pending", flags(workers_="False"), id="workers-starting"),
        pytest.param(C, [head(C), *workers(C, 1)], FAILING, "Degraded", flags(workers_="False", failure="True"),
                     id="workers-failing-degraded"),
        pytest.param(C, [head(C), *workers(C, 2)], FAILING, "Running", flags(failure="True"),
                     id="recovered-but-failures-remembered"),
        pytest.param(C, [head(C, phase="Pending", ready=False), *workers(C, 1)], FAILING, "Pending",
                     flags(head="False", workers_="False", failure="True"), id="head-down-is-pending-not-degraded"),
        pytest.param(C, [head(C, deleting=True), *workers(C, 2)], None, "Pending", flags(head="False", rollout="False"),
                     id="deleting-head-not-ready"),
        pytest.param(C, [head(C), *workers(C, 2, deleting=True)], None, "Pending", flags(workers_="False"),
                     id="deleting-workers-not-counted"),
        pytest.param(cluster({"suspend": True}), [], None, "Suspended",
                     flags(head="False", workers_="False", suspended="True", rollout="False"), id="suspended"),
        pytest.param(cluster({"autoscaling": {"enabled": True}}), [head(C), *workers(C, 2)], None, "Running",
                     flags(auto="True"), id="autoscaling"),
        pytest.param(cluster(groups=[]), [head(C)], None, "Running", flags(), id="head-only"),
        pytest.param(TWO, [head(TWO), *workers(TWO, 3, "cpu")], None, "Pending", flags(workers_="False"),
                     id="surplus-in-one-group-does-not-hide-an-empty-group"),
        pytest.param(TWO, [head(TWO), *workers(TWO, 1, "cpu"), *workers(TWO, 2, "gpu")], None, "Running", flags(),
                     id="two-groups-ready"),
    ],
)
def test_phase_and_conditions(c: ClusterSpec, pods: list[PodState], health: dict[str, GroupHealth] | None,
                              phase: str, conds: dict[str, str]) -> None:
    s = status_of(c, pods, health=health)
    assert s["phase"] == phase
    assert conditions(s) == conds
    assert [c["type"] for c in s["conditions"]] == list(ConditionType)


@pytest.mark.parametrize(
    ("c", "pods", "expected"),
    [
        pytest.param(C, [head(C), *workers(C, 2)], "2/2 workers ready", id="all"),
        pytest.param(C, [head(C), *workers(C, 1)], "1/2 workers ready; short: cpu", id="one-short"),
        pytest.param(TWO, [*workers(TWO, 3, "cpu")], "3/3 workers ready; short: gpu", id="surplus-elsewhere"),
        pytest.param(TWO, [], "0/3 workers ready; short: cpu, gpu", id="none"),
    ],
)
def test_workers_ready_message(c: ClusterSpec, pods: list[PodState], expected: str) -> None:
    (cond,) = [x for x in status_of(c, pods)["conditions"] if x["type"] == "WorkersReady"]
    assert cond["message"] == expected


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param([head(C), *workers(C, 2)], "head pod demo-head is ready", id="ready"),
        pytest.param([head(C, phase="Pending", ready=False)], "head pod demo-head is Pending", id="pending"),
        pytest.param([], "no head pod", id="missing"),
    ],
)
def test_head_ready_message(pods: list[PodState], expected: str) -> None:
    (cond,) = [c for c in status_of(C, pods)["conditions"] if c["type"] == "HeadReady"]
    assert cond["message"] == expected


def test_summary_fields() -> None:
    pods = [head(TWO), *workers(TWO, 1, "cpu"), *workers(TWO, 1, "gpu"),
            worker(TWO, "gpu", "slow1", phase="Pending", ready=False)]
    s = status_of(TWO, pods, head_restarts=2, head_ip="10.0.0.7")
    assert (s["workers"], s["readyWorkers"], s["desiredWorkers"], s["gpus"]) == ("2/3", 2, 3, 4)
    assert s["observedGeneration"] == 1
    assert s["head"] == {
        "podName": "demo-head",
        "serviceName": "demo-head-svc",
        "ready": True,
        "gcsAddress": "demo-head-svc.ns.svc:6379",
        "dashboardURL": "http://demo-head-svc.ns.svc:8265",
        "clientAddress": "ray://demo-head-svc.ns.svc:10001",
        "restarts": 2,
        "generation": 0,
        "consecutiveFailures": 0,
        "podIP": "10.0.0.7",
    }
    assert [(g["name"], g["desiredReplicas"], g["currentReplicas"], g["readyReplicas"]) for g in s["workerGroups"]] \
        == [("cpu", 1, 1, 1), ("gpu", 2, 2, 1)]


def test_the_head_of_a_later_generation_is_named_after_it_and_is_the_one_status_reports() -> None:
    stuck = dataclasses.replace(head(C, phase="Running", ready=True), deleting=True)
    current = dataclasses.replace(head(C, phase="Pending", ready=False), name="demo-head-2", head_generation=2)
    s = cluster_status(C, [stuck, current], Persisted({}, {"cpu": 2}, head_generation=2), {}, NOW, None)
    assert (s["head"]["podName"], s["head"]["generation"], s["head"]["ready"]) == ("demo-head-2", 2, False)
    (cond,) = [c for c in s["conditions"] if c["type"] == "HeadReady"]
    assert cond["message"] == "head pod demo-head-2 is Pending", "never the old head stuck Terminating"


def test_no_pod_ip_key_without_an_ip() -> None:
    assert "podIP" not in status_of(C, [head(C)])["head"]


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        pytest.param(GroupHealth(), {"restarts": 0, "consecutiveFailures": 0}, id="never-failed"),
        pytest.param(GroupHealth(3, 2, NOW - 10, NOW + 2),
                     {"restarts": 3, "consecutiveFailures": 2, "lastFailureTime": iso(NOW - 10),
                      "backoffUntil": iso(NOW + 2).replace("Z", ".000Z")}, id="in-backoff"),
        pytest.param(GroupHealth(3, 0, NOW - 900, 0.0),
                     {"restarts": 3, "consecutiveFailures": 0, "lastFailureTime": iso(NOW - 900)},
                     id="settled-no-backoff-key"),
        pytest.param(GroupHealth(3, 2, NOW - 10, NOW - 1),
                     {"restarts": 3, "consecutiveFailures": 2, "lastFailureTime": iso(NOW - 10)},
                     id="expired-backoff-not-written"),
        pytest.param(GroupHealth(3, 1, NOW - 0.3, NOW + 0.7),
                     {"restarts": 3, "consecutiveFailures": 1, "lastFailureTime": iso(NOW - 1),
                      "backoffUntil": iso(NOW).replace("Z", ".700Z")}, id="backoff-to-the-millisecond"),
    ],
)
def test_group_health_fields(health: GroupHealth, expected: dict[str, Any]) -> None:
    (entry,) = status_of(C, [], health={"cpu": health})["workerGroups"]
    assert {k: v for k, v in entry.items() if k not in ("name", "desiredReplicas", "currentReplicas",
                                                             "updatedReplicas",
                                                         "readyReplicas")} == expected


def test_replica_failure_message_lists_groups() -> None:
    health = {"cpu": GroupHealth(3, 2, NOW - 10, 0.0), "gpu": GroupHealth(1, 1, NOW - 5, 0.0)}
    (cond,) = [c for c in status_of(TWO, [], health=health)["conditions"] if c["type"] == "ReplicaFailure"]
    assert cond["message"] == "cpu: 2 consecutive failures; gpu: 1 consecutive failures"


@pytest.mark.parametrize(
    ("old", "key", "present"),
    [
        pytest.param({"autoscaler": {"lastDecision": "cpu 1→2"}}, "autoscaler", True, id="autoscaler-kept"),
        pytest.param({}, "autoscaler", False, id="no-autoscaler-invented"),
    ],
)
def test_fields_written_by_others_are_carried(old: dict[str, Any], key: str, present: bool) -> None:
    s = status_of(C, [], old=old)
    assert (key in s) is present
    if present:
        assert s[key] == old[key]


# -- merge_conditions ----------------------------------------------------------------------------

T0 = iso(NOW - 3600)


@pytest.mark.parametrize(
    ("old", "new_status", "expected_time"),
    [
        pytest.param([], "True", iso(NOW), id="first-time"),
        pytest.param([{"type": "HeadReady", "status": "True", "lastTransitionTime": T0}], "True", T0,
                     id="unchanged-keeps-time"),
        pytest.param([{"type": "HeadReady", "status": "False", "lastTransitionTime": T0}], "True", iso(NOW),
                     id="flipped-moves-time"),
        pytest.param([{"type": "HeadReady", "status": "True"}], "True", iso(NOW), id="old-without-time"),
        pytest.param([{"type": "Valid", "status": "True", "lastTransitionTime": T0}], "True", iso(NOW),
                     id="other-type-does-not-count"),
    ],
)
def test_merge_conditions_transition_time(old: list[dict[str, Any]], new_status: str, expected_time: str) -> None:
    new = [{"type": "HeadReady", "status": new_status, "reason": "R", "message": "changed text"}]
    (merged,) = merge_conditions(old, new, NOW, generation=7)
    assert merged == {**new[0], "lastTransitionTime": expected_time, "observedGeneration": 7}


def test_merge_conditions_drops_conditions_not_computed() -> None:
    old = [{"type": "Gone", "status": "True", "lastTransitionTime": T0}]
    assert [c["type"] for c in merge_conditions(old, [{"type": "Valid", "status": "True"}], NOW, 1)] == ["Valid"]


def test_status_settles_so_nothing_is_rewritten() -> None:
    """Computed again a minute later from what it wrote, the status must not differ (no write per turn)."""
    pods = [head(C), *workers(C, 1)]
    first = status_of(C, pods, health=FAILING)
    again = status_of(C, pods, health=FAILING, old=first, now=NOW + 1)  # backoffUntil still ahead
    assert not differs(first, again)
    later = status_of(C, pods, health=FAILING, old=first, now=NOW + 60)
    assert differs(first, later), "backoffUntil expired: the status must change"
    assert {c["type"]: c["lastTransitionTime"] for c in later["conditions"]} == \
        {c["type"]: c["lastTransitionTime"] for c in first["conditions"]}


def test_condition_flip_moves_only_that_condition() -> None:
    first = status_of(C, [head(C), *workers(C, 1)])
    second = status_of(C, [head(C), *workers(C, 2)], old=first, now=NOW + 30)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times.pop("WorkersReady") == iso(NOW + 30)
    assert set(times.values()) == {iso(NOW)}


# -- Persisted: what the next turn (or the next operator process) reads back ----------------------

SCALED = {"cpu": NOW - 120.0, "gpu": NOW - 7.0}


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param(Persisted({"cpu": GroupHealth()}, {"cpu": 2}), id="fresh"),
        pytest.param(Persisted({"cpu": GroupHealth(5, 2, NOW - 3, NOW + 4)}, {"cpu": 7}, 3), id="in-backoff"),
        pytest.param(Persisted({"cpu": GroupHealth(5, 1, NOW - 3, NOW + 0.25)}, {"cpu": 1}), id="sub-second-backoff"),
        pytest.param(Persisted({"cpu": GroupHealth(1, 0, NOW - 900, 0.0), "gpu": GroupHealth(2, 2, NOW - 1, NOW + 2)},
                               {"cpu": 0, "gpu": 5}, 1, SCALED), id="two-groups-scaled-up"),
    ],
)
def test_persisted_round_trip(kept: Persisted) -> None:
    assert persisted_from_status(persisted_to_status(kept, NOW)) == kept


def test_persisted_survives_the_whole_status() -> None:
    """What cluster_status writes is what the next turn reads, next to every observed field."""
    kept = Persisted({"cpu": GroupHealth(3, 2, NOW - 10, NOW + 2), "gpu": GroupHealth()}, {"cpu": 1, "gpu": 4}, 2,
                     {"gpu": NOW - 60})
    s = cluster_status(TWO, [head(TWO), *workers(TWO, 1)], kept, {}, NOW, None, {"lastError": ""})
    assert persisted_from_status(s) == kept
    assert s["autoscaler"] == {"lastError": "", "lastScaleUpTime": {"gpu": iso(NOW - 60)}}


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"workerGroups": [{"name": "cpu", "desiredReplicas": 2, "restarts": 0, "consecutiveFailures": 0}],
                      "head": {"restarts": 0, "generation": 0}, "autoscaler": {"lastScaleUpTime": {}}}, id="fresh"),
        pytest.param({"workerGroups": [{"name": "cpu", "desiredReplicas": 3, "restarts": 4, "consecutiveFailures": 1,
                                        "lastFailureTime": iso(NOW - 1),
                                        "backoffUntil": iso(NOW + 1).replace("Z", ".500Z")}],
                      "head": {"restarts": 2, "generation": 3},
                      "autoscaler": {"lastScaleUpTime": {"cpu": iso(NOW - 30)}}},
                     id="failing-on-a-later-head-generation"),
    ],
)
def test_status_round_trip(status: dict[str, Any]) -> None:
    assert persisted_to_status(persisted_from_status(status), NOW) == status


def test_an_expired_backoff_is_not_written() -> None:
    kept = Persisted({"cpu": GroupHealth(1, 1, NOW - 5, NOW - 1)}, {"cpu": 1})
    (entry,) = persisted_to_status(kept, NOW)["workerGroups"]
    assert "backoffUntil" not in entry and entry["lastFailureTime"] == iso(NOW - 5)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({}, Persisted(), id="empty"),
        pytest.param({"workerGroups": [{"desiredReplicas": 3}]}, Persisted(), id="entry-without-name"),
        pytest.param({"workerGroups": [{"name": "cpu", "desiredReplicas": "3"}]}, Persisted({"cpu": GroupHealth()}),
                     id="non-int-target-ignored"),
        pytest.param({"workerGroups": [{"name": "cpu", "desiredReplicas": 0}]},
                     Persisted({"cpu": GroupHealth()}, {"cpu": 0}), id="zero-target-kept"),
        pytest.param({"head": {"restarts": 4}}, Persisted(head_restarts=4), id="head-restarts"),
        pytest.param({"autoscaler": {"lastScaleUpTime": {"cpu": iso(NOW), "gpu": 7}}},
                     Persisted(last_scale_ups={"cpu": NOW}), id="scale-up-times-not-strings-ignored"),
    ],
)
def test_persisted_from_partial_status(status: dict[str, Any], expected: Persisted) -> None:
    assert persisted_from_status(status) == expected


# -- status.autoscaler: the turn's record of what the autoscaler saw and did -----------------------

OLD_RECORD = {"pendingDemand": "none", "infeasibleDemand": "none", "lastError": "", "rayVersion": "2.60.0",
              "rayVersionWarning": "", "lastDecisionTime": iso(NOW - 60), "lastDecision": "cpu 1→2: 1 pending {CPU:1}"}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        pytest.param(AutoscalerReport(error="reading Ray state: refused"),
                     {**OLD_RECORD, "lastError": "reading Ray state: refused"}, id="read-error-keeps-the-rest"),
        pytest.param(AutoscalerReport(pending_demand="2× {CPU:1}", ray_version="2.60.0"),
                     {**OLD_RECORD, "pendingDemand": "2× {CPU:1}"}, id="no-decision-keeps-the-last"),
        pytest.param(AutoscalerReport(decisions=("cpu 2→1: 1 idle > 60s", "drained demo-cpu-x: idle")),
                     {"pendingDemand": "none", "infeasibleDemand": "none", "lastError": "", "rayVersion": "unknown",
                      "rayVersionWarning": "", "lastDecisionTime": iso(NOW),
                      "lastDecision": "cpu 2→1: 1 idle > 60s; drained demo-cpu-x: idle"},
                     id="decision-recorded"),
        pytest.param(AutoscalerReport(infeasible_demand="1× {TPU:1}", ray_version="2.60.0"),
                     {**OLD_RECORD, "infeasibleDemand": "1× {TPU:1}"}, id="infeasible"),
        pytest.param(AutoscalerReport(ray_version="2.30.0", ray_version_warning="the cluster runs Ray 2.30.0; …"),
                     {**OLD_RECORD, "rayVersion": "2.30.0", "rayVersionWarning": "the cluster runs Ray 2.30.0; …"},
                     id="version-warning"),
    ],
)
def test_autoscaler_status(report: AutoscalerReport, expected: dict[str, Any]) -> None:
    assert autoscaler_status(OLD_RECORD, report, NOW) == expected


def test_autoscaler_status_first_record() -> None:
    assert autoscaler_status({}, AutoscalerReport(), NOW) == {
        "pendingDemand": "none", "infeasibleDemand": "none", "lastError": "", "rayVersion": "unknown",
        "rayVersionWarning": ""}


# -- invalid specs --------------------------------------------------------------------------------


def test_invalid_status_keeps_everything_else() -> None:
    old = status_of(C, [head(C), *workers(C, 2)], head_restarts=1)
    s = invalid_status("spec.workerGroups[0].template.spec.containers: must be a list", old, 4, NOW + 60)
    assert s["phase"] == "Invalid"
    assert s["observedGeneration"] == 4
    assert s["workerGroups"] == old["workerGroups"] and s["head"] == old["head"]
    valid, *others = s["conditions"]
    assert valid == {"type": "Valid", "status": "False", "reason": "InvalidSpec",
                     "message": "spec.workerGroups[0].template.spec.containers: must be a list",
                     "lastTransitionTime": iso(NOW + 60), "observedGeneration": 4}
    assert others == [c for c in old["conditions"] if c["type"] != "Valid"]


@pytest.mark.parametrize(
    ("old_conditions", "expected_time"),
    [
        pytest.param([], iso(NOW), id="first-report"),
        pytest.param([{"type": "Valid", "status": "False", "lastTransitionTime": T0}], T0, id="still-invalid"),
        pytest.param([{"type": "Valid", "status": "True", "lastTransitionTime": T0}], iso(NOW), id="became-invalid"),
    ],
)
def test_invalid_status_transition_time(old_conditions: list[dict[str, Any]], expected_time: str) -> None:
    s = invalid_status("bad", {"conditions": old_conditions}, 2, NOW)
    assert [(c["type"], c["lastTransitionTime"]) for c in s["conditions"]] == [("Valid", expected_time)]


def test_invalid_message_is_bounded() -> None:
    s = invalid_status("x" * 5000, {}, 1, NOW)
    assert len(s["conditions"][0]["message"]) == 1000


def test_valid_again_flips_the_condition_back() -> None:
    bad = invalid_status("bad", {}, 1, NOW)
    good = status_of(C, [], old=bad, now=NOW + 5)
    (valid,) = [c for c in good["conditions"] if c["type"] == "Valid"]
    assert (valid["status"], valid["lastTransitionTime"], good["phase"]) == ("True", iso(NOW + 5), "Pending")


# -- differs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "wanted", "expected"),
    [
        pytest.param({}, {}, False, id="both-empty"),
        pytest.param({"phase": "Running"}, {"phase": "Running"}, False, id="same"),
        pytest.param({"phase": "Running"}, {"phase": "Pending"}, True, id="changed"),
        pytest.param({}, {"phase": "Running"}, True, id="new-key"),
        pytest.param({"phase": "Running", "autoscaler": {"x": 1}}, {"phase": "Running"}, False,
                     id="fields-others-write-ignored"),
        pytest.param({"workerGroups": [{"name": "a"}]}, {"workerGroups": [{"name": "a"}, {"name": "b"}]}, True,
                     id="nested-list"),
        pytest.param({"head": {"ready": True}}, {"head": {"ready": True}}, False, id="nested-same"),
    ],
)
def test_differs(current: dict[str, Any], wanted: dict[str, Any], expected: bool) -> None:
    assert differs(current, wanted) is expected


OLD_IMAGE = cluster({"image": "rayproject/ray:2.59.0"})


@pytest.mark.parametrize(
    ("c", "pods", "state", "reason", "message", "updated"),
    [
        pytest.param(C, [head(C), *workers(C, 2)], "True", "AllPodsUpdated", "every pod runs the current spec", 2,
                     id="current"),
        pytest.param(C, [head(C), *workers(C, 1)], "True", "AllPodsUpdated", "every pod runs the current spec", 1,
                     id="a-missing-worker-is-scaling-not-rollout"),
        pytest.param(C, [head(C), *workers(OLD_IMAGE, 1), *workers(C, 1)], "False", "RollingUpdate",
                     "cpu: 1 of 2 workers outdated", 1, id="one-worker-behind"),
        pytest.param(C, [head(OLD_IMAGE), *workers(C, 2)], "False", "RollingUpdate", "head outdated", 2,
                     id="head-behind"),
        pytest.param(cluster({"updateStrategy": {"type": "OnDelete"}}), [head(C), *workers(OLD_IMAGE, 2)], "False",
                     "WaitingForDeletion", "cpu: 2 of 2 workers outdated", 0, id="on-delete-waits"),
        pytest.param(C, [head(C), *workers(C, 2), *workers(TWO, 1, "gpu")], "False", "RollingUpdate",
                     "1 worker(s) of removed groups", 2, id="removed-group"),
    ],
)
def test_rollout_complete(c: ClusterSpec, pods: list[PodState], state: str, reason: str, message: str,
                          updated: int) -> None:
    s = status_of(c, pods)
    (cond,) = [x for x in s["conditions"] if x["type"] == "RolloutComplete"]
    assert (cond["status"], cond["reason"], cond["message"]) == (state, reason, message)
    assert s["workerGroups"][0]["updatedReplicas"] == updated


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param([], "spec.suspend is true", id="all-gone"),
        pytest.param([head(C)], "spec.suspend is true", id="only-the-head-left"),
        pytest.param([head(C), *workers(C, 2), worker(C, suffix="gone1", deleting=True)],
                     "spec.suspend is true; 2 worker(s) still running (0 draining in Ray), then the head goes",
                     id="workers-wait"),
        pytest.param([head(C), dataclasses.replace(worker(C), drained=True)],
                     "spec.suspend is true; 1 worker(s) still running (1 draining in Ray), then the head goes",
                     id="a-busy-worker-draining"),
    ],
)
def test_suspended_says_what_it_waits_for(pods: list[PodState], expected: str) -> None:
    (cond,) = [c for c in status_of(cluster({"suspend": True}), pods)["conditions"] if c["type"] == "Suspended"]
    assert cond["message"] == expected


def test_a_cluster_held_by_kueue_says_kueues_reason() -> None:
    held = "waiting for Kueue to admit Workload swarmcluster-c-abcde (LocalQueue lq): insufficient quota"
    # the turn hands the status a held cluster as suspended (spec.suspend itself is not written)
    s = cluster_status(cluster({"suspend": True}), [head(C)], Persisted({}, {"cpu": 0}, 0), {}, NOW, None, None,
                       held=held)
    (cond,) = [c for c in s["conditions"] if c["type"] == "Suspended"]
    assert (s["phase"], cond["status"], cond["reason"], cond["message"]) == ("Suspended", "True", "HeldByKueue", held)


@pytest.mark.parametrize(("quota", "old", "expected"), [
    pytest.param("quota: admitted 1 of 3 cpu workers", {}, {"quota": "quota: admitted 1 of 3 cpu workers"},
                 id="bounded"),
    pytest.param("", {"autoscaler": {"quota": "quota: admitted 1 of 3 cpu workers", "lastError": ""}},
                 {"quota": "", "lastError": ""}, id="no-longer-bounded-is-cleared"),
    pytest.param("", {}, None, id="never-bounded-writes-nothing"),
])
def test_quota_goes_into_status_autoscaler(quota: str, old: dict[str, Any], expected: dict[str, Any] | None) -> None:
    s = cluster_status(cluster({}), [], Persisted({}, {"cpu": 0}, 0), old, NOW, None, None, quota=quota)
    assert s.get("autoscaler") == expected
