"""Pinned versions of everything localcluster builds; the cache is keyed by them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

KUBERNETES = "v1.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v4.3.1"
# Optional (built on demand only, for bench/scale.py's comparison; never by a plain `build`).
# v1.6.2: the newest ray-operator release the Go module proxy serves here (v1.7.0's zip is
# refused, later 1.6.x are absent).
KUBERAY = "v1.6.2"
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
# Optional (built on demand only, by the tiers that queue SwarmJobs; never by a plain `build`): Kueue's
# controller manager and its CRDs, from the module's own go.mod and go.sum (no replaces).
KUEUE = "v0.17.0"
KUEUE_MODULE = "sigs.k8s.io/kueue"
# The image path (python -m localcluster image / kind): the local stand-in for python:3.11-slim is
# cached under this revision of its recipe (localcluster/image.py), as are the kind node image and its base
# (localcluster/kind.py, hack/kind/): bump it when either recipe changes.
LOCAL_BASE_IMAGE = "r1"
# kind (python -m localcluster kind-e2e): its CLI, and the node image's pieces that are not the control plane's.
KIND = "v0.33.0"
COREDNS = "v1.14.2"  # what kubeadm of KUBERNETES deploys
CRICTL = "v1.36.0"
CONTAINERD = "v2.3.4"  # kind's base image's
# The kind cluster's CNI (kindnetd's module is not served by the Go module proxy; flannel is).
FLANNEL = "v0.28.10"
# The Ray image of the kind tier (hack/ray-image/Dockerfile): Ray as the operator's own dependency pins it.
RAY = "2.60.0"


def cache_root() -> Path:
    """Where built binaries live; override with SWARM_CACHE_DIR."""
    env = os.environ.get("SWARM_CACHE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "swarm-operator"


def k8s_bin() -> Path:
    return cache_root() / "k8s" / KUBERNETES / "bin"


def etcd_bin() -> Path:
    return cache_root() / "etcd" / ETCD / "bin"


def kwok_bin() -> Path:
    return cache_root() / "kwok" / KWOK / "bin"


def helm_bin() -> Path:
    return cache_root() / "helm" / HELM / "bin"


def kuberay_dir() -> Path:
    return cache_root() / "kuberay" / KUBERAY


def kuberay_bin() -> Path:
    return kuberay_dir() / "bin"


def kuberay_crds() -> Path:
    """The module's CRDs (config/crd/bases), copied next to the binary when it is built."""
    return kuberay_dir() / "crds"


def kueue_dir() -> Path:
    return cache_root() / "kueue" / KUEUE


def kueue_bin() -> Path:
    return kueue_dir() / "bin"


def kueue_crds() -> Path:
    """The module's CRDs (config/components/crd/bases), copied next to the binary when it is built."""
    return kueue_dir() / "crds"


def kueue_webhooks() -> Path:
    """The module's webhook configurations (config/components/webhook/manifests.yaml), copied with the CRDs."""
    return kueue_dir() / "webhooks.yaml"


def tool_path(name: str) -> Path:
    """Path of one built tool by its binary name."""
    where = {
        "kube-apiserver": k8s_bin(),
        "kube-controller-manager": k8s_bin(),
        "kube-scheduler": k8s_bin(),
        "kubectl": k8s_bin(),
        "etcd": etcd_bin(),
        "kwok": kwok_bin(),
        "kwokctl": kwok_bin(),
        "helm": helm_bin(),
        "kuberay-operator": kuberay_bin(),
        "kueue": kueue_bin(),
    }
    return where[name] / name


def helm_binary() -> str | None:
    """The helm built here, else $HELM or one on PATH; None when there is none."""
    built = tool_path("helm")
    if built.is_file():
        return str(built)
    return os.environ.get("HELM") or shutil.which("helm")


def path_dirs() -> list[str]:
    """Directories to put on PATH so kwokctl and tests find kubectl, helm, etc."""
    return [str(d) for d in (k8s_bin(), etcd_bin(), kwok_bin(), helm_bin())]
