"""The policy and the snapshot types load without ray or grpc (~40 MiB): only the GCS client needs them, and
only a process that autoscales imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = "import importlib, sys; importlib.import_module(sys.argv[1]); print(sorted({'ray', 'grpc'} & set(sys.modules)))"


@pytest.mark.parametrize("module", [
    "swarm_operator.autoscaler.snapshot",
    "swarm_operator.autoscaler.policy",
    "swarm_operator.autoscaler.inputs",
    "swarm_operator.autoscaler.runner",
])
def test_module_does_not_import_ray(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert out.strip() == "[]", f"{module} pulled in {out.strip()}"


def test_the_gcs_client_does_import_ray() -> None:
    """The probe itself works: the one module meant to load ray does."""
    out = subprocess.run([sys.executable, "-c", PROBE, "swarm_operator.autoscaler.gcs"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == "['grpc', 'ray']"
