"""The packaging tier: slow tests of what ships (`pytest tests/packaging`).

The run on a local cluster borrows the integration tier's cluster fixtures: the cluster named by
SWARM_TEST_KUBECONFIG, else a local one (skipped when localcluster's binaries are not built).
"""

from tests.integration.conftest import kubeconfig, local_tools_built

__all__ = ["kubeconfig", "local_tools_built"]
