"""tests/conftest.py: under CI=true a skipped e2e, chaos, packaging or kind test fails the run, named with its
reason; other tiers may skip, and off CI nothing changes. Checked on a small suite run by a real pytest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPS = 'import pytest\n\ndef test_runs():\n    pass\n\ndef test_skips():\n    pytest.skip("no ip here")\n'
MARKED = ('import pytest\n\npytestmark = pytest.mark.e2e\n\n'
          'def test_marked_skips():\n    pytest.skip("ray start was slow")\n')


def run_suite(tmp_path: Path, files: dict[str, str], ci: str | None) -> subprocess.CompletedProcess[str]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    shutil.copyfile(CONFTEST, tmp_path / "tests" / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    e2e: real processes\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("files", "ci", "code", "named"), [
    pytest.param({"tests/e2e/test_a.py": SKIPS, "tests/unit/test_b.py": SKIPS}, "true", 1,
                 ["tests/e2e/test_a.py::test_skips: no ip here"], id="e2e-skip-fails-on-ci"),
    pytest.param({"tests/chaos/test_a.py": SKIPS, "tests/packaging/test_b.py": SKIPS}, "true", 1,
                 ["tests/chaos/test_a.py::test_skips: no ip here", "tests/packaging/test_b.py::test_skips: no ip here"],
                 id="chaos-and-packaging-too"),
    pytest.param({"tests/kind/test_a.py": SKIPS}, "true", 1, ["tests/kind/test_a.py::test_skips: no ip here"],
                 id="kind-too"),
    pytest.param({"tests/ray/test_a.py": MARKED}, "true", 1,
                 ["tests/ray/test_a.py::test_marked_skips: ray start was slow"], id="marked-e2e-elsewhere"),
    pytest.param({"tests/unit/test_b.py": SKIPS}, "true", 0, [], id="unit-skips-allowed"),
    pytest.param({"tests/e2e/test_a.py": SKIPS}, None, 0, [], id="off-ci-skips-allowed"),
    pytest.param({"tests/e2e/test_a.py": SKIPS}, "false", 0, [], id="ci-false"),
])
def test_skips_of_gated_tiers_fail_on_ci(tmp_path: Path, files: dict[str, str], ci: str | None, code: int,
                                         named: list[str]) -> None:
    res = run_suite(tmp_path, files, ci)
    assert res.returncode == code, res.stdout + res.stderr
    for line in named:
        assert line in res.stdout, res.stdout
    assert ("skipped on CI" in res.stdout) is bool(named), res.stdout
