"""Become one container's main process: ``ip netns exec NS python -I -S launch.py SPEC``.

``ip netns exec`` has already moved this process into the pod's network namespace and a
private mount namespace (mounts made here stay invisible to the host) with the pod's
/etc/hosts and /etc/resolv.conf bound over the host's. This script adds what a container
runtime would: its own UTS namespace with the pod name as hostname, the pod's own /run,
/tmp, /dev/shm and volumes, the working directory, and a clean environment, then
execs the command, so the agent's child *is* the container process and its exit code
is the container's. When the command cannot be started (no such executable on the
container's PATH, a mount or working directory that fails), it writes why to the spec's
``report`` file and exits 128, which the agent reports as a kubelet does: terminated,
reason StartError.

Stdlib only and started with ``-I -S``: it must start fast and must see neither the
agent's nor the pod's Python settings.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from typing import Any

CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
START_ERROR_EXIT = 128  # what containerd reports for a container that never started


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)  # /var/run/... is /run/... on most hosts
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def _mount(libc: Any, mount: dict[str, Any], private: list[str]) -> None:
    target = mount["target"]
    if not os.path.isdir(target):
        if not _inside(target, private):
            # Creating directories on the host for a mount point would leak them; say so and go on.
            print(f"[nodeagent] mount point {target} does not exist on this host: volume not mounted",
                  file=sys.stderr)
            return
        # In one of the pod's own file systems (its /run, /tmp): made there, gone with the pod.
        os.makedirs(target, exist_ok=True)
    if mount["type"] == "tmpfs":
        opts = f"mode={mount.get('mode', '1777')}"
        if mount.get("size"):
            opts += f",size={int(mount['size'])}"
        if libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts.encode()) != 0:
            _fail(f"mount tmpfs on {target}")
        if target == "/run":
            # What a distribution keeps in /run and programs may expect.
            os.mkdir("/run/lock", 0o1777)
            os.chmod("/run/lock", 0o1777)
            os.symlink("/dev/shm", "/run/shm")
        return
    if libc.mount(mount["source"].encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
        _fail(f"bind {mount['source']} on {target}")
    # A bind mount ignores MS_RDONLY on creation: read-only takes a remount.
    if mount.get("readOnly") and libc.mount(None, target.encode(), None,
                                            MS_BIND | MS_REMOUNT | MS_RDONLY, None) != 0:
        _fail(f"remount {target} read-only")


def exec_error(program: str, path: str | None, exc: OSError) -> str:
    """Why ``program`` could not be exec'd, in the words of runc (which a kubelet's StartError quotes);
    ``path`` is where the container's PATH found it, if it did."""
    why = (exc.strerror or str(exc)).lower()
    if "/" not in program and path is None:
        return f'exec: "{program}": executable file not found in $PATH'
    return f'exec: "{path or program}": {why}'


def _run(spec: dict[str, Any]) -> None:
    """Everything a runtime does between creating the container and exec'ing its command; raises
    OSError for what keeps the container from starting."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        _fail("unshare(CLONE_NEWUTS)")
    hostname = spec["hostname"].encode()
    if libc.sethostname(hostname, len(hostname)) != 0:
        _fail("sethostname")
    for mount in spec["mounts"]:
        _mount(libc, mount, spec.get("private", []))
    try:
        os.chdir(spec["cwd"])
    except OSError as exc:
        raise OSError(exc.errno, f'chdir to cwd ("{spec["cwd"]}") failed: {(exc.strerror or "").lower()}') from exc
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)  # looks the program up on the container's own PATH
    except OSError as exc:
        found = shutil.which(argv[0], path=env.get("PATH", os.defpath)) if "/" not in argv[0] else None
        raise OSError(exc.errno, exec_error(argv[0], found, exc)) from exc


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec: dict[str, Any] = json.load(fh)
    os.unlink(argv[1])  # it holds the container's environment, secrets included
    # Opened before any mount can hide its directory; not inherited, so a successful exec closes it.
    report = os.open(spec["report"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _run(spec)
    except OSError as exc:
        message = f"unable to start container process: {exc.strerror or exc}"
        os.write(report, message.encode())
        print(f"[nodeagent] {message}", file=sys.stderr)
    return START_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main(sys.argv))
