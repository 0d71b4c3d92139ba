"""The submitter pod of one attempt (submissionMode SubmitterPod), as a plain dict. Pure.

It runs in the cluster's image, where the head may run, and submits through the head service's Jobs API with
Ray's own client, then follows the driver's log, so `kubectl logs <job>-<attempt>-submitter` shows it. Exactly
once: it looks the submission id up first, as the operator does in HTTP mode (a pod restarted, or re-created
after a lost answer, finds the job instead of submitting again), and Ray refuses a repeated id anyway.
"""

from __future__ import annotations

import json
from typing import Any

from swarm_operator.jobs.cluster import job_owner_reference
from swarm_operator.jobs.names import ATTEMPT_LABEL, JOB_LABEL, submitter_pod_name
from swarm_operator.jobs.rayapi import submission_body
from swarm_operator.jobs.spec import JobSpec
from swarm_operator.resources import labels
from swarm_operator.resources.pods import DASHBOARD_PORT
from swarm_operator.spec.types import ClusterSpec

CONTAINER = "submitter"
PLACEMENT_FIELDS = ("nodeSelector", "tolerations", "affinity", "imagePullSecrets")

SUBMITTER = """\
import asyncio, json, os, sys, time
from ray.job_submission import JobSubmissionClient

submission = json.loads(os.environ["SWARM_SUBMISSION"])
job_id = submission["submission_id"]
# The pod starts once the head pod is Ready; the head service's DNS name and the Jobs API (a dashboard module of
# its own) may answer a moment later. Past this the pod fails, and with it the attempt (SubmitFailed).
FIRST_CONTACT_SECONDS = 60


def first_contact():
    \"\"\"The client, and whether Ray knows the job; retried while the head service does not answer yet.\"\"\"
    deadline = time.monotonic() + FIRST_CONTACT_SECONDS
    while True:
        try:
            client = JobSubmissionClient(os.environ["SWARM_DASHBOARD_ADDRESS"])
            try:
                client.get_job_info(job_id)
                return client, True
            except RuntimeError as exc:
                if "404" in str(exc):
                    return client, False
                raise
        except (ConnectionError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise
            print(f"[submitter] the Jobs API does not answer yet ({exc}); asking again", flush=True)
            time.sleep(1)


client, known = first_contact()
if known:
    print(f"[submitter] Ray job {job_id} was submitted already: following it", flush=True)
else:
    client.submit_job(**submission)
    print(f"[submitter] submitted Ray job {job_id}", flush=True)


async def follow():
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)

asyncio.run(follow())
status = client.get_job_status(job_id)
print(f"[submitter] Ray job {job_id} ended {status}", flush=True)
sys.exit(0 if status == "SUCCEEDED" else 1)
"""


def dashboard_address(cluster: ClusterSpec, cluster_domain: str) -> str:
    """The Jobs API through the head service: it follows a replaced head, as a pod IP would not."""
    svc = labels.head_service_name(cluster.name)
    return f"http://{svc}.{cluster.namespace}.svc.{cluster_domain}:{DASHBOARD_PORT}"


def build_submitter_pod(job: JobSpec, attempt: int, job_id: str, cluster: ClusterSpec,
                        cluster_domain: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "SWARM_DASHBOARD_ADDRESS", "value": dashboard_address(cluster, cluster_domain)},
        {"name": "SWARM_SUBMISSION", "value": json.dumps(submission_body(job, job_id), sort_keys=True)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if cluster.auth is not None:  # Ray's client sends RAY_AUTH_TOKEN as a Bearer token when the mode is token
        env += [{"name": "RAY_AUTH_MODE", "value": "token"},
                {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": cluster.auth.secret_name,
                                                                          "key": cluster.auth.secret_key}}}]
    head_pod_spec = cluster.head.template.get("spec") or {}
    placement = {k: head_pod_spec[k] for k in PLACEMENT_FIELDS if k in head_pod_spec}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": submitter_pod_name(job.name, attempt),
            "namespace": job.namespace,
            "labels": {JOB_LABEL: job.name, ATTEMPT_LABEL: str(attempt)},
            "ownerReferences": [job_owner_reference(job)],
        },
        "spec": {
            "restartPolicy": "Never",
            **placement,
            "containers": [{
                "name": CONTAINER,
                "image": cluster.image,
                "command": ["python", "-c", SUBMITTER],
                "env": env,
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            }],
        },
    }
