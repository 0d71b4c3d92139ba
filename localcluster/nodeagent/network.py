"""Pod networking on one host: a bridge shared by every agent, one network namespace and veth pair per pod.

The bridge holds the gateway address of the whole pod network (``10.250.0.1/16``), so
host processes (the operator, the tests) reach every pod IP directly, and pods of all
agents on this host reach each other over the bridge. Each agent owns one /24 of that
network. Nothing routes further: IP forwarding stays as the host has it, so a pod's
packets to any other address end at the host.

Agents on one host coordinate through ``/run/swarm-nodeagent`` (a tmpfs, like
``/run/netns``: both vanish on reboot together): a lock file, and one registry file per
live agent naming its /24. The last agent to leave removes the bridge.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLUSTER_CIDR = ipaddress.IPv4Network("10.250.0.0/16")
GATEWAY = ipaddress.IPv4Interface("10.250.0.1/16")
BRIDGE = "swarmbr0"
RUN_DIR = Path("/run/swarm-nodeagent")
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")  # `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*
NETNS_PREFIX = "swarm-"
VETH_PREFIX = "swv"  # + 12 hex digits: interface names are limited to 15 characters


class NetworkError(RuntimeError):
    """An `ip` command failed; the message carries its stderr."""


def ip_binary() -> str:
    # The agent may run with a venv-only PATH that lacks /usr/sbin.
    found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise NetworkError("the `ip` command (iproute2) is not installed")
    return found


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ip_binary(), *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: with the pid it identifies a process even after pid reuse.
    None when the process is gone or has exited (a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def process_identity(pid: int) -> dict[str, object]:
    return {"pid": pid, "start": proc_start_time(pid)}


def identity_alive(ident: dict[str, object]) -> bool:
    pid = ident.get("pid")
    return isinstance(pid, int) and proc_start_time(pid) is not None and proc_start_time(pid) == ident.get("start")


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Serialise bridge and address-range changes between agents on this host."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (RUN_DIR / "lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _registry() -> Path:
    return RUN_DIR / "agents"


def _live_agents() -> dict[str, ipaddress.IPv4Network]:
    """Node name → /24 of every agent still running; entries of dead agents are removed."""
    live: dict[str, ipaddress.IPv4Network] = {}
    reg = _registry()
    if not reg.is_dir():
        return live
    for entry in reg.glob("*.json"):
        try:
            data = json.loads(entry.read_text())
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        if identity_alive(data):
            live[entry.stem] = ipaddress.IPv4Network(data["cidr"])
        else:
            entry.unlink(missing_ok=True)
    return live


def _ensure_bridge() -> None:
    if ip("link", "show", BRIDGE, check=False).returncode != 0:
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", str(GATEWAY), "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def _pick_cidr(taken: set[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    # Subnet 0 holds the gateway; every other /24 of the cluster network is free to hand out.
    for subnet in list(CLUSTER_CIDR.subnets(new_prefix=24))[1:]:
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise NetworkError(f"every /24 of {CLUSTER_CIDR} is taken by a running agent")


def join(node: str, pod_cidr: str | None) -> ipaddress.IPv4Network:
    """Register this process as the agent of ``node``; bring up the bridge; return the node's pod CIDR."""
    with host_lock():
        others = {n: c for n, c in _live_agents().items() if n != node}
        if pod_cidr is None:
            cidr = _pick_cidr(set(others.values()))
        else:
            cidr = ipaddress.IPv4Network(pod_cidr)
            if not cidr.subnet_of(CLUSTER_CIDR) or cidr.overlaps(ipaddress.IPv4Network(GATEWAY.ip)):
                raise NetworkError(f"--pod-cidr {cidr} must lie inside {CLUSTER_CIDR} and not hold {GATEWAY.ip}")
            clash = [n for n, c in others.items() if c.overlaps(cidr)]
            if clash:
                raise NetworkError(f"--pod-cidr {cidr} overlaps the range of running agent(s) {', '.join(clash)}")
        _ensure_bridge()
        _registry().mkdir(parents=True, exist_ok=True)
        entry = {**process_identity(os.getpid()), "cidr": str(cidr)}
        (_registry() / f"{node}.json").write_text(json.dumps(entry))
        return cidr


def leave(node: str) -> None:
    """Unregister ``node``'s agent; the last agent on the host removes the bridge."""
    with host_lock():
        (_registry() / f"{node}.json").unlink(missing_ok=True)
        if not _live_agents():
            ip("link", "del", BRIDGE, check=False)


@dataclass(frozen=True)
class PodNetwork:
    netns: str
    veth: str
    address: ipaddress.IPv4Address

    @property
    def etc_dir(self) -> Path:
        return ETC_NETNS / self.netns

    @property
    def hosts_file(self) -> Path:
        return self.etc_dir / "hosts"

    @classmethod
    def for_pod(cls, uid: str, address: ipaddress.IPv4Address) -> PodNetwork:
        short = uid.replace("-", "")
        return cls(netns=f"{NETNS_PREFIX}{uid}", veth=f"{VETH_PREFIX}{short[:12]}", address=address)


def create(net: PodNetwork, resolv_conf: str) -> None:
    """The pod's namespace: eth0 on the bridge with its address, loopback, a default route via the gateway.

    The default route matters: Ray (like most software) learns its own IP from the route
    to a public address (a UDP connect, which sends nothing).
    """
    net.etc_dir.mkdir(parents=True, exist_ok=True)
    net.hosts_file.write_text("127.0.0.1\tlocalhost\n")
    (net.etc_dir / "resolv.conf").write_text(resolv_conf)
    try:
        ip("netns", "add", net.netns)
        ip("link", "add", net.veth, "type", "veth", "peer", "name", "eth0", "netns", net.netns)
        ip("link", "set", net.veth, "master", BRIDGE, "up")
        ns = ("-n", net.netns)
        ip(*ns, "addr", "add", f"{net.address}/{GATEWAY.network.prefixlen}", "dev", "eth0")
        ip(*ns, "link", "set", "lo", "up")
        ip(*ns, "link", "set", "eth0", "up")
        ip(*ns, "route", "add", "default", "via", str(GATEWAY.ip))
    except NetworkError:
        delete(net)
        raise


def delete(net: PodNetwork) -> None:
    """Remove the namespace, its veth pair and its /etc files; missing pieces are fine."""
    ip("netns", "delete", net.netns, check=False)
    # The kernel destroys the pair with the namespace, but only once nothing holds the
    # namespace any more; delete the host end explicitly so the pair is gone now.
    ip("link", "delete", net.veth, check=False)
    shutil.rmtree(net.etc_dir, ignore_errors=True)


def kill_all(netns: str) -> None:
    """SIGKILL whatever still runs in the namespace, and wait until it is gone."""
    deadline = time.monotonic() + 10.0
    while True:
        pids = netns_pids(netns)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def netns_pids(netns: str) -> list[int]:
    """Every live process inside the network namespace (what `ip netns pids` prints).

    All of a pod's processes live in its namespace, whatever they do with sessions or
    process groups, so this is how the agent finds them all to stop them.
    """
    try:
        st = (NETNS_DIR / netns).stat()
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = (entry / "ns" / "net").stat()
        except OSError:
            continue  # exited, or a zombie
        if (ns.st_ino, ns.st_dev) == (st.st_ino, st.st_dev):
            pids.append(int(entry.name))
    return pids


def agent_netns() -> list[str]:
    """Names of every network namespace created by a node agent (live or leaked)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def agent_veths() -> list[str]:
    out = ip("-o", "link", "show", check=False).stdout
    names = [line.split(":", 2)[1].strip().split("@", 1)[0] for line in out.splitlines() if line.count(":") >= 2]
    return sorted(n for n in names if n.startswith(VETH_PREFIX))


def bridge_exists() -> bool:
    return ip("link", "show", BRIDGE, check=False).returncode == 0
