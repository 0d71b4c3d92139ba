"""leader.may_take: who may hold the Lease (the pure part of leader election)."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.leader import may_take
from swarm_operator.times import micro_time

NOW = 1_700_000_000.0
ME = "op-a"


@pytest.mark.parametrize(
    ("spec", "now", "expected"),
    [
        pytest.param({}, NOW, True, id="no-holder"),
        pytest.param({"holderIdentity": ""}, NOW, True, id="released"),
        pytest.param({"holderIdentity": ME, "renewTime": micro_time(NOW - 1), "leaseDurationSeconds": 15}, NOW,
                     True, id="mine-renew"),
        pytest.param({"holderIdentity": ME, "renewTime": micro_time(NOW - 100), "leaseDurationSeconds": 15}, NOW,
                     True, id="mine-even-if-expired"),
        pytest.param({"holderIdentity": "op-b", "renewTime": micro_time(NOW - 5), "leaseDurationSeconds": 15}, NOW,
                     False, id="other-holder-fresh"),
        pytest.param({"holderIdentity": "op-b", "renewTime": micro_time(NOW - 15), "leaseDurationSeconds": 15}, NOW,
                     False, id="other-holder-exactly-at-expiry"),
        pytest.param({"holderIdentity": "op-b", "renewTime": micro_time(NOW - 15.5), "leaseDurationSeconds": 15},
                     NOW, True, id="other-holder-expired"),
        pytest.param({"holderIdentity": "op-b", "renewTime": micro_time(NOW - 20)}, NOW, True,
                     id="default-duration-15s-expired"),
        pytest.param({"holderIdentity": "op-b", "renewTime": micro_time(NOW - 10)}, NOW, False,
                     id="default-duration-15s-fresh"),
        pytest.param({"holderIdentity": "op-b", "renewTime": micro_time(NOW - 20), "leaseDurationSeconds": 60},
                     NOW, False, id="longer-lease"),
        pytest.param({"holderIdentity": "op-b"}, NOW, True, id="other-holder-never-renewed"),
        pytest.param({"holderIdentity": "op-b", "renewTime": "2023-11-14T22:13:15Z", "leaseDurationSeconds": 15},
                     NOW, False, id="renew-time-without-fraction"),
    ],
)
def test_may_take(spec: dict[str, Any], now: float, expected: bool) -> None:
    assert may_take(spec, ME, now) is expected
