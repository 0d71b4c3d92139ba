"""Which components `python -m localcluster build` builds: KubeRay and Kueue only when asked for."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from localcluster import build, versions


def names(comps: list[build.Component]) -> list[str]:
    return [c.name for c in comps]


def test_default_build_leaves_kuberay_and_kueue_out() -> None:
    assert "kuberay" not in names(build.selected())
    assert "kueue" not in names(build.selected())
    assert names(build.selected()) == names(build.components())


def test_kuberay_is_built_when_named() -> None:
    assert names(build.selected(["kuberay"])) == ["kuberay"]
    assert names(build.selected(["etcd", "kuberay"])) == ["etcd", "kuberay"]


def test_kuberay_is_cached_by_version() -> None:
    (comp,) = build.selected(["kuberay"])
    assert comp.version == versions.KUBERAY
    assert comp.outputs == (versions.tool_path("kuberay-operator"),)
    assert versions.KUBERAY in comp.outputs[0].parts
    assert versions.kuberay_crds().parent == comp.outputs[0].parent.parent


def test_kueue_is_cached_by_version_with_its_crds_and_webhooks() -> None:
    (comp,) = build.selected(["kueue"])
    assert comp.version == versions.KUEUE
    assert comp.outputs == (versions.tool_path("kueue"),)
    assert versions.KUEUE in comp.outputs[0].parts
    assert versions.kueue_crds().parent == versions.kueue_webhooks().parent == comp.outputs[0].parent.parent


def test_unknown_component_is_refused() -> None:
    with pytest.raises(build.BuildError, match="unknown component"):
        build.selected(["kuberay", "nope"])


def test_a_second_build_of_a_component_waits_for_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    comp = build.Component("kueue", "v0.0.1", (), lambda work, log: None)
    second_in = threading.Event()

    def second() -> None:
        with build._component_lock(tmp_path, comp, "kueue v0.0.1"):
            second_in.set()

    with build._component_lock(tmp_path, comp, "kueue v0.0.1"):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not second_in.wait(0.5), "a second build ran while the first held the component"
    waiter.join(5)
    assert second_in.is_set(), "the second build never went on after the first ended"
    assert "another build of it is under way; waiting for it" in capsys.readouterr().out
