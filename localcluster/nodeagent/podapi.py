"""What the agent asks of the API server for its pods, as a kubelet does: their status, their deletion,
Secrets and ConfigMaps, service-account tokens, and Events."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from localcluster.nodeagent.agentlog import log
from localcluster.nodeagent.podspec import decode_secret
from swarm_operator.times import parse_time, timestamp


class PodApi:
    def __init__(self, core: Any, node: str) -> None:
        self.core = core  # a CoreV1Api; Any: bodies are plain dicts, not the client's models
        self.node = node

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; True when done (or when the pod is gone anyway).

        A JSON merge patch replaces lists whole, which is what a kubelet's status is: the
        container statuses and conditions it sends are the complete truth.
        """
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status},
                                                  _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return True
            log(f"status of {namespace}/{name}: {exc.status} {exc.reason}: {exc.body}")
            return False
        except (HTTPError, OSError) as exc:
            log(f"status of {namespace}/{name}: {exc}")
            return False
        return True

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, body={"gracePeriodSeconds": 0,
                                                                   "preconditions": {"uid": uid}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                log(f"delete {namespace}/{name}: {exc.status} {exc.reason}")

    def lookup(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data as text; None when it does not exist."""
        try:
            if kind == "Secret":
                secret = self.core.read_namespaced_secret(name, namespace)
                return decode_secret(secret.data, secret.string_data)
            cm = self.core.read_namespaced_config_map(name, namespace)
            return dict(cm.data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def request_token(self, namespace: str, service_account: str, pod: str, pod_uid: str, audience: str | None,
                      seconds: int) -> tuple[str, float, float]:
        """A service-account token bound to the pod (TokenRequest, as a kubelet asks for one):
        (token, issued, expires) with times in seconds since the epoch."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            # No audience: the API server's own (what in-cluster clients present the token to).
            "audiences": [audience] if audience else [],
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid},
        }}
        issued = time.time()
        resp = self.core.create_namespaced_service_account_token(service_account, namespace, body,
                                                                 _preload_content=False)
        status = json.loads(resp.data)["status"]
        expires = parse_time(status["expirationTimestamp"])
        return str(status["token"]), issued, expires

    def event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on the pod, as a kubelet does (best effort)."""
        meta = pod["metadata"]
        now = timestamp(time.time())
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "nodeagent", "host": self.node},
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except (ApiException, HTTPError, OSError) as exc:
            log(f"event {reason} on {meta['namespace']}/{meta['name']}: {exc}")
