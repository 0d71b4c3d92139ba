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
# Head pod label: its generation, the number in its name. A head pod without it (made before the label) is
# generation 0.
HEAD_GENERATION = f"{GROUP}/head-generation"
HEAD = "head"
WORKER = "worker"


def cluster_selector(cluster: str) -> dict[str, str]:
    return {CLUSTER: cluster}


def head_selector(cluster: str) -> dict[str, str]:
    """Every head pod of the cluster, of any generation (the PodDisruptionBudget's selector)."""
    return {CLUSTER: cluster, NODE_TYPE: HEAD}


def current_head_selector(cluster: str, generation: int) -> dict[str, str]:
    """The head service's selector: only the current generation's head, never an old one stuck Terminating on a
    lost node (its address would stay published: the service publishes not-ready addresses). Generation 0 selects
    by cluster and node type alone, so that head pods made before the generation label stay selected."""
    if generation == 0:
        return head_selector(cluster)
    return {**head_selector(cluster), HEAD_GENERATION: str(generation)}


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


def head_pod_name(cluster: str, generation: int = 0) -> str:
    """`<cluster>-head` for generation 0, `<cluster>-head-<generation>` after it: a new generation is taken only
    when a head has to start beside an old one stuck Terminating (reconcile/head.py), so the usual name stays."""
    return f"{cluster}-head" if generation == 0 else f"{cluster}-head-{generation}"


def head_generation(pod_labels: Mapping[str, str]) -> int:
    """A head pod's generation from its label; 0 when it has none (made before the label) or it is unreadable."""
    text = pod_labels.get(HEAD_GENERATION, "0")
    return int(text) if text.isdigit() else 0


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
