"""What a pod worker needs of the node it runs on.

`PodWorker` (pods.py) is given its node agent as this Protocol rather than as `NodeAgent`, so pods.py
does not import agent.py, which imports pods.py to start workers.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from localcluster.nodeagent import apiproxy, dns


class PodHost(Protocol):
    node: str
    host_ip: str
    image_bin: str  # stands in for every container image's bin/
    allocatable: dict[str, str]
    shutdown_grace: float
    relay: apiproxy.ApiRelay

    def allocate_ip(self) -> ipaddress.IPv4Address: ...

    def release_ip(self, address: ipaddress.IPv4Address) -> None: ...

    def dns_records(self) -> list[dns.Record]: ...

    def lookup(self, namespace: str, kind: str, name: str) -> dict[str, str] | None: ...

    def request_token(self, namespace: str, service_account: str, pod: str, pod_uid: str, audience: str | None,
                      seconds: int) -> tuple[str, float, float]: ...

    def event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None: ...

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool: ...

    def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...

    def forget(self, uid: str) -> None: ...
