"""The pod addresses of one node: its pod CIDR's hosts, handed out round-robin."""

from __future__ import annotations

import ipaddress
import threading

from localcluster.nodeagent.agentlog import AgentError


class AddressPool:
    def __init__(self, cidr: ipaddress.IPv4Network) -> None:
        self.cidr = cidr
        self._hosts = list(cidr.hosts())
        self._lock = threading.Lock()  # pod workers allocate and release from their own threads
        self._used: set[ipaddress.IPv4Address] = set()
        self._next = 0

    def allocate(self) -> ipaddress.IPv4Address:
        """The next free address of the range, round-robin: a freed address is reused last, so a
        stale peer (a Ray node that still remembers a dead pod) is unlikely to reach a new pod."""
        with self._lock:
            for i in range(len(self._hosts)):
                candidate = self._hosts[(self._next + i) % len(self._hosts)]
                if candidate not in self._used:
                    self._used.add(candidate)
                    self._next = (self._next + i + 1) % len(self._hosts)
                    return candidate
        raise AgentError(f"no free address left in {self.cidr}")

    def release(self, address: ipaddress.IPv4Address) -> None:
        with self._lock:
            self._used.discard(address)
