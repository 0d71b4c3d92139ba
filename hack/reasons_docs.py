"""docs/operations.md's tables of Event reasons and condition types, from swarm_operator.reasons (one definition).

Each table sits between a BEGIN and an END marker line; everything else in the page is left as written.
"""

from __future__ import annotations

from swarm_operator.reasons import ConditionType, EventReason

EVENTS = "event reasons"
CONDITIONS = "condition types"


def begin(what: str) -> str:
    return f"<!-- BEGIN generated {what} (python -m hack.generate, from operator/swarm_operator/reasons.py) -->"


def end(what: str) -> str:
    return f"<!-- END generated {what} -->"


def events_table() -> str:
    rows = [f"| `{r}` | {r.event_type} | {r.meaning} |" for r in EventReason]
    return "\n".join(["| reason | type | what happened |", "|---|---|---|", *rows])


def conditions_table() -> str:
    rows = [f"| `{c}` | {c.meaning} |" for c in ConditionType]
    return "\n".join(["| condition | True means |", "|---|---|", *rows])


def with_tables(page: str) -> str:
    """The page with both tables rewritten between their markers (which must be there)."""
    for what, table in ((EVENTS, events_table()), (CONDITIONS, conditions_table())):
        head, sep, rest = page.partition(begin(what) + "\n")
        _, sep2, tail = rest.partition(end(what))
        if not sep or not sep2:
            raise ValueError(f"docs/operations.md has no markers for the {what} table")
        page = f"{head}{begin(what)}\n{table}\n{end(what)}{tail}"
    return page
