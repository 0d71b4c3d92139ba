"""Failures the way a crash makes them, for the chaos and healing tests: a pod's containers fail, a
control-plane component is killed and comes back.

kwok has no container to crash, so a pod's failure is written into its status through
the ``status`` subresource, as a kubelet would. The failure sticks: kwok's default pod
stages (pod-ready, pod-complete, pod-delete in v0.8.0) only act on Pending pods, on
Running pods owned by a Job, and on deleted pods, so nothing moves a Failed pod back.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster.cluster import LocalCluster, log
from localcluster.errors import ClusterError
from localcluster.kwokctl import COMPONENTS
from localcluster.processes import pid_alive, spawn_detached
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


@dataclass(frozen=True)
class _Started:
    """How a running component was started, read from /proc: enough to start it again the same way."""

    pid: int
    args: list[str]
    env: dict[str, str]
    cwd: str


def _started(cluster: LocalCluster, component: str, pidfile: Path) -> _Started:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"{component} of cluster {cluster.name!r} has no pid file: {exc}") from None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError as exc:
        raise ClusterError(f"{component} of cluster {cluster.name!r} (pid {pid}) is not running: {exc}") from None
    args = [a.decode() for a in argv if a]
    # The pid file is this cluster's, but a stale one could name a reused PID: only a
    # process started from this cluster's own bin/ is ever killed.
    if not args or not args[0].startswith(str(cluster.workdir) + "/"):
        raise ClusterError(f"pid {pid} from {pidfile} is not {component} of cluster {cluster.name!r}: {args[:1]}")
    return _Started(pid, args, dict(e.decode().split("=", 1) for e in environ if b"=" in e), cwd)


def restart_component(cluster: LocalCluster, component: str, *, down_seconds: float = 0.0,
                      timeout: float = 90.0) -> int:
    """SIGKILL one control-plane component of ``cluster`` and start it again; returns its new PID.

    For chaos tests (an API server or etcd restarting under a running operator). kwokctl
    can only stop or start a whole cluster, so the component is found by the cluster's
    pid file and started again with the command line, environment and working directory
    it ran with, read from /proc before the kill; its log file is appended to and its
    pid file updated, so ``down`` still finds it. The new process is not a child of this
    one (as kwokctl's own are not). Waits up to ``timeout`` until the API server answers
    /readyz again, or for the other components, until the new process is still alive after
    a second.
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    pidfile = cluster.workdir / "pids" / f"{component}.pid"
    started = _started(cluster, component, pidfile)
    deadline = time.monotonic() + timeout
    os.kill(started.pid, signal.SIGKILL)  # at once, as a crash would; then wait until its ports are free
    while pid_alive(started.pid):
        if time.monotonic() > deadline:
            raise ClusterError(f"{component} (pid {started.pid}) still alive after SIGKILL")
        time.sleep(0.05)
    time.sleep(down_seconds)
    new_pid = spawn_detached(started.args, started.env, started.cwd, cluster.workdir / "logs" / f"{component}.log")
    pidfile.write_text(str(new_pid))
    if component in ("etcd", "kube-apiserver"):
        cluster.wait_serving(deadline)
    else:
        time.sleep(1.0)
        if not pid_alive(new_pid):
            raise ClusterError(f"{component} exited right after its restart; see {cluster.workdir / 'logs'}")
    log(f"{component} of cluster {cluster.name!r} restarted: pid {started.pid} → {new_pid}")
    return new_pid
