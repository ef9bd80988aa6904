"""What a mission reports: its summary while it runs, and its result (`result.json`) once it ends.

The supervisor builds these; they cross the actor boundary and reach `result.json` as `to_dict()`, the JSON form
every reader (CLI, report, run directory) takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from controlplane._core.task_record import TaskRecord


@dataclass(frozen=True, kw_only=True)
class MissionSummary:
    """Where a mission stands (`controlplane status`, `status --watch`)."""

    mission_id: str
    name: str
    status: str
    """A `MissionStatus` value."""
    reason: str
    """Why it ended; empty while it runs."""
    tasks: dict[str, int]
    """Tasks by state."""
    busy_agents: dict[str, int]
    """Agents with attempts in flight, and how many."""
    tokens: int
    usd: float
    llm_calls: int
    elapsed_s: float
    done: bool
    """True once the run directory is written."""
    approvals_waiting: int = 0
    """Tool calls (or the plan) that wait for a person's decision."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class MissionResult:
    """The full record of a mission."""

    mission_id: str
    name: str
    goal: str
    status: str
    """A `MissionStatus` value."""
    reason: str
    started_at: float
    """Unix time."""
    ended_at: float | None
    """Unix time; None while it runs."""
    wall_s: float
    tasks: list[TaskRecord]
    """Every task: output, attempts, tokens, USD, times."""
    usage: dict[str, Any]
    """Tokens, USD and calls of the agents, in all and `by_agent`, from the router's ledger."""
    control_plane: dict[str, Any]
    """The same for the control plane's own calls (planner, memory judge, resolver)."""
    conflicts: list[dict[str, Any]]
    """Conflict decisions, with what was applied."""
    plan: dict[str, Any] | None
    """The generated plan and its repairs (`plan: auto`), else None."""
    budgets: dict[str, Any]
    """The mission's budgets as declared."""
    agents: dict[str, Any]
    """Where the agents were placed."""
    run_dir: str | None
    log_head: dict[str, Any] | None = field(default=None)
    """Seq and hash of the mission log's last record (once ended), for `controlplane audit verify`."""

    def to_dict(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return fields | {"tasks": [task.to_dict() for task in self.tasks]}
