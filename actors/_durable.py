"""The supervisor's durable side: its mission log on storage, and what it finds there when it (re)starts.

A supervisor opens the log of its run directory before anything else. An empty log is a fresh mission; a log
that ends in a final status is served as it is; a log that holds a cancel is finished stopping; any other log
is a mission to continue (after a supervisor restart by Ray, or `controlplane resume` on a new cluster).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from controlplane._core.events import Event
from controlplane._core.recovery import RecoveredState, replay
from controlplane._logfile import DurableEventLog, MissionLogWriter, read_log
from controlplane._rundir import read_result

logger = logging.getLogger(__name__)
_BAD_KIND_CHARS = re.compile(r"[^a-z_]")


class Start(str, Enum):
    """What a supervisor does with the log it finds."""

    FRESH = "fresh"
    FINISHED = "finished"
    CANCELLING = "cancelling"
    RESUME = "resume"


@dataclass(kw_only=True)
class Opened:
    """A supervisor's log, opened."""

    writer: MissionLogWriter
    """The one writer of the log, continuing after its last record."""
    state: RecoveredState
    """The mission as the log left it (empty for a fresh mission)."""
    start: Start
    """What to do with it."""
    result: dict[str, Any] | None = None
    """result.json of a finished mission, when it was written."""


def default_run_dir(mission_id: str) -> str:
    """A new temporary run directory, for missions started without one (tests, notebooks)."""
    root = Path(tempfile.gettempdir()) / "controlplane-runs"
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{mission_id}-", dir=root)


def open_mission(run_dir: str) -> Opened:
    """Replay the log under `run_dir` (if any) and open its writer."""
    state = replay(read_log(run_dir))
    writer = MissionLogWriter(run_dir)
    if state.spec is None:
        start = Start.FRESH
    elif state.finished:
        start = Start.FINISHED
    elif state.cancel_reason is not None:
        start = Start.CANCELLING
    else:
        start = Start.RESUME
    return Opened(writer=writer, state=state, start=start,
                  result=read_result(run_dir) if start == Start.FINISHED else None)


class MissionJournal(DurableEventLog):
    """The supervisor's event stream: every event also goes to the mission log. Event statuses that are not
    valid record kinds (`tool` events carry free statuses) are normalised, never dropped."""

    def emit(self, now_s: float, kind: str, status: str, **fields: Any) -> Event:
        if kind == "tool":
            status = _BAD_KIND_CHARS.sub("_", str(status).lower()) or "event"
        return super().emit(now_s, kind, status, **fields)


def budget_fields(exceeded: Any) -> dict[str, Any]:
    """The data of a `budget.exceeded` record, from a BudgetExceeded error value."""
    return {"budget": exceeded.budget, "limit": exceeded.limit, "used": exceeded.used}
