"""Labels and names that tie children to their SwarmCluster. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from swarm_operator import GROUP, KIND, VERSION

CLUSTER = f"{GROUP}/cluster"
NODE_TYPE = f"{GROUP}/node-type"
WORKER_GROUP = f"{GROUP}/group"
TEMPLATE_HASH = f"{GROUP}/template-hash"
# Head service annotation: the keys of spec.head.service.annotations applied last (JSON list), so that
# keys dropped from the spec are removed and other writers' annotations are not.
OWNED_ANNOTATIONS = f"{GROUP}/service-annotations"
DRAINED = f"{GROUP}/drained-at"  # pod annotation: when the autoscaler's drain of its Ray node was accepted
HEAD = "head"
WORKER = "worker"


def cluster_selector(cluster: str) -> dict[str, str]:
    return {CLUSTER: cluster}


def head_selector(cluster: str) -> dict[str, str]:
    return {CLUSTER: cluster, NODE_TYPE: HEAD}


def worker_selector(cluster: str, group: str) -> dict[str, str]:
    return {CLUSTER: cluster, NODE_TYPE: WORKER, WORKER_GROUP: group}


def common_labels(cluster: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ray",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/managed-by": "swarm-operator",
        CLUSTER: cluster,
    }


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def head_pod_name(cluster: str) -> str:
    return f"{cluster}-head"


def head_service_name(cluster: str) -> str:
    return f"{cluster}-head-svc"


def worker_pod_name(cluster: str, group: str, suffix: str) -> str:
    return f"{cluster}-{group}-{suffix}"


def owner_reference(cluster: str, uid: str) -> dict[str, Any]:
    """Children are owned by the SwarmCluster, so deleting it cascades through the garbage collector."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": cluster,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def template_hash(*parts: object) -> str:
    """A short stable hash of what a pod was built from; a change means the pod is out of date."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]
