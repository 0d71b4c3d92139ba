"""kind on this machine, with no registry: its CLI, node image and images all built here.

Run as ``python -m localcluster kind-node-image`` (the node image, cached by version) or
``python -m localcluster kind-e2e`` (that, then hack/kind-e2e.sh against it). Pieces:

- the kind CLI from the Go module proxy;
- kubelet, kubeadm and kube-proxy from the same Kubernetes module as the control plane (build.py);
- CoreDNS and crictl from their Go modules, pause from Kubernetes' pause.c (a static C program);
- containerd (and ctr, its runc shim) from its Go module: kind drives it with ctr 2.x's commands;
- a kind base image: debootstrap of Debian with systemd, runc and the CNI plugins (Debian's), plus kind's
  own files from its module; hack/kind/node-image.sh assembles the rest.

Each piece is cached by version under ``<cache>/kind``; the node image is a tag of the private engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localcluster import build, versions
from localcluster.docker_engine import DockerEngine, EngineError, apt_install, running
from localcluster.image import SUITE, BaseImage, debian_mirror, run_logged

REPO = Path(__file__).resolve().parents[1]
NODE_SCRIPT = REPO / "hack" / "kind" / "node-image.sh"
RUNC_WRAPPER = REPO / "hack" / "kind" / "runc-wrapper.sh"
# kind's base image (images/base/Dockerfile) installs these from Debian; runc and the CNI plugins are
# kind's own builds there, Debian's here.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "conntrack", "iptables", "nftables", "iproute2", "ethtool",
                 "util-linux", "mount", "kmod", "libseccomp2", "pigz", "bash", "ca-certificates", "curl", "jq",
                 "procps", "runc", "containernetworking-plugins")
CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
NODE_BINARIES = ("kubelet", "kubeadm", "kube-proxy")
# Capability names by number (linux/capability.h), to name those this machine's bounding set lacks.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)


def kind_dir() -> Path:
    return versions.cache_root() / "kind" / versions.KIND


def kind_bin() -> Path:
    return kind_dir() / "bin"


def images_bin() -> Path:
    """Every binary the node image is made of, by name (what node-image.sh's BIN_DIR expects)."""
    return kind_dir() / "node-bin" / versions.KUBERNETES


def node_image_tag() -> str:
    return f"swarm-local/kind-node:{versions.KUBERNETES}-{versions.KIND}-{versions.LOCAL_BASE_IMAGE}"


def unheld_capabilities(status: str | None = None) -> list[str]:
    """CAP_ names the kernel knows but this process's bounding set lacks (a sandbox may withhold some)."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    bounding = next(int(line.split()[1], 16) for line in text.splitlines() if line.startswith("CapBnd:"))
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text()) if status is None else len(CAPABILITIES) - 1
    return [f"CAP_{CAPABILITIES[bit]}" for bit in range(min(last + 1, len(CAPABILITIES)))
            if not bounding & (1 << bit)]


def runc_wrapper(dest: Path) -> Path | None:
    """hack/kind/runc-wrapper.sh with this machine's unheld capabilities filled in; None when none are."""
    unheld = unheld_capabilities()
    if not unheld:
        return None
    text = RUNC_WRAPPER.read_text().replace('UNHELD_CAPS=""', f'UNHELD_CAPS="{" ".join(unheld)}"', 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    dest.chmod(0o755)
    return dest


def _go_install(pkgs: list[str], out: Path, log: Path, tags: str = "") -> None:
    env = {**build._go_env(), "GOBIN": str(out), "GOFLAGS": "-buildvcs=false"}
    work = kind_dir() / "work"
    work.mkdir(parents=True, exist_ok=True)
    build._run(["nice", "-n", "10", "go", "install", "-p", "2", *(["-tags", tags] if tags else []), "-ldflags",
                "-s -w", *pkgs], work, log, env)


def _build_kubernetes_commands(work: Path, log: Path, out: Path) -> None:
    """NODE_BINARIES from the Kubernetes module, as build.build_kubernetes builds the control plane's."""
    ver = versions.KUBERNETES
    staging = "v0." + ver.split(".", 1)[1]
    work.parent.mkdir(parents=True, exist_ok=True)
    info = json.loads(build._run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{ver}"], work.parent, log))
    replaces = build.staging_replaces(Path(info["GoMod"]).read_text(), staging)
    build._throwaway_module(work, "kubernetes", f"require k8s.io/kubernetes {ver}\n\nreplace (\n"
                            + "\n".join(replaces) + "\n)\n")
    build._run(["go", "get", f"k8s.io/kubernetes@{ver}"], work, log)
    out.mkdir(parents=True, exist_ok=True)
    build._run(["go", "build", "-p", "2", "-ldflags", f"-s -w -X k8s.io/component-base/version.gitVersion={ver}"
                f" -X k8s.io/client-go/pkg/version.gitVersion={ver}", "-o", str(out) + "/",
                *(f"k8s.io/kubernetes/cmd/{c}" for c in NODE_BINARIES)], work, log)


def _build_go_pieces(log: Path) -> None:
    out = images_bin()
    kind_cli = kind_bin() / "kind"
    if not kind_cli.is_file():
        _go_install([f"sigs.k8s.io/kind@{versions.KIND}"], kind_bin(), log)
    if not all((out / name).is_file() for name in NODE_BINARIES):
        with tempfile.TemporaryDirectory(prefix="swarm-build-kind-node-") as tmp:
            _build_kubernetes_commands(Path(tmp) / "mod", log, out)
    if not (out / "coredns").is_file():
        _go_install([f"github.com/coredns/coredns@{versions.COREDNS}"], out, log)
    if not all((out / name).is_file() for name in CONTAINERD_COMMANDS):
        module = "github.com/containerd/containerd/v2/cmd"
        _go_install([f"{module}/{name}@{versions.CONTAINERD}" for name in CONTAINERD_COMMANDS], out, log,
                    tags="no_btrfs no_devmapper no_zfs")
    if not (out / "crictl").is_file():
        _go_install([f"sigs.k8s.io/cri-tools/cmd/crictl@{versions.CRICTL}"], out, log)
    if not (out / "pause").is_file():
        info = build._run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES}"],
                          versions.cache_root(), log)
        source = Path(json.loads(info)["Dir"]) / "build" / "pause" / "linux" / "pause.c"
        run_logged(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={versions.KUBERNETES}-swarm",
                    "-o", str(out / "pause"), str(source)], log)
    # The control plane's binaries, from build.py's cache (built first if missing).
    build.build_all()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd"):
        link = out / name
        if not link.exists():
            link.symlink_to(versions.tool_path(name))


def _base_rootfs(log: Path) -> Path:
    tar = kind_dir() / f"base-rootfs-{SUITE}-{versions.LOCAL_BASE_IMAGE}.tar"
    if tar.is_file():
        return tar
    if shutil.which("debootstrap") is None:
        apt_install(("debootstrap",), log)
    with tempfile.TemporaryDirectory(prefix="swarm-kind-base-", dir=kind_dir()) as tmp:
        root = Path(tmp) / "rootfs"
        run_logged(["nice", "-n", "10", "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                    SUITE, str(root), debian_mirror()], log)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / leftover, ignore_errors=True)
            (root / leftover).mkdir(parents=True)
        partial = tar.with_suffix(".partial")
        run_logged(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], log)
        partial.rename(tar)
    return tar


def kind_env(engine: DockerEngine) -> dict[str, str]:
    """The engine's environment with kind, kubectl and helm first on PATH."""
    env = engine.env()
    env["PATH"] = os.pathsep.join([str(kind_bin()), *versions.path_dirs(), env["PATH"]])
    return env


def ensure_node_image(engine: DockerEngine) -> tuple[str, float]:
    """The node image in ``engine``, made if missing; returns its tag and the seconds it took."""
    tag = node_image_tag()
    if engine.docker("image", "inspect", tag, check=False).returncode == 0:
        return tag, 0.0
    start = time.monotonic()
    kind_dir().mkdir(parents=True, exist_ok=True)
    log = versions.cache_root() / "logs" / f"kind-node-{versions.KUBERNETES}-{versions.KIND}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[kind] building the node image {tag} (log: {log})", flush=True)
    _build_go_pieces(log)
    rootfs = _base_rootfs(log)
    wrapper = runc_wrapper(images_bin() / "runc-wrapper")
    env = {**kind_env(engine), "RUNC_WRAPPER": str(wrapper or "")}
    with log.open("a") as out:
        rc = subprocess.run(["nice", "-n", "10", str(NODE_SCRIPT), str(images_bin()), str(rootfs), tag], env=env,
                            stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise EngineError(f"{NODE_SCRIPT.name} exited {rc}; see {log}:\n{log.read_text()[-3000:]}")
    return tag, time.monotonic() - start


def engine_for_kind() -> DockerEngine:
    """The private engine, with runc wrapped when this machine withholds capabilities from 'privileged'."""
    engine = DockerEngine.default()
    wrapper = runc_wrapper(engine.root / "bin" / "runc-wrapper")
    return DockerEngine(engine.root, default_runtime=wrapper)


def kind_e2e(pytest_args: list[str]) -> int:
    with running(engine_for_kind()) as engine:
        tag, seconds = ensure_node_image(engine)
        print(f"[kind] node image {tag}: {'cached' if not seconds else f'made in {seconds:.0f}s'}", flush=True)
        base = BaseImage.default()  # the operator image's base, for hack/kind-e2e.sh's docker build
        base.ensure(engine)
        env = {**kind_env(engine), "KIND_NODE_IMAGE": tag, "KIND_CONFIG": str(REPO / "hack" / "kind" / "cluster.yaml"),
               "DOCKER_BUILD_EXTRA_ARGS": f"--network host --build-arg PYTHON_IMAGE={base.tag}",
               "CLUSTER_NAME": os.environ.get("CLUSTER_NAME", "swarm-e2e"),
               "PYTHON": sys.executable}  # the environment this runs in has the tier's dependencies
        start = time.monotonic()
        rc = subprocess.call([str(REPO / "hack" / "kind-e2e.sh"), *pytest_args], env=env)
        print(f"[kind] hack/kind-e2e.sh exited {rc} after {time.monotonic() - start:.0f}s", flush=True)
        return rc
