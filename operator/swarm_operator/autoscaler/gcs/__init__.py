"""The one place that talks to Ray: read clusters' resource state from their GCS, and drain nodes.

Per cluster, a :class:`RayStateClient` (``client``) reads what Ray's own v2 autoscaler reads —
``AutoscalerStateService.GetClusterResourceState`` — over one of two transports (``wire``), and
``parse`` turns the protobuf reply into a :class:`~swarm_operator.autoscaler.snapshot.ClusterSnapshot`
with demand aggregated as shape × count. :class:`RayStatePool` (``pool``) reads many clusters
concurrently so that one slow or dead cluster never delays the others. Importing this package imports
ray (~40 MiB): only processes that autoscale pay for it.
"""

from swarm_operator.autoscaler.gcs.client import RayStateClient, new_client
from swarm_operator.autoscaler.gcs.parse import OPERATOR_RAY_VERSION, snapshot_from_state
from swarm_operator.autoscaler.gcs.pool import ClusterClient, RayStatePool, ReadResult
from swarm_operator.autoscaler.gcs.wire import (
    DrainReason,
    DrainResult,
    GcsAuthError,
    GcsUnavailable,
    RayStateError,
    Transport,
)

__all__ = [
    "OPERATOR_RAY_VERSION",
    "ClusterClient",
    "DrainReason",
    "DrainResult",
    "GcsAuthError",
    "GcsUnavailable",
    "RayStateClient",
    "RayStateError",
    "RayStatePool",
    "ReadResult",
    "Transport",
    "new_client",
    "snapshot_from_state",
]
