"""swarm-operator: runs Ray clusters on Kubernetes from SwarmCluster resources."""

__version__ = "0.1.0"

GROUP = "swarm.io"
VERSION = "v1alpha1"
PLURAL = "swarmclusters"
KIND = "SwarmCluster"
