"""Run a test tier and fail if it changed the checkout: anything new in ``git status --porcelain --ignored``.

    python hack/leftovers.py -- .venv/bin/pytest -q tests/unit      in this checkout (the Makefile's tiers)
    python hack/leftovers.py --clone -- /abs/python -m pytest -q tests/unit
                                                                    in a fresh clone of HEAD, deleted afterwards

Caches that tools keep beside the code (ALLOWED) do not count. A `.venv` does: `make` makes it
before a tier starts, so a tier that makes or changes one has touched the checkout. The clone
(HEAD only: uncommitted changes are not in it) shows what a tier does to a checkout that has
no `.venv` at all, run from another environment.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

# Directories of caches (bytecode, pytest, mypy, ruff, hypothesis's example database).
ALLOWED = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"})


def status(repo: Path) -> set[str]:
    """``git status --porcelain --ignored`` of ``repo``: one entry per line (status code and path)."""
    # "matching" names an ignored directory itself (a/__pycache__/), not a new parent holding only ignored files.
    out = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--ignored=matching"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def allowed(entry: str) -> bool:
    path = entry[3:].strip('"').split(" -> ")[-1]
    return any(part in ALLOWED for part in PurePosixPath(path).parts)


def leftovers(before: Iterable[str], after: Iterable[str]) -> list[str]:
    """What a run added to the checkout's status, caches aside."""
    return sorted(e for e in set(after) - set(before) if not allowed(e))


def clone_head(repo: Path, into: Path) -> Path:
    """A clean checkout of ``repo``'s HEAD at ``into`` (objects shared, nothing copied but the files)."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(repo), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "-q", "--detach", head], check=True)
    return into


def guarded(repo: Path, command: Sequence[str]) -> int:
    before = status(repo)
    code = subprocess.call(list(command), cwd=repo)
    left = leftovers(before, status(repo))
    if left:
        print(f"[leftovers] `{' '.join(command)}` left the checkout {repo} changed (only caches may be new):",
              *left, sep="\n  ", file=sys.stderr)
        return code or 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print(__doc__, file=sys.stderr)
        return 2
    split = args.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clone", action="store_true", help="run in a fresh clone of HEAD, deleted afterwards")
    opts = parser.parse_args(args[:split])
    command = args[split + 1:]
    repo = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                               check=True).stdout.strip())
    if not opts.clone:
        return guarded(repo, command)
    with tempfile.TemporaryDirectory(prefix="swarm-clone-") as tmp:
        clone = clone_head(repo, Path(tmp) / "checkout")
        print(f"[leftovers] running in a fresh clone of HEAD: {clone}", file=sys.stderr, flush=True)
        code = guarded(clone, command)
        shutil.rmtree(clone, ignore_errors=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
