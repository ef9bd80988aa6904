"""Recovery: a mission's state rebuilt from its log, and the exactly-once rule for side-effecting tools.

`replay(records)` folds the log into a `RecoveredState`: the spec and plan, each task's state (finished
tasks with their outputs, attempts in flight, retry counters and times), delegated tasks, conflict
decisions, budget used, and every tool call. `rebuild_scheduler` turns it into a running `Scheduler`.
`ToolCallJournal` decides, for each tool call of an attempt, whether to replay a recorded result,
execute, or refuse. Pure: no I/O, no clock, no Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane._core.events import Event, EventLog, TaskStatus
from controlplane._core.mission_log import FINAL_MISSION_STATUSES, Record, record_event
from controlplane._core.scheduler import Scheduler
from controlplane._core.task_record import Assignment, TaskRecord
from controlplane.config.mission import AgentSpec, Policies, TaskSpec


@dataclass(kw_only=True)
class TaskState:
    """One task as the log left it. `status` is a TaskStatus value; `running` means an attempt was in flight."""

    task: str
    status: str = "pending"
    agent: str | None = None
    attempts: int = 0
    round_attempts: int = 0
    on_fallback: bool = False
    retry_at_s: float = 0.0
    changes: dict[str, Any] = field(default_factory=dict)
    attempt_key: str | None = None
    output: Any = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started_at_s: float | None = None
    ended_at_s: float | None = None

    def apply_to(self, record: TaskRecord) -> None:
        """Copy this state onto the scheduler's record of the task (status aside)."""
        record.agent, record.attempts, record.round_attempts = self.agent, self.attempts, self.round_attempts
        record.on_fallback, record.ready_at_s = self.on_fallback, self.retry_at_s
        record.output, record.error = self.output, self.error
        record.prompt_tokens, record.completion_tokens = self.prompt_tokens, self.completion_tokens
        record.started_at_s, record.ended_at_s = self.started_at_s, self.ended_at_s
        if self.changes:
            record.details["changes"] = dict(self.changes)


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """One recorded tool call: its intent, and its result once one was recorded."""

    key: str
    tool: str
    side_effects: bool
    idempotent: bool
    args_digest: str
    done: bool = False
    outcome: str | None = None
    result: Any = None


@dataclass(frozen=True, kw_only=True)
class Replay:
    """Do not run the tool: hand back the result recorded when it ran."""

    result: Any
    outcome: str
    """`ok` or `error`, as recorded."""
    args_match: bool
    """False when the new call's arguments differ from the recorded one's (the recorded effect still stands)."""


@dataclass(frozen=True, kw_only=True)
class Execute:
    """Run the tool (record its intent first when it has side effects)."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class Refuse:
    """Do not run the tool, and fail the task with `reason` (a ToolCallInDoubt message)."""

    reason: str


class ToolCallJournal:
    """Every tool call the log recorded, by key `<attempt_key>/call/<index>`; feed it records with `apply`."""

    def __init__(self) -> None:
        self.calls: dict[str, ToolCall] = {}

    @staticmethod
    def key(attempt_key: str, call_index: int) -> str:
        """The key of the `call_index`-th tool call (from 0) of an attempt (mission/task/attempt)."""
        return f"{attempt_key}/call/{call_index}"

    def apply(self, record: Record) -> None:
        data = record.data
        if record.kind == "tool.intent":
            self.calls[data["call_key"]] = ToolCall(
                key=data["call_key"], tool=data["tool"], side_effects=bool(data["side_effects"]),
                idempotent=bool(data["idempotent"]), args_digest=data["args_digest"])
        elif record.kind == "tool.result" and data["call_key"] in self.calls:
            call = self.calls[data["call_key"]]
            self.calls[call.key] = ToolCall(key=call.key, tool=call.tool, side_effects=call.side_effects,
                                            idempotent=call.idempotent, args_digest=call.args_digest, done=True,
                                            outcome=data["outcome"], result=data.get("result"))

    def decide(self, key: str, *, args_digest: str | None = None) -> Replay | Execute | Refuse:
        """Replay a finished side-effecting call; re-run an interrupted one only if it is idempotent."""
        from controlplane.errors import ToolCallInDoubt

        call = self.calls.get(key)
        if call is None:
            return Execute(reason="no call was recorded under this key")
        if not call.side_effects:
            return Execute(reason=f"tool {call.tool!r} has no side effects; running it again is harmless")
        if call.done:
            return Replay(result=call.result, outcome=call.outcome or "ok",
                          args_match=args_digest is None or args_digest == call.args_digest)
        if call.idempotent:
            return Execute(reason=f"tool {call.tool!r} was in flight and is idempotent; running it again is safe")
        return Refuse(reason=str(ToolCallInDoubt(tool=call.tool, call_key=key, args_digest=call.args_digest)))


@dataclass(kw_only=True)
class Budget:
    """What the mission used, from its `budget.charge` records."""

    tokens: int = 0
    llm_calls: int = 0
    usd: float = 0.0
    tokens_by_agent: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class RecoveredState:
    """Everything a new supervisor needs to continue a mission from its log."""

    mission_id: str | None = None
    name: str | None = None
    spec: dict[str, Any] | None = None
    """The mission spec as `MissionSpec.model_dump(mode="json")` (from `mission.start`)."""
    started_s: float | None = None
    """When `mission.start` was written: wall-time budgets count from here, across restarts."""
    plan: list[dict[str, Any]] | None = None
    """Task specs of the plan (`mission.plan`); None: the spec's declared tasks."""
    delegated: list[dict[str, Any]] = field(default_factory=list)
    """Task specs added by delegation, in order."""
    delegations: dict[str, str] = field(default_factory=dict)
    """The call key of each `delegate` call -> the id of the task it added."""
    tasks: dict[str, TaskState] = field(default_factory=dict)
    status: str | None = None
    """The last mission status recorded."""
    reason: str = ""
    finished: bool = False
    """A final mission status was recorded: nothing to resume."""
    cancel_reason: str | None = None
    """Set when a cancel was recorded: finish stopping, do not resume the work."""
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    open_conflicts: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    """Conflicts detected and not yet settled, by their two memory entries' ids (existing, new): the
    `conflict.detected` record's data."""
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Approval id -> its latest record (`Approval` fields, controlplane._core.approvals), in request order."""
    budget: Budget = field(default_factory=Budget)
    tools: ToolCallJournal = field(default_factory=ToolCallJournal)
    events: list[Event] = field(default_factory=list)
    """The mission's event stream so far, as its records hold it (`record_event`)."""
    last: Record | None = None
    """The last record replayed: a continuing writer chains onto it."""

    def task_specs(self, declared: Sequence[TaskSpec] = ()) -> list[TaskSpec]:
        """The tasks to schedule: the plan (or `declared`) plus delegated ones."""
        base = [TaskSpec.model_validate(t) for t in self.plan] if self.plan is not None else list(declared)
        return base + [TaskSpec.model_validate(t) for t in self.delegated]

    def in_flight(self) -> dict[str, TaskState]:
        return {t: s for t, s in self.tasks.items() if s.status == TaskStatus.RUNNING}

    def completed(self) -> dict[str, TaskState]:
        return {t: s for t, s in self.tasks.items() if s.status == TaskStatus.SUCCEEDED}


def replay(records: Iterable[Record]) -> RecoveredState:
    """Fold a verified log into the mission's state. Records of unknown kinds are skipped."""
    state = RecoveredState()
    for record in records:
        apply(state, record)
    return state


def apply(state: RecoveredState, record: Record) -> None:
    """Advance `state` by one record (the live supervisor may use it to keep a mirror)."""
    area = record.kind.split(".", 1)[0]
    event = record_event(record, len(state.events))
    if event is not None:
        state.events.append(event)
    if area == "task":
        _apply_task(state, record)
    elif area == "tool":
        state.tools.apply(record)
    elif area == "mission":
        _apply_mission(state, record)
    elif area == "conflict":
        _apply_conflict(state, record)
    elif record.kind == "budget.charge":
        _charge(state.budget, record.data)
    elif area == "approval":
        state.approvals[record.data["id"]] = {**state.approvals.get(record.data["id"], {}), **record.data}
    state.last = record


def _apply_conflict(state: RecoveredState, record: Record) -> None:
    if record.kind == "conflict.decision":
        state.conflicts.append(dict(record.data))
    entries = record.data.get("entries")
    if not entries:  # a log written before conflicts named their entries
        return
    key = (int(entries[0]), int(entries[1]))
    if record.kind == "conflict.detected":
        state.open_conflicts[key] = dict(record.data)
    elif record.kind in ("conflict.decision", "conflict.unresolved"):
        state.open_conflicts.pop(key, None)


def _apply_mission(state: RecoveredState, record: Record) -> None:
    data = record.data
    if record.kind == "mission.start":
        state.mission_id, state.name, state.spec = data["mission_id"], data["name"], data["spec"]
        state.started_s = record.time_s
    elif record.kind == "mission.plan":
        state.plan = list(data["tasks"])
    elif record.kind == "mission.cancel":
        state.cancel_reason = data["reason"]
    elif record.kind == "mission.status":
        state.status, state.reason = data["status"], data.get("message", "")
        state.finished = state.finished or data["status"] in FINAL_MISSION_STATUSES


def _apply_task(state: RecoveredState, record: Record) -> None:
    data, kind = record.data, record.kind
    if kind == "task.delegate":
        state.delegated.append(dict(data["task"]))
        if "call_key" in data:
            state.delegations[data["call_key"]] = data["task"]["id"]
        return
    task = state.tasks.setdefault(data["task"], TaskState(task=data["task"]))
    if kind == "task.ready":
        task.status = TaskStatus.READY
    elif kind == "task.dispatch":
        _dispatch(task, data, record.time_s)
    elif kind == "task.succeeded":
        task.status, task.output, task.error, task.ended_at_s = TaskStatus.SUCCEEDED, data["output"], None, \
            record.time_s
        _spend(task, data)
    elif kind == "task.retry":
        task.status, task.error, task.retry_at_s = TaskStatus.RETRYING, data["error"], float(data["retry_at_s"])
        task.changes = dict(data.get("changes") or {})
        _spend(task, data)
    elif kind == "task.fallback":
        task.status, task.error, task.on_fallback, task.round_attempts = TaskStatus.READY, data["error"], True, 0
        task.changes = {}
        _spend(task, data)
    elif kind in ("task.failed", "task.skipped", "task.cancelled"):
        task.status, task.ended_at_s = TaskStatus(kind.split(".")[1]), record.time_s
        task.error = data.get("error") or data.get("reason")
        _spend(task, data)


def _dispatch(task: TaskState, data: Mapping[str, Any], time_s: float) -> None:
    attempt = int(data["attempt"])
    if attempt > task.attempts:  # a relaunch of a recovered attempt repeats its number and counts once
        task.round_attempts += 1
    task.attempts = max(task.attempts, attempt)
    task.status, task.agent, task.attempt_key = TaskStatus.RUNNING, data["agent"], data["attempt_key"]
    task.changes = dict(data.get("changes") or {})
    if task.started_at_s is None:
        task.started_at_s = time_s


def _spend(task: TaskState, data: Mapping[str, Any]) -> None:
    task.prompt_tokens += int(data.get("prompt_tokens", 0))
    task.completion_tokens += int(data.get("completion_tokens", 0))
    task.attempt_key = None


def _charge(budget: Budget, data: Mapping[str, Any]) -> None:
    tokens = int(data["tokens"])
    budget.tokens += tokens
    budget.llm_calls += int(data.get("calls", 1))
    budget.usd += float(data.get("usd", 0.0))
    budget.tokens_by_agent[data["agent"]] = budget.tokens_by_agent.get(data["agent"], 0) + tokens


def rebuild_scheduler(state: RecoveredState, tasks: Sequence[TaskSpec], agents: Sequence[AgentSpec],
                      policies: Policies, events: EventLog, now_s: float) -> tuple[Scheduler, list[Assignment]]:
    """A Scheduler that continues where the log ends, and the in-flight attempts to launch again.

    `tasks` is `state.task_specs(spec.tasks)`. Events for what the log already holds are not repeated."""
    scheduler = Scheduler(tasks, agents, policies, EventLog(events.mission_id), now_s)
    scheduler.events = events
    return scheduler, scheduler.restore(state.tasks, now_s)
