"""What earlier agents left on this host: the pods of this node's agent that did not stop cleanly, and the
files of nodes whose agent stopped long ago."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import subprocess
import time

from localcluster.nodeagent import network, paths
from localcluster.nodeagent.agentlog import log

STOPPED_NODE_FILES_KEPT = 6 * 3600  # seconds the logs of a stopped node's pods stay on disk


def reap_leftovers(node: str) -> None:
    """Clean up after an earlier agent of this node that did not stop cleanly (SIGKILL, crash), then
    start the node's directory empty."""
    root = paths.node_dir(node)
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
    prune_stopped_nodes(node)


def prune_stopped_nodes(keep: str) -> None:
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
