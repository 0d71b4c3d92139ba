"""The one module that calls the Kubernetes API.

Bodies travel as plain dicts (raw JSON, `_preload_content=False`): the client's model
deserialisation costs more CPU than the request itself at thousands of pods.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from swarm_operator import GROUP, KIND, PLURAL, VERSION
from swarm_operator.metrics import API_REQUESTS

log = logging.getLogger(__name__)


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.client = api_client
        # Typed as Any: bodies are plain dicts here, not the client's generated models.
        self.core: Any = kubernetes.client.CoreV1Api(api_client)
        self.custom: Any = kubernetes.client.CustomObjectsApi(api_client)
        self.coordination: Any = kubernetes.client.CoordinationV1Api(api_client)
        self.host = socket.gethostname()

    @classmethod
    def connect(cls, pool_size: int = 32) -> Kube:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        config = kubernetes.client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=config)
        else:
            kubernetes.config.load_kube_config(client_configuration=config)
        config.connection_pool_maxsize = pool_size
        return cls(kubernetes.client.ApiClient(config))

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(response.data)
        return data

    # -- pods ---------------------------------------------------------------------------------

    def list_pods(self, namespace: str | None, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Pods matching `selector` (all namespaces when None), and the list's resourceVersion."""
        API_REQUESTS.labels("list", "pods").inc()
        if namespace is None:
            resp = self.core.list_pod_for_all_namespaces(label_selector=selector, _preload_content=False)
        else:
            resp = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        body = self._json(resp)
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", ""))

    def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created pod; None when one of that name exists already (409 is success: level-based)."""
        API_REQUESTS.labels("create", "pods").inc()
        try:
            return self._json(self.core.create_namespaced_pod(namespace, pod, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as it is being deleted; None when already gone (404 is success)."""
        API_REQUESTS.labels("delete", "pods").inc()
        try:
            resp = self.core.delete_namespaced_pod(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body = self._json(resp)
        return body if body.get("kind") == "Pod" else None

    def annotate_pod(self, namespace: str, name: str, annotations: Mapping[str, str]) -> dict[str, Any] | None:
        """Merge annotations into a pod; the patched pod, or None when it is gone."""
        API_REQUESTS.labels("patch", "pods").inc()
        try:
            resp = self.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": dict(annotations)}},
                                                  _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._json(resp)

    # -- services -----------------------------------------------------------------------------

    def list_services(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        API_REQUESTS.labels("list", "services").inc()
        if namespace is None:
            resp = self.core.list_service_for_all_namespaces(label_selector=selector, _preload_content=False)
        else:
            resp = self.core.list_namespaced_service(namespace, label_selector=selector, _preload_content=False)
        return list(self._json(resp).get("items") or [])

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> None:
        API_REQUESTS.labels("create", "services").inc()
        try:
            self.core.create_namespaced_service(namespace, service, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise

    # -- swarmclusters ------------------------------------------------------------------------

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the status subresource; lists are sent whole, so they replace what is stored."""
        API_REQUESTS.labels("patch", "swarmclusters/status").inc()
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report on
                raise

    # -- leases (leader election) --------------------------------------------------------------

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        API_REQUESTS.labels("get", "leases").inc()
        try:
            return self._json(self.coordination.read_namespaced_lease(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> bool:
        """True when created; False when someone else created it first."""
        API_REQUESTS.labels("create", "leases").inc()
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}
        try:
            self.coordination.create_namespaced_lease(namespace, body, _preload_content=False)
            return True
        except ApiException as exc:
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
            self.coordination.replace_namespaced_lease(name, namespace, body, _preload_content=False)
            return True
        except ApiException as exc:
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
            self.core.create_namespaced_event(namespace, body, _preload_content=False)
        except ApiException as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, exc.reason)
