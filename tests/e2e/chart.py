"""The operator installed from the Helm chart onto a process node: its pod runs `swarm-operator run`
from the local environment and talks to the API server with its ServiceAccount (in-cluster config).

Used by tests/e2e/test_operator_in_cluster.py, and by the whole tier with
``SWARM_TEST_OPERATOR=in-cluster`` (tests/e2e/conftest.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from localcluster.cluster import LocalCluster
from localcluster.nodeagent import pod_usage, read_logs
from localcluster.versions import helm_binary
from tests.integration.helpers import REPO, wait_for

CHART = REPO / "helm" / "swarm-operator"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")  # inside the pod's mount namespace


@dataclass
class ChartOperator:
    """One Helm release of the chart, namespaced (it serves ``watch``), its pod on ``node``."""

    kubeconfig: str
    namespace: str
    watch: list[str]
    node: str
    release: str = field(default_factory=lambda: f"so-{uuid.uuid4().hex[:6]}")
    installed_in: float = 0.0  # seconds from `helm install` to the pod Ready

    @property
    def fullname(self) -> str:
        return f"{self.release}-swarm-operator"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def values(self) -> dict[str, Any]:
        return {
            "watchNamespaces": self.watch,
            # Onto this node only (a process node: the pod really runs), past its taint.
            "nodeSelector": {"kubernetes.io/hostname": self.node},
            "tolerations": [{"key": "swarm.io/process-node", "operator": "Exists", "effect": "NoSchedule"}],
            "operator": {"logLevel": "DEBUG"},
            "terminationGracePeriodSeconds": 10,
        }

    def helm(self, *args: str, values: dict[str, Any] | None = None, timeout: float = 120) -> str:
        binary = helm_binary()
        assert binary is not None, "helm is not built: run `python -m localcluster build`"
        extra = ["--values", "-"] if values is not None else []
        res = subprocess.run([binary, "--kubeconfig", self.kubeconfig, *args, *extra],
                             input=json.dumps(values or {}), capture_output=True, text=True, timeout=timeout,
                             check=False)
        assert res.returncode == 0, f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def install(self, core: Any, timeout: float = 120) -> Any:
        """``helm install`` (the CRD is the test's: --skip-crds); returns the pod once it is Ready."""
        start = time.monotonic()
        self.helm("install", self.release, str(CHART), "--namespace", self.namespace, "--skip-crds",
                  values=self.values())
        pod = wait_for(f"the operator pod of {self.release} Ready", lambda: self.ready_pod(core), timeout=timeout)
        self.installed_in = time.monotonic() - start
        return pod

    def pods(self, core: Any) -> list[Any]:
        selector = f"app.kubernetes.io/instance={self.release}"
        return list(core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def ready_pod(self, core: Any) -> Any:
        for pod in self.pods(core):
            if pod.metadata.deletion_timestamp is None and any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                return pod
        return None

    def pod_name(self, core: Any) -> str:
        pods = [p for p in self.pods(core) if p.metadata.deletion_timestamp is None]
        assert len(pods) == 1, f"want one operator pod, have {[p.metadata.name for p in pods]}"
        return str(pods[0].metadata.name)

    def logs(self, core: Any) -> str:
        return read_logs(self.pod_name(core), self.namespace)

    def main_pid(self, pod_name: str) -> int:
        """The container's main process (`swarm-operator run`), among the pod's processes."""
        usage = next((u for u in pod_usage() if (u.namespace, u.name) == (self.namespace, pod_name)), None)
        assert usage is not None, f"operator pod {pod_name} runs no processes on this host"
        for pid in sorted(usage.pids):
            # The entry point is a Python script: its interpreter first, then the script.
            if any(Path(a).name == "swarm-operator" for a in cmdline(pid)[:2]):
                return pid
        raise AssertionError(f"no swarm-operator among {[cmdline(p) for p in usage.pids]}")

    def uninstall(self, core: Any, timeout: float = 60) -> None:
        self.helm("uninstall", self.release, "--namespace", self.namespace, "--wait", timeout=timeout + 30)
        wait_for(f"the operator pods of {self.release} gone", lambda: not self.pods(core), timeout=timeout)


def is_local_cluster(kubeconfig: str) -> bool:
    """The cluster is this machine's local one (``python -m localcluster test`` names it through
    SWARM_TEST_KUBECONFIG too), not one whose operator was installed by someone else (kind-e2e.sh)."""
    return Path(kubeconfig).resolve() == LocalCluster.from_env().kubeconfig.resolve()


def cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def service_account_files(pid: int) -> dict[str, str]:
    """What the process sees at /var/run/secrets/kubernetes.io/serviceaccount (its own mount namespace)."""
    # Through /proc/PID/root an absolute symlink (/var/run → /run) would lead back to the host's tree.
    base = Path(f"/proc/{pid}/root") / SERVICE_ACCOUNT_DIR.resolve().relative_to("/")
    return {name: (base / name).read_text() for name in ("token", "ca.crt", "namespace") if (base / name).exists()}


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def gone(core: Any, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        return bool(exc.status == 404)
    return False
