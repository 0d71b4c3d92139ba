"""A private Docker engine for building and running the operator's image on this machine.

Debian's Docker engine package (dockerd, containerd, runc) is installed with apt on first use. The engine
keeps its data, state and socket under ``<cache>/docker``, so it collides with no other engine on
the machine; it is started by whoever needs it and stopped by its PID when they are done.

No image registry is reachable from the machines this project is developed on: the engine runs
with no bridge network and no iptables rules (builds and containers use the host's network).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localcluster import versions

# Debian's own engine: its dockerd, containerd and runc come as one consistent set.
ENGINE_PACKAGES = ("docker.io",)
DOCKERD = Path("/usr/sbin/dockerd")
# Debian's client matches Debian's engine; another client that may be first on PATH might not
# (a newer one wants a buildx plugin for BuildKit, which the engine has built in).
DOCKER_CLI = Path("/usr/bin/docker")


class EngineError(RuntimeError):
    """The engine could not be installed or started; the message says which step and where its log is."""


def engine_dir() -> Path:
    return versions.cache_root() / "docker"


def apt_install(packages: tuple[str, ...], log: Path) -> None:
    """``apt-get install`` ``packages`` (after ``apt-get update``), logging to ``log``; needs root."""
    if os.geteuid() != 0:
        raise EngineError(f"installing {' '.join(packages)} needs root (apt-get); install them and retry")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as out:
        for cmd in (["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
            out.write(f"\n$ {' '.join(cmd)}\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode != 0:
                raise EngineError(f"`{' '.join(cmd)}` failed; see {log}")


@dataclass(frozen=True)
class DockerEngine:
    root: Path
    # A runc stand-in for every container (kind's node containers are 'privileged'; see localcluster/kind.py).
    default_runtime: Path | None = None

    @classmethod
    def default(cls) -> DockerEngine:
        return cls(engine_dir())

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """The environment for `docker` (and kind) to talk to this engine, with Debian's client first on PATH."""
        cli_dir = self.root / "bin"
        cli_dir.mkdir(parents=True, exist_ok=True)
        link = cli_dir / "docker"
        if not link.is_symlink():
            link.symlink_to(DOCKER_CLI)
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1",
                "PATH": f"{cli_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(DOCKER_CLI), *args], env=self.env(), capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise EngineError(f"`docker {' '.join(args)}` exited {res.returncode}:\n{res.stdout[-2000:]}"
                              f"\n{res.stderr[-2000:]}")
        return res

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def answering(self) -> bool:
        return self.socket.exists() and self.docker("version", timeout=30, check=False).returncode == 0

    def ensure_installed(self) -> None:
        if not (DOCKERD.is_file() and DOCKER_CLI.is_file()):
            self.root.mkdir(parents=True, exist_ok=True)
            print(f"[docker] installing {' '.join(ENGINE_PACKAGES)} with apt (log: {self.root / 'apt.log'})",
                  flush=True)
            apt_install(ENGINE_PACKAGES, self.root / "apt.log")

    def start(self, timeout: float = 60) -> int:
        """Start dockerd (nice 10: it shares the machine) and wait until it answers; returns its PID."""
        self.ensure_installed()
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = ["nice", "-n", "10", str(DOCKERD), "--data-root", str(self.root / "data"),
               "--exec-root", str(self.root / "exec"), "--host", self.host, "--pidfile", str(self.pidfile),
               # Host networking only: no bridge, no NAT rules written into the machine's iptables.
               "--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
               "--ip-masq=false"]
        if self.default_runtime is not None:
            cmd += ["--add-runtime", f"wrapped={self.default_runtime}", "--default-runtime", "wrapped"]
        with self.log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.answering():
            if proc.poll() is not None:
                raise EngineError(f"dockerd exited {proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self._stop_pid(proc.pid)
                raise EngineError(f"dockerd did not answer within {timeout:.0f}s; see {self.log}")
            time.sleep(0.5)
        return proc.pid

    def stop(self, pid: int, grace: float = 30) -> None:
        """Stop the dockerd this process started (it stops its own containerd and containers)."""
        self._stop_pid(pid, grace)

    @staticmethod
    def _stop_pid(pid: int, grace: float = 30) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                # dockerd was started in its own session by this process: reap it if it is our child.
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        return
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


@contextlib.contextmanager
def running(engine: DockerEngine | None = None) -> Iterator[DockerEngine]:
    """The engine, started if it is not running and then stopped again at the end; reused if it is."""
    engine = engine or DockerEngine.default()
    pid = engine.pid()
    if pid is not None and engine.answering():
        wanted = "wrapped" if engine.default_runtime is not None else "runc"
        current = engine.docker("info", "--format", "{{.DefaultRuntime}}").stdout.strip()
        if current != wanted:
            raise EngineError(f"dockerd {pid} runs containers with {current}, this needs {wanted}: "
                              f"stop it (kill {pid}) and retry")
        yield engine
        return
    pid = engine.start()
    try:
        yield engine
    finally:
        engine.stop(pid)
