"""The operator on a user's kind of kubeconfig, against a real API server: an exec credential
plugin (what EKS, GKE, AKS and OIDC setups write) with a ServiceAccount token, a chosen
context, a user that cannot log in; the cluster domain in the join address; Events
counted through a replacement storm."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.chaos import fail_pod
from localcluster.operator_process import OperatorProcess
from tests.integration.helpers import REPO, Cluster, Kubectl, manifest, ready_status, wait_for

pytestmark = pytest.mark.integration

SERVICE_ACCOUNT = "swarm-operator-exec"


def operator_rules() -> list[dict[str, Any]]:
    """The rules of the ClusterRole the plain-manifest install grants the operator, plus what the chart grants
    an operator that serves named namespaces (watchNamespaces), as this one does: kopf lists and watches
    namespaces then, and without that it retries the refused list for ~55 s before it serves anything."""
    docs = yaml.safe_load_all((REPO / "manifests" / "install.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "swarm-operator")
    return [*role["rules"], {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]


@pytest.fixture
def operator_token(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A ServiceAccount with the operator's own permissions, and a token for it (`kubectl create token`)."""
    name = f"{SERVICE_ACCOUNT}-{namespace}"
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": operator_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]},
    ]
    applied = kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    assert applied.returncode == 0, applied.stderr
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=1h")
    assert token.returncode == 0, token.stderr
    yield token.stdout.strip()
    kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found")


def cluster_entry(kubeconfig: str) -> dict[str, Any]:
    """The test cluster's server and CA, as the admin kubeconfig gives them."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    entry = dict(config["clusters"][0]["cluster"])
    ca = entry.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        entry["certificate-authority"] = str(Path(kubeconfig).parent / ca)
    return entry


def exec_plugin(tmp_path: Path, token: str, log: Path) -> dict[str, Any]:
    """An exec credential plugin printing an ExecCredential with `token`, 15 minutes valid; it
    appends a line to `log` each time it runs, so the test can see it was used."""
    script = tmp_path / "credential-plugin.py"
    expires = (datetime.now(UTC) + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token, "expirationTimestamp": expires}}
    script.write_text(f"import json, sys\nopen({str(log)!r}, 'a').write('ran\\n')\n"
                      f"json.dump({credential!r}, sys.stdout)\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}


def write_kubeconfig(path: Path, cluster: dict[str, Any], users: dict[str, dict[str, Any]]) -> Path:
    """One context per user (named after it), the first one current."""
    config = {"apiVersion": "v1", "kind": "Config", "current-context": next(iter(users)),
              "clusters": [{"name": "test", "cluster": cluster}],
              "contexts": [{"name": u, "context": {"cluster": "test", "user": u}} for u in users],
              "users": [{"name": u, "user": entry} for u, entry in users.items()]}
    path.write_text(yaml.safe_dump(config))
    return path


def start(kubeconfig: Path, namespace: str, tmp_path: Path, *extra: str) -> OperatorProcess:
    proc = OperatorProcess(str(kubeconfig), [namespace], tmp_path / "operator.log",
                           ["--kubeconfig", str(kubeconfig), *extra])
    proc.start()
    return proc


def test_an_exec_plugin_user_in_the_second_context_runs_a_cluster(
        kubeconfig: str, namespace: str, tmp_path: Path, operator_token: str, swc: Cluster) -> None:
    ran = tmp_path / "plugin-runs"
    path = write_kubeconfig(tmp_path / "cloud.kubeconfig", cluster_entry(kubeconfig), {
        "stale": {"token": "not-a-valid-token"},  # the current context: the operator must not use it
        "cloud": exec_plugin(tmp_path, operator_token, ran),
    })
    proc = start(path, namespace, tmp_path, "--context", "cloud")
    try:
        swc.create(manifest("exa", replicas=2))
        wait_for("cluster Running 2/2", ready_status(swc, "exa", 2))
        assert ran.read_text().count("ran") >= 1
        log = proc.log_path.read_text()
        assert f"logged in as system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}" in log, proc.log_tail()
        assert "context 'cloud', user 'cloud'" in log
        # Every write of ours names its manager: the pods' managed fields say who made them.
        managers = {m.manager for p in swc.pods("exa") for m in p.metadata.managed_fields or []}
        assert "swarm-operator" in managers, managers
    finally:
        proc.stop()


def failed_start(kubeconfig: Path, namespace: str, tmp_path: Path, *extra: str) -> tuple[float, str]:
    """Run the operator expecting it to give up; (seconds it took, its output)."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "swarm_operator", "run", "--namespace", namespace,
                           "--kubeconfig", str(kubeconfig), "--metrics-port", "0", "--health-port", "0", *extra],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    return time.monotonic() - began, done.stdout + done.stderr


def test_a_user_that_cannot_log_in_fails_at_once_naming_it(kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    broken_plugin = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/nonexistent/aws",
                              "args": ["eks", "get-token"], "interactiveMode": "Never"}}
    path = write_kubeconfig(tmp_path / "broken.kubeconfig", cluster_entry(kubeconfig), {"eks-admin": broken_plugin})
    took, output = failed_start(path, namespace, tmp_path)
    assert took < 20, took
    for part in ("user 'eks-admin' yields no credentials", "exec '/nonexistent/aws'", "system:anonymous"):
        assert part in output, output


def test_credentials_the_server_refuses_fail_at_once(kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "stale.kubeconfig", cluster_entry(kubeconfig),
                            {"stale": {"token": "not-a-valid-token"}})
    took, output = failed_start(path, namespace, tmp_path)
    assert took < 20, took
    assert "refused our credentials (401" in output, output


def test_the_join_address_follows_the_cluster_domain(kubeconfig: str, namespace: str, tmp_path: Path,
                                                     swc: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTER_DOMAIN", "k8s.corp.example")
    proc = start(Path(kubeconfig), namespace, tmp_path)
    try:
        swc.create(manifest("dom", replicas=1))
        worker = wait_for("a worker", lambda: swc.workers("dom"))[0]
        args = worker.spec.containers[0].args or worker.spec.containers[0].command
        assert f"--address=dom-head-svc.{namespace}.svc.k8s.corp.example:6379" in " ".join(args), args
    finally:
        proc.stop()


def test_a_replacement_storm_ends_in_one_event_with_a_count(kubeconfig: str, namespace: str, tmp_path: Path,
                                                             swc: Cluster) -> None:
    """Events are counted as client-go counts them: ten distinct "Replacing" Events, then one combined
    Event whose count grows, however long the storm lasts."""
    proc = start(Path(kubeconfig), namespace, tmp_path)
    try:
        swc.create(manifest("storm", replicas=2, faultTolerance={"workerBackoffInitialSeconds": 1,
                                                                 "workerBackoffMaxSeconds": 1}))
        wait_for("Running", ready_status(swc, "storm", 2))
        failures = 14
        for _ in range(failures):
            victim = wait_for("a running worker", lambda: [p for p in swc.workers("storm")
                                                            if p.status.phase == "Running"])[0].metadata.name
            fail_pod(swc.api, swc.ns, victim)
            wait_for("its replacement", lambda v=victim: v not in {p.metadata.name for p in swc.workers("storm")})

        def replacing() -> list[Any]:
            return [e for e in swc.events("storm") if e.reason == "Replacing"]

        wait_for("every replacement counted", lambda: sum(e.count for e in replacing()) == failures)
        combined = [e for e in replacing() if e.message.startswith("(combined from similar events): ")]
        assert len(replacing()) == 11, [(e.count, e.message) for e in replacing()]
        assert len(combined) == 1 and combined[0].count == failures - 10, combined
        # The last failure's turn posts its Event mid-turn and writes the count to status at its end.
        wait_for("status counting every failure",
                 lambda: swc.status("storm")["workerGroups"][0]["restarts"] == failures, timeout=10)
    finally:
        proc.stop()
