"""watch.Reflector and kube.watch against the real API server: the server selects by label, events
arrive in order, and a watch the server ends is resumed from the last resourceVersion without a gap."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from swarm_operator.kit import watch
from swarm_operator.kube import KubeClient, collection_path
from swarm_operator.login import Login, LoginSource
from tests.integration.helpers import pod

pytestmark = pytest.mark.integration


def test_reflector_sees_our_pods_only_and_resumes_across_server_ended_watches(
        kubeconfig: str, namespace: str, api_client: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "WATCH_SECONDS", 2)  # the server ends each watch after 2 s: several resumes
    core = client.CoreV1Api(api_client)
    kube = KubeClient(Login(LoginSource(kubeconfig, None)))
    seen: list[tuple[str | None, str]] = []
    lock = threading.Lock()
    loop = asyncio.new_event_loop()

    def deliver(event_type: str | None, obj: Any) -> None:
        with lock:
            seen.append((event_type, obj["metadata"]["name"]))

    def body(name: str, ours: bool) -> dict[str, Any]:
        b = pod(name)
        b["metadata"]["labels"] = {"swarm.io/cluster": "w"} if ours else {"app": "other"}
        return b

    core.create_namespaced_pod(namespace, body("before", True))
    r = watch.Reflector(kube, collection_path("pods", namespace), "swarm.io/cluster", deliver, loop)
    r.start()

    def pump_until(event: tuple[str | None, str]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.1))
            with lock:
                if event in seen:
                    return

    try:
        pump_until((None, "before"))  # listed: what is created from now on comes by the watch
        core.create_namespaced_pod(namespace, body("not-ours", False))
        for i in range(3):
            core.create_namespaced_pod(namespace, body(f"p{i}", True))
            time.sleep(2.5)  # across a server-ended watch
        core.delete_namespaced_pod("p0", namespace, grace_period_seconds=0)
        pump_until(("DELETED", "p0"))
    finally:
        r.stop()
        loop.close()
    names = {n for _, n in seen}
    assert "not-ours" not in names, "the API server selects by label"
    assert (None, "before") in seen, "listed first"
    assert [n for t, n in seen if t == "ADDED"] == ["p0", "p1", "p2"], seen
    assert ("DELETED", "p0") in seen
    watches = REGISTRY.get_sample_value("swarm_api_requests_total", {"verb": "watch", "resource": "pods"})
    assert watches is not None and watches >= 3, f"each server-ended watch is resumed ({watches} watches)"
