"""localcluster/kueue.py's pure parts: which of the module's webhooks are installed, and how they are reached."""

from __future__ import annotations

from typing import Any

from localcluster.kueue import NAMESPACE, SERVICE, converted_crd, manager_config, webhook_configurations

MANIFESTS = """
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-kueue-x-k8s-io-v1beta2-resourceflavor}
  name: mresourceflavor.kb.io
  rules:
  - apiGroups: [kueue.x-k8s.io]
    apiVersions: [v1beta2]
    operations: [CREATE]
    resources: [resourceflavors]
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
  failurePolicy: Fail
  name: mpod.kb.io
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /validate-kueue-x-k8s-io-v1beta2-workload}
  name: vworkload.kb.io
  rules:
  - apiGroups: [kueue.x-k8s.io]
    apiVersions: [v1beta2]
    operations: [CREATE, UPDATE]
    resources: [workloads, workloads/status]
"""


def test_only_kueues_own_webhooks_named_for_its_cert_rotator_at_our_service() -> None:
    mutating, validating = webhook_configurations(MANIFESTS, 19443)
    assert mutating["metadata"]["name"] == "kueue-mutating-webhook-configuration"
    assert validating["metadata"]["name"] == "kueue-validating-webhook-configuration"
    assert [h["name"] for h in mutating["webhooks"]] == ["mresourceflavor.kb.io"]  # no pod webhook
    assert [h["name"] for h in validating["webhooks"]] == ["vworkload.kb.io"]
    assert mutating["webhooks"][0]["clientConfig"] == {"service": {
        "namespace": NAMESPACE, "name": SERVICE, "port": 19443,
        "path": "/mutate-kueue-x-k8s-io-v1beta2-resourceflavor"}}


def crd(plural: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{plural}.kueue.x-k8s.io"}, "spec": {"names": {"plural": plural}}}


def test_conversion_webhook_only_on_the_crds_kueue_converts() -> None:
    workloads = converted_crd(crd("workloads"), 19443)
    assert workloads["spec"]["conversion"]["strategy"] == "Webhook"
    assert workloads["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["port"] == 19443
    assert "conversion" not in converted_crd(crd("resourceflavors"), 19443)["spec"]


def test_manager_config_keeps_every_port_on_the_loopback_and_registers_our_kinds(tmp_path: Any) -> None:
    config = manager_config(19443, 18081, tmp_path)
    assert config["webhook"] == {"port": 19443, "host": "127.0.0.1", "certDir": str(tmp_path)}
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:18081"
    assert config["metrics"]["bindAddress"] == "0"
    assert config["internalCertManagement"]["webhookServiceName"] == SERVICE
    assert config["integrations"] == {"frameworks": ["batch/job"], "externalFrameworks": ["SwarmJob.v1alpha1.swarm.io",
                                                                        "SwarmCluster.v1alpha1.swarm.io"]}
