"""SwarmJobs in one namespace, as the end-to-end tests drive and read them (the `jobs` fixture, conftest.py)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.e2e.helpers import job_cluster_spec
from tests.integration.helpers import GROUP, JOB_PLURAL, PLURAL, VERSION

SUCCEEDS = ("python -c \"import ray; ray.init(); f = ray.remote(lambda x: x + 1); "
            "print('the answer is', ray.get(f.remote(41)))\"")
FAILS = "python -c \"print('about to fail'); import sys; sys.exit('boom: the entrypoint failed on purpose')\""
SLEEPS = "python -c \"import time; print('sleeping', flush=True); time.sleep(600)\""


class Jobs:
    def __init__(self, custom: Any, core: Any, namespace: str, pool: str) -> None:
        self.custom, self.core, self.ns, self.pool = custom, core, namespace, pool

    def create(self, name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmJob", "metadata": {"name": name},
                "spec": {"entrypoint": entrypoint, "clusterSpec": job_cluster_spec(self.pool), **spec}}
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, body))

    def create_on(self, cluster: str, name: str, entrypoint: str, **spec: Any) -> dict[str, Any]:
        """A job on an existing SwarmCluster (clusterSelector)."""
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SwarmJob", "metadata": {"name": name},
                "spec": {"entrypoint": entrypoint, "clusterSelector": {"name": cluster}, **spec}}
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, body))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, JOB_PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

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
