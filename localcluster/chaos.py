"""Make pods fail the way a crashed container does, for the operator's healing tests.

kwok has no container to crash, so the failure is written into the pod status through
the ``status`` subresource, as a kubelet would. The failure sticks: kwok's default pod
stages (pod-ready, pod-complete, pod-delete in v0.8.0) only act on Pending pods, on
Running pods owned by a Job, and on deleted pods, so nothing moves a Failed pod back.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from swarm_operator.times import timestamp


def failed_status_patch(container_names: list[str], *, exit_code: int = 1, reason: str = "Error",
                        message: str = "container failed (injected by localcluster.chaos)") -> dict[str, Any]:
    """Strategic-merge patch of a pod status: phase Failed, not ready, every container terminated.

    ``running``/``waiting`` are set to null because a strategic merge would otherwise keep
    the old state next to ``terminated`` and the API server allows one state per container.
    """
    now = timestamp(time.time())
    return {
        "status": {
            "phase": "Failed",
            "reason": reason,
            "message": message,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "reason": "PodFailed", "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": name,
                    "ready": False,
                    "started": False,
                    "state": {
                        "running": None,
                        "waiting": None,
                        "terminated": {"exitCode": exit_code, "reason": reason, "message": message,
                                       "startedAt": now, "finishedAt": now},
                    },
                }
                for name in container_names
            ],
        }
    }


def fail_pod(api: client.ApiClient, namespace: str, name: str, *, exit_code: int = 1,
             reason: str = "Error") -> None:
    """Mark pod ``namespace/name`` Failed with every container exited ``exit_code``; it stays Failed."""
    core: Any = client.CoreV1Api(api)  # Any: the patch is a plain dict, not the client's models
    pod = core.read_namespaced_pod(name, namespace)
    names = [c.name for c in pod.spec.containers]
    core.patch_namespaced_pod_status(name, namespace, failed_status_patch(names, exit_code=exit_code, reason=reason))
