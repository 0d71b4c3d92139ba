"""SwarmJobs in one namespace, as the end-to-end tests drive and read them (the `jobs` fixture, conftest.py)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.e2e.helpers import job_cluster_spec
from tests.integration.helpers import GROUP, PLURAL, VERSION, SwarmJobs

SUCCEEDS = ("python -c \"import ray; ray.init(); f = ray.remote(lambda x: x + 1); "
            "print('the answer is', ray.get(f.remote(41)))\"")
FAILS = "python -c \"print('about to fail'); import sys; sys.exit('boom: the entrypoint failed on purpose')\""
SLEEPS = "python -c \"import time; print('sleeping', flush=True); time.sleep(600)\""


class Jobs(SwarmJobs):
    """The module's SwarmJobs, each with a cluster of its own on the session's process nodes unless put on one."""

    def __init__(self, custom: Any, core: Any, namespace: str, pool: str) -> None:
        super().__init__(custom, namespace)
        self.core, self.pool = core, pool

    def create(self, name: str, entrypoint: str = SUCCEEDS, **spec: Any) -> dict[str, Any]:
        spec.setdefault("clusterSpec", job_cluster_spec(self.pool))
        return super().create(name, entrypoint, **spec)

    def create_on(self, cluster: str, name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
        """A job on an existing SwarmCluster (clusterSelector)."""
        return super().create(name, entrypoint, clusterSelector={"name": cluster}, **spec)

    def cluster(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def deployment(self, name: str, want: str) -> Any:
        """A waiter for a deployment status that reports where the job is while it waits."""
        def check() -> Any:
            st = self.status(name)
            return st if st.get("jobDeploymentStatus") == want else False
        return check

    def events(self, name: str) -> list[tuple[str, str]]:
        return [(e.reason, e.message) for e in self.core.list_namespaced_event(self.ns).items
                if e.involved_object.name == name and e.involved_object.kind == "SwarmJob"]
