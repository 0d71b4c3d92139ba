"""The Secret holding a cluster's Ray token (spec.auth.mode: token, no tokenSecret given). Pure."""

from __future__ import annotations

import base64
from typing import Any

from swarm_operator.resources import labels
from swarm_operator.spec.types import ClusterSpec


def build_token_secret(cluster: ClusterSpec, token: str) -> dict[str, Any]:
    """Owned by the SwarmCluster: deleted with it. `token` comes from the caller (random, never logged)."""
    auth = cluster.auth
    assert auth is not None and auth.operator_made
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": auth.secret_name,
            "namespace": cluster.namespace,
            "labels": labels.common_labels(cluster.name),
            "ownerReferences": [labels.owner_reference(cluster.name, cluster.uid)],
        },
        "data": {auth.secret_key: base64.b64encode(token.encode()).decode()},
    }


def token_of(secret: dict[str, Any], key: str) -> str | None:
    """The token in a Secret's key; None when the key is missing or empty."""
    raw = (secret.get("data") or {}).get(key)
    if not raw:
        return None
    text = base64.b64decode(raw).decode("utf-8", "replace").strip()
    return text or None
