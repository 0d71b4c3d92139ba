"""What a pod worker needs of the node it runs on.

`PodWorker` (pods.py) is given its node agent as this Protocol rather than as `NodeAgent`, so pods.py
does not import agent.py, which imports pods.py to start workers.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from localcluster.nodeagent import apiproxy, dns
from localcluster.nodeagent.podapi import PodApi


class PodHost(Protocol):
    node: str
    host_ip: str
    image_bin: str  # stands in for every container image's bin/
    allocatable: dict[str, str]
    shutdown_grace: float
    relay: apiproxy.ApiRelay
    pod_api: PodApi  # its pods' calls to the API server

    def allocate_ip(self) -> ipaddress.IPv4Address: ...

    def release_ip(self, address: ipaddress.IPv4Address) -> None: ...

    def dns_records(self) -> list[dns.Record]: ...

    def forget(self, uid: str) -> None: ...
