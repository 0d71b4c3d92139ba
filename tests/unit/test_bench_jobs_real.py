"""bench/jobs_real.py's pure parts: what a job's status says, a job's times from the polls, executions counted,
the figures per run and over runs, the targets."""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.common import Spread
from bench.jobs_real import (
    JobTimes,
    Run,
    Seen,
    check_targets,
    entrypoint,
    executions,
    jobs_per_minute,
    markdown,
    rayjob_body,
    run_from_json,
    seen_job,
    summarize,
    swarmjob_body,
    turns,
)


def test_a_swarmjob_and_a_rayjob_read_alike() -> None:
    ours = {"status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running", "clusterName": "j00-1",
                       "jobId": "j00-uid-1"}}
    theirs = {"status": {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete", "rayClusterName": "j00-x7"}}
    assert seen_job("swarm", ours) == Seen("RUNNING", False, False, "j00-1", "j00-uid-1")
    assert seen_job("kuberay", theirs) == Seen("SUCCEEDED", True, False, "j00-x7")
    assert seen_job("kuberay", {"status": {"jobDeploymentStatus": "Failed"}}) == Seen("", True, True, "")
    assert seen_job("swarm", {}) == Seen("", False, False, "")


def test_a_jobs_times_follow_its_polls() -> None:
    t = JobTimes("j00", applied=1.0)
    t.observe(Seen("", False, False, ""), cluster_alive=False, at=2.0)  # nothing written yet; no cluster known
    t.observe(Seen("PENDING", False, False, "c"), cluster_alive=True, at=3.0)
    assert (t.running, t.finished, t.gone) == (None, None, None)
    t.observe(Seen("PENDING", False, False, "c"), cluster_alive=True, at=3.5, head_ready=True)
    t.observe(Seen("RUNNING", False, False, "c"), cluster_alive=True, at=4.0, head_ready=True)
    t.observe(Seen("SUCCEEDED", True, False, "c"), cluster_alive=True, at=15.0)
    t.observe(Seen("SUCCEEDED", True, False, "c"), cluster_alive=False, at=20.0)
    t.observe(None, cluster_alive=False, at=25.0)  # later polls change nothing
    assert (t.head_ready, t.running, t.finished, t.gone, t.failed) == (3.5, 4.0, 15.0, 20.0, False)


def test_a_job_seen_only_after_it_ran_counts_as_running_then_and_a_cluster_gone_early_waits_for_the_end() -> None:
    t = JobTimes("j00", applied=0.0)
    t.observe(Seen("FAILED", True, True, "c"), cluster_alive=True, at=9.0)
    assert (t.running, t.finished, t.failed) == (9.0, 9.0, True)
    early = JobTimes("j01", applied=0.0, cluster="c")
    early.observe(Seen("RUNNING", False, False, "c"), cluster_alive=False, at=3.0)  # a poll between two lists
    assert early.gone is None


def test_executions_count_lines_per_job() -> None:
    assert executions("j00\nj01\nj00\n\n") == {"j00": 2, "j01": 1}
    run = Run("swarm", 2, 1, executions=executions("j00\nj01\nj00\nj00\n"))
    assert run.duplicates == 2


def test_the_entrypoint_counts_itself_then_runs_a_task(tmp_path: Path) -> None:
    command = entrypoint(tmp_path / "runs", "j03", seconds=10)
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "entrypoint", "exec")
    assert argv[2].index("open(") < argv[2].index("ray.init()") and "'j03'" in argv[2] and "sleep(10)" in argv[2]


def test_both_jobs_get_the_same_head_entrypoint_and_teardown() -> None:
    ours = swarmjob_body("j00", "p", "python x.py")
    theirs = rayjob_body("j00", "p", "python x.py")
    assert ours["spec"]["entrypoint"] == theirs["spec"]["entrypoint"] == "python x.py"
    head = ours["spec"]["clusterSpec"]["head"]
    container = theirs["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {k: str(v) for k, v in head["resources"].items()} == container["resources"]["limits"]
    assert head["template"]["spec"]["nodeSelector"] == (
        theirs["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["nodeSelector"])
    assert "workerGroups" not in ours["spec"]["clusterSpec"]
    assert "workerGroupSpecs" not in theirs["spec"]["rayClusterSpec"]
    assert "deletionPolicy" not in ours["spec"]  # the default: DeleteCluster
    assert theirs["spec"]["shutdownAfterJobFinishes"] is True and theirs["spec"]["ttlSecondsAfterFinished"] == 0
    assert theirs["spec"]["submissionMode"] == "HTTPMode"


def test_jobs_per_minute_runs_from_the_first_apply_to_the_last_finish() -> None:
    times = [JobTimes("a", 0.0, finished=20.0), JobTimes("b", 5.0, finished=30.0), JobTimes("c", 6.0)]
    assert jobs_per_minute(times) == pytest.approx(60 * 2 / 30)
    assert jobs_per_minute([JobTimes("a", 0.0)]) == 0.0


def finished_run(operator: str, running: float, cpu: float, duplicates: int = 0) -> Run:
    times = [JobTimes(f"j{i}", float(i), head_ready=i + running - 1,
                      submitted=i + running - 0.75, running=i + running, finished=i + 20.0,
                      gone=i + 25.0, cluster="c") for i in range(3)]
    counts = {t.name: 1 for t in times}
    counts["j0"] += duplicates
    return Run(operator, 3, 2, times, cpu_s=cpu, peak_rss_mib=100.0, executions=counts)


def test_summary_is_over_finished_runs_and_the_targets_compare_medians() -> None:
    runs = [finished_run("swarm", 5.0, 10.0), finished_run("swarm", 7.0, 12.0), finished_run("kuberay", 6.0, 9.0),
            Run("kuberay", 3, 2)]  # not finished: left out
    summary = summarize(runs)
    assert summary["swarm"]["apply→RUNNING s"] == Spread(6.0, 5.0, 7.0)
    assert summary["kuberay"]["operator CPU s"] == Spread(9.0, 9.0, 9.0)
    assert summary["swarm"]["apply→cluster gone s"].median == 25.0
    assert summary["swarm"]["apply→head Ready s"] == Spread(5.0, 4.0, 6.0)
    checks = dict((what.split(":")[0], met) for what, met in check_targets(summary, runs))
    assert checks == {"apply→RUNNING s": True, "operator CPU s": False, "duplicate executions": True}
    table = markdown(summary, runs)
    assert "| swarm | 2 | 5 [4–6] | 0.25 [0.25–0.25] | 6 [5–7] |" in table and "| kuberay | 1 |" in table


def test_a_measure_no_run_has_is_a_dash_in_the_table() -> None:
    run = finished_run("swarm", 5.0, 1.0)
    for t in run.times:
        t.head_ready = t.submitted = None  # runs saved before the measures existed
    summary = summarize([run])
    assert math.isnan(summary["swarm"]["apply→head Ready s"].median)
    assert math.isnan(summary["swarm"]["head Ready→submitted s"].median)
    assert "| swarm | 1 | — | — | 5 [5–5] |" in markdown(summary, [run])


def test_a_duplicate_execution_misses_a_target_and_so_does_a_missing_side() -> None:
    runs = [finished_run("swarm", 5.0, 1.0, duplicates=1)]
    checks = check_targets(summarize(runs), runs)
    assert [met for _, met in checks] == [False, False, False]
    assert finished_run("swarm", 5.0, 1.0).finished  # every job finished, its cluster gone, executed once


def test_a_run_with_a_job_never_executed_or_failed_is_not_finished() -> None:
    run = finished_run("swarm", 5.0, 1.0)
    run.executions.pop("j1")
    assert not run.finished
    failed = finished_run("swarm", 5.0, 1.0)
    failed.times[0].failed = True
    assert not failed.finished


def test_runs_round_trip_through_json() -> None:
    run = finished_run("kuberay", 6.0, 9.0)
    run.load = (1.5, 2.5)
    again = run_from_json(asdict(run))
    assert again == run and again.finished and math.isclose(again.times[1].applied, 1.0)


def test_turns_per_kind_from_either_operators_metrics() -> None:
    ours = "\n".join([
        "# HELP swarm_reconcile_total Reconciles run",
        'swarm_reconcile_total{kind="SwarmCluster",result="ok"} 120.0',
        'swarm_reconcile_total{kind="SwarmCluster",result="error"} 2.0',
        'swarm_reconcile_total{kind="SwarmJob",result="ok"} 80.0',
        'swarm_reconcile_created{kind="SwarmJob",result="ok"} 1.7e9',
    ])
    assert turns(ours, "swarm_reconcile_total", "kind") == {"cluster": 122.0, "job": 80.0}
    theirs = "\n".join([
        'controller_runtime_reconcile_total{controller="raycluster",result="success"} 50',
        'controller_runtime_reconcile_total{controller="rayjob",result="requeue_after"} 30',
        'controller_runtime_reconcile_total{controller="rayjob",result="success"} 10',
        'controller_runtime_reconcile_total{controller="raycronjob",result="success"} 0',
    ])
    assert turns(theirs, "controller_runtime_reconcile_total", "controller") == {"cluster": 50.0, "job": 40.0}
