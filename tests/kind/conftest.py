"""The kind tier: every Ray pod is a container under a real kubelet (`make test-kind`).

One kind cluster serves the whole session (hack/kind/cluster.yaml: a control plane, a CPU worker and a GPU
worker with fake ``nvidia.com/gpu``, flannel between them), made from images built on this machine: the node
image, Ray and Redis by `python -m localcluster kind-images`, which `make test-kind` runs first (minutes when
cold, so not under a test's timeout), the operator's own here. The operator is installed into the cluster from
the Helm chart, serving every namespace. The cluster is deleted at the end (SWARM_KIND_KEEP=1 keeps it, and a
later run with it set reuses it; SWARM_KIND_CLUSTER names it), and the Docker engine stopped if this session
started it. Each module works in namespaces of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hack.generate import helm_binary
from localcluster import docker_engine, image, kind
from tests.integration.conftest import (  # noqa: F401
    api_client,
    core_v1,
    crd,
    custom_objects,
    kubectl,
    local_tools_built,
    namespace,
    namespaces,
)
from tests.integration.helpers import CRD_FILE
from tests.kind.helpers import OPERATOR_IMAGE, KindTier, install_operator


@pytest.fixture(scope="session")
def kind_tier() -> Iterator[KindTier]:
    if os.geteuid() != 0:
        pytest.skip("kind here needs root: its own dockerd, apt for the engine, debootstrap")
    if shutil.which("go") is None:
        pytest.skip("the kind node image is built from Go modules: the Go toolchain is not on PATH")
    if helm_binary() is None:
        pytest.skip("helm is not built: run `python -m localcluster build`")
    keep = os.environ.get("SWARM_KIND_KEEP") == "1"
    with docker_engine.running(kind.engine_for_kind()) as engine, \
            tempfile.TemporaryDirectory(prefix="swarm-kind-") as tmp, ThreadPoolExecutor(1) as background:
        start = time.monotonic()
        node_image = kind.node_image_tag()
        ray, redis = image.ray_image_tag(), image.redis_image_tag()
        missing = [tag for tag in (node_image, ray, redis)
                   if engine.docker("image", "inspect", tag, check=False).returncode != 0]
        if missing:  # minutes when cold: not under a test's timeout
            pytest.fail(f"not built: {', '.join(missing)}; run `python -m localcluster kind-images` "
                        "(make test-kind does)")

        def build_operator() -> None:
            operator = image.build_operator_image(engine, tag=OPERATOR_IMAGE)
            # Each commit's operator image leaves its predecessor untagged (~700 MB): this engine is the tier's own.
            engine.docker("image", "prune", "--force")
            print(f"\n[kind] operator image {OPERATOR_IMAGE} built in {operator.build_seconds:.0f}s", flush=True)

        # The operator's image and the upgrade test's, one after the other, while kind creates the cluster, mostly
        # waiting: ~100 s cold, seconds when `localcluster kind-images --operator` (.ci/run) has built both.
        built = background.submit(build_operator)
        upgrade = background.submit(lambda: image.build_upgrade_image(engine).tag)
        cluster = kind.KindCluster(os.environ.get("SWARM_KIND_CLUSTER", "swarm-kind"), engine,
                                   Path(tmp) / "kubeconfig")

        def load() -> None:
            """Into the workers that run them: Ray into both, Redis and the operator into the CPU one, both loads at
            once. Not the upgrade test's image: it is loaded after its build, behind the set-up (its build, after the
            operator's, would hold the set-up up)."""
            loaded = time.monotonic()
            with ThreadPoolExecutor(1) as pool:
                ray_loaded = pool.submit(cluster.load, (ray,), ("cpu", "gpu"))
                built.result(timeout=600)
                cluster.load((redis, OPERATOR_IMAGE), ("cpu",))
                ray_loaded.result()
            print(f"[kind] images loaded into the workers in {time.monotonic() - loaded:.0f}s", flush=True)

        def load_upgrade() -> str:
            tag = upgrade.result()
            cluster.load((tag,), ("cpu",))
            return tag

        try:
            if cluster.exists() and keep:
                print(f"[kind] reusing cluster {cluster.name} (SWARM_KIND_KEEP=1)", flush=True)
                cluster.export_kubeconfig()
                load()
            else:
                if cluster.exists():  # left by an interrupted run: start clean
                    cluster.delete()
                cluster.create(node_image, meanwhile=load)  # loading needs the nodes, not their CNI
            tier = KindTier(cluster, engine, ray, redis, OPERATOR_IMAGE, background.submit(load_upgrade))
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=swarm-tests",
                            "-f", str(CRD_FILE))
            install_operator(tier, OPERATOR_IMAGE)
            print(f"[kind] tier ready in {time.monotonic() - start:.0f}s", flush=True)
            yield tier
        finally:
            if keep:
                print(f"[kind] keeping cluster {cluster.name} (SWARM_KIND_KEEP=1; kubeconfig: "
                      f"kind get kubeconfig --name {cluster.name})", flush=True)
            else:
                cluster.delete()


@pytest.fixture(scope="session")
def kubeconfig(kind_tier: KindTier) -> str:
    """The integration tier's fixtures (api_client, core_v1, namespaces, …) talk to the kind cluster."""
    return str(kind_tier.cluster.kubeconfig)
