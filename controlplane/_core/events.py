"""The one event stream of a mission: every state transition is an event, in order.

Progress, metrics, events.jsonl and (in later waves) checkpoints and the audit log all read this stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED})


class MissionStatus(StrEnum):
    STARTING = "starting"
    PLANNING = "planning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"


@dataclass(frozen=True, kw_only=True)
class Event:
    """One transition. `kind` is `mission`, `task`, `plan`, `conflict` or `budget`."""

    seq: int
    """Position in the stream, from 0."""
    time_s: float
    """When it happened (the clock the caller passed in)."""
    kind: str
    """What changed."""
    status: str
    """The new state."""
    task: str | None = None
    """The task, for task events."""
    agent: str | None = None
    """The agent involved, if any."""
    attempt: int | None = None
    """The attempt number, for task events."""
    message: str = ""
    """Why, in words (no prompts or outputs)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Structured detail: tokens, latency, a plan, a conflict decision."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "", {})}


class EventLog:
    """Append-only list of events with one INFO log line per event."""

    def __init__(self, mission_id: str) -> None:
        self.mission_id = mission_id
        self.events: list[Event] = []

    def emit(self, now_s: float, kind: str, status: str, **fields: Any) -> Event:
        event = Event(seq=len(self.events), time_s=now_s, kind=kind, status=str(status), **fields)
        self.events.append(event)
        return event

    def resume(self, events: Sequence[Event]) -> None:
        """Go on after `events`, the stream of an earlier process (already in the log: not emitted again)."""
        self.events.extend(events)

    def since(self, cursor: int) -> list[Event]:
        return self.events[cursor:]
