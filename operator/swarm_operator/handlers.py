"""kopf wiring only: settings, SwarmCluster and SwarmJob watch events → their loops' queues, startup and cleanup.

Only watching handlers (`on.event`) are used: they put no finalizer and no annotation on
anything (the one finalizer a clusterSelector SwarmJob carries is the operator's own, jobs/turn.py), so
deleting a namespace never waits for this operator. They are async so they run on the event loop, next
to the loops' queues. Pods and services are watched by watch.py's reflectors (server-side label
selection, far less CPU per event), started here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

import kopf

from swarm_operator import GROUP, PLURAL, VERSION
from swarm_operator.config import OperatorConfig
from swarm_operator.controller import Controller
from swarm_operator.jobs.controller import JobController
from swarm_operator.kit.blocking import Blocking
from swarm_operator.kit.watch import Reflector
from swarm_operator.kube import NODES, SWARMJOB, KubeClient, budgets_path, collection_path
from swarm_operator.leader import LeaderElector
from swarm_operator.resources import labels

log = logging.getLogger(__name__)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base for change handlers, which this operator does not register.

    kopf builds the diff base on every watch event whatever handlers exist: a deep copy of the whole
    body, then a cleaned copy of that. With only `on.event` handlers nothing reads it, and at 250
    clusters it was the largest single CPU cost (17% of the operator's busy time, py-spy).
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class Runtime:
    """What startup builds and the handlers use; set once per process."""

    config: OperatorConfig = OperatorConfig()
    kube: KubeClient | None = None  # logged in by __main__ before kopf starts
    kopf_logins = 0
    controller: Controller | None = None
    jobs: JobController | None = None
    elector: LeaderElector | None = None
    reflectors: ClassVar[list[Reflector]] = []  # the pod and service watches (kit/watch.py), not kopf's
    blocking: Blocking | None = None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    cfg = Runtime.config
    # Our own prefix for anything kopf might store, so it never collides with other kopf operators.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # A watch that goes silent (lost connection, stuck proxy) is re-established within minutes, never frozen.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 15
    settings.watching.reconnect_backoff = 1.0
    # Every API call fails fast enough that one slow request cannot stall the event loop's queue.
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 15
    # Events are posted by the controller with reasons; kopf's per-log-line events would flood the API.
    settings.posting.enabled = False
    # Watch events for one object are handled in order; batching coalesces bursts of pod updates.
    settings.batching.batch_window = 0.1
    settings.batching.worker_limit = 1000
    # One bounded pool for every blocking call (kit/blocking.py); kopf's own (the login handler) goes there too.
    Runtime.blocking = blocking = Blocking(cfg.api_threads)
    asyncio.get_running_loop().set_default_executor(blocking.executor)
    kube = Runtime.kube
    assert kube is not None, "__main__ logs in before kopf starts"
    controller = Controller(kube, cfg, blocking)
    pods_listed_at = await blocking(controller.seed)
    Runtime.controller = controller
    controller.start()
    # SwarmJobs on the same kit: one blocking pool, one leader (controller.active), SwarmCluster's cache, one Jobs
    # API client (its connection pools).
    Runtime.jobs = JobController(kube, cfg, blocking, controller.active, controller.cache.objects,
                                 controller.ray_jobs)
    Runtime.jobs.start()
    loop = asyncio.get_running_loop()
    for ns, version in pods_listed_at.items():
        # Pods from where the seed's list left off; services and budgets list once themselves (a few per cluster).
        Runtime.reflectors += [
            Reflector(kube, collection_path("pods", ns), labels.CLUSTER, controller.on_pod, loop, version),
            Reflector(kube, collection_path("services", ns), labels.CLUSTER, controller.on_service, loop),
            Reflector(kube, budgets_path(ns), labels.CLUSTER, controller.on_budget, loop)]
    # Nodes, cluster-scoped: whether a pod's node was deleted or stays NotReady (a disruption, not a failure).
    Runtime.reflectors.append(Reflector(kube, NODES, "", controller.on_node, loop))
    for reflector in Runtime.reflectors:
        reflector.start()
    if cfg.leader_elect:
        Runtime.elector = LeaderElector(kube, blocking, cfg.lease_namespace, cfg.lease_name, controller.active)
        Runtime.elector.start()
    else:
        controller.active.set()
    log.info("swarm-operator started: namespaces=%s, leader election=%s",
             ",".join(cfg.namespaces) or "all", cfg.leader_elect)


@kopf.on.login()
def credentials(**_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use kube.py's credentials: the current ones at start; later kopf asks only
    when its credentials were refused or expired, so those are renewed."""
    assert Runtime.kube is not None, "__main__ logs in before kopf starts"
    Runtime.kopf_logins += 1
    login = Runtime.kube.credentials
    return login.current() if Runtime.kopf_logins == 1 else login.renew()


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    for reflector in Runtime.reflectors:
        reflector.stop()
    if Runtime.elector is not None:
        await Runtime.elector.stop()
    if Runtime.jobs is not None:
        await Runtime.jobs.stop()
    if Runtime.controller is not None:
        await Runtime.controller.stop()
    if Runtime.blocking is not None:
        Runtime.blocking.shutdown()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def swarmcluster_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    if Runtime.controller is not None:
        Runtime.controller.on_cluster(type, dict(body))
    if Runtime.jobs is not None:
        Runtime.jobs.on_cluster(body)


@kopf.on.event(GROUP, VERSION, SWARMJOB.plural)
async def swarmjob_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    if Runtime.jobs is not None:
        Runtime.jobs.on_job(type, dict(body))
