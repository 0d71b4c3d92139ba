"""Run the real operator as a subprocess, for the integration tier, the demo and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz_answers(port: int) -> bool:
    """Whether an operator's health endpoint on this local port says it is healthy."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class OperatorProcess:
    """`swarm-operator run` against a kubeconfig; logs to a file; stopped by its PID only."""

    def __init__(self, kubeconfig: str, namespaces: list[str], log_path: Path, extra: list[str] | None = None):
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.extra = extra or []
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line; subclasses run other operators (localcluster.kuberay) the same way."""
        args = [sys.executable, "-m", "swarm_operator", "run", "--metrics-port", str(self.metrics_port),
                "--health-port", str(self.health_port), *self.extra]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        return args

    def start(self, wait: float = 60.0) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_tail())
            if self.healthy():
                return
            self.while_starting()
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy after {wait}s; log: {self.log_path}\n" + self.log_tail())

    def while_starting(self) -> None:
        """Called between health checks while the process starts; what a subclass's process waits for (none here)."""

    def healthy(self) -> bool:
        return healthz_answers(self.health_port)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash or an OOM kill would be."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
