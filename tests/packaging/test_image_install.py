"""The image's install, without a Docker engine: the Dockerfile's own RUN commands replayed on this machine.

The build context (what .dockerignore lets in) is copied, the build stage's commands run with a
Python 3.11 that has pip (the base image's role), then the final stage's install commands run into
a fresh virtual environment, `/wheels` and `/opt/swarm-operator` mapped to temporary directories.
Then the entry point starts: `--help`, and — as root, with a local cluster — as an unprivileged
user on a read-only root filesystem with only a tmpfs /tmp, answering /healthz, as in the chart's pod.

Slow (~1.5 min: ~120 MB of wheels from PyPI, then installing them): a tier of its own, `pytest tests/packaging`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster import versions
from localcluster.operator_process import free_port, healthz_answers
from tests.packaging.dockerfile import REPO, env_pairs, parse, run_command

pytestmark = pytest.mark.slow

NOBODY = 65534
# Docker paths → where this test puts them.
WHEELS, PREFIX = "/wheels", "/opt/swarm-operator"


def base_python() -> Path:
    """A Python 3.11 that an unprivileged user can run too (a pyenv under /root is not), else this one."""
    system = Path("/usr/bin/python3.11")
    return system if system.is_file() else Path(os.path.realpath(sys.executable))


def world_usable(path: Path) -> bool:
    """Others may search every directory up to `path`, and read and execute `path` itself."""
    real = Path(os.path.realpath(path))
    return all(p.stat().st_mode & 0o001 for p in real.parents) and real.stat().st_mode & 0o005 == 0o005


@dataclass(frozen=True)
class Installed:
    root: Path  # world-readable, outside /tmp (the read-only run mounts a tmpfs over /tmp)
    prefix: Path  # the image's /opt/swarm-operator
    env: dict[str, str]  # the image's ENV, mapped
    entrypoint: list[str]


def sh(command: str, *, cwd: Path, env: dict[str, str], timeout: float = 600) -> None:
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"`{command}` failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    d = parse()
    root = Path(tempfile.mkdtemp(prefix="swarm-image-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        wheels, prefix, src = root / "wheels", root / "opt" / "swarm-operator", root / "src"
        mapped = {WHEELS: str(wheels), PREFIX: str(prefix)}

        def mapped_paths(text: str) -> str:
            for docker_path, here in mapped.items():
                text = text.replace(docker_path, here)
            return text

        # The base image's python: a virtual environment with pip, first on PATH as `python`.
        subprocess.run([str(base_python()), "-m", "venv", str(root / "base")], check=True, timeout=120)
        env = {"PATH": f"{root / 'base' / 'bin'}:/usr/bin:/bin", "HOME": str(root), "PIP_NO_INPUT": "1"}

        build, final = d.stages[0], d.final
        src.mkdir()
        for copy in build.all("COPY"):
            *sources, dest = copy.split()
            for name in sources:
                # Docker's rules: a directory's contents go into dest; a file goes into dest/ by its name.
                if (REPO / name).is_dir():
                    shutil.copytree(REPO / name, src / dest, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    shutil.copy2(REPO / name, src / dest / Path(name).name)
        for run in build.all("RUN"):
            sh(mapped_paths(run_command(run)), cwd=src, env=env)

        args = {**d.args, **d.stage_args(final)}
        for run in final.all("RUN"):
            command = run_command(run)
            if command.startswith("useradd"):
                continue  # a system user on this host is not needed: the read-only run uses nobody
            sh(mapped_paths(command), cwd=root, env={**env, **args})
        image_env = {k: mapped_paths(v).replace("$PATH", "/usr/bin:/bin")
                     for text in final.all("ENV") for k, v in env_pairs(text).items()}
        (entrypoint,) = final.all("ENTRYPOINT")
        yield Installed(root, prefix, image_env, list(json.loads(entrypoint)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_only_wheels_were_installed(installed: Installed) -> None:
    wheels = list((installed.root / "wheels").iterdir())
    assert wheels and all(w.suffix == ".whl" for w in wheels)
    assert any(w.name.startswith("swarm_operator-") for w in wheels)


def test_entrypoint_starts(installed: Installed) -> None:
    res = subprocess.run([*installed.entrypoint, "--help"], env=installed.env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: swarm-operator run")
    assert str(installed.prefix) in (shutil.which("swarm-operator", path=installed.env["PATH"]) or "")


def test_runs_unprivileged_on_a_read_only_root(installed: Installed, kubeconfig: str) -> None:
    """As the chart runs it: not root, the root filesystem read-only, a tmpfs on /tmp; /healthz answers."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a read-only mount namespace (unshare -m)")
    if not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs unshare and setpriv (util-linux)")
    if not world_usable(base_python()):
        pytest.skip(f"{base_python()} cannot be run by an unprivileged user")
    # The flattened kubeconfig (certificates inline), readable by that user only.
    kubectl = versions.tool_path("kubectl")
    flat = installed.root / "kubeconfig"
    res = subprocess.run([str(kubectl) if kubectl.is_file() else "kubectl", "--kubeconfig", kubeconfig, "config",
                          "view", "--flatten", "--raw"], capture_output=True, text=True, check=True, timeout=30)
    flat.write_text(res.stdout)
    os.chown(flat, NOBODY, NOBODY)
    flat.chmod(0o600)

    health, metrics = free_port(), free_port()
    env = {**installed.env, "KUBECONFIG": str(flat)}
    # A namespace that does not exist: the operator starts and serves nothing, touching no one's clusters.
    operator = [*installed.entrypoint, "--namespace", "swarm-packaging-none", f"--health-port={health}",
                f"--metrics-port={metrics}"]
    inner = ("mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp && mount -o remount,bind,ro / && "
             f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups env -i "
             + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + shlex.join(operator))
    log = installed.root / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not healthz_answers(health):
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /healthz after 90 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            assert b"swarm_reconcile_total" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log.read_text()
    assert "Read-only file system" not in text and "Permission denied" not in text, text[-3000:]
