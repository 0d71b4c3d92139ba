"""The image tier: the operator's image built by a private Docker engine and run (`make test-image`).

The run against a local cluster borrows the integration tier's cluster fixtures: the cluster named by
SWARM_TEST_KUBECONFIG, else a local one (skipped when localcluster's binaries are not built).
"""

from tests.integration.conftest import (
                                        api_client,
                                        core_v1,
                                        crd,
                                        custom_objects,
                                        kubeconfig,
                                        kubectl,
                                        local_tools_built,
                                        namespace,
                                        namespaces,
)

__all__ = ["api_client", "core_v1", "crd", "custom_objects", "kubeconfig", "kubectl", "local_tools_built",
           "namespace", "namespaces"]
