"""Where a node agent keeps its files: one directory per node, one per pod inside it.

``<cache>/nodes/<node>.agent.json``  the running agent (pid, pod CIDR, ready)
``<cache>/nodes/<node>.agent.log``   the agent's own log (when started by NodeAgentProcess)
``<cache>/nodes/<node>/pods/<namespace>_<pod>_<uid8>/``
    ``logs/<container>.log``  what the container wrote to stdout and stderr
    ``state.json``            namespace, veth, address and mounts, so a restarted agent can clean up
    ``work/``                 the working directory (and HOME) of its containers
    ``tmp/``                  the pod's own /tmp
    ``volumes/<name>/``       emptyDir, configMap and secret volumes

A pod's directory outlives the pod, so that the logs of a failed and deleted pod can
still be read; the agent empties its node's directory when it starts again (the agent's
own files sit next to it, so a log opened before the start survives).
"""

from __future__ import annotations

from pathlib import Path

from localcluster import versions


def nodes_root() -> Path:
    return versions.cache_root() / "nodes"


def node_dir(node: str) -> Path:
    return nodes_root() / node


def agent_file(node: str) -> Path:
    return nodes_root() / f"{node}.agent.json"


def agent_log(node: str) -> Path:
    return nodes_root() / f"{node}.agent.log"


def pod_dir(node: str, namespace: str, name: str, uid: str) -> Path:
    return node_dir(node) / "pods" / f"{namespace}_{name}_{uid[:8]}"


def pod_log_dirs(name: str, namespace: str | None = None) -> list[Path]:
    """The log directories of every pod called ``name`` on any node of this host, newest first."""
    # Names and namespaces are DNS labels, without '_': the pattern cannot match a different pod.
    pattern = f"{namespace or '*'}_{name}_*"
    found = [d / "logs" for d in nodes_root().glob(f"*/pods/{pattern}") if (d / "logs").is_dir()]
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)
