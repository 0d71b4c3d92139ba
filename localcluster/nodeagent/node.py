"""The agent's Node and its Lease: registered as a kubelet registers its node, and kept alive by renewing
the Lease (what keeps the node lifecycle controller from marking the node NotReady and tainting it)."""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from localcluster import versions
from localcluster.nodeagent.agentlog import AgentError, log
from swarm_operator.times import micro_time, timestamp

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
NODE_STATUS_EVERY = 60.0
PROCESS_NODE_LABEL = "swarm.io/process-node"
GPU_LABEL = "swarm.io/gpu"  # the label localcluster.nodes puts on GPU nodes, for the same selectors
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


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


class NodeRegistration:
    """One node, registered as `node_object` of these arguments."""

    def __init__(self, api: client.ApiClient, node: str, capacity: dict[str, str], labels: dict[str, str],
                 taints: list[dict[str, str]], pod_cidr: str, host_ip: str) -> None:
        self.api = api
        self.core: Any = client.CoreV1Api(api)  # Any: bodies are plain dicts, not the client's models
        self.node = node
        self.capacity = capacity
        self.labels = labels
        self.taints = taints
        self.pod_cidr = pod_cidr
        self.host_ip = host_ip
        self._node_uid = ""

    def register(self) -> None:
        # Built afresh each time: its conditions carry the time of this registration.
        body = node_object(self.node, self.capacity, self.labels, self.taints, self.pod_cidr, self.host_ip)
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

    def renew_until(self, stop: threading.Event) -> None:
        """Renew the Lease, and now and then the node's conditions, until `stop` is set; register the
        node again when someone deleted it."""
        last_status = time.monotonic()
        while not stop.wait(RENEW_EVERY):
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
                        self.register()
                else:
                    log(f"heartbeat: {exc.status} {exc.reason}")
            except (HTTPError, OSError) as exc:
                log(f"heartbeat: {exc}")

    def unregister(self) -> None:
        """Delete the Lease and the Node (best effort: the agent is stopping either way)."""
        with contextlib.suppress(ApiException, HTTPError):
            client.CoordinationV1Api(self.api).delete_namespaced_lease(self.node, LEASE_NAMESPACE)
        with contextlib.suppress(ApiException, HTTPError):
            self.core.delete_node(self.node)
