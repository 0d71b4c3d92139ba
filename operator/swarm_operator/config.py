"""Operator settings from flags and environment: one frozen dataclass. Pure."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_port: int = 8080
    health_port: int = 8081
    leader_elect: bool = False
    lease_namespace: str = "default"
    lease_name: str = "swarm-operator"
    workers: int = 16
    resync_seconds: float = 60.0
    relist_seconds: float = 300.0
    log_level: str = "INFO"
    kubeconfig: str | None = None  # None: KUBECONFIG, the pod's service account, ~/.kube/config
    context: str | None = None  # None: the kubeconfig's current context
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces

    @property
    def api_threads(self) -> int:
        """Threads of the one blocking pool (kit/blocking.py): API calls (the client is synchronous), Ray GCS
        reads and drains, the lease. Each costs native memory (stack, malloc arena), so a few more than the
        workers: a turn's calls mostly run one by one."""
        return self.workers + 8


def cluster_domain_from_resolv_conf(text: str) -> str | None:
    """The cluster's DNS domain as a pod sees it: its resolv.conf search list holds
    `<namespace>.svc.<domain>` and `svc.<domain>` (kubelet writes them); None outside a pod."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] != "search":
            continue
        for entry in fields[1:]:
            names = entry.rstrip(".").split(".")
            for at in (0, 1):  # svc.<domain>, <namespace>.svc.<domain>
                if len(names) > at + 1 and names[at] == "svc":
                    return ".".join(names[at + 1:])
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm-operator", description="Run Ray clusters from SwarmCluster resources.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    run.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (default 8080)")
    run.add_argument("--health-port", type=int, default=None, help="liveness /healthz port (default 8081)")
    ha = run.add_mutually_exclusive_group()
    ha.add_argument("--leader-elect", action="store_true",
                    help="run several replicas; one holds a Lease and acts, the others wait (high availability)")
    ha.add_argument("--standalone", action="store_true", help="no leader election (development; the default)")
    run.add_argument("--lease-namespace", default=None, help="namespace of the leader-election Lease")
    run.add_argument("--lease-name", default="swarm-operator")
    run.add_argument("--workers", type=int, default=16, help="clusters reconciled concurrently")
    run.add_argument("--resync-seconds", type=float, default=60.0, help="re-check every cluster this often")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--kubeconfig", default=None,
                     help="kubeconfig file (default: KUBECONFIG, the pod's service account, ~/.kube/config)")
    run.add_argument("--context", default=None, help="kubeconfig context (default: its current context)")
    run.add_argument("--cluster-domain", default=None,
                     help="the cluster's DNS domain, for workers' head address (default: CLUSTER_DOMAIN, "
                          "else read from the pod's /etc/resolv.conf, else cluster.local)")
    return p


def from_args(argv: Sequence[str], env: Mapping[str, str] | None = None, resolv_conf: str = "") -> OperatorConfig:
    """Flags win over environment (SWARM_NAMESPACES, SWARM_METRICS_PORT, SWARM_HEALTH_PORT, POD_NAMESPACE,
    CLUSTER_DOMAIN); `resolv_conf` is the text of /etc/resolv.conf, for the cluster domain."""
    env = os.environ if env is None else env
    args = parser().parse_args(list(argv))
    namespaces = tuple(args.namespace)
    if not namespaces and not args.all_namespaces and env.get("SWARM_NAMESPACES"):
        namespaces = tuple(n.strip() for n in env["SWARM_NAMESPACES"].split(",") if n.strip())
    if args.workers < 1:
        parser().error("--workers must be at least 1")
    return OperatorConfig(
        namespaces=namespaces,
        metrics_port=args.metrics_port if args.metrics_port is not None else int(env.get("SWARM_METRICS_PORT", 8080)),
        health_port=args.health_port if args.health_port is not None else int(env.get("SWARM_HEALTH_PORT", 8081)),
        leader_elect=bool(args.leader_elect),
        lease_namespace=args.lease_namespace or env.get("POD_NAMESPACE", "default"),
        lease_name=args.lease_name,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        log_level=args.log_level,
        kubeconfig=args.kubeconfig,
        context=args.context,
        cluster_domain=(args.cluster_domain or env.get("CLUSTER_DOMAIN")
                        or cluster_domain_from_resolv_conf(resolv_conf) or DEFAULT_CLUSTER_DOMAIN).strip("."),
    )
