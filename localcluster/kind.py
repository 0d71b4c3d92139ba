"""kind on this machine, with no registry: its CLI, node image and images all built here.

Run as ``python -m localcluster kind-node-image`` (the node image, cached by version) or
``python -m localcluster kind-e2e`` (that, then hack/kind-e2e.sh against it); the kind tier (tests/kind) makes
its cluster with ``KindCluster`` (hack/kind/cluster.yaml, flannel from hack/kind/flannel.yaml) through
localcluster.kind_tier. Pieces:

- the kind CLI from the Go module proxy;
- kubelet, kubeadm and kube-proxy from the same Kubernetes module as the control plane (build.py);
- CoreDNS, crictl and flanneld from their Go modules, pause from Kubernetes' pause.c (a static C program);
- containerd (and ctr, its runc shim) from its Go module: kind drives it with ctr 2.x's commands;
- a kind base image: debootstrap of Debian with systemd, runc and the CNI plugins (Debian's), plus kind's
  own files from its module; hack/kind/node-image.sh assembles the rest.

Each piece is cached by version under ``<cache>/kind``; the node image is a tag of the private engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

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
FLANNEL_MODULE = "github.com/flannel-io/flannel"
# flannel's main.go registers every backend; the cluster uses host-gw (nodes share one L2 network), and
# tencentvpc's SDK is refused by the Go module proxy, so flanneld is built with only these.
FLANNEL_BACKENDS = ("hostgw", "vxlan")
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
    """Names what the node image is made of: the versions of its pieces and a digest of its recipe, so that a
    change to either makes a new image instead of reusing a stale one."""
    recipe = hashlib.sha256()
    for script in (NODE_SCRIPT, RUNC_WRAPPER):
        recipe.update(script.read_bytes())
    recipe.update(" ".join((versions.COREDNS, versions.CRICTL, versions.CONTAINERD, versions.FLANNEL)).encode())
    return (f"swarm-local/kind-node:{versions.KUBERNETES}-{versions.KIND}-{versions.LOCAL_BASE_IMAGE}"
            f"-{recipe.hexdigest()[:8]}")


def flannel_image_tag() -> str:
    return f"swarm-local/flannel:{versions.FLANNEL}"


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


def flannel_main(source: str, backends: tuple[str, ...] = FLANNEL_BACKENDS) -> str:
    """flannel's main.go with the backend imports not in ``backends`` removed."""
    def keep(match: re.Match[str]) -> str:
        return match.group(0) if match.group(1) in backends else ""
    return re.sub(r'^\s*_ "github\.com/flannel-io/flannel/pkg/backend/(\w+)"\n', keep, source, flags=re.M)


def _build_flannel(work: Path, log: Path, out: Path) -> None:
    """flanneld from flannel's module: its own main package in a throwaway module, with FLANNEL_BACKENDS."""
    ver = versions.FLANNEL
    work.parent.mkdir(parents=True, exist_ok=True)
    info = json.loads(build._run(["go", "mod", "download", "-json", f"{FLANNEL_MODULE}@{ver}"], work.parent, log))
    build._throwaway_module(work, "flannel", f"require {FLANNEL_MODULE} {ver}\n")
    (work / "main.go").write_text(flannel_main((Path(info["Dir"]) / "main.go").read_text()))
    shutil.copyfile(Path(info["Dir"]) / "go.sum", work / "go.sum")
    # Not `go get` of the module: that resolves the imports of its own main package, backends included.
    go_line = re.search(r"^go (\S+)$", Path(info["GoMod"]).read_text(), re.M)
    if go_line:
        build._run(["go", "mod", "edit", f"-go={go_line.group(1)}"], work, log)
    out.mkdir(parents=True, exist_ok=True)
    build._run(["go", "build", "-p", "2", "-ldflags", f"-s -w -X {FLANNEL_MODULE}/pkg/version.Version={ver}",
                "-o", str(out / "flanneld"), "."], work, log)


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
    if not (out / "flanneld").is_file():
        with tempfile.TemporaryDirectory(prefix="swarm-build-flannel-") as tmp:
            _build_flannel(Path(tmp) / "mod", log, out)
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
    env = {**kind_env(engine), "RUNC_WRAPPER": str(wrapper or ""), "FLANNEL_IMAGE": flannel_image_tag()}
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


CLUSTER_CONFIG = REPO / "hack" / "kind" / "cluster.yaml"
FLANNEL_MANIFEST = REPO / "hack" / "kind" / "flannel.yaml"
POOL_LABEL = "swarm.io/pool"  # hack/kind/cluster.yaml labels each worker with its pool
GPU_RESOURCE = "nvidia.com/gpu"


def spot_pool(index: int) -> str:
    """The pool of the ``index``-th spot worker (from 0): one node each, so that reclaiming it hits its pods only."""
    return f"spot{index}"


def cluster_config(spot_workers: int) -> str:
    """hack/kind/cluster.yaml with ``spot_workers`` more workers, each the only node of its pool (spot_pool)."""
    config = yaml.safe_load(CLUSTER_CONFIG.read_text())
    config["nodes"] += [{"role": "worker", "labels": {POOL_LABEL: spot_pool(k)}} for k in range(spot_workers)]
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True)
class KindCluster:
    """A kind cluster of hack/kind/cluster.yaml on ``engine``: flannel as its CNI, a CPU and a GPU worker, and
    ``spot_workers`` more (cluster_config)."""

    name: str
    engine: DockerEngine
    kubeconfig: Path
    spot_workers: int = 0

    def _run(self, tool: str, *args: str, timeout: float = 600) -> str:
        res = subprocess.run([tool, *args], env=kind_env(self.engine), capture_output=True, text=True,
                             timeout=timeout, check=False)
        if res.returncode != 0:
            raise EngineError(f"`{tool} {' '.join(args)}` exited {res.returncode}:\n{res.stdout[-2000:]}"
                              f"\n{res.stderr[-3000:]}")
        return res.stdout

    def kind(self, *args: str, timeout: float = 600) -> str:
        return self._run("kind", *args, timeout=timeout)

    def kubectl(self, *args: str, timeout: float = 180) -> str:
        return self._run("kubectl", "--kubeconfig", str(self.kubeconfig), *args, timeout=timeout)

    def exists(self) -> bool:
        return self.name in self.kind("get", "clusters").split()

    def node(self, pool: str, wait: float = 60) -> str:
        """The name of the worker of ``pool`` (cpu, gpu or a spot_pool), waiting ``wait`` seconds at most for it to be
        registered (images are loaded as soon as `kind create` returns)."""
        deadline = time.monotonic() + wait
        while not (name := self.kubectl("get", "nodes", "-l", f"{POOL_LABEL}={pool}", "-o",
                                        "jsonpath={.items[*].metadata.name}").strip()):
            if time.monotonic() > deadline:
                raise EngineError(f"no node of pool {pool} in cluster {self.name} after {wait:.0f}s")
            time.sleep(1)
        return name.split()[0]

    def create(self, node_image: str, gpus: int = 2, meanwhile: Callable[[], object] | None = None) -> None:
        """`kind create cluster`, flannel, every node Ready, the GPU worker's fake GPUs, CoreDNS serving.
        ``meanwhile`` runs once the nodes are there (their containerd serves), beside the waits for the rest: loading
        images into the nodes needs no CNI."""
        start = time.monotonic()
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        spots = f" + {self.spot_workers} spot workers" if self.spot_workers else ""
        print(f"[kind] creating cluster {self.name} ({CLUSTER_CONFIG.name}{spots}, {node_image})", flush=True)
        config = self.kubeconfig.parent / f"{self.name}-cluster.yaml"
        config.write_text(cluster_config(self.spot_workers))
        # No --wait: nodes are NotReady until a CNI runs, and that is applied next.
        self.kind("create", "cluster", "--name", self.name, "--image", node_image, "--config", str(config),
                  "--kubeconfig", str(self.kubeconfig))
        print(f"[kind] nodes up after {time.monotonic() - start:.0f}s", flush=True)
        with ThreadPoolExecutor(1) as side:
            done = side.submit(meanwhile) if meanwhile is not None else None
            self._settle(gpus, start)
            if done is not None:
                done.result()

    def _settle(self, gpus: int, start: float) -> None:
        self.kubectl("apply", "-f", str(FLANNEL_MANIFEST))
        # A worker's flanneld may exit once before its node's kube-proxy serves the API's Service VIP; the DaemonSet
        # restarts it, and its rollout is done when every node has its subnet and CNI configuration.
        self.kubectl("-n", "kube-flannel", "rollout", "status", "daemonset/kube-flannel-ds", "--timeout=300s",
                     timeout=330)
        self.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=300s", timeout=330)
        # Extended resources on a node: a status patch, as Kubernetes documents ("Advertise Extended Resources
        # for a Node"); the kubelet keeps capacity it does not manage and mirrors it into allocatable.
        gpu_node = self.node("gpu")
        patch = [{"op": "add", "path": f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}", "value": str(gpus)}]
        self.kubectl("patch", "node", gpu_node, "--subresource=status", "--type=json", "-p", json.dumps(patch))
        escaped = GPU_RESOURCE.replace(".", "\\.")  # a dot in a jsonpath key
        self.kubectl("wait", f"node/{gpu_node}", f"--for=jsonpath={{.status.allocatable.{escaped}}}={gpus}",
                     "--timeout=120s", timeout=150)
        self.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s", timeout=200)
        print(f"[kind] cluster {self.name} Ready in {time.monotonic() - start:.0f}s: flannel (host-gw) across "
              f"{len(self.kubectl('get', 'nodes', '-o', 'name').split())} nodes, {gpus} fake {GPU_RESOURCE} on "
              f"{gpu_node}; host settings: none changed (the nodes share one Docker bridge and route pod traffic "
              "in their own network namespaces)", flush=True)

    def load(self, tags: Sequence[str], pools: Sequence[str]) -> None:
        """`kind load docker-image` onto the workers of ``pools`` only (an image is hundreds of MB). Images given
        together go in one archive: layers they share are copied once."""
        nodes = ",".join(self.node(pool) for pool in pools)
        self.kind("load", "docker-image", "--name", self.name, "--nodes", nodes, *tags)

    def export_kubeconfig(self) -> None:
        """Write the kubeconfig of a cluster that exists already (one kept by an earlier run)."""
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.kind("export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig))

    def delete(self) -> None:
        self.kind("delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig))


def kind_e2e(pytest_args: list[str]) -> int:
    """hack/kind-e2e.sh (tests/e2e, whose Ray runs on process nodes) on a cluster of this node image, made here
    with its CNI first: the script reuses a cluster of its name, and deletes it at the end."""
    with running(engine_for_kind()) as engine, tempfile.TemporaryDirectory(prefix="swarm-kind-e2e-") as tmp:
        tag, seconds = ensure_node_image(engine)
        print(f"[kind] node image {tag}: {'cached' if not seconds else f'made in {seconds:.0f}s'}", flush=True)
        base = BaseImage.default()  # the operator image's base, for hack/kind-e2e.sh's docker build
        base.ensure(engine)
        name = os.environ.get("CLUSTER_NAME", "swarm-e2e")
        KindCluster(name, engine, Path(tmp) / "kubeconfig").create(tag)
        env = {**kind_env(engine), "KIND_NODE_IMAGE": tag, "CLUSTER_NAME": name,
               "DOCKER_BUILD_EXTRA_ARGS": f"--network host --build-arg PYTHON_IMAGE={base.tag}",
               "PYTHON": sys.executable}  # the environment this runs in has the tier's dependencies
        start = time.monotonic()
        rc = subprocess.call([str(REPO / "hack" / "kind-e2e.sh"), *pytest_args], env=env)
        print(f"[kind] hack/kind-e2e.sh exited {rc} after {time.monotonic() - start:.0f}s", flush=True)
        return rc
