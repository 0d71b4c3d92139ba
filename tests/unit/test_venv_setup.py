"""`make .venv/.installed` (hack/venv.py) never leaves a venv that is trusted half-made.

The real Makefile and hack/venv.py run in a scratch project; only the install command is a stand-in
(VENV_INSTALL): a fake pip that installs a package with the `ray` and `swarm-operator` console scripts,
behaves like pip when the package is already there ("Requirement already satisfied", scripts or not),
and on request starts a child that keeps writing, as pip's build subprocesses do, then hangs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PIP = r'''
import os, subprocess, sys, sysconfig, time
from pathlib import Path

with open(os.environ["FAKE_RUNS"], "a") as fh:
    fh.write("run\n")
site, bin_dir = Path(sysconfig.get_paths()["purelib"]), Path(sys.prefix) / "bin"
dist = site / "fakeray-1.0.dist-info"
if dist.exists():
    sys.exit(0)  # pip: "Requirement already satisfied", whatever became of the scripts
time.sleep(float(os.environ.get("FAKE_SLOW", "0")))
(site / "fakeray").mkdir()
(site / "fakeray" / "__init__.py").write_text("def main():\n    print('fake ray')\n")
dist.mkdir()
(dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeray\nVersion: 1.0\n")
(dist / "entry_points.txt").write_text("[console_scripts]\nray = fakeray:main\nswarm-operator = fakeray:main\n")
if os.environ.get("FAKE_HANG"):
    # Files are in, scripts are not yet: a child keeps writing (pip's build backends), the parent waits.
    subprocess.Popen([sys.executable, "-c", os.environ["FAKE_WRITER"]])
    time.sleep(600)
for name in ("ray", "swarm-operator"):
    script = bin_dir / name
    script.write_text(f"#!{bin_dir / 'python'}\nimport fakeray\nfakeray.main()\n")
    script.chmod(0o755)
'''

WRITER = """
import os, time
with open(os.environ["FAKE_WRITER_PID"], "w") as fh:
    fh.write(str(os.getpid()))
while True:
    with open(os.environ["FAKE_HEARTBEAT"], "a") as fh:
        fh.write(".")
    time.sleep(0.02)
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


class Project:
    """A scratch copy of what `make .venv/.installed` needs: the Makefile, hack/venv.py, a pyproject.toml."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "hack").mkdir(parents=True)
        shutil.copy(REPO / "Makefile", root / "Makefile")
        shutil.copy(REPO / "hack" / "venv.py", root / "hack" / "venv.py")
        (root / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
        (root / "fake_pip.py").write_text(FAKE_PIP)
        self.runs = root / "runs"
        self.heartbeat = root / "heartbeat"
        self.writer_pid = root / "writer.pid"
        self.venv = root / ".venv"
        self.stamp = self.venv / ".installed"

    def make(self, **fake: str) -> subprocess.Popen[str]:
        env = {**os.environ, "FAKE_RUNS": str(self.runs), "FAKE_WRITER": WRITER,
               "FAKE_HEARTBEAT": str(self.heartbeat), "FAKE_WRITER_PID": str(self.writer_pid), **fake}
        env.pop("VIRTUAL_ENV", None)
        return subprocess.Popen(["make", "--no-print-directory", ".venv/.installed", "PY=" + sys.executable,
                                 "VENV_INSTALL=python fake_pip.py"], cwd=self.root, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def make_ok(self, **fake: str) -> str:
        proc = self.make(**fake)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        return out

    def installs(self) -> int:
        return len(self.runs.read_text().splitlines()) if self.runs.exists() else 0

    def ray_runs(self) -> bool:
        res = subprocess.run([str(self.venv / "bin" / "ray")], capture_output=True, text=True, timeout=60, check=False)
        return res.returncode == 0 and res.stdout == "fake ray\n"


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped by its parent yet) writes nothing more.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "project")


@pytest.mark.parametrize("interrupt", ["ctrl-c", "sigterm-to-make", "sigkill-to-make"])
def test_an_interrupted_setup_stops_every_install_process_and_the_next_make_rebuilds(project: Project,
                                                                                     interrupt: str) -> None:
    proc = project.make(FAKE_HANG="1")
    wait_until(lambda: project.writer_pid.exists() and project.heartbeat.exists())
    writer = int(project.writer_pid.read_text())
    if interrupt == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C goes to the foreground group
    else:  # a timeout that ends make alone (SIGKILL: make cannot pass anything on)
        proc.send_signal(signal.SIGTERM if interrupt == "sigterm-to-make" else signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    wait_until(lambda: not alive(writer), timeout=15)  # pip's child is gone too ...
    size = project.heartbeat.stat().st_size
    time.sleep(0.3)
    assert project.heartbeat.stat().st_size == size  # ... and nothing writes any more
    assert not project.stamp.exists()
    assert (project.venv / ".unfinished").exists()
    # The next make (`make demo` starts with this) does not trust the half-made venv: it starts over.
    out = project.make_ok()
    assert "did not finish: starting from an empty venv" in out
    assert project.stamp.exists() and project.ray_runs()
    assert project.installs() == 2


def test_a_venv_whose_package_lacks_its_scripts_is_rebuilt_not_trusted(project: Project) -> None:
    """The state this was found in: Ray's package in site-packages, no bin/ray, which pip calls installed."""
    project.make_ok()
    (project.venv / "bin" / "ray").unlink()
    project.stamp.unlink()
    out = project.make_ok()
    assert "bin/ray is missing" in out and "starting from an empty venv" in out
    assert project.ray_runs()
    assert project.installs() == 3  # the first set-up, pip's "already satisfied", the set-up from scratch


def test_an_up_to_date_venv_is_not_touched(project: Project) -> None:
    project.make_ok()
    made = project.stamp.stat().st_mtime_ns
    out = project.make_ok()
    assert "up to date" in out and project.stamp.stat().st_mtime_ns == made and project.installs() == 1


def test_two_makes_at_once_install_once(project: Project) -> None:
    first = project.make(FAKE_SLOW="1")
    wait_until(lambda: project.installs() == 1)
    second = project.make()
    outputs: list[str] = []
    threads = [threading.Thread(target=lambda p=p: outputs.append(p.communicate(timeout=120)[0]))
               for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert any("waiting for it" in out for out in outputs), outputs
    assert project.installs() == 1 and project.ray_runs()
