"""events.EventAggregator: which occurrence creates or updates which Event (client-go's correlator)."""

from __future__ import annotations

from swarm_operator.events import COMBINED, Decision, EventAggregator, EventKey, Posted

KEY = EventKey("ns", "c", "uid-1", "Warning", "Replacing")


def replay(events: EventAggregator, occurrences: list[tuple[EventKey, str, float]]) -> list[Decision]:
    """Decide each occurrence and remember it as the API server would store it (names ev1, ev2, …)."""
    decisions, created = [], 0
    for key, message, now in occurrences:
        d = events.decide(key, message, now)
        if d.update_of is None:
            created += 1
        events.remember(key, d.slot, Posted(d.update_of or f"ev{created}", d.count, now))
        decisions.append(d)
    return decisions


def test_the_same_message_counts_up_one_event() -> None:
    got = replay(EventAggregator(), [(KEY, "m", t) for t in (0.0, 1.0, 2.0)])
    assert got == [Decision("m", "m"), Decision("m", "m", "ev1", 2), Decision("m", "m", "ev1", 3)]


def test_distinct_messages_stay_distinct_while_few() -> None:
    got = replay(EventAggregator(max_similar=10), [(KEY, f"m{i}", float(i)) for i in range(3)])
    assert [d.update_of for d in got] == [None, None, None]
    assert [d.message for d in got] == ["m0", "m1", "m2"]


def test_past_max_similar_everything_goes_to_one_combined_event() -> None:
    got = replay(EventAggregator(max_similar=3), [(KEY, f"worker w{i} failed", float(i)) for i in range(7)])
    assert [d.update_of for d in got] == [None, None, None, None, "ev4", "ev4", "ev4"]
    assert [d.count for d in got[3:]] == [1, 2, 3, 4]
    assert got[-1].message == COMBINED + "worker w6 failed"


def test_the_window_forgets_old_occurrences() -> None:
    events = EventAggregator(window=600.0, max_similar=2)
    got = replay(events, [(KEY, "a", 0.0), (KEY, "b", 1.0), (KEY, "c", 2.0), (KEY, "a", 700.0)])
    assert got[2].slot == COMBINED  # three within the window
    assert got[3] == Decision("a", "a")  # the others are older than the window: a new Event again


def test_other_reasons_types_and_objects_are_apart() -> None:
    others = [EventKey("ns", "c", "uid-1", "Warning", "Refused"), EventKey("ns", "c", "uid-1", "Normal", "Replacing"),
              EventKey("ns", "c", "uid-2", "Warning", "Replacing")]
    events = EventAggregator()
    replay(events, [(KEY, "m", 0.0)])
    assert [events.decide(k, "m", 1.0).update_of for k in others] == [None, None, None]


def test_forgotten_and_evicted_events_start_anew() -> None:
    events = EventAggregator(max_keys=2)
    keys = [EventKey("ns", f"c{i}", "u", "Warning", "Replacing") for i in range(3)]
    replay(events, [(k, "m", 0.0) for k in keys])
    assert [events.decide(k, "m", 1.0).update_of is not None for k in keys] == [False, True, True]
    events.forget(keys[2], "m")
    assert events.decide(keys[2], "m", 2.0).update_of is None
