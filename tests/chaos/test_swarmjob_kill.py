"""kill -9 the operator in each phase of a SwarmJob on real Ray, restart it, and count how often the entrypoint
ran: exactly once. Ray refusing a repeated submission id alone would prove nothing (a second attempt has another
id), so the entrypoint counts its own executions in a file on the host (a process node's pods share the host's
file system outside their private /tmp, /run and /dev/shm)."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from localcluster import rayjobs
from tests.chaos.conftest import OperatorFactory
from tests.e2e.helpers import ProcessNodes, job_cluster_spec
from tests.integration.helpers import GROUP, JOB_PLURAL, PLURAL, VERSION, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
PHASES = ("initializing", "between-post-and-status", "running")


@pytest.fixture
def counter() -> Iterator[Path]:
    path = Path("/var/tmp") / f"swarm-job-runs-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


def _get(custom: Any, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


@pytest.mark.parametrize("phase", PHASES)
def test_an_operator_killed_in_any_phase_runs_the_job_exactly_once(
        phase: str, operator_factory: OperatorFactory, custom_objects: Any, core_v1: Any, namespace: str,
        process_nodes: ProcessNodes, counter: Path) -> None:
    entrypoint = (f"python -c \"open('{counter}', 'a').write('ran\\n'); import time; time.sleep(10); "
                  "print('done')\"")
    first = operator_factory("operator-1.log")
    first.start()
    job = custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, JOB_PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmJob", "metadata": {"name": "once"},
        "spec": {"entrypoint": entrypoint, "clusterSpec": job_cluster_spec(process_nodes.pool)}})
    job_id = f"once-{job['metadata']['uid']}-1"

    def status() -> dict[str, Any]:
        return dict((_get(custom_objects, namespace, JOB_PLURAL, "once") or {}).get("status") or {})

    if phase == "initializing":
        wait_for("the job's cluster", lambda: _get(custom_objects, namespace, PLURAL, "once-1"), timeout=60)
    elif phase == "between-post-and-status":
        head_ip = wait_for("the cluster's head", lambda: ((_get(custom_objects, namespace, PLURAL, "once-1") or {})
                                                          .get("status") or {}).get("head", {}).get("podIP"),
                           timeout=240)

        def submitted() -> bool:
            try:
                return any(j.get("submission_id") == job_id for j in rayjobs.list_jobs(head_ip))
            except OSError:
                return False  # the dashboard not up yet

        wait_for("Ray to know the job", submitted, timeout=240, every=0.05)
        # Frozen at once, so the status read below is what it had written when Ray first listed the job (reading
        # it first left the operator's 0.5 s look at Ray racing that read).
        assert first.proc is not None
        first.proc.send_signal(signal.SIGSTOP)
    else:
        wait_for("Running", lambda: status().get("jobDeploymentStatus") == "Running", timeout=240)
    killed_at = status()
    first.kill()
    killed_wall = time.time()
    if phase == "between-post-and-status":
        # The operator writes Running only on its next look at Ray (0.5 s after the POST).
        assert killed_at.get("jobDeploymentStatus") == "Initializing", killed_at
    time.sleep(3)
    second = operator_factory("operator-2.log")
    second.start()
    done = wait_for("Complete", lambda: (st := status()).get("jobDeploymentStatus") in ("Complete", "Failed")
                    and st, timeout=300)
    assert done["jobDeploymentStatus"] == "Complete" and done["attempt"] == 1, (
        f"{done['jobDeploymentStatus']} attempt {done['attempt']}: {done.get('reason')}: {done.get('message')}")
    assert counter.read_text().count("ran") == 1, f"the entrypoint ran {counter.read_text().count('ran')} times"
    submissions = [e for e in core_v1.list_namespaced_event(namespace).items
                   if e.involved_object.name == "once" and e.reason == "Submitted"]
    posted = sum(e.count or 1 for e in submissions)
    if phase == "between-post-and-status":
        # The first operator posts Submitted as soon as its POST is answered, which may be before or after the kill
        # (this test sees the job in Ray's list, not that answer). The second found the job and did not submit it:
        # no Submitted Event of its own, which starts at least 3 s after the kill (timestamps are whole seconds).
        assert posted <= 1, [(e.first_timestamp, e.message) for e in submissions]
        assert not [e for e in submissions if e.first_timestamp.timestamp() > killed_wall + 1], (
            killed_wall, [(e.first_timestamp, e.message) for e in submissions])
    else:
        assert posted == 1, [(e.first_timestamp, e.message) for e in submissions]
