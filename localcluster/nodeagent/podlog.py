"""A pod's agent log (``<pod dir>/pod.log``): what the node agent did with the pod, for whoever debugs it."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from swarm_operator.times import timestamp


class PodLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._said: set[str] = set()

    def note(self, message: str) -> None:
        with contextlib.suppress(OSError), self.path.open("a") as fh:
            fh.write(f"{timestamp(time.time())} {message}\n")

    def note_once(self, message: str) -> None:
        """For what would repeat on every start of a container (an unsupported volume kind)."""
        if message not in self._said:
            self._said.add(message)
            self.note(message)
