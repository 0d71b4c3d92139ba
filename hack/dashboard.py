"""docs/grafana/swarm-operator.json: a Grafana dashboard of the operator's metrics alongside Ray's.

Pure: the dashboard as a dict. Written by `python -m hack.generate`, kept current by
tests/unit/test_generated.py, which also checks that every metric in swarm_operator.metrics
appears in some panel.

Scraping it needs: the operator's /metrics (the chart's Service, or its ServiceMonitor with
honorLabels), and the Ray pods' :8080 (the chart's PodMonitor, which copies the pod label
swarm.io/cluster to ray_io_cluster — the label Ray's own dashboards filter by — and swarm.io/group
to swarm_group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
OPERATOR = 'namespace=~"$namespace", cluster=~"$cluster"'  # labels of the operator's per-cluster metrics
RAY = 'namespace=~"$namespace", ray_io_cluster=~"$cluster"'  # labels the PodMonitor gives Ray's metrics
WIDTH = 24


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 8
    stack: bool = False


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {"fillOpacity": 10, "lineWidth": 1}
    if p.stack:
        custom.update(fillOpacity=40, stacking={"mode": "normal", "group": "A"})
    out: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(p.targets)],
    }
    if p.kind == "timeseries":
        out["fieldConfig"]["defaults"]["custom"] = custom
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    else:
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area"}
    return out


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Operator", (
        Panel("SwarmClusters by phase", (("sum by (phase) (swarm_clusters)", "{{phase}}"),), kind="stat",
              description="As counted by the acting replica (standby replicas report too: max is taken).",
              width=6),
        Panel("Work queue depth", (("max(swarm_workqueue_depth)", "waiting"),), kind="stat", width=6,
              description="Clusters waiting for a reconcile turn; growing means --workers is too low."),
        Panel("Reconciles", (("sum by (kind, result) (rate(swarm_reconcile_total[$__rate_interval]))",
                              "{{kind}} {{result}}"),), unit="ops", width=12),
        Panel("Reconcile duration", tuple(
            (f"histogram_quantile({q}, sum by (kind, le) (rate(swarm_reconcile_duration_seconds_bucket"
             f"[$__rate_interval])))", f"{{{{kind}}}} p{round(q * 100)}") for q in (0.5, 0.95, 0.99)), unit="s"),
        Panel("Reconcile errors", (("sum by (kind, error) (rate(swarm_reconcile_errors_total[$__rate_interval]))",
                                    "{{kind}} {{error}}"),), unit="ops",
              description="Reconciles that raised, by kind and exception type; the operator log has the details."),
        Panel("Kubernetes API requests", (("sum by (verb, resource) (rate(swarm_api_requests_total"
                                           "[$__rate_interval]))", "{{verb}} {{resource}}"),), unit="reqps"),
        Panel("Operator memory", (('process_resident_memory_bytes{job=~"$job"}', "{{pod}}"),), unit="bytes",
              width=12),
        Panel("Operator CPU", (('rate(process_cpu_seconds_total{job=~"$job"}[$__rate_interval])', "{{pod}}"),),
              unit="percentunit", width=12),
    )),
    ("Ray clusters: pods and healing", (
        Panel("Pods by group and state", ((f"sum by (cluster, group, state) (swarm_pods{{{OPERATOR}}})",
                                           "{{cluster}} {{group}} {{state}}"),), stack=True, width=12),
        Panel("Worker replacements", ((f"sum by (cluster, group) (increase(swarm_worker_replacements_total"
                                       f"{{{OPERATOR}}}[$__rate_interval]))", "{{cluster}} {{group}}"),),
              description="Failed or dead workers deleted and replaced (with per-group backoff).",
              width=6),
        Panel("Head replacements", ((f"sum by (cluster) (increase(swarm_head_replacements_total{{{OPERATOR}}}"
                                     "[$__rate_interval]))", "{{cluster}}"),), width=6),
        Panel("Disruptions", ((f"sum by (cluster, group, cause) (increase(swarm_pod_disruptions_total"
                               f"{{{OPERATOR}}}[$__rate_interval]))", "{{cluster}} {{group}} {{cause}}"),),
              description="Pods evicted, stopped by a node shutdown, or on a node deleted or NotReady too long: "
                          "replaced at once, not counted as failures (no backoff).", width=24),
    )),
    ("Autoscaler", (
        Panel("Pending Ray demand", ((f"sum by (cluster, resource) (swarm_autoscaler_pending_demand{{{OPERATOR}}})",
                                      "{{cluster}} {{resource}}"),),
              description="What Ray is waiting for, summed per resource (tasks, actors, placement groups, "
                          "request_resources)."),
        Panel("Scaling decisions", ((f"sum by (cluster, group, direction) (increase("
                                     f"swarm_autoscaler_decisions_total{{{OPERATOR}}}[$__rate_interval]))",
                                     "{{cluster}} {{group}} {{direction}}"),),
              description="Target changes; the reasons are in the SwarmCluster's events (reason Autoscaled)."),
        Panel("Drains of idle nodes", ((f"sum by (cluster, result) (increase(swarm_autoscaler_drains_total"
                                        f"{{{OPERATOR}}}[$__rate_interval]))", "{{cluster}} {{result}}"),),
              description="refused: the raylet found work on the node and kept it."),
        Panel("Ray state read time", tuple(
            (f"histogram_quantile({q}, sum by (le) (rate(swarm_autoscaler_poll_seconds_bucket"
             f"[$__rate_interval])))", f"p{round(q * 100)}") for q in (0.5, 0.99)), unit="s", width=12),
        Panel("Ray state read errors", ((f"sum by (cluster) (rate(swarm_autoscaler_poll_errors_total"
                                         f"{{{OPERATOR}}}[$__rate_interval]))", "{{cluster}}"),), unit="ops",
              width=12, description="The GCS could not be read: head down, network policy, token."),
    )),
    ("Ray (each node's :8080)", (
        Panel("Ray nodes", ((f"count by (ray_io_cluster) (ray_node_cpu_count{{{RAY}}})", "{{ray_io_cluster}}"),),
              width=6),
        Panel("Logical CPUs used / total", (
            (f'sum by (ray_io_cluster) (ray_resources{{Name="CPU", State="USED", {RAY}}})', "{{ray_io_cluster}} used"),
            (f'sum by (ray_io_cluster) (ray_resources{{Name="CPU", {RAY}}})', "{{ray_io_cluster}} total"),
        ), width=9),
        Panel("Logical GPUs used / total", (
            (f'sum by (ray_io_cluster) (ray_resources{{Name="GPU", State="USED", {RAY}}})', "{{ray_io_cluster}} used"),
            (f'sum by (ray_io_cluster) (ray_resources{{Name="GPU", {RAY}}})', "{{ray_io_cluster}} total"),
        ), width=9),
        Panel("Tasks by state", ((f'sum by (State) (ray_tasks{{State!~"FINISHED|FAILED", {RAY}}})', "{{State}}"),),
              stack=True),
        Panel("Actors by state", ((f'sum by (State) (ray_actors{{Source="gcs", {RAY}}})', "{{State}}"),),
              stack=True),
        Panel("Object store memory", ((f"sum by (Location) (ray_object_store_memory{{{RAY}}})", "{{Location}}"),),
              unit="bytes", stack=True),
        Panel("Node CPU utilization", ((f"avg by (pod) (ray_node_cpu_utilization{{{RAY}}})", "{{pod}}"),),
              unit="percent", width=12),
        Panel("GPU utilization", ((f"avg by (pod) (ray_node_gpus_utilization{{{RAY}}})", "{{pod}}"),),
              unit="percent", width=12),
    )),
)


def _variable(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": query,
            "refId": name}, "definition": query, "refresh": 2, "includeAll": multi, "multi": multi,
            "allValue": ".*", "current": {"text": "All", "value": "$__all"} if multi else {}, "sort": 1}


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []})
        pid, y, x = pid + 1, y + 1, 0
        for p in row:
            if x + p.width > WIDTH:
                x, y = 0, y + 8
            panels.append(_panel(p, pid, x, y))
            pid, x = pid + 1, x + p.width
        y += 8
    return {
        "title": "swarm-operator",
        "uid": "swarm-operator",
        "description": "swarm-operator's reconciles, healing and autoscaler, with the Ray clusters it runs.",
        "tags": ["swarm-operator", "ray", "kubernetes"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "graphTooltip": 1,
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("job", "Operator job", "label_values(swarm_workqueue_depth, job)"),
            _variable("namespace", "Namespace", "label_values(swarm_pods, namespace)"),
            _variable("cluster", "SwarmCluster", 'label_values(swarm_pods{namespace=~"$namespace"}, cluster)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }
