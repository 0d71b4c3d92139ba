"""Become one container's main process: ``ip netns exec NS python -I -S launch.py SPEC``.

``ip netns exec`` has already moved this process into the pod's network namespace and a
private mount namespace (mounts made here stay invisible to the host) with the pod's
/etc/hosts and /etc/resolv.conf bound over the host's. This script adds what a container
runtime would: its own UTS namespace with the pod name as hostname, the pod's own /run,
/tmp, /dev/shm and volumes, the working directory, and a clean environment, then
execs the command, so the agent's child *is* the container process and its exit code
is the container's.

Stdlib only and started with ``-I -S``: it must start fast and must see neither the
agent's nor the pod's Python settings.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000


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


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec: dict[str, Any] = json.load(fh)
    os.unlink(argv[1])  # it holds the container's environment, secrets included
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        _fail("unshare(CLONE_NEWUTS)")
    hostname = spec["hostname"].encode()
    if libc.sethostname(hostname, len(hostname)) != 0:
        _fail("sethostname")
    for mount in spec["mounts"]:
        _mount(libc, mount, spec.get("private", []))
    os.chdir(spec["cwd"])
    argv_exec: list[str] = spec["argv"]
    try:
        os.execvpe(argv_exec[0], argv_exec, spec["env"])
    except OSError as exc:
        # The codes a shell uses: 127 not found, 126 found but not executable.
        print(f"[nodeagent] cannot exec {argv_exec[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main(sys.argv))
