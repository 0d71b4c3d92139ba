"""The cluster's Nodes as the node reflector reports them, each kept only as the NodeState decisions read. No I/O.

A node the cache never heard of is unknown, not gone: only a node it saw deleted (a DELETED event, or missing
from a later full list) is gone. So a pod bound to a node whose ADDED event is still on its way is never taken
for one whose node was deleted, and after a restart the pod garbage collector (DeletionByPodGC) covers the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from swarm_operator.kit.cache import newer
from swarm_operator.reconcile.disruption import NodeState, node_state

DELETED_REMEMBERED = 10000  # names of deleted nodes kept; far more than a cluster replaces between two lists


class NodeCache:
    def __init__(self) -> None:
        self._nodes: dict[str, NodeState] = {}
        self._versions: dict[str, Mapping[str, Any]] = {}  # each node's metadata.resourceVersion, as {"metadata": …}
        self._deleted: dict[str, None] = {}  # insertion-ordered: the oldest deletion is forgotten first

    def state(self, name: str | None) -> NodeState | None:
        """The node as known: its state, gone if it was seen deleted, None when unknown (or no name)."""
        if not name:
            return None
        known = self._nodes.get(name)
        if known is not None:
            return known
        return NodeState.gone(name) if name in self._deleted else None

    def apply(self, event_type: str | None, node: Mapping[str, Any]) -> bool:
        """A watch event (type None: from a list); whether a fact decisions read changed."""
        name = (node.get("metadata") or {}).get("name") or ""
        if event_type == "DELETED":
            return self._forget(name)
        if name in self._versions and not newer(node, self._versions[name]):
            return False  # older than what the cache holds (a list taken before the last event)
        state = node_state(node)
        self._versions[name] = {"metadata": {"resourceVersion": (node.get("metadata") or {}).get("resourceVersion")}}
        self._deleted.pop(name, None)  # a name can come back: a node registered again
        if self._nodes.get(name) == state:
            return False  # a heartbeat, a label: nothing a decision reads
        self._nodes[name] = state
        return True

    def replace_all(self, nodes: Iterable[Mapping[str, Any]], resource_version: str) -> set[str]:
        """A full list taken at `resource_version`: the nodes it holds, and the ones it no longer has are gone
        (unless the watch reported them after the list was taken). Returns the names that changed."""
        listed = {(n.get("metadata") or {}).get("name") or "": n for n in nodes}
        at = {"metadata": {"resourceVersion": resource_version}}
        changed = {name for name in list(self._nodes)
                   if name not in listed and not newer(self._versions[name], at, strictly=True) and self._forget(name)}
        return changed | {name for name, node in listed.items() if self.apply(None, node)}

    def _forget(self, name: str) -> bool:
        self._deleted[name] = None
        self._versions.pop(name, None)
        while len(self._deleted) > DELETED_REMEMBERED:
            self._deleted.pop(next(iter(self._deleted)))
        return self._nodes.pop(name, None) is not None
