"""One pod on a process node: its network namespace, its containers as processes, its status.

A ``PodWorker`` thread owns one pod (by UID) from the moment the agent sees it bound to
the node until the pod object is gone. It does what a kubelet does, in a loop:
start init containers one by one, then the containers; watch their exits; run probes;
restart per ``restartPolicy``; report the status through the status subresource; on
deletion stop everything (SIGTERM, grace, SIGKILL), remove the namespace and delete the
pod object with grace period 0. Like a kubelet it also projects volumes (the service-account
token the API server's admission adds to every pod, renewed before it expires) and makes the
API server reachable from inside the pod (apiproxy.py).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster.nodeagent import apiproxy, dns, network, paths
from localcluster.nodeagent.host import PodHost
from localcluster.nodeagent.podspec import (
    ConfigError,
    command_line,
    container_env,
    downward_value,
    quantity,
    token_refresh_at,
)
from localcluster.nodeagent.probes import UNSUPPORTED, Probe, check
from swarm_operator.times import timestamp

REPO = Path(__file__).resolve().parents[2]


def _host_dirs_under_tmp() -> list[Path]:
    """The checkout and the Python environment pods run from, where they sit under /tmp."""
    dirs = {REPO, Path(sys.prefix).resolve()}
    return sorted(d for d in dirs if Path("/tmp") in d.parents and not any(p in dirs for p in d.parents))


LAUNCHER = Path(__file__).with_name("launch.py")
# The pod's own file systems: the launcher may create missing mount points in them (and only there).
PRIVATE_DIRS = ["/tmp", "/run", "/dev/shm"]
TICK = 0.2  # seconds between two looks at the processes when nothing wakes the worker
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0  # a kubelet's crash-loop back-off
DEFAULT_SHM = 64 * 2**20  # what a container runtime gives a container without a /dev/shm volume
RUN_SIZE = 64 * 2**20  # the pod's own /run
DEFAULT_MODE = 0o644  # a volume's files without defaultMode or mode (a kubelet's 420)
TOKEN_RETRY = 10.0  # seconds before a failed token renewal is tried again
TERMINAL = ("Succeeded", "Failed")


def exit_code(returncode: int) -> int:
    """Popen reports death by signal N as -N; container runtimes report 128+N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Container:
    """The runtime state of one container of the pod."""

    spec: dict[str, Any]
    init: bool
    log: Path
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


@dataclass
class Token:
    """A projected service-account token: the file it lives in, and when to renew it."""

    volume: str
    source: dict[str, Any]  # the projected source: path, audience, expirationSeconds
    mode: int
    token: str
    refresh_at: float  # monotonic


class PodWorker(threading.Thread):
    def __init__(self, agent: PodHost, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.dir = paths.pod_dir(agent.node, self.namespace, self.pod_name, self.uid)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pod = pod
        self._gone = False  # the object vanished from the API (force-deleted)
        self._shutdown = False  # the agent is stopping
        self.net: network.PodNetwork | None = None
        self._tmpfs: list[Path] = []  # memory-backed emptyDirs mounted on the host
        self._conditions: dict[str, tuple[str, str]] = {}  # type → (status, lastTransitionTime)
        self._start_time: str | None = None
        self._last_status: dict[str, Any] | None = None
        self._notes: set[str] = set()
        spec = pod["spec"]
        self.init_containers = [Container(c, True, self.dir / "logs" / f"{c['name']}.log")
                                for c in spec.get("initContainers") or []]
        self.containers = [Container(c, False, self.dir / "logs" / f"{c['name']}.log") for c in spec["containers"]]
        self._init_failed = False
        self._tokens: dict[tuple[str, str], Token] = {}  # (volume, path) → the token projected there
        self._relayed = False  # apiproxy serves this pod's network namespace

    # --- called by the agent's threads --------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def gone(self) -> None:
        self._gone = True
        self._wake.set()

    def shutdown(self) -> None:
        self._shutdown = True
        self._wake.set()

    def write_hosts(self, records: list[dns.Record]) -> None:
        with self._lock:
            net, pod = self.net, self._pod
            if net is None or not net.hosts_file.exists():
                return
            spec = pod["spec"]
            text = dns.render_hosts(self.namespace, str(net.address), spec.get("hostname") or self.pod_name,
                                    spec.get("subdomain"), records)
            dns.write_in_place(net.hosts_file, text)

    # --- the worker -------------------------------------------------------------------

    @property
    def pod(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    def _deletion_grace(self) -> float | None:
        meta = self.pod["metadata"]
        if not meta.get("deletionTimestamp"):
            return None
        return float(meta.get("deletionGracePeriodSeconds") or 0)

    def note(self, message: str) -> None:
        """A line in the pod's agent log (``<pod dir>/pod.log``), for whoever debugs it."""
        with contextlib.suppress(OSError), (self.dir / "pod.log").open("a") as fh:
            fh.write(f"{timestamp(time.time())} {message}\n")

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug must not take the agent down: fail this pod, say why
            self.note("worker crashed:\n" + traceback.format_exc())
            traceback.print_exc()
            with contextlib.suppress(Exception):
                self._stop_containers(0.0, "worker crashed")
                self._push_status(force_phase="Failed", reason="NodeAgentError")
        finally:
            self._teardown_network()
            self.agent.forget(self.uid)

    def _run(self) -> None:
        status = self.pod.get("status") or {}
        if status.get("phase") in TERMINAL:
            # Finished under an earlier agent: nothing to run, only the deletion to complete.
            self._await_deletion()
            return
        if _ran_before(status):
            # Its processes died with an earlier agent of this node (which this agent cleaned
            # up); running the pod a second time would break restartPolicy: it failed.
            for c in [*self.init_containers, *self.containers]:
                c.state = {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": timestamp(time.time()),
                                          "message": "stopped when the node agent restarted"}}
                c.done = True
            self._push_status(force_phase="Failed", reason="NodeAgentRestarted",
                              message="The pod's processes were stopped when the node agent restarted.")
            self._await_deletion()
            return
        if self._deletion_grace() is None and not self._gone:
            self._setup()
        while True:
            if self._gone:
                self._stop_containers(2.0, "pod object deleted")
                return
            grace = self._deletion_grace()
            if grace is not None:
                self._stop_containers(grace, "pod deleted")
                self._push_status()
                # Like a kubelet: the sandbox is gone before the object is.
                self._teardown_network()
                self._finalize()
                return
            if self._shutdown:
                self._stop_containers(min(self.agent.shutdown_grace, self._pod_grace()), "node agent stopping")
                self._push_status(force_phase="Failed", reason="Terminated",
                                  message="Pod was terminated in response to the node agent stopping.")
                return
            self._step(time.monotonic())
            self._push_status()
            if self._phase() in TERMINAL:
                self._teardown_network()
                self._await_deletion()
                return
            self._wake.wait(TICK)
            self._wake.clear()

    def _await_deletion(self) -> None:
        while not self._gone and not self._shutdown:
            if self._deletion_grace() is not None:
                self._finalize()
                return
            self._wake.wait(5.0)
            self._wake.clear()

    def _pod_grace(self) -> float:
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    # --- setup and teardown -------------------------------------------------------------

    def _setup(self) -> None:
        self._start_time = timestamp(time.time())
        for sub in ("logs", "work", "tmp", "volumes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # Every process of the pod may write in /tmp, whichever user it runs as.
        (self.dir / "tmp").chmod(0o1777)
        address = self.agent.allocate_ip()
        net = network.PodNetwork.for_pod(self.uid, address)
        self._save_state(net)
        # Owned before it exists: if creating it fails half-way, the teardown still runs.
        with self._lock:
            self.net = net
        network.create(net, dns.resolv_conf(self.namespace))
        self.write_hosts(self.agent.dns_records())
        try:
            self.agent.relay.add(net.netns)
            self._relayed = True
        except OSError as exc:
            self.note(f"the API server is not reachable from this pod: {apiproxy.HOST}:{apiproxy.PORT}: {exc}")
            self.agent.event(self.pod, "Warning", "NoApiServer", f"cannot serve the API server in the pod: {exc}")
        self._set_condition("PodReadyToStartContainers", True)
        self._set_condition("Initialized", not self.init_containers)
        self.note(f"network namespace {net.netns}, address {address}")

    def _save_state(self, net: network.PodNetwork) -> None:
        state = {"uid": self.uid, "namespace": self.namespace, "name": self.pod_name, "netns": net.netns,
                 "veth": net.veth, "address": str(net.address), "tmpfs": [str(p) for p in self._tmpfs]}
        (self.dir / "state.json").write_text(json.dumps(state))

    def _teardown_network(self) -> None:
        with self._lock:
            net, self.net = self.net, None
        if net is None:
            return
        if self._relayed:
            # Its sockets hold the namespace: closed first, so that deleting the namespace frees it.
            self.agent.relay.remove(net.netns)
            self._relayed = False
        kill_all(net.netns)
        network.delete(net)
        for mount in self._tmpfs:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        self._tmpfs.clear()
        shutil.rmtree(self.dir / "tmp", ignore_errors=True)
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)
        (self.dir / "state.json").unlink(missing_ok=True)
        self.agent.release_ip(net.address)

    def _finalize(self) -> None:
        """Delete the pod object for good, as a kubelet does once the containers are gone."""
        self.agent.delete_pod(self.namespace, self.pod_name, self.uid)

    # --- containers ---------------------------------------------------------------------

    def _restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def _step(self, now: float) -> None:
        self._renew_tokens(now)
        if self._init_failed:
            return
        if not self._init_done():
            self._step_init(now)
            return
        for c in self.containers:
            if c.done:
                continue
            if c.proc is None:
                if now >= c.restart_at:
                    self._start(c)
            elif not c.running:
                self._reap(c)
            else:
                self._probe(c, now)

    def _init_done(self) -> bool:
        return all(c.done and c.state.get("terminated", {}).get("exitCode") == 0 for c in self.init_containers)

    def _step_init(self, now: float) -> None:
        c = next(c for c in self.init_containers if not c.done)
        for main in self.containers:
            main.state = {"waiting": {"reason": "PodInitializing"}}
        if c.running:
            return
        if c.proc is not None:
            self._reap(c)
            if c.done and c.state["terminated"]["exitCode"] == 0 and self._init_done():
                self._set_condition("Initialized", True)
            return
        if now >= c.restart_at:
            self._start(c)

    def _reap(self, c: Container, restart: bool = True) -> None:
        """Record the exit of ``c``'s main process and decide (unless the pod is stopping)
        whether it runs again."""
        assert c.proc is not None
        code = exit_code(c.proc.wait())
        # The main process is gone: like a PID namespace, take the rest of its group with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGKILL)
        term: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                "startedAt": c.state.get("running", {}).get("startedAt"),
                                "finishedAt": timestamp(time.time()), "containerID": f"process://{c.proc.pid}"}
        if code > 128:
            term["signal"] = code - 128
        start_error = self._start_error(c)
        if start_error:
            # As a kubelet reports a container its runtime could not start (not a bare exit code).
            term.update(reason="StartError", message=start_error)
            self.agent.event(self.pod, "Warning", "Failed", f"Error: {start_error}")
        c.state = {"terminated": term}
        c.probes.clear()
        policy = self._restart_policy()
        # An init container runs again only after a failure; a container per the pod's policy.
        again = restart and ((code != 0 and policy != "Never") if c.init
                             else (policy == "Always" or (policy == "OnFailure" and code != 0)))
        self.note(f"container {c.name} exited {code}" + (f" ({start_error})" if start_error else "")
                  + (", restarting" if again else ""))
        if not again:
            c.done = True
            if c.init and code != 0:
                self._init_failed = True
            return
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(c.restart_count, 10))
        c.restart_at = time.monotonic() + delay
        c.last_state = c.state
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {delay:.0f}s restarting failed container={c.name}"}}
        c.restart_count += 1
        c.proc = None

    def _start_report(self, c: Container) -> Path:
        """Where the launcher writes why ``c`` could not start (launch.py)."""
        return self.dir / f".start-error-{c.name}"

    def _start_error(self, c: Container) -> str:
        report = self._start_report(c)
        try:
            return report.read_text(errors="replace").strip()
        except OSError:
            return ""
        finally:
            report.unlink(missing_ok=True)

    def _lookup(self, kind: str, name: str) -> dict[str, str] | None:
        return self.agent.lookup(self.namespace, kind, name)

    def _pod_view(self) -> dict[str, Any]:
        """The pod as the downward API must see it: with the IPs this worker assigned."""
        pod = dict(self.pod)
        status = dict(pod.get("status") or {})
        if self.net is not None:
            status.update(podIP=str(self.net.address), podIPs=[{"ip": str(self.net.address)}])
        status.update(hostIP=self.agent.host_ip, hostIPs=[{"ip": self.agent.host_ip}])
        pod["status"] = status
        return pod

    def _start(self, c: Container) -> None:
        net = self.net
        assert net is not None
        try:
            env = container_env(self._pod_view(), c.spec, self._lookup, self.agent.allocatable)
            argv = command_line(c.spec, env)
            mounts = self._mounts(c)
        except ConfigError as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            c.restart_at = time.monotonic() + 2.0  # the Secret or ConfigMap may appear: look again soon
            return
        home = self.dir / "work"
        full_env = {
            # The local environment's bin directory stands in for the image: `ray`, `python`.
            "PATH": os.pathsep.join([self.agent.image_bin, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                                     "/usr/bin", "/sbin", "/bin"]),
            "HOME": str(home),
            "HOSTNAME": self.pod_name,
            "LANG": "C.UTF-8",
            # The `kubernetes` Service's variables, as a kubelet sets them in every container.
            **apiproxy.service_env(),
            **env,
        }
        spec = {"hostname": self.pod["spec"].get("hostname") or self.pod_name, "mounts": mounts,
                "private": PRIVATE_DIRS, "cwd": c.spec.get("workingDir") or str(home), "argv": argv,
                "env": full_env, "report": str(self._start_report(c))}
        self._start_report(c).unlink(missing_ok=True)
        spec_file = self.dir / f".launch-{c.name}.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(spec, fh)
        with c.log.open("ab") as log:
            c.proc = subprocess.Popen(
                [network.ip_binary(), "netns", "exec", net.netns, sys.executable, "-I", "-S", str(LAUNCHER),
                 str(spec_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                # Its own session: the container's processes form a group the agent can signal as one.
                start_new_session=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        started = time.monotonic()
        c.env = full_env
        c.state = {"running": {"startedAt": timestamp(time.time())}}
        c.probes = {kind: Probe(kind, c.spec[f"{kind}Probe"], started)
                    for kind in ("startup", "readiness", "liveness") if c.spec.get(f"{kind}Probe")}
        if self._start_time is None:
            self._start_time = timestamp(time.time())
        self.note(f"container {c.name} started: pid {c.proc.pid}: {argv}")
        self.agent.event(self.pod, "Normal", "Started", f"Started container {c.name}")

    def _volume_dir(self, name: str) -> Path:
        return self.dir / "volumes" / name

    def _mounts(self, c: Container) -> list[dict[str, Any]]:
        """What the launcher mounts in the container: a private /run, the pod's /tmp, a private
        /dev/shm unless a volume takes its place, then the container's volumeMounts (parents
        before children)."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        # A fresh /run, as an image brings its own: mount points below it (the service account's
        # /var/run/secrets/kubernetes.io/serviceaccount) are made there, not on the host.
        mounts: list[dict[str, Any]] = [{"type": "tmpfs", "target": "/run", "size": RUN_SIZE, "mode": "755"}]
        # The pod's own /tmp would hide a checkout (and its venv, the stand-in for the image) that
        # lives under the host's /tmp, as a CI clone may: bind it into the pod's /tmp first, so the
        # recursive bind of that /tmp brings it along.
        for host_dir in _host_dirs_under_tmp():
            inside = self.dir / "tmp" / host_dir.relative_to("/tmp")
            inside.mkdir(parents=True, exist_ok=True)
            mounts.append({"type": "bind", "source": str(host_dir), "target": str(inside)})
        mounts.append({"type": "bind", "source": str(self.dir / "tmp"), "target": "/tmp"})
        wanted = sorted(c.spec.get("volumeMounts") or [], key=lambda m: m["mountPath"].count("/"))
        if not any(m["mountPath"].rstrip("/") == "/dev/shm" for m in wanted):
            mounts.append({"type": "tmpfs", "target": "/dev/shm", "size": DEFAULT_SHM})
        for vm in wanted:
            vol = volumes.get(vm["name"])
            if vol is None:
                continue
            if vm.get("subPath") or vm.get("subPathExpr"):
                self._note_once(f"volume {vm['name']}: subPath mounts are not supported; not mounted")
                continue
            source = self._volume_source(vol)
            if source is not None:
                mounts.append({"type": "bind", "source": str(source), "target": vm["mountPath"],
                               "readOnly": bool(vm.get("readOnly"))})
        # A volume on /tmp (the chart's, for a read-only root) hides them again: bind them back on top.
        for host_dir in _host_dirs_under_tmp():
            if any(host_dir.is_relative_to(vm["mountPath"]) for vm in wanted if vm["name"] in volumes):
                mounts.append({"type": "bind", "source": str(self.dir / "tmp" / host_dir.relative_to("/tmp")),
                               "target": str(host_dir)})
        return mounts

    def _note_once(self, message: str) -> None:
        if message not in self._notes:
            self._notes.add(message)
            self.note(message)

    def _volume_source(self, vol: dict[str, Any]) -> Path | None:
        """The host directory holding the volume, made on first use; None for kinds not supported."""
        name = vol["name"]
        target = self._volume_dir(name)
        if "hostPath" in vol:
            return Path(vol["hostPath"]["path"])
        if "emptyDir" in vol:
            if not target.exists():
                target.mkdir(parents=True)
                target.chmod(0o1777)
                empty = vol["emptyDir"] or {}
                if empty.get("medium") == "Memory":
                    self._mount_tmpfs(target, empty.get("sizeLimit"))
            return target
        for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if key in vol:
                ref = vol[key]
                ref_name = ref.get("name") or ref.get("secretName")
                data = self._lookup(kind, ref_name)
                if data is None:
                    if ref.get("optional"):
                        data = {}
                    else:
                        raise ConfigError(f'{kind.lower()} "{ref_name}" not found (volume {name})')
                _write_projection(target, data, ref.get("items"), _mode(ref.get("defaultMode")))
                return target
        if "projected" in vol or "downwardAPI" in vol:
            _write_files(target, self._projected_files(name, vol))
            return target
        self._note_once(f"volume {name}: kind {sorted(k for k in vol if k != 'name')} not supported; not mounted")
        return None

    def _projected_files(self, volume: str, vol: dict[str, Any]) -> dict[str, tuple[str, int]]:
        """Path → (content, mode) of a projected or downwardAPI volume."""
        if "downwardAPI" in vol:
            sources = [{"downwardAPI": vol["downwardAPI"] or {}}]
            default_mode = _mode((vol["downwardAPI"] or {}).get("defaultMode"))
        else:
            sources = (vol["projected"] or {}).get("sources") or []
            default_mode = _mode((vol["projected"] or {}).get("defaultMode"))
        files: dict[str, tuple[str, int]] = {}
        for source in sources:
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                files[sat["path"]] = (self._token(volume, sat, default_mode), default_mode)
            elif "downwardAPI" in source:
                pod = self._pod_view()
                for item in source["downwardAPI"].get("items") or []:
                    files[item["path"]] = (downward_value(pod, item, self.agent.allocatable),
                                           _mode(item.get("mode"), default_mode))
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                ref = source["configMap"] if kind == "ConfigMap" else source["secret"]
                data = self._lookup(kind, ref["name"])
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found (volume {volume})')
                items = ref.get("items") or [{"key": k, "path": k} for k in sorted(data)]
                for item in items:
                    if item["key"] not in data:
                        if ref.get("optional"):
                            continue
                        raise ConfigError(f'volume {volume}: no key {item["key"]} in {kind} {ref["name"]}')
                    files[item["path"]] = (data[item["key"]], _mode(item.get("mode"), default_mode))
            else:
                self._note_once(f"volume {volume}: projected source {sorted(source)} not supported; left out")
        return files

    def _token(self, volume: str, source: dict[str, Any], mode: int) -> str:
        """The token for a serviceAccountToken source: the current one, or a new one (TokenRequest,
        bound to this pod) when there is none yet or it is due for renewal."""
        key = (volume, source["path"])
        current = self._tokens.get(key)
        if current is not None and time.monotonic() < current.refresh_at:
            return current.token
        token, refresh_in = self._request_token(source)
        self._tokens[key] = Token(volume, source, mode, token, time.monotonic() + refresh_in)
        return token

    def _request_token(self, source: dict[str, Any]) -> tuple[str, float]:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        try:
            token, issued, expires = self.agent.request_token(
                self.namespace, account, self.pod_name, self.uid, source.get("audience") or None,
                int(source.get("expirationSeconds") or 3600))
        except Exception as exc:  # the API's error, whichever client raised it
            raise ConfigError(f"service account token for {account}: {exc}") from exc
        self.note(f"service account {account}: token issued, expires {datetime.fromtimestamp(expires, UTC):%H:%M:%S}")
        return token, token_refresh_at(issued, expires) - issued

    def _renew_tokens(self, now: float) -> None:
        """Replace each projected token that reached its renewal time, in place (a rename: a reader
        never sees half a file); the API server keeps accepting the old one until it expires."""
        for (volume, path), tok in list(self._tokens.items()):
            if now < tok.refresh_at:
                continue
            try:
                token, refresh_in = self._request_token(tok.source)
            except ConfigError as exc:
                self.note(f"volume {volume}: renewing the token failed, retrying in {TOKEN_RETRY:.0f}s: {exc}")
                tok.refresh_at = now + TOKEN_RETRY
                continue
            tok.token, tok.refresh_at = token, time.monotonic() + refresh_in
            _write_files(self._volume_dir(volume), {path: (token, tok.mode)})

    def _mount_tmpfs(self, target: Path, size_limit: str | None) -> None:
        # One tmpfs per memory-backed emptyDir, on the host like a kubelet's, so all containers
        # of the pod share it; sized to sizeLimit (Ray checks /dev/shm's size for its object store).
        opts = "mode=1777"
        if size_limit:
            opts += f",size={int(quantity(str(size_limit)))}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], check=True, capture_output=True)
        self._tmpfs.append(target)
        if self.net is not None:
            self._save_state(self.net)

    def _probe(self, c: Container, now: float) -> None:
        assert c.proc is not None and self.net is not None
        startup = c.probes.get("startup")
        for kind in ("startup", "liveness", "readiness"):
            probe = c.probes.get(kind)
            if probe is None or not probe.due(now):
                continue
            if kind != "startup" and startup is not None and startup.verdict is not True:
                continue  # the startup probe gates the others
            if kind == "startup" and probe.verdict is True:
                continue
            ok, what = check(probe.spec, c.spec, str(self.net.address), c.proc.pid, c.env, probe.timeout)
            if what.endswith(UNSUPPORTED):
                self._note_once(f"container {c.name}: {kind} probe {what}")
            changed = probe.record(ok, time.monotonic())
            if not ok:
                self.note(f"container {c.name}: {kind} probe failed ({probe.failures}): {what}")
            if changed:
                self.note(f"container {c.name}: {kind} probe now {'passing' if probe.verdict else 'failing'}: {what}")
            if probe.verdict is False and kind in ("liveness", "startup"):
                self.agent.event(self.pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {what}")
                self.agent.event(self.pod, "Normal", "Killing",
                                 f"Container {c.name} failed {kind} probe, will be restarted")
                grace = float(probe.spec.get("terminationGracePeriodSeconds") or self._pod_grace())
                self._stop_container(c, grace)
                self._reap(c)
                return

    def _stop_container(self, c: Container, grace: float) -> None:
        """SIGTERM to the main process, SIGKILL to its group once it exits or the grace period ends."""
        if c.proc is None or not c.running:
            return
        with contextlib.suppress(ProcessLookupError):
            c.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGKILL)
        c.proc.wait()

    def _stop_containers(self, grace: float, why: str) -> None:
        """Stop every container of the pod at once, within one grace period, then everything left
        in its network namespace (processes that left their group too)."""
        live = [c for c in [*self.init_containers, *self.containers] if c.running]
        if live:
            self.note(f"stopping {', '.join(c.name for c in live)} ({why}; grace {grace:.0f}s)")
            self.agent.event(self.pod, "Normal", "Killing", f"Stopping container(s) {', '.join(c.name for c in live)}")
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.running for c in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
        for c in live:
            self._reap(c, restart=False)
        for c in [*self.init_containers, *self.containers]:
            if c.proc is None and "waiting" in c.state:
                c.done = True
        if self.net is not None:
            kill_all(self.net.netns)

    # --- status -------------------------------------------------------------------------

    def _phase(self) -> str:
        if self._init_failed:
            return "Failed"
        mains = self.containers
        if all(c.done for c in mains):
            # A container stopped before it ever ran has no exit code: that is a failure too.
            codes = [c.state.get("terminated", {}).get("exitCode") for c in mains]
            return "Succeeded" if all(code == 0 for code in codes) else "Failed"
        if any(c.proc is not None or c.restart_count for c in mains):
            return "Running"
        return "Pending"

    def _set_condition(self, kind: str, value: bool) -> None:
        status = "True" if value else "False"
        old = self._conditions.get(kind)
        if old is None or old[0] != status:
            self._conditions[kind] = (status, timestamp(time.time()))

    def _push_status(self, force_phase: str | None = None, reason: str | None = None,
                     message: str | None = None) -> None:
        ready = all(c.ready for c in self.containers) and self._init_done()
        self._set_condition("ContainersReady", ready)
        self._set_condition("Ready", ready)
        current = self.pod.get("status") or {}
        mine = set(self._conditions)
        conditions = [c for c in current.get("conditions") or [] if c.get("type") not in mine]
        conditions += [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": at}
                       for t, (s, at) in sorted(self._conditions.items())]
        status: dict[str, Any] = {
            "phase": force_phase or self._phase(),
            "hostIP": self.agent.host_ip,
            "hostIPs": [{"ip": self.agent.host_ip}],
            "conditions": conditions,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self._start_time:
            status["startTime"] = self._start_time
        address = self.net.address if self.net is not None else _ip_of(current)
        if address is not None:
            status["podIP"] = str(address)
            status["podIPs"] = [{"ip": str(address)}]
        if reason:
            status.update(reason=reason, message=message or reason)
        if status == self._last_status:
            return
        if self.agent.patch_pod_status(self.namespace, self.pod_name, status):
            self._last_status = status


def _ran_before(status: dict[str, Any]) -> bool:
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return any("containerID" in st or {"running", "terminated"} & set(st.get("state") or {}) for st in statuses)


def _ip_of(status: dict[str, Any]) -> ipaddress.IPv4Address | None:
    text = status.get("podIP")
    return ipaddress.IPv4Address(text) if text else None


def _mode(value: Any, default: int = DEFAULT_MODE) -> int:
    return int(value) if value is not None else default


def _write_projection(target: Path, data: dict[str, str], items: list[dict[str, Any]] | None,
                      mode: int = DEFAULT_MODE) -> None:
    """The files of a configMap or secret volume: every key, or the listed items at their paths."""
    chosen = {i["key"]: i for i in items} if items else {k: {"path": k} for k in data}
    _write_files(target, {item.get("path") or key: (data[key], _mode(item.get("mode"), mode))
                          for key, item in chosen.items() if key in data})


def _write_files(target: Path, files: dict[str, tuple[str, int]]) -> None:
    """Write each file (path relative to ``target``) through a rename, so that a container reading
    it (a token being renewed) sees the old or the new content, never a part."""
    target.mkdir(parents=True, exist_ok=True)
    for rel, (text, mode) in files.items():
        path = target / rel
        if target.resolve() not in path.resolve().parents:
            raise ConfigError(f"volume file {rel!r} lies outside its volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.chmod(mode)
        os.replace(tmp, path)


def kill_all(netns: str) -> None:
    """SIGKILL whatever still runs in the namespace, and wait until it is gone."""
    deadline = time.monotonic() + 10.0
    while True:
        pids = network.netns_pids(netns)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def decode_secret(data: dict[str, str] | None, string_data: dict[str, str] | None = None) -> dict[str, str]:
    """A Secret's ``data`` (base64) as text."""
    out = {k: base64.b64decode(v).decode(errors="replace") for k, v in (data or {}).items()}
    out.update(string_data or {})
    return out
