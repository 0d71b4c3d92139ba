"""What the operator keeps only in memory about each object it serves: one typed record per key.

Nothing here may be needed after a restart (that lives on the object: status, annotations); a record holds
what saves work or noise (warnings given once, a token read once, when the next Ray read is due, which
metric series exist). Forgetting an object is one delete, which hands back the record so that what it set
up elsewhere (metric series, a Ray connection) can be released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from swarm_operator.kit.cache import Key

R = TypeVar("R")


class Memories(Generic[R]):
    def __init__(self, new: Callable[[], R]) -> None:
        self._new = new
        self._records: dict[Key, R] = {}

    def __getitem__(self, key: Key) -> R:
        """The object's record, made empty on first use."""
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = self._new()
        return record

    def __contains__(self, key: Key) -> bool:
        return key in self._records

    def forget(self, key: Key) -> R | None:
        """Drop the object's record; it is returned (None if there was none) for releasing what it set up."""
        return self._records.pop(key, None)
