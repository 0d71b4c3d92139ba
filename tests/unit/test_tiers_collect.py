"""Every slower tier's tests import and collect: a broken import (a helper moved, a name renamed) fails here in
seconds instead of after the tiers before it have run for many minutes. Nothing is run, no cluster is made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIERS = ["integration", "e2e", "ray", "chaos", "packaging", "kind", "image"]


@pytest.mark.parametrize("tier", [t for t in TIERS if (REPO / "tests" / t).is_dir()])
def test_the_tier_collects(tier: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           f"tests/{tier}"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"tests/{tier} does not collect:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " collected" in done.stdout, done.stdout[-2000:]
