"""A SwarmJob's head killed in the middle of its job, on real Ray. With GCS fault tolerance (a real Redis) the Ray
job goes on and the SwarmJob's status follows it through the outage; without it the new head knows no such job, the
attempt fails (RayJobLost) and the next runs on a fresh cluster; deleting that job stops its Ray job before its
cluster goes.

The entrypoint counts its runs in a file on the host (a process node's pods share the host's file system outside
their private /tmp) and waits for a release file, so each test decides when the job ends instead of guessing how
long a head takes to come back."""

from __future__ import annotations

import os
import shlex
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster import rayjobs
from tests.e2e.helpers import cluster_pods, is_ready, job_cluster_spec, raylet_pid
from tests.e2e.redis_server import Redis
from tests.e2e.swarmjobs import Jobs
from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Gate:
    runs: Path  # a line per start of the entrypoint
    release: Path  # the entrypoint ends (0) once this exists

    def entrypoint(self) -> str:
        script = (f"import os, time\nopen({str(self.runs)!r}, 'a').write('ran\\n')\nprint('waiting', flush=True)\n"
                  "deadline = time.time() + 400\n"
                  f"while not os.path.exists({str(self.release)!r}) and time.time() < deadline:\n"
                  "    time.sleep(0.5)\n"
                  f"print('released' if os.path.exists({str(self.release)!r}) else 'not released', flush=True)\n")
        return "python -c " + shlex.quote(script)

    def count(self) -> int:
        return self.runs.read_text().count("ran") if self.runs.exists() else 0


@pytest.fixture
def gate() -> Iterator[Gate]:
    tag = uuid.uuid4().hex[:8]
    made = Gate(Path("/var/tmp") / f"swarm-job-runs-{tag}", Path("/var/tmp") / f"swarm-job-release-{tag}")
    yield made
    made.runs.unlink(missing_ok=True)
    made.release.unlink(missing_ok=True)


def kill_head(jobs: Jobs, cluster: str) -> str:
    """SIGKILL the head's raylet: `ray start --block` exits, the head pod fails and is replaced. Returns its uid."""
    head = next(p for p in cluster_pods(jobs.core, jobs.ns, cluster) if p.metadata.labels["swarm.io/node-type"]
                == "head")
    os.kill(raylet_pid(jobs.ns, head.metadata.name), signal.SIGKILL)
    return str(head.metadata.uid)


def new_head_ready(jobs: Jobs, cluster: str, old_uid: str) -> bool:
    return any(p.metadata.labels["swarm.io/node-type"] == "head" and p.metadata.uid != old_uid and is_ready(p)
               for p in cluster_pods(jobs.core, jobs.ns, cluster))


def test_with_gcs_fault_tolerance_the_job_goes_on_across_a_head_restart(jobs: Jobs, redis: Redis,
                                                                         gate: Gate) -> None:
    redis.add_credentials(jobs.core, jobs.ns)
    spec = job_cluster_spec(jobs.pool)
    # The driver runs on the worker (the head's death would take a driver on the head with it): Ray places the
    # job's supervisor where its entrypoint resources are, and with GCS fault tolerance the worker stays.
    spec["workerGroups"] = [{"name": "driver", "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                             "resources": {"cpu": 1, "memory": "1Gi"}, "rayResources": {"driver": 1},
                             "template": spec["head"]["template"]}]
    spec["faultTolerance"] = {"gcs": redis.gcs_spec(cleanup_timeout_seconds=60)}
    jobs.create("ft", gate.entrypoint(), clusterSpec=spec, entrypointResources={"resources": {"driver": 1}})
    running = wait_for("Running", jobs.deployment("ft", "Running"), timeout=240)
    wait_for("the entrypoint started", gate.count, timeout=60)
    worker = next(p for p in cluster_pods(jobs.core, jobs.ns, "ft-1") if p.metadata.labels["swarm.io/node-type"]
                  == "worker")

    old_head = kill_head(jobs, "ft-1")
    outage = wait_for("status saying the job's status cannot be read",
                      lambda: (st := jobs.status("ft")).get("unreadableSince") and st, timeout=60, every=0.5)
    assert outage["jobDeploymentStatus"] == "Running" and "StatusUnreadable" in outage["message"], outage
    wait_for("a new head", lambda: new_head_ready(jobs, "ft-1", old_head), timeout=180, every=1.0)
    back = wait_for("the status read again from the new head", lambda: (st := jobs.status("ft")).get(
        "jobStatus") == "RUNNING" and not st.get("unreadableSince") and st, timeout=120, every=0.5)
    assert back["attempt"] == 1 and back["jobId"] == running["jobId"], back
    assert worker.metadata.uid in {p.metadata.uid for p in cluster_pods(jobs.core, jobs.ns, "ft-1")}

    gate.release.touch()
    done = wait_for("Complete", lambda: (st := jobs.status("ft")).get("jobDeploymentStatus") in (
        "Complete", "Failed") and st, timeout=120)
    assert (done["jobDeploymentStatus"], done["jobStatus"], done["attempt"], done["failedAttempts"]) == (
        "Complete", "SUCCEEDED", 1, 0), done
    assert gate.count() == 1, "the job went on: its entrypoint ran once"


def test_without_gcs_fault_tolerance_the_attempt_fails_and_is_retried_and_deletion_stops_it_first(
        jobs: Jobs, gate: Gate) -> None:
    jobs.create("noft", gate.entrypoint(), backoffLimit=1)
    first = wait_for("Running", jobs.deployment("noft", "Running"), timeout=240)
    wait_for("the entrypoint started", gate.count, timeout=60)

    kill_head(jobs, "noft-1")
    retried = wait_for("the next attempt", lambda: (st := jobs.status("noft")).get("attempt") == 2 and st,
                       timeout=240, every=0.5)
    assert retried["failedAttempts"] == 1, retried
    # The status message moves on at once (the next attempt's cluster comes up); the Retrying Event below keeps why.
    second = wait_for("attempt 2 Running", jobs.deployment("noft", "Running"), timeout=240)
    assert second["clusterName"] == "noft-2" and second["jobId"] != first["jobId"]
    wait_for("the entrypoint started again", lambda: gate.count() == 2, timeout=60)
    assert any(r == "Retrying" and "RayJobLost" in m for r, m in jobs.events("noft")), jobs.events("noft")

    head_ip = (jobs.cluster("noft-2") or {})["status"]["head"]["podIP"]
    jobs.delete("noft")

    def ray_status() -> str:
        try:
            return str(rayjobs.job_info(head_ip, second["jobId"])["status"])
        except OSError as exc:  # the head gone before the job was stopped: never STOPPED
            return f"unreachable: {exc}"

    # Ray says STOPPED only when asked to stop it, and answers only while the head runs: so the stop came first.
    wait_for("Ray's job STOPPED while its cluster still runs", lambda: ray_status() == "STOPPED", timeout=60)
    wait_for("the job and its cluster gone", lambda: jobs.get("noft") is None and jobs.cluster("noft-2") is None,
             timeout=90)
    assert gate.count() == 2
