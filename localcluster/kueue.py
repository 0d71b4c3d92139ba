"""Kueue's controller manager against the local cluster, for the tiers that queue SwarmJobs.

Optional: the binary, its CRDs and webhook configurations come from ``python -m localcluster build kueue``
(``build.ensure_kueue()``), never from the default build.

Kueue runs as a process outside the cluster, and its webhooks are served to the API server the way Kueue serves
them in a cluster: its internal certificate management makes a CA and a serving certificate for
``kueue-webhook-service.kueue-system.svc`` (kept in a Secret, which KueueProcess copies into its cert dir as a
pod's Secret volume would be) and injects the CA into the webhook configurations and the CRDs' conversion webhooks
by name. What differs is only where that Service points:
an ExternalName Service whose name is 127.0.0.1, so the API server (which resolves an ExternalName Service to that
name and the webhook's port) calls the process on the loopback, still verifying the certificate against the
Service's DNS name. No pod, no image, no change to the API server's flags.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from localcluster import build, versions
from localcluster.operator_process import OperatorProcess, free_port

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # the rotator derives the webhook configurations' names from it
SECRET = "kueue-webhook-server-cert"
KUEUE_GROUP = "kueue.x-k8s.io"
WEBHOOK_CONFIGURATIONS = {  # as Kueue's cert rotator names them (pkg/util/cert): it injects the CA into these
    "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
    "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration",
}
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")  # kustomize's patches
# Our kinds, by Kueue's "Kind.version.group" (integrations.externalFrameworks): Kueue then treats a Workload owned by
# one as a job's, and brings no controller and no webhook for it (the operator runs the Workload's lifecycle).
EXTERNAL_FRAMEWORKS = ("SwarmJob.v1alpha1.swarm.io", "SwarmCluster.v1alpha1.swarm.io")


def _service_ref(port: int, path: str) -> dict[str, Any]:
    return {"service": {"namespace": NAMESPACE, "name": SERVICE, "port": port, "path": path}}


def webhook_configurations(manifests: str, port: int) -> list[dict[str, Any]]:
    """The module's webhook configurations (config/components/webhook/manifests.yaml), named as Kueue's cert rotator
    expects and pointed at our Service's port. Only the webhooks of Kueue's own kinds: the module's file also holds
    those of every job framework (batch Jobs, pods, Deployments, …) with failurePolicy Fail, which would send every
    pod creation of every other tier through this process; no framework of those is enabled here."""
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc or doc.get("kind") not in WEBHOOK_CONFIGURATIONS:
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            if any(KUEUE_GROUP in (rule.get("apiGroups") or []) for rule in hook.get("rules") or []):
                hook = copy.deepcopy(hook)
                hook["clientConfig"] = _service_ref(port, hook["clientConfig"]["service"]["path"])
                hooks.append(hook)
        out.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                    "metadata": {"name": WEBHOOK_CONFIGURATIONS[doc["kind"]]}, "webhooks": hooks})
    return out


def converted_crd(crd: dict[str, Any], port: int) -> dict[str, Any]:
    """A CRD with Kueue's conversion webhook (v1beta1 ↔ v1beta2) at our Service, as kustomize's patches set it."""
    if crd["spec"]["names"]["plural"] not in CONVERTED_CRDS:
        return crd
    crd = copy.deepcopy(crd)
    crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
        "clientConfig": _service_ref(port, "/convert"), "conversionReviewVersions": ["v1"]}}
    return crd


def manager_config(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2): every port on the loopback (other tiers run beside it),
    no leader election (one process), the metrics server and the visibility API server off (nothing here reads
    them, and the latter would need an APIService), our kinds as external frameworks, and of Kueue's own frameworks
    only its default (batch/job; none of its webhooks is installed, so it queues no batch Job here)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "manageJobsWithoutQueueName": False,
        "featureGates": {"VisibilityOnDemand": False},
        "integrations": {"frameworks": ["batch/job"], "externalFrameworks": list(EXTERNAL_FRAMEWORKS)},
    }


def _kubectl(kubeconfig: str, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
    res = subprocess.run([str(versions.tool_path("kubectl")), f"--kubeconfig={kubeconfig}", *args], input=stdin,
                         capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def _apply(kubeconfig: str, objects: list[dict[str, Any]]) -> None:
    # Server-side: Kueue's CRDs exceed the client-side apply annotation's limit.
    _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "--field-manager=swarm-localcluster",
             "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))


def crd_names() -> list[str]:
    return sorted(f"{yaml.safe_load(f.read_text())['metadata']['name']}" for f in versions.kueue_crds().glob("*.yaml"))


def install(kubeconfig: str, webhook_port: int, timeout: float = 60.0) -> None:
    """Build Kueue if needed; apply its namespace, the Service its webhooks are called through, the Secret its
    certificates are kept in, its CRDs (conversion at that Service) and its webhook configurations; wait until the
    CRDs are Established."""
    build.ensure_kueue()
    crds = [converted_crd(yaml.safe_load(f.read_text()), webhook_port)
            for f in sorted(versions.kueue_crds().glob("*.yaml"))]
    if not crds:
        raise RuntimeError(f"no Kueue CRDs under {versions.kueue_crds()}; rebuild: python -m localcluster build kueue")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
               "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}}
    # Empty, as Kueue's config/components/internalcert ships it: its cert rotator fills it, and fails without it.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}}
    hooks = webhook_configurations(versions.kueue_webhooks().read_text(), webhook_port)
    _apply(kubeconfig, [namespace, service, secret, *crds, *hooks])
    _kubectl(kubeconfig, "wait", "--for=condition=Established", f"--timeout={timeout:.0f}s",
             *(f"crd/{n}" for n in crd_names()), timeout=timeout + 10)


def uninstall(kubeconfig: str, timeout: float = 120.0) -> None:
    """Remove everything install() made (the CRDs take Kueue's objects with them), so the cluster is as before. Kueue
    is stopped by then: the finalizers it keeps on its objects (workloads, queues, flavors in use) are removed here,
    or their deletion, and the CRDs' and the test namespaces' with it, would wait forever."""
    hooks = [f"{kind.lower()}/{name}" for kind, name in WEBHOOK_CONFIGURATIONS.items()]
    _kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", *hooks)
    served = {line.rsplit("/", 1)[-1] for line in _kubectl(kubeconfig, "get", "crd", "-o", "name").split()}
    for crd in sorted(served & set(crd_names())):
        listed = json.loads(_kubectl(kubeconfig, "get", crd, "--all-namespaces", "-o", "json"))
        for obj in listed.get("items") or []:
            meta = obj["metadata"]
            if meta.get("finalizers"):
                where = ["-n", meta["namespace"]] if meta.get("namespace") else []
                _kubectl(kubeconfig, "patch", crd, meta["name"], *where, "--type=merge",
                         "-p", '{"metadata":{"finalizers":null}}')
    _kubectl(kubeconfig, "delete", "--ignore-not-found", f"--timeout={timeout:.0f}s",
             *(f"crd/{n}" for n in crd_names()), f"namespace/{NAMESPACE}", timeout=timeout + 10)


class KueueProcess(OperatorProcess):
    """Kueue's controller manager as a subprocess, configured by manager_config(); ready once its /readyz answers
    (its certificates made and injected, its webhook server up). Stopped by its PID."""

    def __init__(self, kubeconfig: str, log_path: Path, webhook_port: int):
        super().__init__(kubeconfig, [], log_path)
        self.binary = build.ensure_kueue()
        self.config_path = log_path.with_name("kueue-config.yaml")
        self.cert_dir = log_path.with_name("kueue-certs")
        self.cert_dir.mkdir(exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(manager_config(webhook_port, self.health_port, self.cert_dir)))

    def while_starting(self) -> None:
        """Write the certificate Secret's keys into the cert dir, as the kubelet's Secret volume does for Kueue's pod:
        its cert rotator fills the Secret and then waits until the files there match it before it is ready (its
        first writes may conflict and repeat, so they are copied again whenever they differ)."""
        secret = json.loads(_kubectl(self.kubeconfig, "get", "secret", "-n", NAMESPACE, SECRET, "-o", "json"))
        for key, value in (secret.get("data") or {}).items():
            path = self.cert_dir / key
            data = base64.b64decode(value)
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)

    def command(self) -> list[str]:
        return [str(self.binary), f"--config={self.config_path}", f"--kubeconfig={self.kubeconfig}",
                "--zap-log-level=2"]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False


def wait_webhooks_served(kubeconfig: str, timeout: float = 60.0) -> None:
    """Until the API server reaches Kueue's webhooks (a dry-run ResourceFlavor passes its mutating webhook): the CA's
    injection and the API server's view of it lag the process's readiness by a moment."""
    flavor = {"apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "probe"}}
    deadline = time.monotonic() + timeout
    while True:
        try:
            _kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(flavor))
            return
        except RuntimeError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kueue's webhooks not served after {timeout:.0f}s: {exc}") from None
            time.sleep(0.5)


@contextlib.contextmanager
def running(kubeconfig: str, log_dir: Path) -> Iterator[KueueProcess]:
    """Kueue installed, running and serving its webhooks for the block; then stopped by its PID and uninstalled
    (the tiers' fixtures and `python -m localcluster kueue`)."""
    port = free_port()
    install(kubeconfig, port)
    proc = KueueProcess(kubeconfig, log_dir / "kueue.log", port)
    try:
        proc.start(wait=120)
        wait_webhooks_served(kubeconfig)
        yield proc
    finally:
        proc.stop()
        uninstall(kubeconfig)
