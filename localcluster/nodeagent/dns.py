"""Cluster DNS as per-pod hosts files, from EndpointSlices.

Why hosts files and not a DNS server: there is nothing to build or run, nothing
listens on the network, and glibc (hence Python, Ray and gRPC's native resolver) reads
/etc/hosts on every lookup, so an update is visible at once. ``ip netns exec`` already
bind-mounts /etc/netns/NS/hosts over /etc/hosts for the pod's processes.

Why EndpointSlices: the endpoint-slice controller (in the controller manager) already
turns Services + Pods into exactly the addresses DNS serves. An endpoint is listed
when ``conditions.ready`` is true, which it is for every pod with an IP when the
Service sets ``publishNotReadyAddresses`` (the Ray head service does: workers must find
the head while it starts), and for Ready pods otherwise — the same rule CoreDNS applies
to headless services. There is no kube-proxy, so a ClusterIP is unreachable here; the
names of ClusterIP services therefore resolve to their endpoints too.

Names written for a service ``svc`` in namespace ``ns``: ``svc.ns.svc.cluster.local``,
``svc.ns.svc``, ``svc.ns``, and plain ``svc`` in pods of ``ns`` (a hosts file has no
search list); endpoints with a hostname also get ``host.svc.ns.svc.cluster.local``.
``kubernetes.default.svc`` (and its other forms) is the pod's own loopback, where the agent
relays the API server (apiproxy.py).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_address
from pathlib import Path
from typing import Any

DOMAIN = "cluster.local"
API_HOST = "127.0.0.1"  # where apiproxy serves the API server inside every pod
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, order=True)
class Record:
    namespace: str
    service: str
    ip: str
    hostname: str | None = None


def slice_records(endpoint_slice: Mapping[str, Any], network: IPv4Network) -> list[Record]:
    """The DNS records one EndpointSlice contributes: its ready IPv4 addresses inside the pod
    network. Others (the API server's own address behind ``kubernetes.default``, which pods
    reach through apiproxy instead, the made-up IPs of kwok's fake pods) are unreachable from
    a pod, and a pod must send nothing there."""
    meta = endpoint_slice.get("metadata", {})
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service or endpoint_slice.get("addressType") != "IPv4":
        return []
    records: list[Record] = []
    for ep in endpoint_slice.get("endpoints") or []:
        # A missing condition means ready (the API's documented default).
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        records.extend(Record(meta["namespace"], service, addr, ep.get("hostname")) for addr in ep.get("addresses", [])
                       if ip_address(addr) in network)
    return records


class DnsTable:
    """Records by EndpointSlice, fed by a watch; thread-safe."""

    def __init__(self, network: IPv4Network) -> None:
        self._network = network
        self._lock = threading.Lock()
        self._by_slice: dict[tuple[str, str], list[Record]] = {}

    def replace_all(self, slices: Sequence[Mapping[str, Any]]) -> bool:
        """Reset from a full list; True when the records changed."""
        new = {(s["metadata"]["namespace"], s["metadata"]["name"]): slice_records(s, self._network) for s in slices}
        with self._lock:
            changed = new != self._by_slice
            self._by_slice = new
        return changed

    def apply(self, event_type: str, endpoint_slice: Mapping[str, Any]) -> bool:
        """Apply one watch event; True when the records changed."""
        key = (endpoint_slice["metadata"]["namespace"], endpoint_slice["metadata"]["name"])
        with self._lock:
            old = self._by_slice.get(key)
            if event_type == "DELETED":
                self._by_slice.pop(key, None)
                return old is not None
            new = slice_records(endpoint_slice, self._network)
            self._by_slice[key] = new
            return new != old

    def records(self) -> list[Record]:
        with self._lock:
            return sorted({r for recs in self._by_slice.values() for r in recs})


def render_hosts(namespace: str, pod_ip: str, hostname: str, subdomain: str | None, records: list[Record]) -> str:
    """The hosts file of one pod: loopback, the pod's own names, then every service record."""
    own = [hostname]
    if subdomain:
        own.insert(0, f"{hostname}.{subdomain}.{namespace}.svc.{DOMAIN}")
    lines = [
        "# Cluster DNS of a process node (localcluster.nodeagent), rewritten as EndpointSlices change.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod_ip}\t{' '.join(own)}",
        # The API server, relayed from the pod's own loopback (apiproxy.py); the name is in its certificate.
        f"{API_HOST}\t{' '.join(api_names(namespace))}",
    ]
    for r in records:
        base = f"{r.service}.{r.namespace}"
        names = [f"{base}.svc.{DOMAIN}", f"{base}.svc", base]
        if r.namespace == namespace:
            names.append(r.service)
        if r.hostname:
            names.insert(0, f"{r.hostname}.{base}.svc.{DOMAIN}")
        lines.append(f"{r.ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def api_names(namespace: str) -> list[str]:
    """The names of the ``kubernetes`` Service in ``default``, as a pod of ``namespace`` sees them."""
    names = [f"kubernetes.default.svc.{DOMAIN}", "kubernetes.default.svc", "kubernetes.default"]
    return [*names, "kubernetes"] if namespace == "default" else names


def resolv_conf(namespace: str) -> str:
    """Every cluster name is in the hosts file. The nameserver is the pod's own loopback, where
    nothing listens: other names fail at once, and no query ever leaves the pod."""
    return (f"search {namespace}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\n"
            "nameserver 127.0.0.1\n"
            "options ndots:5 attempts:1 timeout:1\n")


def write_in_place(path: Path, text: str) -> None:
    """Rewrite the file's content keeping its inode: the pod sees /etc/hosts through a bind
    mount of this very inode, which a rename-into-place would leave behind."""
    data = text.encode()
    with path.open("r+b") as fh:
        if fh.read() == data:
            return
        fh.seek(0)
        fh.write(data)
        fh.truncate()
