"""Run a real control plane with ``kwokctl --runtime binary``: up, down, status.

Everything lives under one working directory (``SWARM_LOCALCLUSTER_DIR``, default
``<cache>/run``) used as ``KWOK_WORKDIR``, so kwokctl never reads ``~/.kwok`` and never
writes ``~/.kube/config``: the kubeconfig is a file of its own next to the cluster
(``<dir>/<name>.kubeconfig``; the name is ``SWARM_LOCALCLUSTER_NAME``, default ``swarm``).
Only built binaries are used (plain paths, no URLs), so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kubernetes
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from localcluster import nodes, versions

# kwokctl's own components, in start order; each writes <workdir>/pids/<binary>.pid.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")

# Loaded by every kwokctl call because it sits at $KWOK_WORKDIR/kwok.yaml.
#  - bindAddress: every component listens on loopback only (kwok's default is 0.0.0.0).
#  - kwok manages only nodes annotated kwok.x-k8s.io/node=fake (the binary runtime's
#    default is every node), so nodes run by something else can join the cluster later.
#  - fake pods get loopback IPs (kwok's default is 10.0.0.0/24): anything that connects
#    to a fake pod (the operator reading a Ray head's GCS) stays on this machine, and a
#    /12 has room for the scale benchmarks' thousands of pods.
#  - the scheduler's and controller manager's client rates are raised from 50 and 20
#    requests/s, as large clusters do, so benchmarks measure the operator, not throttling.
KWOKCTL_CONFIG = """\
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  bindAddress: 127.0.0.1
componentsPatches:
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
    override: true
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
  - key: cidr
    value: 127.128.0.0/12
- name: kube-scheduler
  extraArgs:
  - key: kube-api-qps
    value: "500"
  - key: kube-api-burst
    value: "1000"
- name: kube-controller-manager
  extraArgs:
  - key: kube-api-qps
    value: "200"
  - key: kube-api-burst
    value: "400"
"""


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says which and where to look."""


@dataclass(frozen=True)
class Proc:
    component: str
    pid: int
    rss_kib: int | None  # None when the process is gone

    @property
    def alive(self) -> bool:
        return self.rss_kib is not None


def _rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None  # a zombie has no VmRSS: it is not running


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    return _rss_kib(pid) is not None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _log(msg: str) -> None:
    print(f"[localcluster] {msg}", flush=True)


@dataclass(frozen=True)
class LocalCluster:
    name: str
    root: Path  # KWOK_WORKDIR

    @classmethod
    def from_env(cls) -> LocalCluster:
        root = os.environ.get("SWARM_LOCALCLUSTER_DIR")
        return cls(name=os.environ.get("SWARM_LOCALCLUSTER_NAME", "swarm"),
                   root=Path(root) if root else versions.cache_root() / "run")

    @property
    def workdir(self) -> Path:
        return self.root / "clusters" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.root / f"{self.name}.kubeconfig"

    # Lock files sit next to the working directory, not in it: removing the directory
    # (down) must not remove the locks of other clusters that share it.
    @property
    def _lifecycle_lock(self) -> Path:
        return self.root.parent / f".{self.root.name}-{self.name}.lock"

    @property
    def _users_lock(self) -> Path:
        return self.root.parent / f".{self.root.name}-{self.name}.users.lock"

    def env(self) -> dict[str, str]:
        """Environment for kwokctl, and for commands run against the cluster (built tools first on PATH)."""
        env = dict(os.environ)
        # kwokctl's kubeconfig default is $KUBECONFIG (else ~/.kube/config): with it unset
        # here, nothing can fall back to the user's file; every call names its own.
        env.pop("KUBECONFIG", None)
        env.update({
            "KWOK_WORKDIR": str(self.root),
            "KWOK_RUNTIME": "binary",
            "KWOK_KUBE_VERSION": versions.KUBERNETES,
            "KWOK_KUBE_APISERVER_BINARY": str(versions.tool_path("kube-apiserver")),
            "KWOK_KUBE_CONTROLLER_MANAGER_BINARY": str(versions.tool_path("kube-controller-manager")),
            "KWOK_KUBE_SCHEDULER_BINARY": str(versions.tool_path("kube-scheduler")),
            "KWOK_CONTROLLER_BINARY": str(versions.tool_path("kwok")),
            "KWOK_ETCD_BINARY": str(versions.tool_path("etcd")),
            "KWOK_KUBECTL_BINARY": str(versions.tool_path("kubectl")),
            "PATH": os.pathsep.join([*versions.path_dirs(), env.get("PATH", "")]),
        })
        return env

    # --- inspection -------------------------------------------------------------

    def exists(self) -> bool:
        return (self.workdir / "kwok.yaml").is_file()

    def processes(self) -> list[Proc]:
        """The components kwokctl started, from its pid files."""
        procs = []
        for comp in COMPONENTS:
            pidfile = self.workdir / "pids" / f"{comp}.pid"
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            procs.append(Proc(comp, pid, _rss_kib(pid)))
        return procs

    def stray_pids(self) -> list[int]:
        """Live processes whose command line names this cluster's working directory.

        The pid files can be gone (a half-done delete) while the processes still run;
        every component's arguments contain the workdir, so this finds them anyway.
        """
        marker = str(self.workdir) + "/"
        return [pid for pid in _pids() if marker in _cmdline(pid) and pid_alive(pid)]

    def api_client(self, retries: int | None = None) -> client.ApiClient:
        """A client for this cluster; ``retries`` overrides urllib3's default of 3."""
        config = client.Configuration()
        if retries is not None:
            config.retries = retries
        api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), persist_config=False, client_configuration=config)
        return cast(client.ApiClient, api)

    def serving(self) -> bool:
        """The API server answers /readyz with ok."""
        if not self.kubeconfig.is_file():
            return False
        try:
            # No retries: this is polled, and each refused connection would log a warning.
            with self.api_client(retries=0) as api:
                return readyz(api, timeout=2.0)
        except (ApiException, HTTPError, OSError, kubernetes.config.ConfigException):
            return False

    def running(self) -> bool:
        procs = self.processes()
        return len(procs) == len(COMPONENTS) and all(p.alive for p in procs) and self.serving()

    # --- lifecycle ----------------------------------------------------------------

    def _kwokctl(self, *args: str, timeout: float = 300) -> None:
        cmd = [str(versions.tool_path("kwokctl")), "--name", self.name, *args]
        logfile = self.root / f"{self.name}.kwokctl.log"
        with logfile.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            try:
                proc = subprocess.run(cmd, env=self.env(), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise ClusterError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s; see {logfile}") from None
        if proc.returncode != 0:
            tail = "".join(logfile.read_text().splitlines(keepends=True)[-15:])
            raise ClusterError(f"`{' '.join(cmd)}` exited {proc.returncode}; see {logfile}:\n{tail}")

    def up(self, pools: tuple[nodes.NodePool, ...] = nodes.DEFAULT_POOL, timeout: float = 180) -> None:
        """Start the cluster (or find it running), create the node pools, wait until all is Ready.

        Serialised with other ``up``/``down`` calls on the same cluster (a file lock), so
        that concurrent runs neither create it twice nor take a half-created one for dead.
        """
        with _locked(self._lifecycle_lock):
            self._up(pools, timeout)

    def _up(self, pools: tuple[nodes.NodePool, ...], timeout: float) -> None:
        missing = [t for t in ("kwokctl", *COMPONENTS[:-1], "kwok", "kubectl") if not versions.tool_path(t).is_file()]
        if missing:
            raise ClusterError(f"not built: {', '.join(missing)}; run `python -m localcluster build` first")
        start = time.monotonic()
        deadline = start + timeout
        fresh = not self.running()
        if not fresh:
            _log(f"cluster {self.name!r} already running")
        else:
            if self.exists():
                # Some components died (a reboot, a kill). Recreate rather than restart: a
                # restarted kwok leaves the existing nodes alone until the node leases of the
                # dead one expire (200 s), and the controller manager waits out its own lease.
                _log(f"cluster {self.name!r} exists but is not running: recreating it (its objects are lost) …")
                self._down()
            _log(f"creating cluster {self.name!r} in {self.workdir} (kwokctl, binary runtime) …")
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "kwok.yaml").write_text(KWOKCTL_CONFIG)
            self._kwokctl("create", "cluster", "--runtime", "binary", "--kubeconfig", str(self.kubeconfig),
                          "--quiet-pull", "--timeout", f"{timeout:.0f}s", timeout=timeout)
        self._wait_serving(deadline)
        _log(f"API server ready ({time.monotonic() - start:.1f}s)")
        node_objs = nodes.pool_nodes(pools)
        with self.api_client() as api:
            if fresh:
                _wait_leaders(api, deadline)
                _log(f"controller manager and scheduler leading ({time.monotonic() - start:.1f}s)")
            nodes.create_nodes(api, node_objs)
            nodes.wait_nodes_ready(api, [n["metadata"]["name"] for n in node_objs],
                                   timeout=max(10.0, deadline - time.monotonic()))
        summary = ", ".join(f"{p.count}×{p.prefix}" for p in pools)
        _log(f"nodes Ready ({summary}); cluster up in {time.monotonic() - start:.1f}s")
        _log(f"kubeconfig: {self.kubeconfig}")

    def _wait_serving(self, deadline: float) -> None:
        while not self.serving():
            dead = [p.component for p in self.processes() if not p.alive]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited; see logs in {self.workdir / 'logs'}")
            if time.monotonic() > deadline:
                raise ClusterError(f"API server not ready in time; see logs in {self.workdir / 'logs'}")
            time.sleep(0.25)

    def down(self) -> None:
        """Delete the cluster; afterwards no process of it runs and none of its files remain."""
        with _locked(self._lifecycle_lock):
            self._down()
            # Waiters on these files notice the removal and lock the files' successors.
            self._users_lock.unlink(missing_ok=True)
            self._lifecycle_lock.unlink(missing_ok=True)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark the cluster as used by this process (a shared lock) for ``down_unless_in_use``."""
        with _locked(self._users_lock, shared=True):
            yield

    @contextlib.contextmanager
    def borrowed(self, keep: bool = False) -> Iterator[None]:
        """Up for the duration of the block: brought up if needed, and down again afterwards only if this
        call found it down and nobody else is using it (and not ``keep``)."""
        was_running = True  # until checked: never take down a cluster this call did not see down
        try:
            with self.in_use():
                was_running = self.running()
                self.up()
                yield
        finally:
            if not keep and not was_running:
                self.down_unless_in_use()

    def down_unless_in_use(self) -> None:
        """``down``, unless another process is inside ``in_use``: the last user out takes it down."""
        with _locked(self._users_lock, wait=False) as alone:
            if alone:
                self.down()
            else:
                _log(f"cluster {self.name!r} left running: another run is using it")

    def _down(self) -> None:
        start = time.monotonic()
        pids = [p.pid for p in self.processes() if p.alive]
        if self.exists():
            _log(f"deleting cluster {self.name!r} …")
            self._kwokctl("delete", "cluster", "--kubeconfig", str(self.kubeconfig), timeout=120)
        # kwokctl signals the components and returns; wait for them, and end any that
        # linger (or that a half-done earlier delete left without pid files), by PID.
        _stop(sorted({*pids, *self.stray_pids()}))
        shutil.rmtree(self.workdir, ignore_errors=True)
        for f in (self.kubeconfig, self.root / f"{self.name}.kwokctl.log"):
            f.unlink(missing_ok=True)
        self._remove_root_if_unused()
        left = self.stray_pids()
        if left or self.workdir.exists() or self.kubeconfig.exists():
            raise ClusterError(f"down left behind processes {left} or files under {self.root}")
        _log(f"cluster {self.name!r} down in {time.monotonic() - start:.1f}s; no process or file left")

    def _remove_root_if_unused(self) -> None:
        """Remove the shared working directory once no cluster uses it any more."""
        clusters = self.root / "clusters"
        if clusters.is_dir() and any(clusters.iterdir()):
            return
        if any(self.root.glob("*.kubeconfig")):
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def restart_component(self, component: str, *, down_seconds: float = 0.0, timeout: float = 90.0) -> int:
        """SIGKILL one control-plane component of this cluster and start it again; returns its new PID.

        For chaos tests (an API server or etcd restarting under a running operator). kwokctl
        can only stop or start a whole cluster, so the component is found by this cluster's
        pid file and started again with the command line, environment and working directory
        it ran with, read from /proc before the kill; its log file is appended to and its
        pid file updated, so ``down`` still finds it. The new process is not a child of this
        one (as kwokctl's own are not). Waits up to ``timeout`` until the API server answers
        /readyz again, or for the other components, until the new process is still alive after
        a second.
        """
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
        pidfile = self.workdir / "pids" / f"{component}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"{component} of cluster {self.name!r} has no pid file: {exc}") from None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError as exc:
            raise ClusterError(f"{component} of cluster {self.name!r} (pid {pid}) is not running: {exc}") from None
        args = [a.decode() for a in argv if a]
        # The pid file is this cluster's, but a stale one could name a reused PID: only a
        # process started from this cluster's own bin/ is ever killed.
        if not args or not args[0].startswith(str(self.workdir) + "/"):
            raise ClusterError(f"pid {pid} from {pidfile} is not {component} of cluster {self.name!r}: {args[:1]}")
        env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
        deadline = time.monotonic() + timeout
        os.kill(pid, signal.SIGKILL)  # at once, as a crash would; then wait until its ports are free
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise ClusterError(f"{component} (pid {pid}) still alive after SIGKILL")
            time.sleep(0.05)
        time.sleep(down_seconds)
        new_pid = _spawn_detached(args, env, cwd, self.workdir / "logs" / f"{component}.log")
        pidfile.write_text(str(new_pid))
        if component in ("etcd", "kube-apiserver"):
            self._wait_serving(deadline)
        else:
            time.sleep(1.0)
            if not pid_alive(new_pid):
                raise ClusterError(f"{component} exited right after its restart; see {self.workdir / 'logs'}")
        _log(f"{component} of cluster {self.name!r} restarted: pid {pid} → {new_pid}")
        return new_pid

    def status(self) -> str:
        if not self.exists():
            return f"cluster {self.name!r}: not created ({self.workdir})"
        procs = self.processes()
        lines = [f"cluster {self.name!r}: {'serving' if self.serving() else 'NOT serving'}",
                 f"  kubeconfig: {self.kubeconfig}",
                 f"  {'component':<26}{'pid':>8}{'RSS MiB':>10}"]
        for p in procs:
            rss = f"{p.rss_kib / 1024:.0f}" if p.rss_kib is not None else "dead"
            lines.append(f"  {p.component:<26}{p.pid:>8}{rss:>10}")
        total = sum(p.rss_kib or 0 for p in procs)
        lines.append(f"  {'total':<26}{'':>8}{total / 1024:>10.0f}")
        return "\n".join(lines)


def _wait_leaders(api: client.ApiClient, deadline: float) -> None:
    """Wait until the controller manager and the scheduler of a new cluster hold their leader leases.

    Serving is not enough: until they lead, nothing garbage-collects or schedules, and
    a test started right after ``up`` would see a cluster that ignores it.
    """
    coordination: Any = client.CoordinationV1Api(api)
    for name in ("kube-controller-manager", "kube-scheduler"):
        while True:
            try:
                if coordination.read_namespaced_lease(name, "kube-system").spec.holder_identity:
                    break
            except ApiException as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} did not take its leader lease in time; see {name}.log")
            time.sleep(0.25)


def readyz(api: client.ApiClient, timeout: float = 5.0) -> bool:
    """GET /readyz with the client's credentials; True when the API server says ok."""
    method, url, headers, body, post = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
    resp = api.call_api(method, url, headers, body, post, _request_timeout=timeout)
    data = cast(bytes, resp.read())  # type: ignore[no-untyped-call]
    return resp.status == 200 and data.decode().strip() == "ok"


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


@contextlib.contextmanager
def _locked(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """flock ``path``; yields False (holding nothing) when ``wait`` is off and it is taken.

    ``down`` removes the lock files; a process that was blocked on a removed file retries
    on its successor, so every holder locks the file that is currently at ``path``.
    """
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                yield False
                return
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                yield True
                return
        finally:
            os.close(fd)


# Starts a process in a session of its own and exits: the process is re-parented to init,
# like the components kwokctl starts, and never lingers as a zombie child of the caller.
_SPAWN = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    proc = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid)
"""


def _spawn_detached(args: list[str], env: dict[str, str], cwd: str, log: Path) -> int:
    """Start ``args`` detached (own session, output appended to ``log``); returns its PID."""
    out = subprocess.run([sys.executable, "-c", _SPAWN, str(log), cwd, *args], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return int(out.strip())


def _stop(pids: list[int], grace: float = 5.0) -> None:
    """Wait up to ``grace`` for ``pids`` to exit, then SIGKILL the rest and wait for them.

    SIGKILL, as kwokctl itself stops components: a SIGTERMed kube-apiserver spends about
    a minute draining, and nothing here needs a graceful stop (etcd's data is fsynced).
    """
    for sig in (None, signal.SIGKILL):
        if sig is not None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [pid for pid in pids if pid_alive(pid)]
        if not pids:
            return
