"""What a fresh control plane answers before it is of use: /readyz, and leaders for its controllers."""

from __future__ import annotations

import time
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.errors import ClusterError


def readyz(api: client.ApiClient, timeout: float = 5.0) -> bool:
    """GET /readyz with the client's credentials; True when the API server says ok."""
    method, url, headers, body, post = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
    resp = api.call_api(method, url, headers, body, post, _request_timeout=timeout)
    data = cast(bytes, resp.read())  # type: ignore[no-untyped-call]
    return resp.status == 200 and data.decode().strip() == "ok"


def wait_leaders(api: client.ApiClient, deadline: float) -> None:
    """Wait until the controller manager and the scheduler of a new cluster hold their leader leases.

    Serving is not enough: until they lead, nothing garbage-collects or schedules, and
    a test started right after ``up`` would see a cluster that ignores it.
    """
    coordination: Any = client.CoordinationV1Api(api)
    for name in ("kube-controller-manager", "kube-scheduler"):
        while True:
            try:
                if coordination.read_namespaced_lease(name, "kube-system").spec.holder_identity:
                    break
            except ApiException as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} did not take its leader lease in time; see {name}.log")
            time.sleep(0.25)
