"""Build the control plane from Go modules, once per version, with visible progress.

Run as ``python -m localcluster build``. Each component is built into its own
versioned folder under the cache; a component whose binaries exist is skipped, so a
warm run takes seconds. Each step logs to ``<cache>/logs/<component>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from localcluster import versions

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class BuildError(RuntimeError):
    """A build step failed; the message names the step and its log."""


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    outputs: tuple[Path, ...]
    build: Callable[[Path, Path], None]  # (work dir, log file) -> None

    def present(self) -> bool:
        return all(p.is_file() and os.access(p, os.X_OK) for p in self.outputs)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=mod", "GOTOOLCHAIN": "local"})
    return env


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> str:
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}  (in {cwd})\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env or _go_env(), stdout=subprocess.PIPE,
                              stderr=fh, text=True, check=False)
        fh.write(proc.stdout[-20000:])
    if proc.returncode != 0:
        raise BuildError(f"`{' '.join(cmd)}` exited {proc.returncode}; see {log}")
    return proc.stdout


def _throwaway_module(work: Path, name: str, go_mod_body: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(f"module swarm.local/build/{name}\n\ngo 1.25\n\n{go_mod_body}")
    # A main package is needed only so that `go mod` has something to resolve for.
    (work / "main.go").write_text("package main\n\nfunc main() {}\n")


def staging_replaces(kubernetes_go_mod: str, staging_version: str) -> list[str]:
    """Every `k8s.io/x => ./staging/...` replace of kubernetes' go.mod, pointed at a published version."""
    mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", kubernetes_go_mod, re.M)))
    return [f"\t{m} => {m} {staging_version}" for m in mods]


def build_kubernetes(work: Path, log: Path) -> None:
    ver = versions.KUBERNETES
    staging = "v0." + ver.split(".", 1)[1]  # v1.36.3 -> v0.36.3
    info = json.loads(_run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{ver}"], work.parent, log))
    replaces = staging_replaces(Path(info["GoMod"]).read_text(), staging)
    body = f"require k8s.io/kubernetes {ver}\n\nreplace (\n" + "\n".join(replaces) + "\n)\n"
    _throwaway_module(work, "kubernetes", body)
    _run(["go", "get", f"k8s.io/kubernetes@{ver}"], work, log)
    out = versions.k8s_bin()
    out.mkdir(parents=True, exist_ok=True)
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS]
    _run(["go", "build", "-p", "2", "-ldflags", f"-s -w -X k8s.io/component-base/version.gitVersion={ver}"
          f" -X k8s.io/client-go/pkg/version.gitVersion={ver}", "-o", str(out) + "/", *pkgs], work, log)


def build_etcd(work: Path, log: Path) -> None:
    _throwaway_module(work, "etcd", f"require go.etcd.io/etcd/server/v3 {versions.ETCD}\n")
    _run(["go", "get", f"go.etcd.io/etcd/server/v3@{versions.ETCD}"], work, log)
    out = versions.etcd_bin()
    out.mkdir(parents=True, exist_ok=True)
    _run(["go", "build", "-p", "2", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"],
         work, log)


def _go_install(pkgs: list[str], out: Path, work: Path, log: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    env["GOBIN"] = str(out)
    env["GOFLAGS"] = "-buildvcs=false"
    work.mkdir(parents=True, exist_ok=True)
    _run(["go", "install", "-p", "2", "-ldflags", "-s -w", *pkgs], work, log, env)


def build_kwok(work: Path, log: Path) -> None:
    v = versions.KWOK
    _go_install([f"sigs.k8s.io/kwok/cmd/kwok@{v}", f"sigs.k8s.io/kwok/cmd/kwokctl@{v}"], versions.kwok_bin(), work, log)


def build_helm(work: Path, log: Path) -> None:
    _go_install([f"helm.sh/helm/v4/cmd/helm@{versions.HELM}"], versions.helm_bin(), work, log)


def build_kuberay(work: Path, log: Path) -> None:
    """KubeRay's operator from its own module (its go.mod and go.sum as released), for bench/scale.py.

    Built like its release image's manager (``go build`` of the module's main package, not
    stripped) except with cgo off, as everything here. The module's CRDs are copied next to
    the binary; the binary is written last, so its presence means the component is complete.
    """
    mod = f"{versions.KUBERAY_MODULE}@{versions.KUBERAY}"
    work.parent.mkdir(parents=True, exist_ok=True)
    src = Path(json.loads(_run(["go", "mod", "download", "-json", mod], work.parent, log))["Dir"])
    shutil.copytree(src, work)
    for path in (work, *work.rglob("*")):  # the module cache is read-only; go build writes nothing there,
        path.chmod(path.stat().st_mode | 0o200)  # but a copy must be writable to be removed afterwards
    crds = versions.kuberay_crds()
    crds.mkdir(parents=True, exist_ok=True)
    for crd in sorted((work / "config" / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(crd, crds / crd.name)
    out = versions.tool_path("kuberay-operator")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    _run(["go", "build", "-p", "2", "-o", str(partial), "."], work, log)
    partial.rename(out)


def build_kueue(work: Path, log: Path) -> None:
    """Kueue's controller manager (cmd/kueue; `go install` works: its go.mod has no replaces) with cgo off; its CRDs
    and webhook configurations are copied from the module's config/ next to it (localcluster/kueue.py installs them).
    The binary is installed last, so its presence means the component is complete."""
    module = f"{versions.KUEUE_MODULE}@{versions.KUEUE}"
    work.mkdir(parents=True, exist_ok=True)
    src = Path(json.loads(_run(["go", "mod", "download", "-json", module], work, log))["Dir"])
    crds = versions.kueue_crds()
    crds.mkdir(parents=True, exist_ok=True)
    for crd in sorted((src / "config" / "components" / "crd" / "bases").glob("*.yaml")):
        shutil.copyfile(crd, crds / crd.name)
    shutil.copyfile(src / "config" / "components" / "webhook" / "manifests.yaml", versions.kueue_webhooks())
    _go_install([f"{versions.KUEUE_MODULE}/cmd/kueue@{versions.KUEUE}"], versions.kueue_bin(), work, log)


def components() -> list[Component]:
    return [
        Component("kwok", versions.KWOK, (versions.tool_path("kwok"), versions.tool_path("kwokctl")), build_kwok),
        Component("etcd", versions.ETCD, (versions.tool_path("etcd"),), build_etcd),
        Component("helm", versions.HELM, (versions.tool_path("helm"),), build_helm),
        Component("kubernetes", versions.KUBERNETES, tuple(versions.tool_path(c) for c in K8S_COMMANDS),
                  build_kubernetes),
    ]


def optional_components() -> list[Component]:
    """Built only when named (``python -m localcluster build kuberay kueue``), or asked for by a benchmark (KubeRay)
    or by the tiers that run Kueue."""
    return [Component("kuberay", versions.KUBERAY, (versions.tool_path("kuberay-operator"),), build_kuberay),
            Component("kueue", versions.KUEUE, (versions.tool_path("kueue"),), build_kueue)]


def _with_progress(label: str, fn: Callable[[], None]) -> float:
    start = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(30):
            print(f"  … {label}: {time.monotonic() - start:.0f}s elapsed", flush=True)

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
    return time.monotonic() - start


def selected(only: list[str] | None = None) -> list[Component]:
    """The default components, or only those named in ``only`` (optional ones included)."""
    everything = components() + optional_components()
    known = {c.name for c in everything}
    unknown = sorted(set(only or []) - known)
    if unknown:
        raise BuildError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if only:
        return [c for c in everything if c.name in only]
    return components()


@contextlib.contextmanager
def _component_lock(root: Path, comp: Component, label: str) -> Iterator[None]:
    """One build of a component at a time: a second `make` (CI starts Kueue's build early, in the background)
    waits for the first and then finds it cached, rather than building into the same folder at once."""
    locks = root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{comp.name}-{comp.version}.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[build] {label}: another build of it is under way; waiting for it", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_all(only: list[str] | None = None) -> None:
    """Build the default components, or only those named in ``only`` (optional ones included)."""
    chosen = selected(only)
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain is not on PATH; install Go ≥ 1.25 and retry")
    root = versions.cache_root()
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    total = time.monotonic()
    for comp in chosen:
        label = f"{comp.name} {comp.version}"
        with _component_lock(root, comp, label):
            if comp.present():
                print(f"[build] {label}: cached", flush=True)
                continue
            log = logs / f"{comp.name}-{comp.version}.log"
            log.write_text("")
            print(f"[build] {label}: building (log: {log})", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"swarm-build-{comp.name}-") as tmp:
                work = Path(tmp) / "mod"
                step = functools.partial(comp.build, work, log)
                try:
                    secs = _with_progress(label, step)
                except BuildError as exc:
                    raise BuildError(f"building {label} failed: {exc}") from None
            print(f"[build] {label}: done in {secs:.0f}s", flush=True)
    print(f"[build] all components ready in {time.monotonic() - total:.0f}s", flush=True)


def ensure_kuberay() -> Path:
    """KubeRay's operator binary, built first if it is not cached (its CRDs: versions.kuberay_crds())."""
    build_all(["kuberay"])
    return versions.tool_path("kuberay-operator")


def ensure_kueue() -> Path:
    """Kueue's controller manager, built first if it is not cached (its CRDs: versions.kueue_crds())."""
    build_all(["kueue"])
    return versions.tool_path("kueue")


def main(argv: list[str], *, kuberay: bool = False) -> int:
    """Build ``argv``'s components (default: all but the optional ones); ``kuberay`` adds KubeRay."""
    only = list(argv)
    if kuberay:
        only = [*(only or [c.name for c in components()]), "kuberay"]
    try:
        build_all(only or None)
    except BuildError as exc:
        print(f"[build] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0
