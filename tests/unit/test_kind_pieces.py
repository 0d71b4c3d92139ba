"""The kind tier's pieces that can be checked without Docker: flanneld's main package and the manifests that
name images built here."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from localcluster import image, kind, versions

FLANNEL_MAIN = '''import (
\t"github.com/flannel-io/flannel/pkg/backend"
\t_ "github.com/flannel-io/flannel/pkg/backend/alloc"
\t_ "github.com/flannel-io/flannel/pkg/backend/hostgw"
\t_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"
\t_ "github.com/flannel-io/flannel/pkg/backend/vxlan"
)
'''


def test_flannel_main_keeps_only_the_chosen_backends() -> None:
    kept = kind.flannel_main(FLANNEL_MAIN, ("hostgw", "vxlan"))
    assert "backend/hostgw" in kept and "backend/vxlan" in kept
    assert "tencentvpc" not in kept and "backend/alloc" not in kept
    assert '"github.com/flannel-io/flannel/pkg/backend"' in kept, "the backend package itself stays"


def test_flannel_manifest_runs_the_image_the_node_image_preloads() -> None:
    docs = list(yaml.safe_load_all(kind.FLANNEL_MANIFEST.read_text()))
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert {c["image"] for c in containers} == {kind.flannel_image_tag()}
    assert all(c["imagePullPolicy"] == "Never" for c in containers), "no registry to pull from"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["net-conf.json"]
    assert '"Type": "host-gw"' in config and '"10.244.0.0/16"' in config


def test_cluster_config_has_a_cpu_and_a_gpu_worker_and_no_default_cni() -> None:
    config = yaml.safe_load(kind.CLUSTER_CONFIG.read_text())
    assert config["networking"]["disableDefaultCNI"] is True
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    assert [w["labels"][kind.POOL_LABEL] for w in workers] == ["cpu", "gpu"]
    assert "nvidia.com/gpu" in workers[1]["kubeadmConfigPatches"][0]


def test_node_image_tag_changes_with_its_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = kind.node_image_tag()
    assert before.startswith(f"swarm-local/kind-node:{versions.KUBERNETES}-{versions.KIND}-")
    script = tmp_path / "node-image.sh"
    script.write_text(kind.NODE_SCRIPT.read_text() + "\n# changed\n")
    monkeypatch.setattr(kind, "NODE_SCRIPT", script)
    assert kind.node_image_tag() != before


def test_the_ray_image_has_the_operators_own_ray() -> None:
    pinned = tomllib.loads((image.REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray[default]=={versions.RAY}" in pinned
    assert image.ray_image_tag() == f"swarm-local/ray:{versions.RAY}-{versions.LOCAL_BASE_IMAGE}"
