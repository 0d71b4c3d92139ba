"""What the SwarmJob state machine (jobs/machine.py) asks for; jobs/turn.py carries each out. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CreateCluster:
    name: str
    attempt: int


@dataclass(frozen=True)
class DeleteCluster:
    name: str
    reason: str


@dataclass(frozen=True)
class ScaleWorkersToZero:
    name: str
    reason: str


@dataclass(frozen=True)
class Submit:
    job_id: str
    head_ip: str


@dataclass(frozen=True)
class CreateSubmitter:
    name: str
    attempt: int
    job_id: str


@dataclass(frozen=True)
class StopRayJob:
    job_id: str
    head_ip: str
    reason: str


@dataclass(frozen=True)
class DeleteJob:
    reason: str


Action = CreateCluster | DeleteCluster | ScaleWorkersToZero | Submit | CreateSubmitter | StopRayJob | DeleteJob
