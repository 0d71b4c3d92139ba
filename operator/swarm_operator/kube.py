"""The one module that calls the Kubernetes API.

A small synchronous REST client on urllib3 rather than the `kubernetes` package: bodies
travel as plain dicts (raw JSON), and the package's thousands of generated model classes
would cost ~25 MiB of resident memory for nothing. Credentials come from the pod's
service account (in-cluster) or a kubeconfig, through the same `kopf.ConnectionInfo`
kopf itself logs in with, so the watches and our requests always use one identity.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import kopf
import urllib3

from swarm_operator import GROUP, KIND, PLURAL, VERSION
from swarm_operator.metrics import API_REQUESTS

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

PODS = "/api/v1/namespaces/{ns}/pods"
SERVICES = "/api/v1/namespaces/{ns}/services"
EVENTS = "/api/v1/namespaces/{ns}/events"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
MERGE_PATCH = "application/merge-patch+json"
SWARMCLUSTERS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}"


class ApiError(Exception):
    """A response with status ≥ 400; `reason` is the API server's message (it names the field)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def login(service_account_dir: Path = SERVICE_ACCOUNT_DIR, env: Mapping[str, str] = os.environ) -> kopf.ConnectionInfo:
    """In-cluster credentials when running in a pod with a service account, else the kubeconfig.

    In-cluster, the server comes from KUBERNETES_SERVICE_HOST/PORT as client-go does it, so no
    cluster DNS is needed to reach the API server.
    """
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token_path = service_account_dir / "token"
    if host and port and token_path.exists():
        ca_path = service_account_dir / "ca.crt"
        ns_path = service_account_dir / "namespace"
        log.info("API server https://%s:%s, in-cluster: the pod's service account", host, port)
        return kopf.ConnectionInfo(
            server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
            ca_path=str(ca_path) if ca_path.exists() else None,
            token=token_path.read_text().strip() or None,
            default_namespace=ns_path.read_text().strip() if ns_path.exists() else None,
        )
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    if info is None:
        raise kopf.LoginError("no service account (not in a pod) and no kubeconfig: set KUBECONFIG "
                              "or create ~/.kube/config")
    log.info("API server %s, from the kubeconfig", info.server)
    return info


class Kube:
    def __init__(self, info: kopf.ConnectionInfo, pool_size: int = 32,
                 relogin: Callable[[], kopf.ConnectionInfo] | None = None) -> None:
        self.server = info.server.rstrip("/")
        # Projected service-account tokens rotate: on a 401, log in again (re-reading the token) and retry once.
        self.relogin = relogin
        self.headers = self._auth_headers(info)
        self.http = urllib3.PoolManager(
            num_pools=2, maxsize=pool_size, block=False, ssl_context=info.as_ssl_context(), retries=False,
            # Fail fast enough that one slow request cannot stall a cluster's turn for long.
            timeout=urllib3.Timeout(connect=15, read=60))
        self.host = socket.gethostname()

    @classmethod
    def connect(cls, pool_size: int = 32) -> Kube:
        return cls(login(), pool_size, relogin=login)

    @staticmethod
    def _auth_headers(info: kopf.ConnectionInfo) -> dict[str, str]:
        return {"Accept": "application/json", **info.as_http_headers()}

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                query: Mapping[str, str] | None = None, content_type: str = "application/json") -> dict[str, Any]:
        """One API call; the decoded JSON body. Raises ApiError for a status ≥ 400."""
        url = self.server + path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            headers = self.headers if data is None else {**self.headers, "Content-Type": content_type}
            resp = self.http.request(method, url, body=data, headers=headers)
            if resp.status == 401 and attempt == 0 and self.relogin is not None:
                self.headers = self._auth_headers(self.relogin())
                continue
            break
        if resp.status >= 400:
            raise ApiError(resp.status, _message(resp.data))
        parsed: dict[str, Any] = json.loads(resp.data) if resp.data else {}
        return parsed

    # -- pods ---------------------------------------------------------------------------------

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Pods matching `selector` (all namespaces when None), and the list's resourceVersion."""
        API_REQUESTS.labels("list", "pods").inc()
        path = "/api/v1/pods" if namespace is None else PODS.format(ns=namespace)
        body = self.request("GET", path, query={"labelSelector": selector})
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created pod; None when one of that name exists already (409 is success: level-based)."""
        API_REQUESTS.labels("create", "pods").inc()
        try:
            return self.request("POST", PODS.format(ns=namespace), pod)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as it is being deleted; None when already gone (404 is success)."""
        API_REQUESTS.labels("delete", "pods").inc()
        try:
            body = self.request("DELETE", f"{PODS.format(ns=namespace)}/{quote(name)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return body if body.get("kind") == "Pod" else None

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str]) -> dict[str, Any] | None:
        """Merge annotations into a pod; the patched pod, or None when it is gone."""
        API_REQUESTS.labels("patch", "pods").inc()
        try:
            return self.request("PATCH", f"{PODS.format(ns=namespace)}/{quote(name)}",
                                {"metadata": {"annotations": dict(annotations)}}, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # -- services -----------------------------------------------------------------------------

    def list_services(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        API_REQUESTS.labels("list", "services").inc()
        path = "/api/v1/services" if namespace is None else SERVICES.format(ns=namespace)
        return list(self.request("GET", path, query={"labelSelector": selector}).get("items") or [])

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created service; None when one of that name exists already."""
        API_REQUESTS.labels("create", "services").inc()
        try:
            return self.request("POST", SERVICES.format(ns=namespace), service)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    # -- swarmclusters ------------------------------------------------------------------------

    def list_swarmclusters(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """SwarmClusters (all namespaces when None), and the list's resourceVersion."""
        API_REQUESTS.labels("list", "swarmclusters").inc()
        path = f"/apis/{GROUP}/{VERSION}/{PLURAL}" if namespace is None else SWARMCLUSTERS.format(ns=namespace)
        body = self.request("GET", path)
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    def get_swarmcluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The SwarmCluster as stored now; None when it is gone."""
        API_REQUESTS.labels("get", "swarmclusters").inc()
        try:
            return self.request("GET", f"{SWARMCLUSTERS.format(ns=namespace)}/{quote(name)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the status subresource (lists are sent whole, so they replace what is stored);
        False when the SwarmCluster is gone."""
        API_REQUESTS.labels("patch", "swarmclusters/status").inc()
        try:
            self.request("PATCH", f"{SWARMCLUSTERS.format(ns=namespace)}/{quote(name)}/status",
                         {"status": dict(status)}, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- leases (leader election) --------------------------------------------------------------

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        API_REQUESTS.labels("get", "leases").inc()
        try:
            return self.request("GET", f"{LEASES.format(ns=namespace)}/{quote(name)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> bool:
        """True when created; False when someone else created it first."""
        API_REQUESTS.labels("create", "leases").inc()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
        try:
            self.request("POST", LEASES.format(ns=namespace), body)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    def replace_lease(self, namespace: str, name: str, current: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
        """Optimistic update on the lease's resourceVersion; False when another replica won the race."""
        API_REQUESTS.labels("update", "leases").inc()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace,
                             "resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": dict(spec)}
        try:
            self.request("PUT", f"{LEASES.format(ns=namespace)}/{quote(name)}", body)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    # -- events -------------------------------------------------------------------------------

    def post_event(self, namespace: str, name: str, uid: str, event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event on the SwarmCluster; failures to post are logged, never raised."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name,
                               "namespace": namespace, "uid": uid},
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "swarm-operator", "host": self.host},
            "reportingComponent": "swarm.io/operator",
            "reportingInstance": self.host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        API_REQUESTS.labels("create", "events").inc()
        try:
            self.request("POST", EVENTS.format(ns=namespace), body)
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, exc.reason)


def _message(data: bytes) -> str:
    """The API server's Status message (it names the field at fault), else the start of the body."""
    try:
        status = json.loads(data)
    except ValueError:
        return data[:300].decode(errors="replace")
    return str(status.get("message") or status.get("reason") or "") if isinstance(status, dict) else str(status)
