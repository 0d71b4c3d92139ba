"""A token-auth cluster's Ray token, from its Secret (made by the operator when the spec names none)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from swarm_operator.cluster_effects import ClusterEffects
from swarm_operator.reasons import EventReason
from swarm_operator.reconcile.observe import owned_by
from swarm_operator.resources.token import build_token_secret, token_of
from swarm_operator.spec.types import ClusterSpec

log = logging.getLogger(__name__)
TOKEN_RETRY_SECONDS = 5.0  # the Ray token's Secret is missing or not this cluster's


@dataclass
class TokenMemory:
    """The token as last read, by (Secret, key, cluster uid); read again after a failed read of Ray's state
    (the Secret may have been rotated). Never logged."""

    read: tuple[tuple[str, str, str], str] | None = None
    warned: str | None = None  # the problem last reported with a Warning


async def ray_token(fx: ClusterEffects, cluster: ClusterSpec, memory: TokenMemory) -> str | None:
    """The cluster's Ray token; None (with a Warning Event, once per problem) while there is no usable one."""
    auth = cluster.auth
    assert auth is not None
    which = (auth.secret_name, auth.secret_key, cluster.uid)
    if memory.read is not None and memory.read[0] == which:
        return memory.read[1]
    ns = cluster.namespace
    secret = await fx.call(fx.kube.get_secret, ns, auth.secret_name)
    if secret is None and auth.operator_made:
        made = build_token_secret(cluster, secrets.token_hex(32))  # 256 bits, as `ray` makes its own
        secret = await fx.call(fx.kube.create_secret, ns, made)
        if secret is not None:
            await fx.event(EventReason.CREATED, f"created Secret {auth.secret_name} holding the cluster's Ray token")
        else:  # 409: made meanwhile (by an earlier turn whose answer was lost, or by someone else)
            secret = await fx.call(fx.kube.get_secret, ns, auth.secret_name)
    token = None
    if secret is None:
        problem = f"Secret {auth.secret_name} not found; pods wait for it"
    elif auth.operator_made and not owned_by(secret, cluster.uid):
        problem = (f"Secret {auth.secret_name} exists but is not this cluster's (an earlier cluster's still "
                   "being deleted?); the operator uses only a token Secret it made for this cluster")
    else:
        token = token_of(secret, auth.secret_key)
        problem = "" if token else f"Secret {auth.secret_name} has no key {auth.secret_key}"
    if token is None:
        if memory.warned != problem:
            memory.warned = problem
            log.warning("SwarmCluster %s/%s: no Ray token: %s", ns, cluster.name, problem)
            await fx.event(EventReason.RAY_TOKEN_MISSING, problem)
        return None
    memory.warned = None
    memory.read = (which, token)
    return token
