"""The kind tier's cluster, ready for Ray: what tests/kind and bench/recovery.py --kind both run on.

``kind_tier()`` makes a kind cluster of hack/kind/cluster.yaml (a control plane, a CPU worker, a GPU worker with
fake ``nvidia.com/gpu``, flannel between them; ``spot_workers`` more on request, each the only node of its pool)
from images built on this machine: the node image, Ray and Redis by `python -m localcluster kind-images` (minutes
when cold, so made before, not here), the operator's own here. The operator is installed from the Helm chart,
serving every namespace, with its default settings. At the end the cluster is deleted (``keep`` keeps it, and a
later call with it set reuses it), and the Docker engine stopped if this call started it.

The host does not route to kind's pod network, so Ray is reached the way a kind user does: the GCS from inside the
head's container (`kubectl exec`), the Jobs API through `kubectl port-forward` (KindTier.exec, .dashboard).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import docker_engine, image, kind, rayjobs, versions
from localcluster.docker_engine import DockerEngine, EngineError
from swarm_operator.resources.pods import DASHBOARD_PORT, GCS_PORT

RAY_CONTAINER = "ray"
CHART = kind.REPO / "helm" / "swarm-operator"
CRD_FILE = kind.REPO / "crds" / "swarmcluster.yaml"
OPERATOR_IMAGE = image.KIND_OPERATOR_IMAGE


@dataclass
class KindTier:
    """A kind cluster made by kind_tier() and what runs in it."""

    cluster: kind.KindCluster
    engine: DockerEngine
    ray_image: str
    redis_image: str
    operator_image: str
    upgrade_image: Future[str] | None  # another release of the operator's image (image.build_upgrade_image), built
    # and loaded into the CPU worker behind the set-up; None unless asked for
    release: str = "swarm-operator"
    operator_namespace: str = "swarm-operator"

    def exec(self, namespace: str, pod: str, *cmd: str, timeout: float = 120) -> str:
        """Run ``cmd`` in the Ray container of ``pod``; its stdout (raises with stderr on failure)."""
        return self.cluster.kubectl("exec", "-n", namespace, pod, "-c", RAY_CONTAINER, "--", *cmd, timeout=timeout)

    def ray_nodes(self, namespace: str, head_pod: str, head_ip: str) -> list[rayjobs.RayNode]:
        """Every node the head's GCS knows (dead ones included), asked from inside the head's container."""
        return rayjobs.parse_nodes(self.exec(namespace, head_pod, "python", "-c", rayjobs.GCS_PROBE,
                                             f"{head_ip}:{GCS_PORT}", timeout=60))

    @contextlib.contextmanager
    def dashboard(self, namespace: str, pod: str) -> Iterator[str]:
        """`kubectl port-forward` to the head's dashboard; yields its local host:port (for rayjobs)."""
        proc = subprocess.Popen([str(versions.tool_path("kubectl")), "--kubeconfig", str(self.cluster.kubeconfig),
                                 "port-forward", "-n", namespace, f"pod/{pod}", f":{DASHBOARD_PORT}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # Forwarding from 127.0.0.1:41735 -> 8265
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not found:
                raise EngineError(f"kubectl port-forward to {namespace}/{pod} said {line!r}")
            yield f"127.0.0.1:{found.group(1)}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def missing_prerequisite() -> str | None:
    """Why kind_tier() cannot run on this machine; None when it can."""
    if os.geteuid() != 0:
        return "kind here needs root: its own dockerd, apt for the engine, debootstrap"
    if shutil.which("go") is None:
        return "the kind node image is built from Go modules: the Go toolchain is not on PATH"
    if versions.helm_binary() is None:
        return "helm is not built: run `python -m localcluster build`"
    return None


def operator_values(tag: str) -> dict[str, Any]:
    repository, _, version = tag.rpartition(":")
    return {
        "image": {"repository": repository, "tag": version, "pullPolicy": "Never"},
        "nodeSelector": {kind.POOL_LABEL: "cpu"},
        # Tiny requests: the machine has 2 shared cores, and the limits are what the operator may use.
        "resources": {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "terminationGracePeriodSeconds": 10,
    }


def helm(tier: KindTier, *args: str, values: dict[str, Any] | None = None, timeout: float = 300) -> str:
    binary = versions.helm_binary()
    if binary is None:
        raise EngineError("helm is not built: run `python -m localcluster build`")
    extra = ["--values", "-"] if values is not None else []
    res = subprocess.run([binary, "--kubeconfig", str(tier.cluster.kubeconfig), *args, *extra],
                         input=json.dumps(values or {}), capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise EngineError(f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def install_operator(tier: KindTier, tag: str) -> None:
    """`helm upgrade --install` of the chart with the operator image ``tag``, waited until rolled out."""
    helm(tier, "upgrade", "--install", tier.release, str(CHART), "--namespace", tier.operator_namespace,
         "--create-namespace", "--skip-crds", "--wait", "--timeout", "4m", values=operator_values(tag))
    tier.cluster.kubectl("-n", tier.operator_namespace, "rollout", "status", f"deployment/{tier.release}",
                         "--timeout=120s")


@contextlib.contextmanager
def kind_tier(name: str, *, spot_workers: int = 0, upgrade: bool = False, keep: bool = False) -> Iterator[KindTier]:
    """A kind cluster ``name`` with the CRD and the operator installed (see the module's doc); ``spot_workers`` extra
    workers (pools kind.spot_pool(0…)) with the Ray image loaded; ``upgrade``: the upgrade image too."""
    with docker_engine.running(kind.engine_for_kind()) as engine, \
            tempfile.TemporaryDirectory(prefix="swarm-kind-") as tmp, ThreadPoolExecutor(1) as background:
        start = time.monotonic()
        node_image = kind.node_image_tag()
        ray, redis = image.ray_image_tag(), image.redis_image_tag()
        missing = [tag for tag in (node_image, ray, redis)
                   if engine.docker("image", "inspect", tag, check=False).returncode != 0]
        if missing:  # minutes when cold: made apart, so that it is no test's time
            raise EngineError(f"not built: {', '.join(missing)}; run `python -m localcluster kind-images`")

        def build_operator() -> None:
            operator = image.build_operator_image(engine, tag=OPERATOR_IMAGE)
            # Each commit's operator image leaves its predecessor untagged (~700 MB): this engine is the tier's own.
            engine.docker("image", "prune", "--force")
            print(f"\n[kind] operator image {OPERATOR_IMAGE} built in {operator.build_seconds:.0f}s", flush=True)

        # The operator's image and the upgrade test's, one after the other, while kind creates the cluster, mostly
        # waiting: ~100 s cold, seconds when `localcluster kind-images --operator` (.ci/run) has built both.
        built = background.submit(build_operator)
        upgrade_built = background.submit(lambda: image.build_upgrade_image(engine).tag) if upgrade else None
        cluster = kind.KindCluster(name, engine, Path(tmp) / "kubeconfig", spot_workers)
        ray_pools = ("cpu", "gpu", *(kind.spot_pool(k) for k in range(spot_workers)))

        def load() -> None:
            """Into the workers that run them: Ray into all, Redis and the operator into the CPU one, both loads at
            once. Not the upgrade test's image: it is loaded after its build, behind the set-up (its build, after the
            operator's, would hold the set-up up)."""
            loaded = time.monotonic()
            with ThreadPoolExecutor(1) as pool:
                ray_loaded = pool.submit(cluster.load, (ray,), ray_pools)
                built.result(timeout=600)
                cluster.load((redis, OPERATOR_IMAGE), ("cpu",))
                ray_loaded.result()
            print(f"[kind] images loaded into the workers in {time.monotonic() - loaded:.0f}s", flush=True)

        def load_upgrade(upgrade_built: Future[str]) -> str:
            tag = upgrade_built.result()
            cluster.load((tag,), ("cpu",))
            return tag

        try:
            if cluster.exists() and keep:
                print(f"[kind] reusing cluster {cluster.name} (kept)", flush=True)
                cluster.export_kubeconfig()
                load()
            else:
                if cluster.exists():  # left by an interrupted run: start clean
                    cluster.delete()
                cluster.create(node_image, meanwhile=load)  # loading needs the nodes, not their CNI
            tier = KindTier(cluster, engine, ray, redis, OPERATOR_IMAGE,
                            background.submit(load_upgrade, upgrade_built) if upgrade_built else None)
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=swarm-tests",
                            "-f", str(CRD_FILE))
            install_operator(tier, OPERATOR_IMAGE)
            print(f"[kind] tier ready in {time.monotonic() - start:.0f}s", flush=True)
            yield tier
        finally:
            if keep:
                print(f"[kind] keeping cluster {cluster.name} (kubeconfig: kind get kubeconfig --name {cluster.name})",
                      flush=True)
            else:
                cluster.delete()
