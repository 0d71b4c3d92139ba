"""The head service. Pure."""

from __future__ import annotations

import json
from typing import Any

from swarm_operator.resources import labels
from swarm_operator.resources.pods import HEAD_PORTS
from swarm_operator.spec.types import ClusterSpec


def build_head_service(cluster: ClusterSpec, head_generation: int = 0) -> dict[str, Any]:
    """Headless by default: workers resolve the head pod's IP directly, no kube-proxy in the path. It selects the
    current head generation's pod only (labels.current_head_selector)."""
    headless = cluster.head.service_type == "Headless"
    spec: dict[str, Any] = {
        "selector": labels.current_head_selector(cluster.name, head_generation),
        "ports": [{"name": name, "port": port, "targetPort": port} for name, port in HEAD_PORTS.items()],
        # Workers must find the head while it starts, before it is Ready.
        "publishNotReadyAddresses": True,
    }
    if headless:
        spec["clusterIP"] = "None"
        spec["type"] = "ClusterIP"
    else:
        spec["type"] = cluster.head.service_type
    metadata: dict[str, Any] = {
        "name": labels.head_service_name(cluster.name),
        "namespace": cluster.namespace,
        "labels": {**labels.common_labels(cluster.name), labels.NODE_TYPE: labels.HEAD},
        "ownerReferences": [labels.owner_reference(cluster.name, cluster.uid)],
    }
    user = dict(cluster.head.service_annotations)
    if user:
        metadata["annotations"] = {**user, labels.OWNED_ANNOTATIONS: json.dumps(sorted(user), separators=(",", ":"))}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}
