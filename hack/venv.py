"""Make the project's virtual environment so that a half-made one is never trusted (the Makefile's .venv/.installed).

    VENV_INSTALL='pip install …' python3 hack/venv.py VENV STAMP --entry-point ray --entry-point swarm-operator \
        [--deps FILE…]

- One at a time: an exclusive ``flock`` on VENV.lock; a run that waited finds the stamp its
  predecessor wrote and does nothing.
- The stamp is written last, only once every entry point exists in VENV/bin, runs this venv's Python
  and imports. (A venv cannot be built elsewhere and renamed into place: its scripts hold absolute paths.)
- VENV/.unfinished marks a set-up under way; a run that finds it starts from an empty venv, because
  pip trusts a package whose files are there even when its scripts are not.
- The venv is made without pip; $VENV_INSTALL (a shell command, VENV/bin first on PATH, so `python` is the
  venv's) installs everything, pip included, in a process group of its own; an interrupt (SIGINT, SIGTERM,
  SIGHUP, or the death of the make that started this) ends that whole group, so none of pip's children goes
  on writing. The command comes in the environment so that make starts this script without a shell: a
  shell in between would outlive a killed make, and this script would never learn of its death.

Stdlib only: it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1
GRACE = 5.0  # seconds between SIGTERM and SIGKILL for the install's process group
# Loads each console script's entry point, as the script itself would: prints what fails.
IMPORT_CHECK = """
import sys
from importlib.metadata import entry_points
for name in sys.argv[1:]:
    found = entry_points(group="console_scripts", name=name)
    if not found:
        print(f"{name}: no console_scripts entry point")
        continue
    try:
        next(iter(found)).load()
    except Exception as exc:
        print(f"{name}: importing {next(iter(found)).value} failed: {exc!r}")
"""


class InstallFailed(Exception):
    """The install command failed: retrying at once would fail the same way (no network, a bad pin)."""


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def log(message: str) -> None:
    print(f"[venv] {message}", file=sys.stderr, flush=True)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def up_to_date(stamp: Path, deps: Sequence[Path]) -> bool:
    try:
        made = stamp.stat().st_mtime
    except FileNotFoundError:
        return False
    return all(not d.exists() or d.stat().st_mtime <= made for d in deps)


def script_problems(venv: Path, names: Sequence[str]) -> list[str]:
    """What is wrong with VENV/bin/<name> for each name, as files: missing, not executable, or written for
    another Python (a venv moved since)."""
    problems = []
    python = (venv / "bin" / "python").absolute()
    for name in names:
        script = venv / "bin" / name
        if not script.is_file():
            problems.append(f"{script} is missing")
            continue
        if not os.access(script, os.X_OK):
            problems.append(f"{script} is not executable")
            continue
        with script.open("rb") as fh:
            first = fh.readline().decode(errors="replace")
        words = first[2:].split() if first.startswith("#!") else []
        # pip writes "#!<venv>/bin/python", or "#!/bin/sh" plus an exec line when that path is too long.
        if words and words[0] != "/bin/sh" and Path(words[0]).parent != python.parent:
            problems.append(f"{script} runs {words[0]}, not this venv's Python ({python})")
    return problems


def verify(venv: Path, names: Sequence[str]) -> list[str]:
    """Every problem that keeps the venv from being trusted; empty when it may be."""
    problems = script_problems(venv, names)
    if problems:
        return problems
    res = subprocess.run([str(venv / "bin" / "python"), "-c", IMPORT_CHECK, *names], capture_output=True, text=True,
                         timeout=300, check=False)
    problems = res.stdout.splitlines()
    if res.returncode != 0:
        problems.append(f"the import check exited {res.returncode}: {res.stderr.strip()[-500:]}")
    return problems


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another set-up holds {path}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def run_group(command: str, venv: Path) -> int:
    """``sh -c command`` in a process group of its own; on an interrupt, end the whole group, then re-raise."""
    env = {**os.environ, "VIRTUAL_ENV": str(venv.absolute()),
           "PATH": os.pathsep.join([str((venv / "bin").absolute()), os.environ.get("PATH", os.defpath)])}
    proc = subprocess.Popen(["/bin/sh", "-c", command], env=env, start_new_session=True)
    try:
        return proc.wait()
    except Interrupted:
        log(f"interrupted: stopping the install (process group {proc.pid})")
        end_group(proc)
        raise


def end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group, SIGKILL to what is left after GRACE; returns once the group is empty."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + GRACE
    while _group_alive(proc.pid) and time.monotonic() < deadline:  # orphans die (and are reaped) a moment later
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def build(venv: Path, stamp: Path, names: Sequence[str], install: str, fresh: bool) -> list[str]:
    unfinished = venv / ".unfinished"
    if fresh and venv.exists():
        shutil.rmtree(venv)
    venv.mkdir(parents=True, exist_ok=True)
    unfinished.touch()
    if not (venv / "bin" / "python").exists():
        # The interpreter behind this one, should make have found a venv's python3 first on PATH.
        base = getattr(sys, "_base_executable", sys.executable)
        # Without pip: installing it (ensurepip) is the install command's first step, interruptible like the rest.
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    code = run_group(install, venv)
    if code != 0:
        raise InstallFailed(f"the install command exited {code}")
    problems = verify(venv, names)
    if not problems:
        unfinished.unlink()
        stamp.write_text("entry points checked: " + ", ".join(names) + "\n")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("stamp", type=Path)
    parser.add_argument("--entry-point", action="append", default=[], dest="names",
                        help="a console script the venv must have (repeat)")
    parser.add_argument("--deps", nargs="*", type=Path, default=[], help="files the stamp must be newer than")
    args = parser.parse_args(argv)
    install = os.environ.get("VENV_INSTALL", "")
    if not install.strip():
        parser.error("no install command: set VENV_INSTALL")
    # Interrupts become an exception (so the install's group is ended); so does make dying outright.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    venv: Path = args.venv
    try:
        with locked(venv.with_name(venv.name + ".lock")):
            if up_to_date(args.stamp, args.deps):
                return 0  # made (and checked) by the run this one waited for
            args.stamp.unlink(missing_ok=True)
            fresh = (venv / ".unfinished").exists()
            if fresh:
                log(f"an earlier set-up of {venv} did not finish: starting from an empty venv")
            problems = build(venv, args.stamp, args.names, install, fresh)
            if problems and not fresh:
                log("the venv is not usable (" + "; ".join(problems) + "): starting from an empty venv")
                problems = build(venv, args.stamp, args.names, install, True)
            if problems:
                log(f"{venv} is not usable: " + "; ".join(problems))
                return 1
            return 0
    except InstallFailed as exc:
        log(f"{exc}: {venv} left unfinished (the next make starts it over)")
        return 1
    except Interrupted as exc:
        log(f"{exc}: {venv} left unfinished (the next make starts it over)")
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
