"""The Ray state client against real local Ray: a v2-mode head with one worker, and a token-auth head in
v1 mode, all started by this module as plain processes (no Kubernetes), stopped by their process group.

(The file is not called test_ray_state.py: tests/unit has one, and pytest cannot collect two test modules
of one basename from folders without ``__init__.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swarm_operator.autoscaler.gcs import (
    OPERATOR_RAY_VERSION,
    GcsAuthError,
    GcsUnavailable,
    RayStateClient,
    RayStateError,
    RayStatePool,
    ReadResult,
    Transport,
    new_client,
)
from swarm_operator.autoscaler.snapshot import (
    Bundle,
    ClusterSnapshot,
    GangDemand,
    LabelConstraint,
    LabelOp,
    NodeStatus,
    RayNode,
    ResourceDemand,
    Strategy,
)
from swarm_operator.kit.blocking import Blocking

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RAY = Path(sys.executable).with_name("ray")
TOKEN = "swarm-test-token-0123456789"
# For the whole rig (three `ray start`s), inside the first test's 300 s timeout. Generous: a node starts in
# ~3 s on a quiet machine, but this one may be busy building or testing. Past it the rig fails with the
# log: a skip would turn a broken or hopelessly slow Ray into a green run.
START_TIMEOUT_S = 180.0
WORKER_PORTS = 16  # worker processes per node; a 1-CPU node uses a few


def free_ports(n: int) -> list[int]:
    """Distinct free loopback ports, held together while chosen so none repeats."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


@dataclass
class Proc:
    """A process in its own process group (ray start forks many), stopped as a group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_all([self])


def stop_all(procs: list[Proc], grace_s: float = 5.0) -> None:
    """SIGTERM every group at once, SIGKILL whatever is left after ``grace_s`` (``ray start --block``
    often takes longer than that to stop gcs_server and the raylet)."""
    groups = [p.popen.pid for p in procs]  # start_new_session: each group id is its leader's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            for p in procs:
                p.popen.poll()  # reap the leaders so their groups can vanish
            time.sleep(0.1)
    for p in procs:
        p.popen.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: orphans are re-parented to a
    pid 1 that may never reap them, and they hold no ports."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def spawn(name: str, args: list[str], env: dict[str, str], logdir: Path, stdin: int | None = None) -> Proc:
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=stdin, start_new_session=True
        )
    return Proc(name, popen, log)


def ray_start(name: str, *, head: bool, gcs_port: int, temp_dir: Path, logdir: Path, env: dict[str, str],
              extra: list[str]) -> Proc:
    named = free_ports(8 + WORKER_PORTS)
    args = [
        str(RAY), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", "--object-store-memory=100000000",
        # Every port named: several Ray nodes share this machine, and other tests may run Ray too.
        f"--node-manager-port={named[0]}", f"--object-manager-port={named[1]}",
        f"--dashboard-agent-listen-port={named[2]}", f"--dashboard-agent-grpc-port={named[3]}",
        f"--metrics-export-port={named[4]}", f"--runtime-env-agent-port={named[5]}",
        "--worker-port-list=" + ",".join(map(str, named[8:])),
    ]
    if head:
        args += ["--head", f"--port={gcs_port}", "--include-dashboard=false", f"--dashboard-port={named[6]}",
                 f"--ray-client-server-port={named[7]}"]
    else:
        args += [f"--address=127.0.0.1:{gcs_port}"]
    return spawn(name, args + extra, env, logdir)


@dataclass
class Cluster:
    address: str
    procs: list[Proc] = field(default_factory=list)
    token: str | None = None

    def client(self, transport: Transport = Transport.AUTO) -> RayStateClient:
        return RayStateClient(self.address, token=self.token, transport=transport)


@dataclass
class Rig:
    main: Cluster  # v2 mode, head + worker, no auth
    v1: Cluster  # v1 mode, head only, token auth
    logdir: Path
    drivers: list[Proc] = field(default_factory=list)

    def driver(self, name: str, cluster: Cluster, code: str) -> Proc:
        """A Ray driver running ``code`` (``address`` is defined); it prints READY, then holds its tasks
        and placement groups until the test closes its stdin."""
        env = clean_env(**({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token} if cluster.token else {}))
        program = DRIVER_PRELUDE + code + DRIVER_EPILOGUE
        proc = spawn(name, [sys.executable, "-c", program, cluster.address], env, self.logdir, stdin=subprocess.PIPE)
        self.drivers.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "READY" in proc.log.read_text(errors="replace"):
                return proc
            if not proc.alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"driver {name} did not get ready:\n{proc.log_tail()}")

    def end_driver(self, proc: Proc) -> None:
        assert proc.popen.stdin is not None
        proc.popen.stdin.close()
        try:
            proc.popen.wait(20)
        except subprocess.TimeoutExpired:
            proc.stop()


DRIVER_PRELUDE = """
import sys, time
import ray
from ray.autoscaler.sdk import request_resources
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
address = sys.argv[1]
ray.init(address=address, log_to_driver=False)

@ray.remote
def sleep(s):
    time.sleep(s)
"""
DRIVER_EPILOGUE = """
print("READY", flush=True)
sys.stdin.read()
"""


def wait_for(what: str, client: RayStateClient, check: Callable[[ClusterSnapshot], bool],
             timeout_s: float = 20.0) -> tuple[ClusterSnapshot, float]:
    """Poll until ``check`` holds; returns the snapshot and the seconds it took."""
    started = time.monotonic()
    last: ClusterSnapshot | None = None
    error: Exception | None = None
    while time.monotonic() - started < timeout_s:
        try:
            last = client.read()
            if check(last):
                return last, time.monotonic() - started
        except RayStateError as e:
            error = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last snapshot: {last}; last error: {error}")


def alive(s: ClusterSnapshot, instance: str) -> RayNode:
    node = s.node_by_instance(instance)
    assert node is not None and node.alive, f"{instance} not alive in {s.nodes}"
    return node


def status_of(s: ClusterSnapshot, node_id: str) -> NodeStatus | None:
    node = s.node(node_id)
    return None if node is None else node.status


def _start_or_fail(proc: Proc, client: RayStateClient, instances: int, rig_procs: list[Proc],
                   started: float) -> None:
    """Return once ``client`` sees ``instances`` alive nodes; fail with ``proc``'s log when it exits first or
    the rig, ``started`` at that monotonic time, runs out of START_TIMEOUT_S."""
    while time.monotonic() - started < START_TIMEOUT_S:
        if not proc.alive():
            break
        try:
            if sum(n.alive for n in client.read().nodes) >= instances:
                return
        except RayStateError:
            pass
        time.sleep(0.2)
    how = (f"exited with {proc.popen.returncode}" if not proc.alive()
           else f"not up {time.monotonic() - started:.0f} s after the rig began")
    log = proc.log_tail(40)
    stop_all(rig_procs)
    pytest.fail(f"`ray start` of {proc.name} {how}; its log ({proc.log}):\n{log}", pytrace=False)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    assert RAY.exists(), f"no {RAY}: ray[default] is a dependency of this package; reinstall the venv"
    logdir = Path(tempfile.mkdtemp(prefix="rs-"))  # short: Ray's unix sockets live under --temp-dir
    main_port, v1_port = free_ports(2)
    main = Cluster(f"127.0.0.1:{main_port}")
    v1 = Cluster(f"127.0.0.1:{v1_port}", token=TOKEN)
    procs: list[Proc] = []
    rig = Rig(main, v1, logdir)
    started = time.monotonic()
    try:
        head = ray_start(
            "main-head", head=True, gcs_port=main_port, temp_dir=logdir / "main", logdir=logdir,
            env=clean_env(RAY_enable_autoscaler_v2="1", RAY_CLOUD_INSTANCE_ID="head-pod", RAY_NODE_TYPE_NAME="head"),
            extra=[],
        )
        v1_head = ray_start(
            "v1-head", head=True, gcs_port=v1_port, temp_dir=logdir / "v1", logdir=logdir,
            env=clean_env(RAY_enable_autoscaler_v2="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN,
                          RAY_CLOUD_INSTANCE_ID="v1-head-pod", RAY_NODE_TYPE_NAME="head"),
            extra=[],
        )
        procs += [head, v1_head]
        _start_or_fail(head, main.client(), 1, procs, started)
        worker = ray_start(
            "main-worker", head=False, gcs_port=main_port, temp_dir=logdir / "main", logdir=logdir,
            env=clean_env(RAY_CLOUD_INSTANCE_ID="worker-pod", RAY_NODE_TYPE_NAME="cpu"),
            extra=['--resources={"w": 1}'],
        )
        procs.append(worker)
        _start_or_fail(worker, main.client(), 2, procs, started)
        _start_or_fail(v1_head, v1.client(), 1, procs, started)
        main.procs, v1.procs = [head, worker], [v1_head]
        yield rig
    finally:
        stop_all([*rig.drivers, *procs])
        shutil.rmtree(logdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------- tests


def test_reads_nodes_with_pod_names_and_groups(rig: Rig) -> None:
    s = rig.main.client().read()
    head, worker = alive(s, "head-pod"), alive(s, "worker-pod")
    assert (head.node_type, head.is_head, head.total["CPU"]) == ("head", True, 1.0)
    assert (worker.node_type, worker.is_head, worker.total["CPU"], worker.total["w"]) == ("cpu", False, 1.0, 1.0)
    assert len(worker.node_id) == 56 and worker.node_id != head.node_id
    # Ray replaces --node-ip-address=127.0.0.1 with the machine's own address: report what it did
    print(f"node addresses as Ray reports them: head {head.ip}, worker {worker.ip}")
    assert head.ip and worker.ip
    assert (s.ray_version, s.autoscaler_v2) == (OPERATOR_RAY_VERSION, True)
    assert s.session_name.startswith("session_")
    assert 0 < s.read_seconds < 1.0


def test_both_transports_read_the_same(rig: Rig) -> None:
    a = rig.main.client(Transport.GCS_CLIENT).read()
    b = rig.main.client(Transport.GRPC).read()
    assert a.session_name == b.session_name and a.ray_version == b.ray_version
    def ids(s: ClusterSnapshot) -> list[tuple[str, str, NodeStatus]]:
        return [(n.node_id, n.instance_id, n.status) for n in s.nodes]

    assert ids(a) == ids(b)


def test_idle_worker_shows_growing_idle_time(rig: Rig) -> None:
    client = rig.main.client()
    first, _ = wait_for("the worker to be idle", client, lambda s: alive(s, "worker-pod").status is NodeStatus.IDLE)
    time.sleep(1.5)
    second = client.read()
    before, after = alive(first, "worker-pod"), alive(second, "worker-pod")
    assert after.status is NodeStatus.IDLE
    assert after.idle_duration_ms >= before.idle_duration_ms + 1000, (before, after)


def test_demand_gangs_and_constraints_appear(rig: Rig) -> None:
    client = rig.main.client()
    selector = ((LabelConstraint("zone", LabelOp.IN, frozenset({"nowhere"})),),)
    expected_pending = {
        (("CPU", 8.0),): (3, ()),
        (("nope", 1.0),): (2, ()),
        (("CPU", 1.0),): (2, selector),
    }
    expected_gang = GangDemand((Bundle({"CPU": 1.0}),) * 3, Strategy.STRICT_SPREAD, 1, ())
    driver = rig.driver("demand", rig.main, """
refs = [sleep.options(num_cpus=8).remote(600) for _ in range(3)]
refs += [sleep.options(num_cpus=0, resources={"nope": 1}).remote(600) for _ in range(2)]
refs += [sleep.options(num_cpus=1, label_selector={"zone": "nowhere"}).remote(600) for _ in range(2)]
pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
refs += [sleep.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote(600)]
request_resources(bundles=[{"CPU": 4}])
""")

    def complete(s: ClusterSnapshot) -> bool:
        pending = {tuple(sorted(d.shape.items())): (d.count, d.label_selectors) for d in s.pending}
        gangs = [GangDemand(g.bundles, g.strategy, g.count, ()) for g in s.gangs]
        return (
            pending == expected_pending
            and gangs == [expected_gang]
            and s.constraints == (ResourceDemand({"CPU": 4.0}, 1),)
            and s.pending_in_placement_groups == 1
        )

    s, seconds = wait_for("demand, gang and constraint", client, complete, timeout_s=15)
    print(f"demand visible {seconds:.2f}s after the driver submitted it")
    assert len(s.gangs[0].placement_group_ids[0]) == 36
    # infeasible demand does not make a node busy
    assert alive(s, "worker-pod").status is NodeStatus.IDLE
    # the gRPC transport parses the same reply the same way
    other = rig.main.client(Transport.GRPC).read()
    assert (other.pending, other.gangs, other.constraints) == (s.pending, s.gangs, s.constraints)
    rig.end_driver(driver)
    # a driver's tasks and placement groups go with it; request_resources() stays until overwritten
    s, _ = wait_for("demand to go", client, lambda s: not s.pending and not s.gangs)
    assert s.constraints == (ResourceDemand({"CPU": 4.0}, 1),)
    clear = rig.driver("clear", rig.main, "request_resources(bundles=[])\n")
    wait_for("the constraint to be cleared", client, lambda s: not s.constraints)
    rig.end_driver(clear)


def test_drain_is_refused_on_a_busy_node(rig: Rig) -> None:
    client = rig.main.client()
    driver = rig.driver("busy", rig.main, 'ref = sleep.options(num_cpus=1, resources={"w": 1}).remote(600)\n')
    s, _ = wait_for("the worker to be busy", client, lambda s: alive(s, "worker-pod").status is NodeStatus.RUNNING)
    worker = alive(s, "worker-pod")
    for transport in (Transport.GCS_CLIENT, Transport.GRPC):
        c = rig.main.client(transport)
        snap = c.read()
        accepted, why = c.drain(worker.node_id, message="idle for 60s", snapshot=snap)
        assert not accepted, transport
        assert "no longer idle" in why, why
    assert alive(client.read(), "worker-pod").status is NodeStatus.RUNNING
    rig.end_driver(driver)


def test_drain_is_accepted_on_an_idle_node_which_then_goes(rig: Rig) -> None:
    client = rig.main.client()
    s, _ = wait_for("the worker to be idle", client, lambda s: alive(s, "worker-pod").status is NodeStatus.IDLE)
    worker = alive(s, "worker-pod")
    started = time.monotonic()
    assert client.drain(worker.node_id, message="idle for 60s", snapshot=s) == (True, "")
    drain_s = time.monotonic() - started
    gone, seconds = wait_for(
        "the worker to drain", client,
        lambda s: status_of(s, worker.node_id) in (NodeStatus.DRAINING, NodeStatus.DEAD),
    )
    print(f"drain call {drain_s * 1000:.1f} ms; node {gone.node(worker.node_id)} after {seconds:.2f}s")
    # the old snapshot still shows it alive, but the client checks again before sending
    accepted, why = client.drain(worker.node_id, snapshot=s)
    assert not accepted and "no longer alive" in why and "not sent" in why
    # and a snapshot in which it is dead is refused without asking Ray
    dead, _ = wait_for("the worker to be dead", client, lambda s: status_of(s, worker.node_id) is NodeStatus.DEAD)
    assert client.drain(worker.node_id, snapshot=dead) == (
        False, f"node {worker.node_id} is not alive in the snapshot (DEAD); not sent",
    )


@pytest.mark.parametrize("transport", [Transport.GCS_CLIENT, Transport.GRPC])
def test_a_dead_address_fails_fast(transport: Transport) -> None:
    (port,) = free_ports(1)
    client = RayStateClient(f"127.0.0.1:{port}", transport=transport)
    started = time.monotonic()
    with pytest.raises(GcsUnavailable):
        client.read()
    seconds = time.monotonic() - started
    print(f"dead address, {transport}: failed in {seconds:.3f}s")
    assert seconds < 2.5


def test_token_auth(rig: Rig) -> None:
    s = rig.v1.client().read()
    assert alive(s, "v1-head-pod").is_head
    assert rig.v1.client().transport is Transport.GRPC
    with pytest.raises(GcsAuthError):
        RayStateClient(rig.v1.address, token="wrong").read()
    with pytest.raises(GcsAuthError):  # this process has no RAY_AUTH_TOKEN: the GcsClient sends none
        RayStateClient(rig.v1.address, transport=Transport.GCS_CLIENT).read()


def test_request_resources_on_a_v1_head_comes_from_internal_kv(rig: Rig) -> None:
    driver = rig.driver("v1-request", rig.v1, 'request_resources(num_cpus=2, bundles=[{"GPU": 1, "CPU": 1}])\n')
    expected = (ResourceDemand({"CPU": 1.0}, 2), ResourceDemand({"CPU": 1.0, "GPU": 1.0}, 1))
    s, _ = wait_for("the KV request", rig.v1.client(), lambda s: s.constraints == expected)
    assert s.autoscaler_v2 is False  # the head writes "0" under __autoscaler_v2_enabled
    # the GcsClient transport, with the token from the environment as Ray's own tools take it
    probe = (
        "import json, sys\n"
        "from swarm_operator.autoscaler.gcs import RayStateClient\n"
        "s = RayStateClient(sys.argv[1]).read()\n"
        "print(json.dumps([[d.shape, d.count] for d in s.constraints]))\n"
    )
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", probe, rig.v1.address], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [[{"CPU": 1.0}, 2], [{"CPU": 1.0, "GPU": 1.0}, 1]]
    rig.end_driver(driver)


def test_pool_reads_live_token_and_dead_clusters_together(rig: Rig) -> None:
    (dead_port,) = free_ports(1)
    blocking = Blocking(8)
    pool = RayStatePool(new_client, blocking.submit, read_timeout_s=5.0)
    try:
        pool.set_cluster("main", rig.main.address)
        pool.set_cluster("v1", rig.v1.address, token=TOKEN)
        pool.set_cluster("dead", f"127.0.0.1:{dead_port}")

        async def read_all() -> dict[str, ReadResult]:
            keys = ("main", "v1", "dead")
            return dict(zip(keys, await asyncio.gather(*(pool.aread(key) for key in keys)), strict=True))

        async def read_main(times: int) -> list[float]:
            latencies = []
            for _ in range(times):
                t = time.monotonic()
                result = await pool.aread("main")
                latencies.append(time.monotonic() - t)
                assert result.snapshot is not None
            return latencies

        started = time.monotonic()
        results = asyncio.run(read_all())
        seconds = time.monotonic() - started
        assert results["main"].snapshot is not None and results["v1"].snapshot is not None
        assert results["dead"].error is not None and results["dead"].retry_in_s == 1.0
        assert seconds < 2.5
        latencies = asyncio.run(read_main(50))
        latencies.sort()
        print(f"pool: 3 clusters in {seconds * 1000:.1f} ms; one read p50 {latencies[25] * 1000:.2f} ms, "
              f"max {latencies[-1] * 1000:.2f} ms")
    finally:
        pool.close()
        blocking.shutdown()
