"""The node agent: a Node that kwok does not manage, whose pods run as local processes.

Threads: the main thread waits for the stop signal; one thread renews the node's Lease (node.py); one
watches EndpointSlices (cluster DNS); one watches the pods bound to the node and hands each to its
``PodWorker``. What it asks of the API server for a pod is in podapi.py, its pods' addresses in
addresses.py, the clean-up after earlier agents in leftovers.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster.nodeagent import apiproxy, dns, network, paths
from localcluster.nodeagent.addresses import AddressPool
from localcluster.nodeagent.agentlog import AgentError, log
from localcluster.nodeagent.leftovers import reap_leftovers
from localcluster.nodeagent.listwatch import list_watch
from localcluster.nodeagent.node import RENEW_EVERY, NodeRegistration
from localcluster.nodeagent.podapi import PodApi
from localcluster.nodeagent.pods import PodWorker


class NodeAgent:
    def __init__(self, api: client.ApiClient, node: str, capacity: dict[str, str], *,
                 labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
                 pod_cidr: str | None = None, keep_node: bool = False, shutdown_grace: float = 10.0) -> None:
        self.api = api
        self.core: Any = client.CoreV1Api(api)  # Any: bodies are plain dicts, not the client's models
        self.pod_api = PodApi(self.core, node)
        self.node = node
        self.capacity = capacity
        self.allocatable = dict(capacity)
        self.labels = labels or {}
        self.taints = taints or []
        self.requested_cidr = pod_cidr
        self.keep_node = keep_node
        self.shutdown_grace = shutdown_grace
        self.host_ip = str(network.GATEWAY.ip)
        # The directory of the running interpreter (a venv's bin/) holds `ray` and `python`:
        # it stands in for the image of every container.
        self.image_bin = str(Path(sys.executable).parent)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # recently finalized UIDs: late events are stale
        self._dns = dns.DnsTable(network.CLUSTER_CIDR)
        self._cidr: ipaddress.IPv4Network | None = None
        self._addresses: AddressPool | None = None
        self._registration: NodeRegistration | None = None
        # The API server at 127.0.0.1:443 inside every pod, relayed to where this agent reaches it.
        self.relay = apiproxy.ApiRelay(apiproxy.api_address(api.configuration.host))

    # --- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        """Register, serve pods until ``stop_event`` is set, then stop everything it started."""
        if os.geteuid() != 0:
            raise AgentError("the node agent needs root (network namespaces, veth pairs, mounts)")
        start = time.monotonic()
        reap_leftovers(self.node)
        self._cidr = network.join(self.node, self.requested_cidr)
        self._addresses = AddressPool(self._cidr)
        threads: list[threading.Thread] = []
        self.relay.start()
        try:
            self._registration = NodeRegistration(self.api, self.node, self.capacity, self.labels, self.taints,
                                                  str(self._cidr), self.host_ip)
            self._registration.register()
            dns_ready = threading.Event()

            def on_slices(items: list[dict[str, Any]]) -> None:
                if self._dns.replace_all(items):
                    self._publish_dns()
                dns_ready.set()

            threads = [
                threading.Thread(target=self._registration.renew_until, name="lease", daemon=True,
                                 args=(self.stop_event,)),
                threading.Thread(target=list_watch, name="endpointslices", daemon=True, args=(
                    client.DiscoveryV1Api(self.api).list_endpoint_slice_for_all_namespaces, self.stop_event,
                    on_slices, self._on_slice_event, "endpointslice")),
            ]
            for t in threads:
                t.start()
            # Pods must never start with an empty hosts file: their first lookups would fail.
            while not dns_ready.wait(0.5):
                if self.stop_event.is_set():
                    return
            pods_thread = threading.Thread(target=list_watch, name="pods", daemon=True, args=(
                self.core.list_pod_for_all_namespaces, self.stop_event, self._on_pod_list, self._on_pod_event,
                "pod"), kwargs={"field_selector": f"spec.nodeName={self.node}"})
            pods_thread.start()
            threads.append(pods_thread)
            self._write_agent_file(ready=True)
            log(f"node {self.node} ready in {time.monotonic() - start:.1f}s: pod CIDR {self._cidr}, "
                f"capacity {self.capacity}")
            self.stop_event.wait()
        finally:
            self.stop_event.set()
            self._shutdown(threads)

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        start = time.monotonic()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.shutdown()
        for w in workers:
            w.join(self.shutdown_grace + 30)
        # The lease thread wakes on stop_event; waiting for it keeps it from recreating the Lease
        # deleted below. The watch threads may sit in a long read: they are daemons, and they
        # start no new pod worker once stop_event is set.
        self.relay.stop()
        for t in threads:
            if t.name == "lease":
                t.join(RENEW_EVERY)
        if not self.keep_node and self._registration is not None:
            self._registration.unregister()
        network.leave(self.node)
        paths.agent_file(self.node).unlink(missing_ok=True)
        log(f"stopped {len(workers)} pod(s) and left the network in {time.monotonic() - start:.1f}s")

    def _write_agent_file(self, ready: bool) -> None:
        paths.nodes_root().mkdir(parents=True, exist_ok=True)
        paths.agent_file(self.node).write_text(json.dumps(
            {**network.process_identity(os.getpid()), "node": self.node, "podCIDR": str(self._cidr),
             "ready": ready}))

    # --- pods ---------------------------------------------------------------------------

    def _on_pod_list(self, items: list[dict[str, Any]]) -> None:
        listed = {p["metadata"]["uid"] for p in items}
        for pod in items:
            self._on_pod_event("MODIFIED", pod)
        with self._lock:
            missing = [w for uid, w in self._workers.items() if uid not in listed]
        for w in missing:
            w.gone()

    def _on_pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None:
                if kind == "DELETED" or uid in self._finished or self.stop_event.is_set():
                    return
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                worker.start()
                return
        if kind == "DELETED":
            worker.gone()
        else:
            worker.update(pod)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._workers.pop(uid, None)
            self._finished[uid] = None
            while len(self._finished) > 10_000:
                self._finished.popitem(last=False)

    def allocate_ip(self) -> ipaddress.IPv4Address:
        assert self._addresses is not None, "pods start only once the node has joined the network"
        return self._addresses.allocate()

    def release_ip(self, address: ipaddress.IPv4Address) -> None:
        assert self._addresses is not None
        self._addresses.release(address)

    # --- DNS ----------------------------------------------------------------------------

    def dns_records(self) -> list[dns.Record]:
        return self._dns.records()

    def _on_slice_event(self, kind: str, endpoint_slice: dict[str, Any]) -> None:
        if self._dns.apply(kind, endpoint_slice):
            self._publish_dns()

    def _publish_dns(self) -> None:
        records = self._dns.records()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            try:
                w.write_hosts(records)
            except OSError:
                traceback.print_exc()
