"""bench/autoscale_real.py's pure parts: a run's figures from its pod watch, driver result and Events; the
run order; the targets."""

from __future__ import annotations

import pytest

from bench.autoscale_real import (
    ClusterEvent,
    PodEvent,
    PodLife,
    Run,
    Spread,
    TaskRecord,
    busy_deleted,
    check_targets,
    explained,
    idle_before_deletion,
    known_spread,
    markdown,
    measure,
    peak_alive,
    pod_lives,
    pod_seconds,
    raycluster_body,
    result_line,
    run_order,
    simulated_trace,
    summarize,
    swarmcluster_body,
)

EVENTS = [
    PodEvent(0.0, "c-head", "", False),
    PodEvent(10.0, "w1", "cpu", False),
    PodEvent(11.0, "w2", "cpu", False),
    PodEvent(12.0, "w1", "cpu", False),  # a status update: not a new pod
    PodEvent(50.0, "w1", "cpu", True),  # deletionTimestamp set
    PodEvent(52.0, "w1", "cpu", True),  # DELETED later: the first sighting counts
    PodEvent(60.0, "g1", "gpu", False),
]


def test_lives_leave_out_the_head_and_count_from_first_sightings() -> None:
    lives = pod_lives(list(reversed(EVENTS)))  # arrival order is restored by time
    assert lives == {"w1": PodLife("w1", "cpu", 10.0, 50.0), "w2": PodLife("w2", "cpu", 11.0),
                     "g1": PodLife("g1", "gpu", 60.0)}


def test_pod_seconds_count_a_pod_not_deleted_until_the_end() -> None:
    assert pod_seconds(pod_lives(EVENTS), end=100.0) == pytest.approx(40 + 89 + 40)


def test_peak_counts_pods_alive_at_once_and_a_deletion_at_the_same_instant_goes_first() -> None:
    assert peak_alive(pod_lives(EVENTS)) == 2  # w1 went at 50, before g1 came at 60
    assert peak_alive({"a": PodLife("a", "cpu", 0, 5), "b": PodLife("b", "cpu", 5, 9)}) == 1
    assert peak_alive({}) == 0


@pytest.mark.parametrize(("task", "busy"), [
    (TaskRecord("cpu", "w1", 30.0, 60.0), True),   # ran across the deletion
    (TaskRecord("cpu", "w1", 30.0, 49.5), True),   # ended within the watch's latency: counted busy
    (TaskRecord("cpu", "w1", 30.0, 48.0), False),  # ended well before
    (TaskRecord("cpu", "w1", 51.0, 70.0), False),  # started after (a pod name never comes back)
    (TaskRecord("cpu", "w2", 30.0, 60.0), False),  # another pod, never deleted
])
def test_a_pod_is_busy_when_a_task_ran_on_it_as_its_deletion_was_seen(task: TaskRecord, busy: bool) -> None:
    assert busy_deleted(pod_lives(EVENTS), [task]) == (["w1"] if busy else [])


def test_idle_before_deletion_runs_from_a_pods_last_task_to_its_deletion() -> None:
    tasks = [TaskRecord("cpu", "w1", 12.0, 15.0), TaskRecord("cpu", "w1", 12.0, 18.0), TaskRecord("cpu", "w2", 12, 30)]
    assert idle_before_deletion(pod_lives(EVENTS), tasks) == [32.0]  # w2 is not deleted; g1 ran nothing


def test_an_action_is_explained_by_an_event_that_gives_a_cause_close_to_it() -> None:
    lives = pod_lives(EVENTS)  # actions at 10, 11, 50 (w1 deleted), 60
    events = [ClusterEvent(5.0, "ScaledUp", "cpu 0→2: 40 pending {CPU: 1}"),
              ClusterEvent(49.0, "CreatedWorkerPod", "Created worker Pod ns/w3"),  # what, not why
              ClusterEvent(95.0, "ScaledDown", "cpu: w1 idle 30s")]  # too late for anything
    assert explained(lives, events) == (2, 4)
    assert explained({}, events) == (0, 0)


def test_measure_fills_a_run_from_the_driver_and_the_watch() -> None:
    result = {"tasks": [["cpu", "w1", 20.0, 40.0], ["cpu", "w2", 21.0, 45.0], ["gpu", "g1", 70.0, 80.0]],
              "failed": 0, "retried": 1, "failed_attempts": 1, "done": 81.0, "marks": {"gpu_submitted": 55.0}}
    run = Run("swarm", "gpu-after-cpu")
    measure(run, 2.0, result, EVENTS, [ClusterEvent(8.0, "ScaledUp", "cpu 0→2: 16 pending")], end=100.0)
    assert (run.first_task_s, run.all_done_s, run.pods_created, run.peak_pods) == (18.0, 79.0, 3, 2)
    assert (run.attempts_retried, run.attempts_failed, run.busy_pods_deleted) == (1, 1, [])
    assert (run.gpu_pods_before_gpu_demand, run.cpu_tasks_on_gpu_pods, run.workers_left) == (0, 0, 2)
    assert (run.explained_actions, run.scaling_actions) == (2, 4)
    assert run.idle_before_deletion_s == [10.0]
    assert run.task_records[0] == ["cpu", "w1", 18.0, 38.0]
    assert run.finished
    failed = Run("swarm", "burst")
    measure(failed, 2.0, {**result, "failed": 1}, EVENTS, [], end=100.0)
    assert not failed.finished


def test_gpu_pods_started_before_gpu_demand_and_cpu_tasks_on_them_are_counted() -> None:
    result = {"tasks": [["cpu", "g1", 61.0, 70.0]], "failed": 0, "done": 90.0, "marks": {"gpu_submitted": 75.0}}
    run = Run("kuberay-v2", "gpu-after-cpu")
    measure(run, 0.0, result, EVENTS, [], end=100.0)
    assert (run.gpu_pods_before_gpu_demand, run.cpu_tasks_on_gpu_pods) == (1, 1)


def test_a_pod_holding_a_referenced_object_is_busy_until_the_read_and_lost_objects_are_counted() -> None:
    # w1 was seen deleting at 50 (EVENTS): its object, made at 30, was read back at 90, so it was busy.
    result = {"tasks": [["object", "w1", 30.0, 90.0]], "failed": 0, "done": 91.0,
              "marks": {"read": 90.0, "objects_lost": 1}}
    run = Run("swarm", "actors-objects")
    measure(run, 0.0, result, EVENTS, [], end=100.0)
    assert (run.busy_pods_deleted, run.objects_lost) == (["w1"], 1)
    missed = [what for what, met in check_targets(summarize([run]), [run]) if not met]
    assert "referenced objects lost by ours: 1, want 0" in missed and "busy pods deleted: 1, want 0" in missed


def test_rounds_alternate_who_goes_first() -> None:
    assert run_order(["swarm", "kuberay-v2"], 3) == ["swarm", "kuberay-v2", "kuberay-v2", "swarm",
                                                     "swarm", "kuberay-v2"]


def test_result_line_is_the_drivers_json_or_nothing() -> None:
    assert result_line('noise\nBENCH-RESULT {"done": 3}\n') == {"done": 3}
    assert result_line("Traceback …") == {}


def _runs(workload: str, operator: str, done: list[float], pod_s: list[float], busy: int = 0) -> list[Run]:
    return [Run(operator, workload, finished=True, all_done_s=d, pod_seconds=p,
                busy_pods_deleted=["x"] * busy if i == 0 else [])
            for i, (d, p) in enumerate(zip(done, pod_s, strict=True))]


def test_targets_ours_not_worse_beyond_the_spread_better_on_three_and_no_busy_pod() -> None:
    runs = []
    for w in ("a", "b", "c"):  # ours better, spreads apart
        runs += _runs(w, "swarm", [50, 51, 52], [100, 101, 102]) + _runs(w, "kuberay-v2", [60, 61, 62], [200, 201, 202])
    runs += _runs("d", "swarm", [61, 62, 63], [100, 101, 102]) + _runs("d", "kuberay-v2", [60, 62, 64], [200, 201, 202])
    checks = check_targets(summarize(runs), runs)
    assert all(met for _, met in checks), checks
    # Worse beyond their spread on one workload, and a busy pod once: both misses.
    runs += _runs("e", "swarm", [70, 71, 72], [100, 101, 102], busy=1) + _runs("e", "kuberay-v2", [60, 61, 62],
                                                                             [200, 201, 202])
    missed = [what for what, met in check_targets(summarize(runs), runs) if not met]
    assert missed == ["e: all done s ours 71 [70–72] not worse than kuberay-v2 61 [60–62]",
                      "busy pods deleted: 1, want 0"]


def test_better_on_fewer_than_three_workloads_is_a_miss() -> None:
    runs = _runs("a", "swarm", [50], [100]) + _runs("a", "kuberay-v2", [60], [200])
    assert ("ours better on both measures with spreads apart on 1 workloads, want ≥ 3 of 5", False) in \
        check_targets(summarize(runs), runs)


def test_unfinished_runs_stay_out_of_the_medians_and_the_table_has_a_row_per_side() -> None:
    runs = [*_runs("a", "swarm", [50, 52], [100, 102]), Run("swarm", "a", all_done_s=999.0, pod_seconds=999.0)]
    summary = summarize(runs)
    assert summary[("a", "swarm")]["all done s"] == Spread(51, 50, 52)
    table = markdown(summary, runs).splitlines()
    assert table[2].startswith("| a | swarm | 2 | ")


def test_both_clusters_get_the_same_groups_and_settings() -> None:
    ours = swarmcluster_body("c", "p")["spec"]
    theirs = raycluster_body("c", "p", "v2")["spec"]
    assert ours["autoscaling"]["idleTimeoutSeconds"] == theirs["autoscalerOptions"]["idleTimeoutSeconds"] == 30
    assert theirs["autoscalerOptions"]["version"] == "v2"
    for group, spec in zip(ours["workerGroups"], theirs["workerGroupSpecs"], strict=True):
        assert (group["name"], group["minReplicas"], group["maxReplicas"]) == \
            (spec["groupName"], spec["minReplicas"], spec["maxReplicas"])
        limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert (str(group["resources"]["cpu"]), group["resources"].get("gpu")) == \
            (limits["cpu"], int(limits["nvidia.com/gpu"]) if "nvidia.com/gpu" in limits else None)
        assert group["template"]["spec"] == {k: spec["template"]["spec"][k] for k in ("nodeSelector", "tolerations")}


def test_a_measure_unknown_in_some_runs_is_summed_up_over_the_others() -> None:
    assert known_spread([float("nan"), 3.0, 1.0]) == Spread(2.0, 1.0, 3.0)
    assert str(known_spread([float("nan")])) == "nan [nan–nan]"


def test_the_simulators_trace_holds_the_workloads_tasks_on_the_benchmarks_groups() -> None:
    trace = simulated_trace("two-waves")
    ((_, work),) = trace.episodes
    assert sorted({w.arrival for w in work}) == [0.0, 60.0] and len(work) == 32
    assert all(w.bundles == ({"CPU": 1.0},) and w.duration == 20.0 for w in work)
    cpu, gpu = trace.types
    assert (cpu.name, cpu.resources["CPU"], cpu.max_nodes, gpu.name, gpu.resources["GPU"], gpu.max_nodes) == \
        ("cpu", 8.0, 6, "gpu", 1.0, 3)
