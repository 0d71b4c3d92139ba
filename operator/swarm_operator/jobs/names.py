"""Names a SwarmJob derives: its own cluster's, per attempt, and its Ray submission id. Pure."""

from __future__ import annotations

from swarm_operator import GROUP

JOB_LABEL = f"{GROUP}/job"  # on a job's own SwarmCluster: the job's name
ATTEMPT_LABEL = f"{GROUP}/job-attempt"


def cluster_name(job: str, attempt: int) -> str:
    """The job's own SwarmCluster of one attempt: a fresh one each, so a retry never waits for a deletion."""
    return f"{job}-{attempt}"


def submitter_pod_name(job: str, attempt: int) -> str:
    """The pod that submits one attempt (submissionMode SubmitterPod) and follows its driver's logs."""
    return f"{job}-{attempt}-submitter"


def submission_id(job: str, uid: str, attempt: int) -> str:
    """The Ray submission id of one attempt. Ours and deterministic: a restarted operator finds the job it
    submitted instead of submitting again, and Ray refuses a second submission under the same id. The uid keeps
    a re-created job of the same name on a shared cluster apart from its predecessor."""
    return f"{job}-{uid}-{attempt}"
