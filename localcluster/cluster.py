"""One local cluster, a real control plane run by ``kwokctl --runtime binary``: its files, its state, up,
down, status.

Everything lives under one working directory (``SWARM_LOCALCLUSTER_DIR``, default
``<cache>/run``) used as ``KWOK_WORKDIR``, so kwokctl never reads ``~/.kwok`` and never
writes ``~/.kube/config``: the kubeconfig is a file of its own next to the cluster
(``<dir>/<name>.kubeconfig``; the name is ``SWARM_LOCALCLUSTER_NAME``, default ``swarm``).
Only built binaries are used (plain paths, no URLs), so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import kubernetes
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from localcluster import kwokctl, nodes, versions
from localcluster.apiserver import readyz, wait_leaders
from localcluster.errors import ClusterError
from localcluster.kwokctl import COMPONENTS
from localcluster.locks import locked
from localcluster.processes import all_pids, cmdline, pid_alive, rss_kib, stop


@dataclass(frozen=True)
class Proc:
    component: str
    pid: int
    rss_kib: int | None  # None when the process is gone

    @property
    def alive(self) -> bool:
        return self.rss_kib is not None


def log(msg: str) -> None:
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
            procs.append(Proc(comp, pid, rss_kib(pid)))
        return procs

    def stray_pids(self) -> list[int]:
        """Live processes whose command line names this cluster's working directory.

        The pid files can be gone (a half-done delete) while the processes still run;
        every component's arguments contain the workdir, so this finds them anyway.
        """
        marker = str(self.workdir) + "/"
        return [pid for pid in all_pids() if marker in cmdline(pid) and pid_alive(pid)]

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

    def up(self, pools: tuple[nodes.NodePool, ...] = nodes.DEFAULT_POOL, timeout: float = 180) -> None:
        """Start the cluster (or find it running), create the node pools, wait until all is Ready.

        Serialised with other ``up``/``down`` calls on the same cluster (a file lock), so
        that concurrent runs neither create it twice nor take a half-created one for dead.
        """
        with locked(self._lifecycle_lock):
            self._up(pools, timeout)

    def _up(self, pools: tuple[nodes.NodePool, ...], timeout: float) -> None:
        missing = [t for t in ("kwokctl", *COMPONENTS[:-1], "kwok", "kubectl") if not versions.tool_path(t).is_file()]
        if missing:
            raise ClusterError(f"not built: {', '.join(missing)}; run `python -m localcluster build` first")
        start = time.monotonic()
        deadline = start + timeout
        fresh = not self.running()
        if not fresh:
            log(f"cluster {self.name!r} already running")
        else:
            if self.exists():
                # Some components died (a reboot, a kill). Recreate rather than restart: a
                # restarted kwok leaves the existing nodes alone until the node leases of the
                # dead one expire (200 s), and the controller manager waits out its own lease.
                log(f"cluster {self.name!r} exists but is not running: recreating it (its objects are lost) …")
                self._down()
            log(f"creating cluster {self.name!r} in {self.workdir} (kwokctl, binary runtime) …")
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "kwok.yaml").write_text(kwokctl.KWOKCTL_CONFIG)
            kwokctl.run(self.name, self.root, self.env(), "create", "cluster", "--runtime", "binary",
                        "--kubeconfig", str(self.kubeconfig), "--quiet-pull", "--timeout", f"{timeout:.0f}s",
                        timeout=timeout)
        self.wait_serving(deadline)
        log(f"API server ready ({time.monotonic() - start:.1f}s)")
        node_objs = nodes.pool_nodes(pools)
        with self.api_client() as api:
            if fresh:
                wait_leaders(api, deadline)
                log(f"controller manager and scheduler leading ({time.monotonic() - start:.1f}s)")
            nodes.create_nodes(api, node_objs)
            nodes.wait_nodes_ready(api, [n["metadata"]["name"] for n in node_objs],
                                   timeout=max(10.0, deadline - time.monotonic()))
        summary = ", ".join(f"{p.count}×{p.prefix}" for p in pools)
        log(f"nodes Ready ({summary}); cluster up in {time.monotonic() - start:.1f}s")
        log(f"kubeconfig: {self.kubeconfig}")

    def wait_serving(self, deadline: float) -> None:
        while not self.serving():
            dead = [p.component for p in self.processes() if not p.alive]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited; see logs in {self.workdir / 'logs'}")
            if time.monotonic() > deadline:
                raise ClusterError(f"API server not ready in time; see logs in {self.workdir / 'logs'}")
            time.sleep(0.25)

    def down(self) -> None:
        """Delete the cluster; afterwards no process of it runs and none of its files remain."""
        with locked(self._lifecycle_lock):
            self._down()
            # Waiters on these files notice the removal and lock the files' successors.
            self._users_lock.unlink(missing_ok=True)
            self._lifecycle_lock.unlink(missing_ok=True)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark the cluster as used by this process (a shared lock) for ``down_unless_in_use``."""
        with locked(self._users_lock, shared=True):
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
        with locked(self._users_lock, wait=False) as alone:
            if alone:
                self.down()
            else:
                log(f"cluster {self.name!r} left running: another run is using it")

    def _down(self) -> None:
        start = time.monotonic()
        pids = [p.pid for p in self.processes() if p.alive]
        if self.exists():
            log(f"deleting cluster {self.name!r} …")
            kwokctl.run(self.name, self.root, self.env(), "delete", "cluster", "--kubeconfig", str(self.kubeconfig),
                        timeout=120)
        # kwokctl signals the components and returns; wait for them, and end any that
        # linger (or that a half-done earlier delete left without pid files), by PID.
        stop(sorted({*pids, *self.stray_pids()}))
        shutil.rmtree(self.workdir, ignore_errors=True)
        for f in (self.kubeconfig, self.root / f"{self.name}.kwokctl.log"):
            f.unlink(missing_ok=True)
        self._remove_root_if_unused()
        left = self.stray_pids()
        if left or self.workdir.exists() or self.kubeconfig.exists():
            raise ClusterError(f"down left behind processes {left} or files under {self.root}")
        log(f"cluster {self.name!r} down in {time.monotonic() - start:.1f}s; no process or file left")

    def _remove_root_if_unused(self) -> None:
        """Remove the shared working directory once no cluster uses it any more."""
        clusters = self.root / "clusters"
        if clusters.is_dir() and any(clusters.iterdir()):
            return
        if any(self.root.glob("*.kubeconfig")):
            return
        shutil.rmtree(self.root, ignore_errors=True)

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
