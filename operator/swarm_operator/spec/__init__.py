"""SwarmCluster spec: `parse.parse_cluster` turns the object from the API into the frozen values of `types`.

``rules`` holds the patterns, bounds and defaults the CRD states too; ``reader`` collects field errors;
``node`` (resources, probes, ray start flags), ``template`` (pod overlays, service annotations) and
``fault_tolerance`` read their parts of the manifest. No I/O.
"""

from swarm_operator.spec.parse import parse_cluster
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.types import ClusterSpec

__all__ = ["ClusterSpec", "SpecError", "parse_cluster"]
