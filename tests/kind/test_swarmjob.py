"""SwarmJobs on kind: the operator, in its own pod, runs each job on a cluster of the job's own, Ray in containers.

Both submission modes at once: the operator posts to the Jobs API through the head Service's cluster DNS name
(HTTP), and a submitter pod runs `ray job submit` from the Ray image's PATH under the kubelet and follows the
driver's log, which the kubelet's log (`kubectl logs`) shows. Each job ends SUCCEEDED and its cluster goes.
"""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.kind_tier import KindTier
from tests.e2e.swarmjobs import SUCCEEDS
from tests.integration.helpers import GROUP, PLURAL, VERSION, SwarmJobs, wait_for
from tests.kind.helpers import pool_template, resources

pytestmark = [pytest.mark.kind, pytest.mark.timeout(480)]

MODES = {"http": "HTTP", "viapod": "SubmitterPod"}  # job name: its submissionMode


def own_cluster(ray_image: str) -> dict[str, Any]:
    """A head alone on the CPU node, where the driver and its task run (1 CPU: the container's limit)."""
    return {"image": ray_image, "head": {"resources": resources(memory="2Gi"), "template": pool_template("cpu")}}


def test_jobs_succeed_in_both_modes_and_their_clusters_go(
        kind_tier: KindTier, core_v1: Any, custom_objects: Any, namespace: str) -> None:
    jobs = SwarmJobs(custom_objects, namespace)
    for name, mode in MODES.items():
        jobs.create(name, SUCCEEDS, submissionMode=mode, clusterSpec=own_cluster(kind_tier.ray_image))

    def ended(name: str) -> dict[str, Any] | None:
        status = jobs.status(name)
        return status if status.get("jobDeploymentStatus") in ("Complete", "Failed") else None

    for name in MODES:
        done = wait_for(f"{name} ended", lambda n=name: ended(n), timeout=360, every=1)
        assert done["jobDeploymentStatus"] == "Complete" and done["jobStatus"] == "SUCCEEDED", done
        assert done["attempt"] == 1 and done["failedAttempts"] == 0, done

    def submitter_log() -> str | None:
        text = str(core_v1.read_namespaced_pod_log("viapod-1-submitter", namespace))
        return text if "ended SUCCEEDED" in text else None

    log = wait_for("the submitter's log to the driver's end", submitter_log, timeout=60, every=1)
    assert "the answer is 42" in log and log.count("submitted Ray job") == 1, log

    def torn_down() -> bool:
        clusters = custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        ray_pods = core_v1.list_namespaced_pod(namespace, label_selector="swarm.io/cluster").items
        return not clusters and not ray_pods

    wait_for("both jobs' clusters and their pods gone", torn_down, timeout=120, every=1)
