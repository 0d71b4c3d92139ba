"""One pod on a process node, from the moment the agent sees it bound to the node until the pod object is gone.

A ``PodWorker`` thread owns one pod (by UID) and does what a kubelet does, in a loop: set up its
network namespace; start init containers one by one, then the containers; watch their exits; run
probes; restart per ``restartPolicy``; report the status through the status subresource; on deletion
stop everything (SIGTERM, grace, SIGKILL), remove the namespace and delete the pod object with grace
period 0. Its parts: containers.py (one container's process and rules), volumes.py (what the containers
see of the pod's files, tokens included), podstatus.py (the status it reports), podlog.py (its notes),
apiproxy.py (the API server reachable from inside the pod).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import traceback
from typing import Any

from localcluster.nodeagent import apiproxy, dns, network, paths, podstatus
from localcluster.nodeagent.containers import Container, crash_loop_delay, runs_again
from localcluster.nodeagent.host import PodHost
from localcluster.nodeagent.podlog import PodLog
from localcluster.nodeagent.podspec import ConfigError, command_line, container_env
from localcluster.nodeagent.podstatus import TERMINAL
from localcluster.nodeagent.probes import UNSUPPORTED, check
from localcluster.nodeagent.volumes import PRIVATE_DIRS, PodVolumes
from swarm_operator.times import timestamp

TICK = 0.2  # seconds between two looks at the processes when nothing wakes the worker


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
        self.log = PodLog(self.dir / "pod.log")
        self.volumes = PodVolumes(self.dir, agent, self._pod_view, self.log, self._save_state)
        self._conditions = podstatus.Conditions()
        self._start_time: str | None = None
        self._last_status: dict[str, Any] | None = None
        spec = pod["spec"]
        self.init_containers = [self._container(c, True) for c in spec.get("initContainers") or []]
        self.containers = [self._container(c, False) for c in spec["containers"]]
        self._init_failed = False
        self._relayed = False  # apiproxy serves this pod's network namespace

    def _container(self, spec: dict[str, Any], init: bool) -> Container:
        name = spec["name"]
        return Container(spec, init, self.dir / "logs" / f"{name}.log", self.dir / f".start-error-{name}")

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

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug must not take the agent down: fail this pod, say why
            self.log.note("worker crashed:\n" + traceback.format_exc())
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
        if podstatus.ran_before(status):
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
        # Owned before it exists: if creating it fails half-way, the teardown still runs.
        with self._lock:
            self.net = net
        self._save_state()
        network.create(net, dns.resolv_conf(self.namespace))
        self.write_hosts(self.agent.dns_records())
        try:
            self.agent.relay.add(net.netns)
            self._relayed = True
        except OSError as exc:
            self.log.note(f"the API server is not reachable from this pod: {apiproxy.HOST}:{apiproxy.PORT}: {exc}")
            self.agent.pod_api.event(self.pod, "Warning", "NoApiServer",
                                     f"cannot serve the API server in the pod: {exc}")
        self._conditions.set("PodReadyToStartContainers", True)
        self._conditions.set("Initialized", not self.init_containers)
        self.log.note(f"network namespace {net.netns}, address {address}")

    def _save_state(self) -> None:
        """What a restarted agent needs to clean the pod up: its namespace, veth, address and tmpfs mounts."""
        net = self.net
        if net is None:
            return
        state = {"uid": self.uid, "namespace": self.namespace, "name": self.pod_name, "netns": net.netns,
                 "veth": net.veth, "address": str(net.address), "tmpfs": [str(p) for p in self.volumes.tmpfs]}
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
        network.kill_all(net.netns)
        network.delete(net)
        self.volumes.unmount()
        shutil.rmtree(self.dir / "tmp", ignore_errors=True)
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)
        (self.dir / "state.json").unlink(missing_ok=True)
        self.agent.release_ip(net.address)

    def _finalize(self) -> None:
        """Delete the pod object for good, as a kubelet does once the containers are gone."""
        self.agent.pod_api.delete_pod(self.namespace, self.pod_name, self.uid)

    # --- containers ---------------------------------------------------------------------

    def _restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def _step(self, now: float) -> None:
        self.volumes.renew_tokens(now)
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
                self._conditions.set("Initialized", True)
            return
        if now >= c.restart_at:
            self._start(c)

    def _reap(self, c: Container, restart: bool = True) -> None:
        """Record the exit of ``c``'s main process and decide (unless the pod is stopping)
        whether it runs again."""
        term = c.ended()
        code = term["exitCode"]
        start_error = term.get("message", "") if term["reason"] == "StartError" else ""
        if start_error:
            # As a kubelet reports a container its runtime could not start (not a bare exit code).
            self.agent.pod_api.event(self.pod, "Warning", "Failed", f"Error: {start_error}")
        c.state = {"terminated": term}
        c.probes.clear()
        again = restart and runs_again(code, c.init, self._restart_policy())
        self.log.note(f"container {c.name} exited {code}" + (f" ({start_error})" if start_error else "")
                      + (", restarting" if again else ""))
        if not again:
            c.done = True
            if c.init and code != 0:
                self._init_failed = True
            return
        delay = crash_loop_delay(c.restart_count)
        c.restart_at = time.monotonic() + delay
        c.last_state = c.state
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {delay:.0f}s restarting failed container={c.name}"}}
        c.restart_count += 1
        c.proc = None

    def _lookup(self, kind: str, name: str) -> dict[str, str] | None:
        return self.agent.pod_api.lookup(self.namespace, kind, name)

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
            mounts = self.volumes.mounts(c.spec)
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
        c.launch(net.netns, {"hostname": self.pod["spec"].get("hostname") or self.pod_name, "mounts": mounts,
                             "private": PRIVATE_DIRS, "cwd": c.spec.get("workingDir") or str(home), "argv": argv,
                             "env": full_env}, self.dir)
        if self._start_time is None:
            self._start_time = timestamp(time.time())
        assert c.proc is not None
        self.log.note(f"container {c.name} started: pid {c.proc.pid}: {argv}")
        self.agent.pod_api.event(self.pod, "Normal", "Started", f"Started container {c.name}")

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
                self.log.note_once(f"container {c.name}: {kind} probe {what}")
            changed = probe.record(ok, time.monotonic())
            if not ok:
                self.log.note(f"container {c.name}: {kind} probe failed ({probe.failures}): {what}")
            if changed:
                verdict = "passing" if probe.verdict else "failing"
                self.log.note(f"container {c.name}: {kind} probe now {verdict}: {what}")
            if probe.verdict is False and kind in ("liveness", "startup"):
                self.agent.pod_api.event(self.pod, "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {what}")
                self.agent.pod_api.event(self.pod, "Normal", "Killing",
                                         f"Container {c.name} failed {kind} probe, will be restarted")
                grace = float(probe.spec.get("terminationGracePeriodSeconds") or self._pod_grace())
                c.stop(grace)
                self._reap(c)
                return

    def _stop_containers(self, grace: float, why: str) -> None:
        """Stop every container of the pod at once, within one grace period, then everything left
        in its network namespace (processes that left their group too)."""
        live = [c for c in [*self.init_containers, *self.containers] if c.running]
        if live:
            self.log.note(f"stopping {', '.join(c.name for c in live)} ({why}; grace {grace:.0f}s)")
            self.agent.pod_api.event(self.pod, "Normal", "Killing",
                                     f"Stopping container(s) {', '.join(c.name for c in live)}")
        for c in live:
            c.terminate()
        deadline = time.monotonic() + grace
        while any(c.running for c in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for c in live:
            c.kill()
        for c in live:
            self._reap(c, restart=False)
        for c in [*self.init_containers, *self.containers]:
            if c.proc is None and "waiting" in c.state:
                c.done = True
        if self.net is not None:
            network.kill_all(self.net.netns)

    # --- status -------------------------------------------------------------------------

    def _phase(self) -> str:
        return podstatus.phase(self._init_failed, self.containers)

    def _push_status(self, force_phase: str | None = None, reason: str | None = None,
                     message: str | None = None) -> None:
        ready = all(c.ready for c in self.containers) and self._init_done()
        self._conditions.set("ContainersReady", ready)
        self._conditions.set("Ready", ready)
        current = self.pod.get("status") or {}
        address = self.net.address if self.net is not None else podstatus.ip_of(current)
        status = podstatus.pod_status(force_phase or self._phase(), self.agent.host_ip,
                                      self._conditions.merged(current.get("conditions") or []), self.containers,
                                      self.init_containers, self._start_time, address, reason, message)
        if status == self._last_status:
            return
        if self.agent.pod_api.patch_pod_status(self.namespace, self.pod_name, status):
            self._last_status = status
