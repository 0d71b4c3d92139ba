"""One container of a pod on a process node: its state, its process (launch.py in the pod's network
namespace, in a process group of its own), and a kubelet's rules for it (exit codes, StartError, restarts
per ``restartPolicy``, the crash-loop back-off)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.nodeagent import network
from localcluster.nodeagent.probes import Probe
from swarm_operator.times import timestamp

LAUNCHER = Path(__file__).with_name("launch.py")
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0  # a kubelet's crash-loop back-off


def exit_code(returncode: int) -> int:
    """Popen reports death by signal N as -N; container runtimes report 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def runs_again(code: int, init: bool, policy: str) -> bool:
    """An init container runs again only after a failure; a container per the pod's policy."""
    if init:
        return code != 0 and policy != "Never"
    return policy == "Always" or (policy == "OnFailure" and code != 0)


def crash_loop_delay(restart_count: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_START * 2 ** min(restart_count, 10)))


@dataclass
class Container:
    """The runtime state of one container of the pod."""

    spec: dict[str, Any]
    init: bool
    log: Path  # what it writes to stdout and stderr
    start_report: Path  # where the launcher writes why it could not start
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)
    restart_at: float = 0.0  # monotonic time before which it must not start again
    done: bool = False  # terminated and will not start again

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def started(self) -> bool:
        """Running, and its startup probe (if any) passed."""
        startup = self.probes.get("startup")
        return self.running and (startup is None or startup.verdict is True)

    @property
    def ready(self) -> bool:
        readiness = self.probes.get("readiness")
        return self.started and (readiness is None or readiness.verdict is True)

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image") or "",
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            st["containerID"] = f"process://{self.proc.pid}"
        return st

    def launch(self, netns: str, launch_spec: dict[str, Any], pod_dir: Path) -> None:
        """Start the process: the launcher (launch.py) in the pod's network namespace, given ``launch_spec``
        (hostname, mounts, cwd, argv, env) through a file only root can read (it holds secrets)."""
        self.start_report.unlink(missing_ok=True)
        spec_file = pod_dir / f".launch-{self.name}.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**launch_spec, "report": str(self.start_report)}, fh)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [network.ip_binary(), "netns", "exec", netns, sys.executable, "-I", "-S", str(LAUNCHER),
                 str(spec_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=pod_dir,
                # Its own session: the container's processes form a group the agent can signal as one.
                start_new_session=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        started = time.monotonic()
        self.env = launch_spec["env"]
        self.state = {"running": {"startedAt": timestamp(time.time())}}
        self.probes = {kind: Probe(kind, self.spec[f"{kind}Probe"], started)
                       for kind in ("startup", "readiness", "liveness") if self.spec.get(f"{kind}Probe")}

    def terminate(self) -> None:
        """SIGTERM to the main process (what the container's own program handles)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the process group (the main process and whatever it started)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, grace: float) -> None:
        """SIGTERM to the main process, SIGKILL to its group once it exits or the grace period ends."""
        if self.proc is None or not self.running:
            return
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        self.kill()
        self.proc.wait()

    def ended(self) -> dict[str, Any]:
        """Reap the main process (and, like a PID namespace, the rest of its group) and say how it ended,
        as a kubelet's ``terminated`` state: StartError with the runtime's words when it never started."""
        assert self.proc is not None
        code = exit_code(self.proc.wait())
        self.kill()
        term: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                "startedAt": self.state.get("running", {}).get("startedAt"),
                                "finishedAt": timestamp(time.time()), "containerID": f"process://{self.proc.pid}"}
        if code > 128:
            term["signal"] = code - 128
        try:
            why = self.start_report.read_text(errors="replace").strip()
        except OSError:
            why = ""
        self.start_report.unlink(missing_ok=True)
        if why:
            term.update(reason="StartError", message=why)
        return term
