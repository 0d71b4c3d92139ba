"""The node agent: a Node that kwok does not manage, whose pods run as local processes.

Threads: the main thread waits for the stop signal; one thread renews the node's Lease
(what keeps the node lifecycle controller from marking it NotReady and tainting it);
one watches EndpointSlices (cluster DNS); one watches the pods bound to the node and
hands each to its ``PodWorker``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from localcluster import versions
from localcluster.nodeagent import apiproxy, dns, network, paths
from localcluster.nodeagent.pods import PodWorker
from localcluster.nodeagent.podspec import decode_secret
from swarm_operator.times import micro_time, parse_time, timestamp

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
NODE_STATUS_EVERY = 60.0
WATCH_SECONDS = 60  # one watch request; then it is re-opened from the last resourceVersion
PROCESS_NODE_LABEL = "swarm.io/process-node"
GPU_LABEL = "swarm.io/gpu"  # the label localcluster.nodes puts on GPU nodes, for the same selectors
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
STOPPED_NODE_FILES_KEPT = 6 * 3600  # seconds the logs of a stopped node's pods stay on disk


class AgentError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"{datetime.now(UTC).strftime('%H:%M:%S.%f')[:-3]} [nodeagent] {msg}", flush=True)


def node_conditions(now: str) -> list[dict[str, Any]]:
    healthy = [("MemoryPressure", "KubeletHasSufficientMemory"), ("DiskPressure", "KubeletHasNoDiskPressure"),
               ("PIDPressure", "KubeletHasSufficientPID")]
    conds = [{"type": t, "status": "False", "reason": r, "message": "", "lastHeartbeatTime": now,
              "lastTransitionTime": now} for t, r in healthy]
    conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "node agent is posting ready status", "lastHeartbeatTime": now,
                  "lastTransitionTime": now})
    return conds


def node_object(name: str, capacity: dict[str, str], labels: dict[str, str], taints: list[dict[str, str]],
                pod_cidr: str, host_ip: str) -> dict[str, Any]:
    """The Node as a kubelet would register it. No kwok annotation: kwok must leave it alone."""
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "process",
        PROCESS_NODE_LABEL: "true",
    }
    if any(k.endswith("/gpu") and v not in ("", "0") for k, v in capacity.items()):
        node_labels[GPU_LABEL] = "true"
    node_labels.update(labels)
    now = timestamp(time.time())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels,
                     # What a kubelet sets: no TTL controller wait for node-cached objects.
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": taints or None},
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": node_conditions(now),
            "addresses": [{"type": "InternalIP", "address": host_ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": name, "systemUUID": name, "bootID": str(os.getpid()),
                "kernelVersion": platform.release(), "osImage": "process node (localcluster.nodeagent)",
                "containerRuntimeVersion": "process://local", "kubeletVersion": versions.KUBERNETES,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    }


def parse_taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect`` → a taint."""
    spec, _, effect = text.rpartition(":")
    key, _, value = spec.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"taint {text!r}: want key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def _prune_stopped_nodes(keep: str) -> None:
    """Remove the files of nodes whose agent stopped long ago (tests name nodes at random, and
    each keeps its pods' logs after stopping, for whoever debugs a failure)."""
    cutoff = time.time() - STOPPED_NODE_FILES_KEPT
    for entry in paths.nodes_root().iterdir():
        node = entry.name.removesuffix(".agent.log")
        if node == keep or paths.agent_file(node).exists() or entry.suffix == ".json":
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def list_watch(list_fn: Callable[..., Any], stop: threading.Event, on_list: Callable[[list[dict[str, Any]]], None],
               on_event: Callable[[str, dict[str, Any]], None], what: str, **kwargs: Any) -> None:
    """List, then watch from the list's resourceVersion, forever, with plain dicts.

    (The client's own Watch deserialises into models, and with deserialize=False it neither
    tracks resourceVersions nor handles error events.)
    """
    while not stop.is_set():
        try:
            resp = list_fn(_preload_content=False, **kwargs)
            body = json.loads(resp.data)
            rv = body["metadata"]["resourceVersion"]
            on_list(body["items"])
            while not stop.is_set():
                resp = list_fn(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                               timeout_seconds=WATCH_SECONDS, _preload_content=False,
                               _request_timeout=(10, WATCH_SECONDS + 15), **kwargs)
                try:
                    for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            if obj.get("code") == 410:
                                raise _Expired
                            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            on_event(event["type"], obj)
                        if stop.is_set():
                            break
                finally:
                    resp.release_conn()
        except _Expired:
            continue
        except (ApiException, HTTPError, OSError, ValueError, KeyError) as exc:
            if not stop.is_set():
                log(f"{what} watch: {type(exc).__name__}: {exc}; retrying")
                stop.wait(1.0)


class NodeAgent:
    def __init__(self, api: client.ApiClient, node: str, capacity: dict[str, str], *,
                 labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
                 pod_cidr: str | None = None, keep_node: bool = False, shutdown_grace: float = 10.0) -> None:
        self.api = api
        self.core: Any = client.CoreV1Api(api)  # Any: bodies are plain dicts, not the client's models
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
        self._used_ips: set[ipaddress.IPv4Address] = set()
        self._next_ip = 0
        self._node_uid = ""
        # The API server at 127.0.0.1:443 inside every pod, relayed to where this agent reaches it.
        self.relay = apiproxy.ApiRelay(apiproxy.api_address(api.configuration.host))

    # --- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        """Register, serve pods until ``stop_event`` is set, then stop everything it started."""
        if os.geteuid() != 0:
            raise AgentError("the node agent needs root (network namespaces, veth pairs, mounts)")
        start = time.monotonic()
        self._reap_leftovers()
        self._cidr = network.join(self.node, self.requested_cidr)
        threads: list[threading.Thread] = []
        self.relay.start()
        try:
            self._register_node()
            dns_ready = threading.Event()

            def on_slices(items: list[dict[str, Any]]) -> None:
                if self._dns.replace_all(items):
                    self._publish_dns()
                dns_ready.set()

            threads = [
                threading.Thread(target=self._renew_loop, name="lease", daemon=True),
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
        if not self.keep_node:
            with contextlib.suppress(ApiException, HTTPError):
                client.CoordinationV1Api(self.api).delete_namespaced_lease(self.node, LEASE_NAMESPACE)
            with contextlib.suppress(ApiException, HTTPError):
                self.core.delete_node(self.node)
        network.leave(self.node)
        paths.agent_file(self.node).unlink(missing_ok=True)
        log(f"stopped {len(workers)} pod(s) and left the network in {time.monotonic() - start:.1f}s")

    def _write_agent_file(self, ready: bool) -> None:
        paths.nodes_root().mkdir(parents=True, exist_ok=True)
        paths.agent_file(self.node).write_text(json.dumps(
            {**network.process_identity(os.getpid()), "node": self.node, "podCIDR": str(self._cidr),
             "ready": ready}))

    def _reap_leftovers(self) -> None:
        """Clean up after an earlier agent of this node that did not stop cleanly (SIGKILL, crash)."""
        root = paths.node_dir(self.node)
        for state_file in root.glob("pods/*/state.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            net = network.PodNetwork(state["netns"], state["veth"], ipaddress.IPv4Address(state["address"]))
            network.kill_all(net.netns)
            for mount in state.get("tmpfs", []):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
            network.delete(net)
            log(f"cleaned up pod {state['namespace']}/{state['name']} left by an earlier agent")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _prune_stopped_nodes(self.node)

    # --- the Node and its Lease ---------------------------------------------------------

    def _register_node(self) -> None:
        assert self._cidr is not None
        body = node_object(self.node, self.capacity, self.labels, self.taints, str(self._cidr), self.host_ip)
        try:
            created = self.core.create_node(body)
            self._node_uid = created.metadata.uid
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = self.core.read_node(self.node)
            if (existing.metadata.annotations or {}).get(KWOK_ANNOTATION):
                raise AgentError(f"node {self.node} exists and is managed by kwok: choose another name") from None
            # A node left by an earlier agent: take it over with this agent's view of it.
            self.core.patch_node(self.node, {"metadata": {"labels": body["metadata"]["labels"],
                                                          "annotations": body["metadata"]["annotations"]},
                                             "spec": body["spec"]})
            self._node_uid = existing.metadata.uid
        self.core.patch_node_status(self.node, {"status": body["status"]})
        self._renew_lease()

    def _renew_lease(self) -> None:
        leases: Any = client.CoordinationV1Api(self.api)
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_time(time.time())}
        try:
            leases.patch_namespaced_lease(self.node, LEASE_NAMESPACE, {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            leases.create_namespaced_lease(LEASE_NAMESPACE, {"metadata": {
                "name": self.node, "namespace": LEASE_NAMESPACE,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self._node_uid}],
            }, "spec": spec})

    def _renew_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stop_event.wait(RENEW_EVERY):
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= NODE_STATUS_EVERY:
                    now = timestamp(time.time())
                    self.core.patch_node_status(self.node, {"status": {"conditions": node_conditions(now)}})
                    last_status = time.monotonic()
            except ApiException as exc:
                if exc.status == 404:
                    log(f"node {self.node} was deleted: registering it again")
                    with contextlib.suppress(ApiException, HTTPError):
                        self._register_node()
                else:
                    log(f"heartbeat: {exc.status} {exc.reason}")
            except (HTTPError, OSError) as exc:
                log(f"heartbeat: {exc}")

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
        """The next free address of the node's range, round-robin: a freed address is reused last,
        so a stale peer (a Ray node that still remembers a dead pod) is unlikely to reach a new pod."""
        assert self._cidr is not None
        hosts = list(self._cidr.hosts())
        with self._lock:
            for i in range(len(hosts)):
                candidate = hosts[(self._next_ip + i) % len(hosts)]
                if candidate not in self._used_ips:
                    self._used_ips.add(candidate)
                    self._next_ip = (self._next_ip + i + 1) % len(hosts)
                    return candidate
        raise AgentError(f"no free address left in {self._cidr}")

    def release_ip(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._used_ips.discard(address)

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; True when done (or when the pod is gone anyway).

        A JSON merge patch replaces lists whole, which is what a kubelet's status is: the
        container statuses and conditions it sends are the complete truth.
        """
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status},
                                                  _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return True
            log(f"status of {namespace}/{name}: {exc.status} {exc.reason}: {exc.body}")
            return False
        except (HTTPError, OSError) as exc:
            log(f"status of {namespace}/{name}: {exc}")
            return False
        return True

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, body={"gracePeriodSeconds": 0,
                                                                   "preconditions": {"uid": uid}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                log(f"delete {namespace}/{name}: {exc.status} {exc.reason}")

    def lookup(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data as text; None when it does not exist."""
        try:
            if kind == "Secret":
                secret = self.core.read_namespaced_secret(name, namespace)
                return decode_secret(secret.data, secret.string_data)
            cm = self.core.read_namespaced_config_map(name, namespace)
            return dict(cm.data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def request_token(self, namespace: str, service_account: str, pod: str, pod_uid: str, audience: str | None,
                      seconds: int) -> tuple[str, float, float]:
        """A service-account token bound to the pod (TokenRequest, as a kubelet asks for one):
        (token, issued, expires) with times in seconds since the epoch."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            # No audience: the API server's own (what in-cluster clients present the token to).
            "audiences": [audience] if audience else [],
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid},
        }}
        issued = time.time()
        resp = self.core.create_namespaced_service_account_token(service_account, namespace, body,
                                                                 _preload_content=False)
        status = json.loads(resp.data)["status"]
        expires = parse_time(status["expirationTimestamp"])
        return str(status["token"]), issued, expires

    def event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on the pod, as a kubelet does (best effort)."""
        meta = pod["metadata"]
        now = timestamp(time.time())
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "nodeagent", "host": self.node},
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except (ApiException, HTTPError, OSError) as exc:
            log(f"event {reason} on {meta['namespace']}/{meta['name']}: {exc}")

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
