"""The operator's image for real: built from the Dockerfile by a Docker engine on this machine, then run.

The engine (Debian's Docker package, installed on first use) is started for this module and stopped by its PID
at the end; the image's base is the local stand-in for python:3.11-slim (localcluster/image.py). The
container runs as the chart runs it: its own non-root user, a read-only root filesystem with a tmpfs on
/tmp, no capabilities; on the host's network, so it reaches the local API server as the host does.

Slow (cold: ~1 min for the base image, ~2 min for the build; cached: seconds) and needs root (apt,
dockerd): `make test-image`, not part of `make test`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster import docker_engine, versions
from localcluster.docker_engine import DockerEngine
from localcluster.image import BuiltImage, build_operator_image
from localcluster.operator_process import free_port, healthz_answers
from tests.integration.helpers import Cluster, manifest, ready_status, wait_for

pytestmark = pytest.mark.slow

IMAGE_UID = 10001  # the Dockerfile's USER


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    if os.geteuid() != 0:
        pytest.skip("needs root: installs the Docker engine with apt and runs dockerd")
    with docker_engine.running() as running:
        yield running


@pytest.fixture(scope="module")
def built(engine: DockerEngine) -> BuiltImage:
    image = build_operator_image(engine)
    print(f"{image.tag}: {image.size_bytes / 1e6:.0f} MB, docker build {image.build_seconds:.0f}s")
    return image


def test_runs_as_its_own_non_root_user(engine: DockerEngine, built: BuiltImage) -> None:
    res = engine.docker("run", "--rm", "--entrypoint", "id", built.tag, "-u")
    assert res.stdout.strip() == str(IMAGE_UID)


def test_image_holds_no_build_tools_or_sources(engine: DockerEngine, built: BuiltImage) -> None:
    res = engine.docker("run", "--rm", "--entrypoint", "sh", built.tag, "-c",
                        # BuildKit leaves the bind mount's target /wheels behind as an empty directory.
                        "find /src /wheels -type f 2>/dev/null; command -v gcc cc || true")
    assert res.stdout.strip() == "", f"found in the image: {res.stdout}"


@pytest.fixture
def flat_kubeconfig(kubeconfig: str) -> Iterator[Path]:
    """The cluster's kubeconfig with its certificates inline, readable by the image's user only."""
    kubectl = versions.tool_path("kubectl")
    res = subprocess.run([str(kubectl) if kubectl.is_file() else "kubectl", "--kubeconfig", kubeconfig, "config",
                          "view", "--flatten", "--raw"], capture_output=True, text=True, check=True, timeout=30)
    folder = Path(tempfile.mkdtemp(prefix="swarm-image-kubeconfig-"))
    path = folder / "kubeconfig"
    path.write_text(res.stdout)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    path.chmod(0o600)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def test_reconciles_on_a_read_only_root(engine: DockerEngine, built: BuiltImage, flat_kubeconfig: Path,
                                        api_client: client.ApiClient, namespace: str) -> None:
    """As the chart runs it: not root, read-only root, tmpfs /tmp, no capabilities; /healthz, then a
    SwarmCluster in a namespace of its own becomes Running (head and a worker on the cluster's nodes)."""
    health, metrics = free_port(), free_port()
    name = f"swarm-image-test-{health}"
    engine.docker("run", "--detach", "--name", name, "--network", "host", "--read-only",
                  "--tmpfs", "/tmp:rw,size=64m", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                  "--volume", f"{flat_kubeconfig}:/etc/swarm/kubeconfig:ro",
                  "--env", "KUBECONFIG=/etc/swarm/kubeconfig",
                  built.tag, "--namespace", namespace, f"--health-port={health}", f"--metrics-port={metrics}")
    swc = Cluster(api_client, namespace)
    try:
        deadline = time.monotonic() + 90
        while not healthz_answers(health):
            state = engine.docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            logs = engine.docker("logs", name, check=False)
            assert state == "running", f"container {state}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"no /healthz after 90 s:\n{logs.stderr[-3000:]}"
            time.sleep(0.5)
        swc.create(manifest("image", replicas=1))
        wait_for("the SwarmCluster Running 1/1", ready_status(swc, "image", 1), timeout=120)
        assert len(swc.heads("image")) == 1 and len(swc.workers("image")) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            assert b"swarm_reconcile_total" in r.read()
    finally:
        logs = engine.docker("logs", name, check=False)
        engine.docker("rm", "--force", name, check=False)
        print(swc.snapshot())
    text = logs.stdout + logs.stderr
    assert "Read-only file system" not in text and "Permission denied" not in text, text[-3000:]
