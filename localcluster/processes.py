"""Processes by PID: alive or not, resident memory, command line; started detached, stopped for good.

The control plane's components are not children of the process that started them (kwokctl's are
re-parented to init), so everything here works from /proc and PIDs alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB; None when it is gone (or a zombie, which has no VmRSS)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None  # a zombie has no VmRSS: it is not running


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    return rss_kib(pid) is not None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


# Starts a process in a session of its own and exits: the process is re-parented to init,
# like the components kwokctl starts, and never lingers as a zombie child of the caller.
_SPAWN = """\
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    proc = subprocess.Popen(sys.argv[3:], cwd=sys.argv[2], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid)
"""


def spawn_detached(args: list[str], env: dict[str, str], cwd: str, log: Path) -> int:
    """Start ``args`` detached (own session, output appended to ``log``); returns its PID."""
    out = subprocess.run([sys.executable, "-c", _SPAWN, str(log), cwd, *args], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return int(out.strip())


def stop(pids: list[int], grace: float = 5.0) -> None:
    """Wait up to ``grace`` for ``pids`` to exit, then SIGKILL the rest and wait for them.

    SIGKILL, as kwokctl itself stops components: a SIGTERMed kube-apiserver spends about
    a minute draining, and nothing here needs a graceful stop (etcd's data is fsynced).
    """
    for sig in (None, signal.SIGKILL):
        if sig is not None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [pid for pid in pids if pid_alive(pid)]
        if not pids:
            return
