"""hack/leftovers.py: a test tier that leaves anything but caches behind in the checkout fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hack.leftovers import leftovers

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "leftovers.py"


@pytest.mark.parametrize(("before", "after", "expected"), [
    pytest.param(set(), {"!! tests/__pycache__/", "!! .pytest_cache/", "!! .hypothesis/", "!! .mypy_cache/",
                         "!! .ruff_cache/", "!! new/deep/__pycache__/"}, [], id="caches"),
    pytest.param(set(), {"!! .venv/"}, ["!! .venv/"], id="a-venv-counts"),
    pytest.param({"!! .venv/"}, {"!! .venv/"}, [], id="a-venv-made-before-the-tier"),
    pytest.param(set(), {"?? kubeconfig", " M crds/swarmcluster.yaml", "!! build/"},
                 [" M crds/swarmcluster.yaml", "!! build/", "?? kubeconfig"], id="files-edits-ignored-dirs"),
    pytest.param({" M Makefile"}, {" M Makefile"}, [], id="edits-made-before"),
])
def test_leftovers(before: set[str], after: set[str], expected: list[str]) -> None:
    assert leftovers(before, after) == expected


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text(".venv/\n__pycache__/\n")
    (repo / "README").write_text("hi\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def guard(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=repo, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_tier_that_leaves_a_file_fails_and_says_what(repo: Path) -> None:
    res = guard(repo, "--", "sh", "-c", "mkdir -p pkg/__pycache__ && touch pkg/__pycache__/x.pyc out.txt")
    assert res.returncode == 1
    assert res.stderr.splitlines()[1:] == ["  ?? out.txt"]  # the cache is not named


def test_a_clean_tier_passes_with_its_own_exit_code(repo: Path) -> None:
    assert guard(repo, "--", "sh", "-c", "mkdir -p pkg/__pycache__; touch pkg/__pycache__/x.pyc").returncode == 0
    assert guard(repo, "--", "sh", "-c", "exit 3").returncode == 3


def test_clone_mode_runs_in_a_fresh_clone_of_head_and_catches_a_new_venv(repo: Path) -> None:
    (repo / "uncommitted").write_text("not in HEAD\n")
    res = guard(repo, "--clone", "--", "sh", "-c", "test ! -e uncommitted && test -e README && mkdir .venv")
    assert res.returncode == 1 and "!! .venv/" in res.stderr, res.stderr
    clone = Path(res.stderr.split("fresh clone of HEAD: ")[1].split()[0])
    assert not clone.exists()
    assert not (repo / ".venv").exists()
