"""Prometheus metrics of the operator (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# `kind` is the served resource's kind (SwarmCluster, SwarmJob): every kind's turns run on the kit's one loop.
RECONCILES = Counter("swarm_reconcile_total", "Reconciles run", ["kind", "result"])
RECONCILE_SECONDS = Histogram("swarm_reconcile_duration_seconds", "Time of one reconcile", ["kind"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter("swarm_reconcile_errors_total", "Reconciles that raised, by exception type",
                           ["kind", "error"])
CLUSTERS = Gauge("swarm_clusters", "SwarmClusters by phase", ["phase"])
PODS = Gauge("swarm_pods", "Pods by cluster, group and state", ["namespace", "cluster", "group", "state"])
WORKER_REPLACEMENTS = Counter("swarm_worker_replacements_total", "Failed workers replaced",
                              ["namespace", "cluster", "group"])
HEAD_REPLACEMENTS = Counter("swarm_head_replacements_total", "Failed heads replaced", ["namespace", "cluster"])
POD_DISRUPTIONS = Counter("swarm_pod_disruptions_total",
                          "Pods ended by a disruption the operator did not cause (an eviction, a node shutdown "
                          "or loss), each once: not failures",
                          ["namespace", "cluster", "group", "cause"])
API_REQUESTS = Counter("swarm_api_requests_total", "Kubernetes API requests issued by the operator",
                       ["verb", "resource"])
QUEUE_DEPTH = Gauge("swarm_workqueue_depth", "Clusters waiting to be reconciled")

AUTOSCALER_DECISIONS = Counter("swarm_autoscaler_decisions_total", "Autoscaler decisions that changed a target",
                               ["namespace", "cluster", "group", "direction"])
AUTOSCALER_DRAINS = Counter("swarm_autoscaler_drains_total", "Drains of idle Ray nodes, by Ray's answer",
                            ["namespace", "cluster", "result"])
AUTOSCALER_PENDING = Gauge("swarm_autoscaler_pending_demand", "Pending Ray demand, summed per resource",
                           ["namespace", "cluster", "resource"])
AUTOSCALER_POLL_SECONDS = Histogram("swarm_autoscaler_poll_seconds", "Time to read one cluster's Ray state",
                                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
AUTOSCALER_POLL_ERRORS = Counter("swarm_autoscaler_poll_errors_total", "Failed reads of Ray state",
                                 ["namespace", "cluster"])
