"""autoscaler/ray_version.py: spec.rayVersion against the head's Ray, and the GCS client's tested span."""

from __future__ import annotations

import pytest

from swarm_operator.autoscaler.ray_version import check


@pytest.mark.parametrize(
    ("declared", "reported", "supported", "warned"),
    [
        pytest.param("2.60.0", "2.60.0", True, [], id="as-declared"),
        pytest.param(None, "2.50.1", True, [], id="undeclared-within-the-span"),
        pytest.param("2.60.0", None, True, [], id="head-says-nothing-yet"),
        pytest.param("2.60.0", "2.59.0", True, ["spec.rayVersion is 2.60.0 but the head runs Ray 2.59.0"],
                     id="declared-differs-patch-or-minor"),
        pytest.param(None, "2.39.0", False, ["known to work with Ray 2.40–2.60.0"], id="older-than-tested"),
        pytest.param(None, "2.61.0", False, ["known to work with Ray 2.40–2.60.0"], id="newer-than-the-client"),
        pytest.param("3.0.0", "3.0.0", False, ["runs Ray 3.0.0"], id="another-major"),
        pytest.param("2.60.0", "2.30.0", False, ["but the head runs Ray 2.30.0", "known to work"], id="both"),
        pytest.param(None, "nightly", True, [], id="unparsable-is-not-claimed-unsupported"),
    ],
)
def test_check(declared: str | None, reported: str | None, supported: bool, warned: list[str]) -> None:
    result = check(declared, reported, "2.60.0")
    assert result.supported is supported
    assert len(result.warnings) == len(warned)
    for fragment, text in zip(warned, result.warnings, strict=True):
        assert fragment in text
