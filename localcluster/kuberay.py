"""KubeRay's operator against the local cluster, for bench/scale.py's comparison.

Optional: the binary and its CRDs come from ``python -m localcluster build kuberay``
(``build.ensure_kuberay()``), never from the default build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from localcluster import build, versions
from localcluster.operator_process import OperatorProcess

# The manager starts the RayCluster, RayJob and RayService controllers whatever it is asked to do, and
# each waits for its kind: all of the module's CRDs are applied (RayCronJob's is behind a feature gate).
CRD_NAMES = ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io")


def apply_crds(kubeconfig: str, timeout: float = 60.0) -> None:
    """Build KubeRay if needed, apply its CRDs server-side (they exceed the client-side annotation limit),
    and wait until they are Established."""
    build.ensure_kuberay()
    files = sorted(versions.kuberay_crds().glob("*.yaml"))
    if not files:
        raise RuntimeError(f"no KubeRay CRDs under {versions.kuberay_crds()}")
    kubectl = str(versions.tool_path("kubectl"))
    for f in files:
        subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts",
                        "-f", str(f)], check=True, capture_output=True, timeout=timeout)
    subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Established",
                    f"--timeout={timeout:.0f}s", *(f"crd/{n}" for n in CRD_NAMES)],
                   check=True, capture_output=True, timeout=timeout + 10)


class KubeRayProcess(OperatorProcess):
    """KubeRay's operator binary as a subprocess: leader election off, one namespace list watched,
    metrics and health probes on free loopback ports; the rest (feature gates, qps, burst,
    concurrency) at KubeRay's defaults unless ``extra`` flags say otherwise. Stopped by its PID."""

    def __init__(self, kubeconfig: str, namespaces: list[str], log_path: Path, extra: list[str] | None = None):
        super().__init__(kubeconfig, namespaces, log_path, extra)
        self.binary = build.ensure_kuberay()

    def command(self) -> list[str]:
        return [str(self.binary), "-kubeconfig", self.kubeconfig,
                "-metrics-addr", f"127.0.0.1:{self.metrics_port}",
                "-health-probe-bind-address", f"127.0.0.1:{self.health_port}",
                "-enable-leader-election=false",
                "-watch-namespace", ",".join(self.namespaces),
                "-log-stdout-encoder", "console",
                *self.extra]
