"""The autoscaling policy: Ray's demand and the operator's groups in, a target per group and drains out. Pure.

``types`` holds its input and output, ``packing`` the capacity bins it places demand on, ``groups`` each
worker group's counts and budget, ``capacity`` the state of one decision and the opening of new nodes,
``gangs`` the placement of placement groups, ``decide`` the rules (see that module's docstring). Nothing here
imports ray or grpc.
"""

from swarm_operator.autoscaler.policy.decide import decide
from swarm_operator.autoscaler.policy.types import (
    Decision,
    DemandKind,
    Drain,
    Node,
    PolicyInput,
    Settings,
    Unplaced,
    WorkerGroup,
    format_resources,
)

__all__ = [
    "Decision",
    "DemandKind",
    "Drain",
    "Node",
    "PolicyInput",
    "Settings",
    "Unplaced",
    "WorkerGroup",
    "decide",
    "format_resources",
]
