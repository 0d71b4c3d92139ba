"""A real Kubernetes (kwok's binary runtime) for the demo, the tests and the benchmarks.

environment:
  SWARM_LOCALCLUSTER_NAME  cluster name (default: swarm)
  SWARM_LOCALCLUSTER_DIR   working directory of the clusters (default: <cache>/run)
  SWARM_CACHE_DIR          where built binaries are cached (default: ~/.cache/swarm-operator)
  SWARM_TEST_KUBECONFIG    `test` runs against this cluster and starts nothing
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localcluster import build, docker_engine, image, kind, kueue, versions
from localcluster.cluster import LocalCluster
from localcluster.errors import ClusterError
from localcluster.nodeagent import cli as nodeagent_cli


def _with_cluster(cmd: list[str], extra_env: dict[str, str]) -> int:
    """Build (a no-op when cached), bring the cluster up, run ``cmd``, and bring it down again
    if it was not running before, unless another run is still using it."""
    build.build_all()
    cluster = LocalCluster.from_env()
    with cluster.borrowed():
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*versions.path_dirs(), env.get("PATH", "")])
        env["SWARM_TEST_KUBECONFIG"] = str(cluster.kubeconfig)
        env.update(extra_env)
        start = time.monotonic()
        rc = subprocess.call(cmd, env=env)
        print(f"[localcluster] `{' '.join(cmd)}` exited {rc} after {time.monotonic() - start:.1f}s", flush=True)
        return rc


def _test(pytest_args: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", *pytest_args]
    if os.environ.get("SWARM_TEST_KUBECONFIG"):
        # A cluster is given (kind, or any other): test against it, start nothing.
        return subprocess.call(cmd)
    return _with_cluster(cmd, {})


def _run(cmd: list[str]) -> int:
    if not cmd:
        raise SystemExit("usage: python -m localcluster run -- COMMAND [ARGS…]")
    return _with_cluster(cmd, {"KUBECONFIG": str(LocalCluster.from_env().kubeconfig)})


def _kueue(cluster: LocalCluster) -> int:
    """Kueue installed on the running local cluster and run until interrupted (Ctrl-C, or SIGTERM: a background job
    of a shell ignores SIGINT); then stopped by its PID and uninstalled: the way to try docs/kueue.md's example by
    hand."""
    if not cluster.kubeconfig.is_file():
        raise ClusterError("no local cluster is running: `python -m localcluster up` first")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SystemExit runs the cleanup below
    kubeconfig = str(cluster.kubeconfig)
    try:
        with kueue.running(kubeconfig, Path(tempfile.mkdtemp(prefix="kueue-"))) as proc:
            print(f"[kueue] {versions.KUEUE} running against {kubeconfig} (log: {proc.log_path}); Ctrl-C stops and "
                  "uninstalls it", flush=True)
            while proc.proc is not None and proc.proc.poll() is None:
                time.sleep(1)
            print(f"[kueue] Kueue exited by itself; its log: {proc.log_path}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0


def _image() -> int:
    """Build the operator's image on a private Docker engine (started and stopped here if not running)."""
    with docker_engine.running() as engine:
        built = image.build_operator_image(engine)
    base = f"made in {built.base_seconds:.0f}s" if built.base_seconds else "cached"
    print(f"[image] {built.tag}: {built.size_bytes / 1e6:.0f} MB; base image {base}; docker build "
          f"{built.build_seconds:.0f}s", flush=True)
    return 0


def _workload_images(engine: docker_engine.DockerEngine) -> None:
    """The Ray image (hack/ray-image) and the Redis image (hack/redis-image) that the kind tier's pods run."""
    for built in (image.ensure_ray_image(engine), image.ensure_redis_image(engine)):
        how = f"docker build {built.build_seconds:.0f}s" if built.build_seconds else "cached"
        print(f"[image] {built.tag}: {built.size_bytes / 1e6:.0f} MB; {how}", flush=True)


def _ray_image() -> int:
    with docker_engine.running(kind.engine_for_kind()) as engine:
        _workload_images(engine)
    return 0


def _kind_images(operator: bool) -> int:
    """The kind tier's images that take minutes when cold: the node image, Ray and Redis. Apart from pytest, so that
    a cold build is no test's time (nor under its timeout), and shows its own figures. tests/kind builds the
    operator's own images, which change with every commit; with ``operator`` they are built here too (.ci/run does,
    beside the other tiers), so that the tier's builds find every layer cached."""
    start = time.monotonic()
    with docker_engine.running(kind.engine_for_kind()) as engine:
        tag, seconds = kind.ensure_node_image(engine)
        print(f"[kind] {tag}: {'cached' if not seconds else f'made in {seconds:.0f}s'}", flush=True)
        _workload_images(engine)
        if operator:
            for built in (image.build_operator_image(engine, tag=image.KIND_OPERATOR_IMAGE),
                          image.build_upgrade_image(engine)):
                print(f"[image] {built.tag}: {built.size_bytes / 1e6:.0f} MB; docker build {built.build_seconds:.0f}s",
                      flush=True)
    print(f"[kind] images ready in {time.monotonic() - start:.0f}s", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["logs"]:  # its options (-n, -c, -f) are the node agent's own
        return nodeagent_cli.logs(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the control plane from Go modules (cached by version)")
    p_build.add_argument("only", nargs="*",
                         help="components to build (default: all but the optional kuberay and kueue)")
    p_build.add_argument("--kuberay", action="store_true",
                         help="also build KubeRay's operator (optional; bench/scale.py builds it on demand)")
    sub.add_parser("image", help="build the operator's image from the Dockerfile on a local Docker engine")
    sub.add_parser("ray-image", help="build the Ray and Redis images of the kind tier (cached by version)")
    sub.add_parser("kind-node-image", help="build a kind node image here, with no registry (cached by version)")
    p_kind_images = sub.add_parser("kind-images", help="the kind tier's node, Ray and Redis images (cached by version)")
    p_kind_images.add_argument("--operator", action="store_true",
                               help="also the operator's images that tests/kind builds, to fill Docker's layer cache")
    p_kind = sub.add_parser("kind-e2e", help="hack/kind-e2e.sh on a kind cluster of that node image")
    p_kind.add_argument("args", nargs=argparse.REMAINDER, help="pytest arguments (after --)")
    sub.add_parser("up", help="start the cluster and its fake nodes (idempotent)")
    sub.add_parser("down", help="delete the cluster: no process, no file left")
    sub.add_parser("status", help="components, PIDs and memory")
    sub.add_parser("kubeconfig", help="print the kubeconfig path")
    p_test = sub.add_parser("test", help="run pytest against SWARM_TEST_KUBECONFIG or a local cluster")
    p_test.add_argument("args", nargs=argparse.REMAINDER, help="pytest arguments (after --)")
    sub.add_parser("kueue", help="install Kueue on the running cluster and run it until Ctrl-C (then uninstall it)")
    p_run = sub.add_parser("run", help="run a command with KUBECONFIG set to a local cluster")
    p_run.add_argument("args", nargs=argparse.REMAINDER, help="the command (after --)")
    ns = parser.parse_args(argv)
    # argparse keeps the "--" separator in a REMAINDER list.
    rest: list[str] = [a for i, a in enumerate(getattr(ns, "args", [])) if not (i == 0 and a == "--")]

    cluster = LocalCluster.from_env()
    try:
        if ns.command == "build":
            return build.main(ns.only, kuberay=ns.kuberay)
        if ns.command == "image":
            return _image()
        if ns.command == "ray-image":
            return _ray_image()
        if ns.command == "kind-images":
            return _kind_images(ns.operator)
        if ns.command == "kind-node-image":
            with docker_engine.running(kind.engine_for_kind()) as engine:
                tag, seconds = kind.ensure_node_image(engine)
            print(f"[kind] {tag}: {'cached' if not seconds else f'made in {seconds:.0f}s'}", flush=True)
            return 0
        if ns.command == "kind-e2e":
            return kind.kind_e2e(rest)
        if ns.command == "up":
            cluster.up()
        elif ns.command == "down":
            cluster.down()
        elif ns.command == "status":
            print(cluster.status())
        elif ns.command == "kubeconfig":
            print(cluster.kubeconfig)
        elif ns.command == "test":
            return _test(rest)
        elif ns.command == "run":
            return _run(rest)
        elif ns.command == "kueue":
            return _kueue(cluster)
    except (ClusterError, build.BuildError, docker_engine.EngineError) as exc:
        print(f"[localcluster] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
