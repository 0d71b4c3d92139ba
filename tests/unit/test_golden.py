"""Golden files: the head pod, head service and one worker pod per group rendered from each sample.

Any change to what the builders emit shows up here as a diff. After an intended change:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_golden.py

and review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.resources.service import build_head_service
from swarm_operator.spec.parse import parse_cluster

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

UID = "00000000-0000-4000-8000-000000000001"
NAMESPACE = "default"
SUFFIX = "abcde"


def render(sample: Path) -> str:
    docs: list[dict[str, Any]] = []
    for obj in yaml.safe_load_all(sample.read_text()):
        if not obj or obj.get("kind") != "SwarmCluster":
            continue
        obj["metadata"] = {**obj["metadata"], "namespace": NAMESPACE, "uid": UID}
        cluster = parse_cluster(obj)
        docs.append(build_head_pod(cluster))
        docs.append(build_head_service(cluster))
        docs.extend(build_worker_pod(cluster, g, SUFFIX) for g in cluster.worker_groups)
    assert docs, f"{sample.name} holds no SwarmCluster"
    header = (f"# Rendered from manifests/samples/{sample.name} (uid {UID}, worker suffix {SUFFIX}).\n"
              "# Regenerate: UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/test_golden.py\n")
    return header + yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False, width=120)


def golden_path(sample: Path) -> Path:
    return GOLDEN / sample.name


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_rendered_objects_match_golden(sample: Path) -> None:
    got = render(sample)
    path = golden_path(sample)
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"missing {path}; run with UPDATE_GOLDEN=1 to create it"
    want = path.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            f"golden/{path.name}", "rendered"))
        pytest.fail(f"rendered objects differ from {path} (UPDATE_GOLDEN=1 to accept):\n{diff}")


def test_rendering_is_deterministic() -> None:
    for sample in SAMPLES:
        assert render(sample) == render(sample)


def test_no_orphaned_golden_files() -> None:
    assert {p.name for p in GOLDEN.glob("*.yaml")} == {s.name for s in SAMPLES}


def test_golden_files_hold_the_expected_objects() -> None:
    """A sanity check on the files themselves, so a bad regeneration cannot pass unnoticed."""
    for sample in SAMPLES:
        docs = list(yaml.safe_load_all(golden_path(sample).read_text()))
        kinds = [d["kind"] for d in docs]
        assert kinds[:2] == ["Pod", "Service"] and set(kinds[2:]) == {"Pod"}
        for pod in (d for d in docs if d["kind"] == "Pod"):
            assert pod["metadata"]["ownerReferences"][0]["uid"] == UID
            assert pod["spec"]["restartPolicy"] == "Never"
        assert all(w["metadata"]["name"].endswith(f"-{SUFFIX}") for w in docs[2:])
