"""swarm_operator.times: the Kubernetes time formats the operator writes, and reading them back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from swarm_operator.times import deadline_timestamp, micro_time, parse_time, timestamp

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(None, 0.0, id="none"),
        pytest.param("", 0.0, id="empty"),
        pytest.param("2023-11-14T22:13:20Z", NOW, id="zulu"),
        pytest.param("2023-11-14T22:13:20.500000Z", NOW + 0.5, id="micro"),
        pytest.param("2023-11-14T22:13:20.250Z", NOW + 0.25, id="millis"),
        pytest.param("2023-11-14T23:13:20+01:00", NOW, id="offset"),
    ],
)
def test_parse_time(text: str | None, expected: float) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("write", "epoch", "text"),
    [
        pytest.param(timestamp, NOW, "2023-11-14T22:13:20Z", id="time"),
        pytest.param(timestamp, NOW + 0.9, "2023-11-14T22:13:20Z", id="time-drops-fractions"),
        pytest.param(micro_time, NOW + 0.25, "2023-11-14T22:13:20.250000Z", id="micro-time"),
        pytest.param(deadline_timestamp, NOW + 0.25, "2023-11-14T22:13:20.250Z", id="deadline-millis"),
        pytest.param(deadline_timestamp, NOW + 0.2501, "2023-11-14T22:13:20.251Z", id="deadline-rounds-up"),
        pytest.param(deadline_timestamp, NOW + 0.9999, "2023-11-14T22:13:21.000Z", id="deadline-carries"),
    ],
)
def test_written_forms(write: Callable[[float], str], epoch: float, text: str) -> None:
    assert write(epoch) == text


@pytest.mark.parametrize("epoch", [NOW, NOW + 0.25, NOW + 0.123])
def test_micro_time_and_deadlines_round_trip(epoch: float) -> None:
    assert parse_time(micro_time(epoch)) == pytest.approx(epoch, abs=1e-6)
    assert parse_time(deadline_timestamp(parse_time(deadline_timestamp(epoch)))) \
        == parse_time(deadline_timestamp(epoch)) >= epoch
