"""Read the Dockerfile into stages of instructions, for the tests that check it or replay its commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, …
    text: str  # the rest, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.text for i in self.instructions if i.keyword == keyword]


@dataclass(frozen=True)
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_args(self, stage: Stage) -> dict[str, str]:
        """ARG defaults declared inside a stage."""
        out: dict[str, str] = {}
        for text in stage.all("ARG"):
            name, _, default = text.partition("=")
            out[name.strip()] = default.strip()
        return out


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        out.append(Instruction(keyword.upper(), " ".join(rest.split())))
        pending = ""
    return out


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(path.read_text()):
        if ins.keyword == "FROM":
            words = ins.text.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if ins.keyword == "ARG":
                name, _, default = ins.text.partition("=")
                args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(args, stages)


def run_command(text: str) -> str:
    """A RUN instruction's shell command, without its --mount/--network/--security flags."""
    return re.sub(r"^(--[a-z]+=\S+\s+)+", "", text)


def env_pairs(text: str) -> dict[str, str]:
    """ENV k=v k2=v2 (the form this Dockerfile uses)."""
    return dict(word.split("=", 1) for word in shlex.split(text))
