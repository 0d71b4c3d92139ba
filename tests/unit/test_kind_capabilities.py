"""localcluster.kind names the capabilities a sandbox withholds, for the runc wrapper to drop."""

from __future__ import annotations

from localcluster.kind import CAPABILITIES, unheld_capabilities

EVERY_CAPABILITY = (1 << len(CAPABILITIES)) - 1


def status(bounding: int) -> str:
    return f"Name:\tpython\nCapPrm:\t{bounding:016x}\nCapBnd:\t{bounding:016x}\nCapAmb:\t0000000000000000\n"


def test_a_full_bounding_set_withholds_nothing() -> None:
    assert unheld_capabilities(status(EVERY_CAPABILITY)) == []


def test_names_each_missing_bit() -> None:
    without = EVERY_CAPABILITY & ~(1 << 24) & ~(1 << 21)
    assert unheld_capabilities(status(without)) == ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"]
