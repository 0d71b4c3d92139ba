"""How `make demo` talks: its steps, notes and tables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from localcluster import rayjobs


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def note(msg: str) -> None:
    print(f"    {msg}", flush=True)


@contextmanager
def step(msg: str) -> Iterator[None]:
    say(msg)
    start = time.monotonic()
    yield
    note(f"({time.monotonic() - start:.1f}s)")


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def _num(value: float) -> str:
    return f"{value:g}"


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        note("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def print_ray_nodes(nodes: list[rayjobs.RayNode]) -> None:
    rows = [["RAY NODE (instance_id)", "TYPE", "IP", "STATE", "CPU", "GPU", "MEMORY", "OBJECT STORE", "OTHER"]]
    standard = {"CPU", "GPU", "memory", "object_store_memory"}
    for n in sorted(nodes, key=lambda n: (n.node_type != "head", n.instance_id)):
        t = n.total
        other = ", ".join(f"{k}={_num(v)}" for k, v in sorted(t.items()) if k not in standard
                          and not k.startswith("node:"))
        rows.append([n.instance_id, n.node_type, n.ip, n.status, _num(t.get("CPU", 0)), _num(t.get("GPU", 0)),
                     _gib(t.get("memory", 0)), _gib(t.get("object_store_memory", 0)), other or "-"])
    print_table(rows)
