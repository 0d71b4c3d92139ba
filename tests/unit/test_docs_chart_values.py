"""Every chart value the docs (README.md, docs/*.md) name exists in helm/swarm-operator/values.yaml.

A chart value is named by a `--set key=…` flag, by a dotted name in backticks whose first part is a top-level
key of values.yaml (`operator.extraEnv`, `rbac.create=false`), or in the first column of the values table
of docs/operations.md. Single words elsewhere (`resources`, `affinity`) are left alone: pod and spec fields
have the same names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES: dict[str, Any] = yaml.safe_load((REPO / "helm" / "swarm-operator" / "values.yaml").read_text())
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_SET_FLAG = re.compile(r"--set(?:-string|-json|-file)?[ =]['\"]?([A-Za-z][\w.]*)=")
_DOTTED = re.compile(r"`([A-Za-z]\w*(?:\.\w+)+)(?:=[^`]*)?`")
_TABLE_HEADER = "| value | default | what it does |"
_TICKED = re.compile(r"`([A-Za-z][\w.]*)`")
# `probes.py` is a file that happens to share its stem with a chart value, not the value `probes.py`.
_FILE_SUFFIXES = ("py", "md", "yaml", "yml", "json", "sh", "tpl", "txt")


def values_table_names(text: str) -> Iterator[str]:
    """The backticked names in the first column of a table headed ``| value | default | what it does |``."""
    in_table = False
    for line in text.splitlines():
        if line.strip() == _TABLE_HEADER:
            in_table = True
        elif in_table and line.startswith("|"):
            yield from _TICKED.findall(line.split("|")[1])
        else:
            in_table = False


def chart_values_named(text: str) -> set[str]:
    named = set(_SET_FLAG.findall(text)) | set(values_table_names(text))
    named |= {name for name in _DOTTED.findall(text)
              if name.split(".")[0] in VALUES and name.rsplit(".", 1)[1] not in _FILE_SUFFIXES}
    return named


def exists(path: str, values: Mapping[str, Any] = VALUES) -> bool:
    """``path`` (a.b.c) reaches a key of ``values``; below an empty mapping (a free-form map) anything does."""
    node: Any = values
    for part in path.split("."):
        if isinstance(node, Mapping) and not node:
            return True
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def test_the_finder_sees_every_way_a_value_is_named() -> None:
    text = """
helm install x --set image.repository=r --set 'watchNamespaces={a,b}'
Set `operator.env` (or `rbac.create=false`); `probes.py` is a file;
`resources` alone and `head.resources.gpu` are no chart values.

| value | default | what it does |
|---|---|---|
| `replicaCount` | `1` | |
| `nodeSelector`, `tolerations` | | |

`affinity` after the table.
"""
    assert chart_values_named(text) == {"image.repository", "watchNamespaces", "operator.env", "rbac.create",
                                        "replicaCount", "nodeSelector", "tolerations"}
    assert not exists("operator.env")
    assert exists("operator.extraEnv") and exists("metrics.serviceMonitor.labels.release")
    assert not exists("image.repository.more")


def test_the_docs_name_chart_values() -> None:
    """Guards the finder: if it found next to nothing, the test below would prove nothing."""
    named = set().union(*(chart_values_named(doc.read_text()) for doc in DOCS))
    assert {"operator.extraEnv", "watchNamespaces", "metrics.rayPodMonitor.enabled", "rbac.create"} <= named
    assert len(named) >= 20


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_every_chart_value_a_doc_names_exists(doc: Path) -> None:
    missing = sorted(name for name in chart_values_named(doc.read_text()) if not exists(name))
    assert missing == [], f"{doc.relative_to(REPO)} names chart values that values.yaml does not have"
