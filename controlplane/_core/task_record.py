"""What the scheduler hands out (`Assignment`) and keeps per task (`TaskRecord`). Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane._core.events import TaskStatus
from controlplane.config.mission import TaskSpec


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """Run `task` on `agent`; `attempt` counts every attempt of the task from 1."""

    task: str
    agent: str
    attempt: int
    deadline_s: float
    changes: dict[str, Any] = field(default_factory=dict)
    """Overrides for this attempt's model call chosen by the retry (`max_tokens`, `repair_turn`)."""


@dataclass(kw_only=True)
class TaskRecord:
    """The live state of one task."""

    spec: TaskSpec
    status: TaskStatus = TaskStatus.PENDING
    agent: str | None = None
    attempts: int = 0
    round_attempts: int = 0
    on_fallback: bool = False
    ready_seq: int = 0
    ready_at_s: float = 0.0
    deadline_s: float = float("inf")
    started_at_s: float | None = None
    ended_at_s: float | None = None
    output: Any = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    delegated_by: str | None = None
    """The task whose agent added this one with `delegate`; None for planned tasks."""
    model_calls: int = 0
    tool_calls: int = 0
    loop: dict[str, Any] | None = None
    """The successful attempt's tool-loop transcript (names and digests, no content), if it ran the loop."""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.spec.id, "agent": self.agent, "status": str(self.status), "output": self.output,
                "attempts": self.attempts, "error": self.error,
                "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
                "usd": round(self.usd, 8),
                "started_at": self.started_at_s, "ended_at": self.ended_at_s, "depends_on": self.spec.depends_on,
                "delegated_by": self.delegated_by, "model_calls": self.model_calls, "tool_calls": self.tool_calls,
                "loop": self.loop}
