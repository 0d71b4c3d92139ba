"""The operator's image, built from the real Dockerfile on a Docker engine of this machine.

Run as ``python -m localcluster image``. No image registry is reachable here, so the Dockerfile's
base (its ``PYTHON_IMAGE`` argument; the official ``python:3.11-slim`` for everyone else) is made
locally: ``debootstrap`` of Debian bookworm with python3.11, imported with ``docker import``, and
cached by version (a tag of the engine, and the root filesystem's tarball under the cache).

The Debian mirror is the one this machine's apt already uses (``/etc/apt/sources.list*``; override
with ``SWARM_DEBIAN_MIRROR``), read at run time so that no host name is written into the project.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from localcluster import versions
from localcluster.docker_engine import DOCKER_CLI, DockerEngine, EngineError, apt_install

REPO = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
# What the official python:3.11-slim image offers the Dockerfile: `python` with pip and venv, and useradd.
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python3-pip", "python-is-python3", "ca-certificates")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
# Certificates this machine trusts beyond Debian's set, and its pip configuration: pip inside
# `docker build` must reach the package index exactly as pip on this machine does.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
HOST_PIP_CONF = Path("/etc/pip.conf")


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def operator_image_tag() -> str:
    return f"swarm-operator:{project_version()}"


def base_image_tag() -> str:
    return f"swarm-local/python:3.11-{SUITE}-{versions.LOCAL_BASE_IMAGE}"


def apt_source_lines(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every `deb` source in a one-line .list or a deb822 .sources file."""
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0])  # one-line options: [signed-by=…]
        words = line.split()
        if words[:1] == ["deb"] and len(words) >= 3:
            found.append((words[1], [words[2]]))
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if "deb" in fields.get("Types", "").split() and "URIs" in fields:
            found.extend((uri, fields.get("Suites", "").split()) for uri in fields["URIs"].split())
    return found


def debian_mirror() -> str:
    """The mirror apt on this machine uses for Debian's own `bookworm` suite."""
    given = os.environ.get("SWARM_DEBIAN_MIRROR")
    if given:
        return given
    files: list[Path] = []
    for source in APT_SOURCES:
        if source.is_dir():
            files += sorted(source.glob("*.list")) + sorted(source.glob("*.sources"))
        elif source.is_file():
            files.append(source)
    for path in files:
        for uri, suites in apt_source_lines(path.read_text()):
            if SUITE in suites and uri.rstrip("/").endswith("/debian"):
                return uri
    raise EngineError(f"no Debian {SUITE} source in /etc/apt/sources.list*; set SWARM_DEBIAN_MIRROR")


@dataclass(frozen=True)
class BaseImage:
    tag: str
    rootfs_tar: Path  # cached, so that a fresh engine imports it in seconds instead of bootstrapping again

    @classmethod
    def default(cls) -> BaseImage:
        return cls(base_image_tag(), versions.cache_root() / "base-image" / f"{versions.LOCAL_BASE_IMAGE}.tar")

    def ensure(self, engine: DockerEngine) -> float:
        """The base image in ``engine``, made if missing; returns the seconds it took."""
        start = time.monotonic()
        if engine.docker("image", "inspect", self.tag, check=False).returncode == 0:
            return 0.0
        if not self.rootfs_tar.is_file():
            self._bootstrap()
        print(f"[image] importing {self.rootfs_tar} as {self.tag}", flush=True)
        with self.rootfs_tar.open("rb") as tar:
            res = subprocess.run([str(DOCKER_CLI), "import", "--change", 'CMD ["python3"]',
                                  "--change", "ENV LANG=C.UTF-8", "-", self.tag], stdin=tar, env=engine.env(),
                                 capture_output=True, text=True, timeout=600, check=False)
        if res.returncode != 0:
            raise EngineError(f"docker import failed: {res.stderr[-2000:]}")
        return time.monotonic() - start

    def _bootstrap(self) -> None:
        if shutil.which("debootstrap") is None:
            apt_install(("debootstrap",), self.rootfs_tar.parent / "apt.log")
        self.rootfs_tar.parent.mkdir(parents=True, exist_ok=True)
        log = self.rootfs_tar.with_suffix(".log")
        mirror = debian_mirror()
        print(f"[image] debootstrap {SUITE} + python3.11 (log: {log})", flush=True)
        with tempfile.TemporaryDirectory(prefix="swarm-base-", dir=self.rootfs_tar.parent) as tmp:
            root = Path(tmp) / "rootfs"
            run_logged(["nice", "-n", "10", "debootstrap", "--variant=minbase",
                        f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root), mirror], log)
            trust_host_certificates(root, log)
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(root / leftover, ignore_errors=True)
                (root / leftover).mkdir(parents=True)
            partial = self.rootfs_tar.with_suffix(".partial")
            run_logged(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], log)
            partial.rename(self.rootfs_tar)


def trust_host_certificates(root: Path, log: Path) -> None:
    """This machine's extra CA certificates and pip configuration, copied into a root filesystem."""
    if HOST_CA_DIR.is_dir():
        target = root / HOST_CA_DIR.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for cert in HOST_CA_DIR.glob("*.crt"):
            shutil.copyfile(cert, target / cert.name)
        run_logged(["chroot", str(root), "update-ca-certificates"], log)
    if HOST_PIP_CONF.is_file():
        shutil.copyfile(HOST_PIP_CONF, root / HOST_PIP_CONF.relative_to("/"))


def run_logged(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise EngineError(f"`{' '.join(cmd)}` failed; see {log}")


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    size_bytes: int
    base_seconds: float  # making the base image (0 when cached)
    build_seconds: float  # `docker build` (0 when the tag was there already)


def docker_build(engine: DockerEngine, context: Path, tag: str, build_args: dict[str, str],
                 log_name: str) -> BuiltImage:
    """`docker build --network host` of ``context`` on the local base (its PYTHON_IMAGE); layers are cached."""
    base = BaseImage.default()
    base_seconds = base.ensure(engine)
    log = versions.cache_root() / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[image] docker build {tag} on {base.tag} (log: {log})", flush=True)
    start = time.monotonic()
    args = {"PYTHON_IMAGE": base.tag, **build_args}
    cmd = [str(DOCKER_CLI), "build", "--network", "host", "--tag", tag,
           *(f"--build-arg={k}={v}" for k, v in args.items()), str(context)]
    with log.open("w") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(["nice", "-n", "10", *cmd], env=engine.env(), stdout=out, stderr=subprocess.STDOUT,
                            timeout=1800, check=False).returncode
    if rc != 0:
        raise EngineError(f"docker build exited {rc}; see {log}:\n{log.read_text()[-3000:]}")
    seconds = time.monotonic() - start
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return BuiltImage(tag, size, base_seconds, seconds)


def git_revision() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False).stdout.strip() or "unknown"


def build_operator_image(engine: DockerEngine, tag: str | None = None, version: str | None = None,
                         revision: str | None = None) -> BuiltImage:
    """The real Dockerfile; ``version`` and ``revision`` (labels; the version pins the wheel) default to the
    project's and the checkout's."""
    return docker_build(engine, REPO, tag or operator_image_tag(),
                        {"VERSION": version or project_version(), "REVISION": revision or git_revision()},
                        "image-build")


# The kind tier's operator images: the one under test, and another release of it for the upgrade test.
KIND_OPERATOR_IMAGE = "swarm-operator:kind"
KIND_UPGRADE_IMAGE = f"{KIND_OPERATOR_IMAGE}-upgrade"


def build_upgrade_image(engine: DockerEngine) -> BuiltImage:
    """The operator's image once more, as a new release would be: another version (the wheel's and the label's)
    and another revision."""
    version = f"{project_version()}+kind.upgrade"
    with tempfile.TemporaryDirectory(prefix="swarm-upgrade-") as tmp:
        context = Path(tmp)
        for part in ("Dockerfile", ".dockerignore", "README.md", "operator"):
            src = REPO / part
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, context / part)
        pyproject = (REPO / "pyproject.toml").read_text()
        (context / "pyproject.toml").write_text(
            pyproject.replace(f'version = "{project_version()}"', f'version = "{version}"', 1))
        return docker_build(engine, context, KIND_UPGRADE_IMAGE,
                            {"VERSION": version, "REVISION": f"{git_revision()}-upgrade"}, "image-build-upgrade")


def ray_image_tag() -> str:
    return f"swarm-local/ray:{versions.RAY}-{versions.LOCAL_BASE_IMAGE}"


def redis_image_tag() -> str:
    return f"swarm-local/redis:{SUITE}-{versions.LOCAL_BASE_IMAGE}"


def ensure_image(engine: DockerEngine, tag: str, context: Path, build_args: dict[str, str],
                 log_name: str) -> BuiltImage:
    """The image of ``tag`` in ``engine``, built when missing: a tag names its versions, so one present is current."""
    res = engine.docker("image", "inspect", "--format", "{{.Size}}", tag, check=False)
    if res.returncode == 0:
        return BuiltImage(tag, int(res.stdout.strip()), 0.0, 0.0)
    return docker_build(engine, context, tag, build_args, log_name)


def ensure_ray_image(engine: DockerEngine) -> BuiltImage:
    """hack/ray-image/Dockerfile with Ray of versions.RAY, cached by its tag."""
    return ensure_image(engine, ray_image_tag(), REPO / "hack" / "ray-image", {"RAY_VERSION": versions.RAY},
                        "ray-image-build")


def ensure_redis_image(engine: DockerEngine) -> BuiltImage:
    """hack/redis-image/Dockerfile (Debian's redis-server), cached by its tag."""
    return ensure_image(engine, redis_image_tag(), REPO / "hack" / "redis-image", {}, "redis-image-build")
