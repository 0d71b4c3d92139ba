"""The kind tier: every Ray pod is a container under a real kubelet (`make test-kind`).

One kind cluster serves the whole session, made by localcluster.kind_tier (hack/kind/cluster.yaml: a control plane,
a CPU worker and a GPU worker with fake ``nvidia.com/gpu``, flannel between them; the operator from the Helm chart,
serving every namespace; the upgrade test's image built and loaded behind the set-up). Its node, Ray and Redis images
come from `python -m localcluster kind-images`, which `make test-kind` runs first (minutes when cold, so not under a
test's timeout). The cluster is deleted at the end (SWARM_KIND_KEEP=1 keeps it, and a later run with it set reuses
it; SWARM_KIND_CLUSTER names it), and the Docker engine stopped if this session started it. Each module works in
namespaces of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from localcluster.kind_tier import KindTier, kind_tier, missing_prerequisite
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


@pytest.fixture(scope="session", name="kind_tier")
def kind_tier_fixture() -> Iterator[KindTier]:
    why = missing_prerequisite()
    if why is not None:
        pytest.skip(why)
    with kind_tier(os.environ.get("SWARM_KIND_CLUSTER", "swarm-kind"), upgrade=True,
                   keep=os.environ.get("SWARM_KIND_KEEP") == "1") as tier:
        yield tier


@pytest.fixture(scope="session")
def kubeconfig(kind_tier: KindTier) -> str:
    """The integration tier's fixtures (api_client, core_v1, namespaces, …) talk to the kind cluster."""
    return str(kind_tier.cluster.kubeconfig)
