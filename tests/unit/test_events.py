"""events.EventAggregator: which occurrence updates which Event (client-go's correlation rules)."""

from __future__ import annotations

import pytest

from swarm_operator.events import COMBINED, EventAggregator, EventKey, Posted, Update

KEY = EventKey("ns", "c", "uid-1", "Warning", "Replacing")


@pytest.mark.parametrize(("key", "message", "now", "expected"), [
    pytest.param(KEY, "m", 100.0, Update("ev1", 4, "m"), id="same-message"),
    pytest.param(KEY, "other", 100.0, Update("ev1", 4, COMBINED + "other"), id="new-message-combined"),
    pytest.param(KEY, "m", 700.0, Update("ev1", 4, "m"), id="at-the-window-edge"),
    pytest.param(KEY, "m", 700.1, None, id="window-passed"),
    pytest.param(EventKey("ns", "c", "uid-1", "Warning", "Refused"), "m", 100.0, None, id="other-reason"),
    pytest.param(EventKey("ns", "c", "uid-1", "Normal", "Replacing"), "m", 100.0, None, id="other-type"),
    pytest.param(EventKey("ns", "c", "uid-2", "Warning", "Replacing"), "m", 100.0, None, id="recreated-object"),
])
def test_update_for(key: EventKey, message: str, now: float, expected: Update | None) -> None:
    events = EventAggregator(window=600.0)
    events.remember(KEY, Posted("ev1", 3, "m", 100.0))
    assert events.update_for(key, message, now) == expected


def test_a_combined_message_stays_combined() -> None:
    events = EventAggregator()
    events.remember(KEY, Posted("ev1", 2, COMBINED + "b", 0.0))
    assert events.update_for(KEY, "b", 1.0) == Update("ev1", 3, COMBINED + "b")


def test_forgotten_and_evicted_keys_start_new_events() -> None:
    events = EventAggregator(max_keys=2)
    keys = [EventKey("ns", f"c{i}", "u", "Warning", "Replacing") for i in range(3)]
    for i, key in enumerate(keys):
        events.remember(key, Posted(f"ev{i}", 1, "m", 0.0))
    assert [events.update_for(k, "m", 1.0) is not None for k in keys] == [False, True, True]
    events.forget(keys[2])
    assert events.update_for(keys[2], "m", 1.0) is None
