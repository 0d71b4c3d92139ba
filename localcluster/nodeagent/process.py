"""Run a node agent as a subprocess (tests, the demo), read pod logs, measure what pods use."""

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
from types import TracebackType

from localcluster.nodeagent import network, paths

REPO = Path(__file__).resolve().parents[2]


class AgentStartError(RuntimeError):
    pass


@dataclass
class NodeAgentProcess:
    """``python -m localcluster.nodeagent`` for one node, started and stopped by PID.

    >>> with NodeAgentProcess(kubeconfig, "proc-0", cpu="4", memory="8Gi", gpus=2) as agent:
    ...     ...  # pods bound to node proc-0 now run as processes
    """

    kubeconfig: str
    node: str
    cpu: str = "8"
    memory: str = "16Gi"
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"  # the extended resource the fake accelerators are advertised as
    pods: int = 110
    pod_cidr: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[str] = field(default_factory=list)
    keep_node: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "localcluster.nodeagent", "--kubeconfig", self.kubeconfig, "--node", self.node,
               "--cpu", self.cpu, "--memory", self.memory, "--gpus", str(self.gpus),
               "--gpu-resource", self.gpu_resource,
               "--pods", str(self.pods)]
        if self.pod_cidr:
            cmd += ["--pod-cidr", self.pod_cidr]
        for k, v in sorted(self.labels.items()):
            cmd += ["--label", f"{k}={v}"]
        for t in self.taints:
            cmd += ["--taint", t]
        if self.keep_node:
            cmd.append("--keep-node")
        return cmd

    @property
    def log_file(self) -> Path:
        return paths.agent_log(self.node)

    def start(self, timeout: float = 60.0) -> NodeAgentProcess:
        """Start the agent; return once its node is registered and it serves pods."""
        paths.nodes_root().mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise AgentStartError(f"node agent {self.node} exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AgentStartError(f"node agent {self.node} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            info = json.loads(paths.agent_file(self.node).read_text())
        except (OSError, ValueError):
            return False
        return self.proc is not None and info.get("pid") == self.proc.pid and bool(info.get("ready"))

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM: the agent stops its pods and leaves; SIGKILL only if it hangs. Returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.log_file.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> NodeAgentProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def read_logs(pod: str, namespace: str | None = None, container: str | None = None) -> str:
    """What a pod's container(s) wrote, from the newest pod of that name on this host."""
    dirs = paths.pod_log_dirs(pod, namespace)
    if not dirs:
        raise FileNotFoundError(f"no logs of pod {pod!r} on this host (looked in {paths.nodes_root()})")
    files = sorted(dirs[0].glob("*.log"))
    if container is not None:
        files = [f for f in files if f.stem == container]
        if not files:
            raise FileNotFoundError(f"pod {pod!r} has no container {container!r}")
    if len(files) == 1:
        return files[0].read_text(errors="replace")
    return "".join(f"==> {f.stem} <==\n{f.read_text(errors='replace')}" for f in files)


def follow(path: Path) -> None:
    """Print a log as it grows (``logs -f``), until interrupted."""
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.3)


@dataclass(frozen=True)
class PodUsage:
    node: str
    namespace: str
    name: str
    netns: str
    address: str
    pids: list[int]
    pss_kib: int


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pod_usage() -> list[PodUsage]:
    """Every pod running on a process node of this host: its processes and their memory (PSS,
    so that shared pages are not counted twice)."""
    out = []
    for state_file in sorted(paths.nodes_root().glob("*/pods/*/state.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        pids = network.netns_pids(state["netns"])
        node = state_file.parents[2].name  # <nodes>/<node>/pods/<pod>/state.json
        out.append(PodUsage(node, state["namespace"], state["name"], state["netns"], state["address"], pids,
                            sum(_pss_kib(p) for p in pids)))
    return out
