"""No two modules of the operator or of localcluster import each other, directly or through others; the autoscaler
never reaches the Kubernetes client.

Imports under `if TYPE_CHECKING:` count too: a cycle that only the type checker follows still ties the
two modules into one unit (the node agent's pods.py and agent.py were such a pair).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = (REPO / "localcluster", REPO / "operator" / "swarm_operator")


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for root in PACKAGE_ROOTS:
        for path in root.rglob("*.py"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            modules[".".join(parts).removesuffix(".__init__")] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `path` imports (`from pkg import mod` names the module mod)."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                imported.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return imported & modules.keys()


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            if (cycle := visit(imported)) is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if (cycle := visit(module)) is not None:
            return cycle
    return None


def test_find_cycle_reports_a_loop_through_a_third_module() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_tree() -> None:
    modules = module_files()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    assert find_cycle(graph) is None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for imported in graph[todo.pop()] - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


def test_reachable_follows_imports_through_other_modules() -> None:
    assert reachable({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, "a") == {"b", "c"}


def test_the_autoscaler_never_reaches_the_kubernetes_client() -> None:
    """The autoscaler decides and asks Ray; every Kubernetes write it needs comes back as an action for the turn."""
    modules = module_files()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    autoscaler = [m for m in modules if m.startswith("swarm_operator.autoscaler")]
    assert "swarm_operator.autoscaler.runner" in autoscaler
    for module in autoscaler:
        assert not reachable(graph, module) & {"swarm_operator.kube", "swarm_operator.kube_http"}, module
