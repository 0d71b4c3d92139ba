"""The one module that calls the Kubernetes API (over kube_http.py's requests and watches).

A small synchronous REST client on urllib3 rather than the `kubernetes` package's generated
API classes: bodies travel as plain dicts (raw JSON), and the package's thousands of model
classes would cost ~31 MiB of resident memory for nothing. Credentials come from
`login.Login` (the `kubernetes` package's own config loaders), shared with kopf's watches,
so both always use one identity.

A well-behaved client: it names itself (User-Agent, as kopf's watches do), its writes carry a fieldManager,
429 and 5xx answers are retried with bounded exponential backoff honouring Retry-After (kube_http.py),
and Events are aggregated (events.py) rather than posted anew each time. Our custom resources are named by
`Resource`, so one client serves every kind the operator serves.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from swarm_operator import GROUP, KIND, PLURAL, VERSION
from swarm_operator.events import EventAggregator, EventKey, Posted
from swarm_operator.kube_http import ApiError, Credentials, HttpClient
from swarm_operator.metrics import API_REQUESTS
from swarm_operator.times import micro_time

log = logging.getLogger(__name__)

PODS = "/api/v1/namespaces/{ns}/pods"
SERVICES = "/api/v1/namespaces/{ns}/services"
NODES = "/api/v1/nodes"
BUDGETS = "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
EVENTS = "/api/v1/namespaces/{ns}/events"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
MERGE_PATCH = "application/merge-patch+json"

@dataclass(frozen=True)
class Resource:
    """A custom resource kind the operator serves: where the API keeps it, and what its objects are called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True  # False: a cluster-scoped kind (a Kueue ResourceFlavor), whatever namespace is given

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def collection(self, namespace: str | None) -> str:
        """Its API path in one namespace, or in all of them (None)."""
        root = f"/apis/{self.group}/{self.version}"
        if namespace is None or not self.namespaced:
            return f"{root}/{self.plural}"
        return f"{root}/namespaces/{namespace}/{self.plural}"

    def item(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{quote(name)}"


SWARMCLUSTER = Resource(GROUP, VERSION, PLURAL, KIND)
SWARMJOB = Resource(GROUP, VERSION, "swarmjobs", "SwarmJob")


@dataclass(frozen=True)
class ObjectRef:
    """One object of a served resource, as Events name it (involvedObject)."""

    resource: Resource
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def collection_path(kind: str, namespace: str | None, api: str = "/api/v1") -> str:
    """The API path of a collection (core by default: pods, services) in one namespace, or in all of them (None)."""
    return f"{api}/{kind}" if namespace is None else f"{api}/namespaces/{namespace}/{kind}"


def budgets_path(namespace: str | None) -> str:
    """PodDisruptionBudgets in one namespace, or in all of them (None)."""
    return collection_path("poddisruptionbudgets", namespace, "/apis/policy/v1")


class Kube(Protocol):
    """What the controller and the autoscaler ask of the Kubernetes API. KubeClient is the real one;
    the unit tests' fake satisfies it too (mypy checks both), so tests exercise the same contract.

    Creates answer the stored object, or None when the name is taken (409); deletes answer the object
    being deleted, or None when it is already gone (404); patch_status answers False on 404; lists
    answer their resourceVersion too. Other failures raise ApiError."""

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]: ...

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def list_services(self, namespace: str | None, selector: str) -> list[dict[str, Any]]: ...

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def patch_service(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def delete_service(self, namespace: str, name: str) -> None: ...

    def list_budgets(self, namespace: str | None, selector: str) -> list[dict[str, Any]]: ...

    def create_budget(self, namespace: str, budget: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def delete_budget(self, namespace: str, name: str) -> None: ...

    def list_resource(self, resource: Resource, namespace: str | None) -> tuple[list[dict[str, Any]], str]: ...

    def list_nodes(self) -> tuple[list[dict[str, Any]], str]: ...

    def get_resource(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_status(self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any]) -> bool: ...

    def patch_status_at(self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any],
                        resource_version: str) -> bool: ...

    def set_finalizers(self, resource: Resource, namespace: str, name: str, finalizers: list[str],
                       resource_version: str) -> dict[str, Any] | None: ...

    def create_resource(self, resource: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def delete_resource(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_resource(self, resource: Resource, namespace: str, name: str,
                       patch: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any] | None: ...

    def post_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None: ...


class KubeClient(HttpClient):
    def __init__(self, credentials: Credentials, pool_size: int = 32,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(credentials, pool_size, sleep)
        self.clock = clock
        self.events = EventAggregator()
        self.host = socket.gethostname()

    def whoami(self) -> str | None:
        """The user the API server sees (SelfSubjectReview); None where that API is not served."""
        try:
            review = self.request("POST", SELF_SUBJECT_REVIEWS,
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        except ApiError as exc:
            if exc.status in (403, 404):
                return None
            raise
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username", ""))

    def _call(self, verb: str, kind: str, method: str, path: str, body: Mapping[str, Any] | None = None, *,
              absent: int, content_type: str = "application/json") -> dict[str, Any] | None:
        """One counted call and its answer; None when the server answers `absent` (404: already gone; 409: the
        name is taken, success for level-based callers). Other failures raise ApiError."""
        API_REQUESTS.labels(verb, kind).inc()
        try:
            return self.request(method, path, body, content_type=content_type)
        except ApiError as exc:
            if exc.status == absent:
                return None
            raise

    # -- pods ---------------------------------------------------------------------------------

    def list_objects(self, path: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The objects at a collection path matching `selector`, and the list's resourceVersion."""
        API_REQUESTS.labels("list", path.rsplit("/", 1)[-1]).inc()
        body = self.request("GET", path, query={"labelSelector": selector})
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Pods matching `selector` (all namespaces when None), and the list's resourceVersion."""
        return self.list_objects(collection_path("pods", namespace), selector)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as stored now; None when there is none."""
        return self._call("get", "pods", "GET", f"{PODS.format(ns=namespace)}/{quote(name)}", absent=404)

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created pod; None when one of that name exists already (409 is success: level-based)."""
        return self._call("create", "pods", "POST", PODS.format(ns=namespace), pod, absent=409)

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as it is being deleted; None when already gone (404 is success)."""
        body = self._call("delete", "pods", "DELETE", f"{PODS.format(ns=namespace)}/{quote(name)}", absent=404)
        return body if body is not None and body.get("kind") == "Pod" else None

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch (a null removes a key); the patched pod, or None when it is gone."""
        return self._call("patch", "pods", "PATCH", f"{PODS.format(ns=namespace)}/{quote(name)}", patch,
                          absent=404, content_type=MERGE_PATCH)

    # -- nodes (cluster-scoped; read only: whether a pod's node is gone or NotReady) -------------

    def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        """Every Node, and the list's resourceVersion."""
        return self.list_objects(NODES, "")

    # -- services -----------------------------------------------------------------------------

    def list_services(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        return self.list_objects(collection_path("services", namespace), selector)[0]

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created service; None when one of that name exists already."""
        return self._call("create", "services", "POST", SERVICES.format(ns=namespace), service, absent=409)

    def patch_service(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch a service in place (its clusterIP stays); the patched service, or None when it is gone."""
        return self._call("patch", "services", "PATCH", f"{SERVICES.format(ns=namespace)}/{quote(name)}", patch,
                          absent=404, content_type=MERGE_PATCH)

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete a service; one already gone is success."""
        self._call("delete", "services", "DELETE", f"{SERVICES.format(ns=namespace)}/{quote(name)}", absent=404)

    # -- pod disruption budgets (the head's) -------------------------------------------------------

    def list_budgets(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        return self.list_objects(budgets_path(namespace), selector)[0]

    def create_budget(self, namespace: str, budget: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created PodDisruptionBudget; None when one of that name exists already."""
        return self._call("create", "poddisruptionbudgets", "POST", BUDGETS.format(ns=namespace), budget, absent=409)

    def delete_budget(self, namespace: str, name: str) -> None:
        """Delete a PodDisruptionBudget; one already gone is success."""
        self._call("delete", "poddisruptionbudgets", "DELETE", f"{BUDGETS.format(ns=namespace)}/{quote(name)}",
                   absent=404)

    # -- our custom resources (SwarmClusters, and any kind served on the same kit) ----------------

    def list_resource(self, resource: Resource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """The resource's objects (all namespaces when None), and the list's resourceVersion."""
        API_REQUESTS.labels("list", resource.plural).inc()
        body = self.request("GET", resource.collection(namespace))
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    def get_resource(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored now; None when it is gone."""
        return self._call("get", resource.plural, "GET", resource.item(namespace, name), absent=404)

    def patch_status(self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the status subresource (lists are sent whole, so they replace what is stored);
        False when the object is gone."""
        return self._call("patch", f"{resource.plural}/status", "PATCH", f"{resource.item(namespace, name)}/status",
                          {"status": dict(status)}, absent=404, content_type=MERGE_PATCH) is not None

    def patch_status_at(self, resource: Resource, namespace: str, name: str, status: Mapping[str, Any],
                        resource_version: str) -> bool:
        """Merge-patch the status of an object another controller writes too (a Kueue Workload), only if it is still
        at `resource_version`: its lists are sent whole, so a conflict (ApiError 409) is what keeps the other
        writer's conditions from being lost. False when the object is gone."""
        return self._call("patch", f"{resource.plural}/status", "PATCH", f"{resource.item(namespace, name)}/status",
                          {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}, absent=404,
                          content_type=MERGE_PATCH) is not None

    def set_finalizers(self, resource: Resource, namespace: str, name: str, finalizers: list[str],
                       resource_version: str) -> dict[str, Any] | None:
        """Replace the object's finalizer list, only if it is still at `resource_version` (so another
        writer's finalizer is never lost: a conflict raises ApiError 409). The stored object, or None when gone."""
        return self._call("patch", resource.plural, "PATCH", resource.item(namespace, name),
                          {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
                          absent=404, content_type=MERGE_PATCH)

    def create_resource(self, resource: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created object; None when one of that name exists already (409)."""
        return self._call("create", resource.plural, "POST", resource.collection(namespace), body, absent=409)

    def delete_resource(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as it is being deleted (its children go through the garbage collector); None when gone."""
        return self._call("delete", resource.plural, "DELETE", resource.item(namespace, name), absent=404)

    def patch_resource(self, resource: Resource, namespace: str, name: str,
                       patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of the object; the patched object, or None when it is gone."""
        return self._call("patch", resource.plural, "PATCH", resource.item(namespace, name), patch, absent=404,
                          content_type=MERGE_PATCH)

    # -- secrets and jobs (the Ray token; the Redis key cleanup) ------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("get", "secrets", "GET", f"{SECRETS.format(ns=namespace)}/{quote(name)}", absent=404)

    def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._call("create", "secrets", "POST", SECRETS.format(ns=namespace), secret, absent=409)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("get", "jobs", "GET", f"{JOBS.format(ns=namespace)}/{quote(name)}", absent=404)

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._call("create", "jobs", "POST", JOBS.format(ns=namespace), job, absent=409)

    # -- leases (leader election) --------------------------------------------------------------

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("get", "leases", "GET", f"{LEASES.format(ns=namespace)}/{quote(name)}", absent=404)

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> bool:
        """True when created; False when someone else created it first."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
        return self._call("create", "leases", "POST", LEASES.format(ns=namespace), body, absent=409) is not None

    def replace_lease(self, namespace: str, name: str, current: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
        """Optimistic update on the lease's resourceVersion; False when another replica won the race."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace,
                             "resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": dict(spec)}
        return self._call("update", "leases", "PUT", f"{LEASES.format(ns=namespace)}/{quote(name)}", body,
                          absent=409) is not None

    # -- events -------------------------------------------------------------------------------

    def post_event(self, ref: ObjectRef, event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event on the object, counted into an earlier one as client-go's correlator
        would (events.py); failures to post are logged, never raised."""
        namespace, name = ref.namespace, ref.name
        key = EventKey(namespace, name, ref.uid, event_type, reason)
        now = self.clock()
        stamp = micro_time(now)
        decision = self.events.decide(key, message[:1024], now)
        try:
            if decision.update_of is not None:
                API_REQUESTS.labels("patch", "events").inc()
                try:
                    self.request("PATCH", f"{EVENTS.format(ns=namespace)}/{quote(decision.update_of)}",
                                 {"count": decision.count, "lastTimestamp": stamp, "message": decision.message},
                                 content_type=MERGE_PATCH)
                    self.events.remember(key, decision.slot, Posted(decision.update_of, decision.count, now))
                    return
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    self.events.forget(key, decision.slot)  # expired by the API server's event TTL
            API_REQUESTS.labels("create", "events").inc()
            created = self.request("POST", EVENTS.format(ns=namespace), {
                "metadata": {"generateName": f"{name}.", "namespace": namespace},
                "involvedObject": {"apiVersion": ref.resource.api_version, "kind": ref.resource.kind, "name": name,
                                   "namespace": namespace, "uid": ref.uid},
                "type": event_type,
                "reason": reason,
                "message": decision.message,
                "source": {"component": "swarm-operator", "host": self.host},
                "reportingComponent": "swarm.io/operator",
                "reportingInstance": self.host,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            })
            self.events.remember(key, decision.slot, Posted(created["metadata"]["name"], 1, now))
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, exc.reason)
