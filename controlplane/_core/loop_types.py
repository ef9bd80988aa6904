"""What crosses the agent loop's edges: the request to the router, the decisions, tool calls and results,
events, and the transcript that goes into a task's result. All frozen and picklable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from controlplane._core.tools import Authorization, ToolSpec, clip_result, result_to_text
from controlplane.errors import ToolError

ToolStyle = Literal["native", "constrained"]
StopCause = Literal["max_steps", "max_tool_calls", "loop", "invalid_output", "invalid_reply"]


@dataclass(frozen=True, kw_only=True)
class LoopLimits:
    """Bounds of one task's loop."""

    max_steps: int = 8
    """Model calls, repair turns included."""
    max_tool_calls: int = 16
    """Tool calls the model may ask for, denied ones included."""
    loop_repeat_limit: int = 3
    """The same call (tool and arguments) this many times ends the task."""
    final_on_last_step: bool = True
    """The last step offers no tools and asks for the answer, so a weak model ends with one instead of stopping."""


@dataclass(frozen=True, kw_only=True)
class LoopRequest:
    """What to send to the router for the next step."""

    messages: list[dict[str, Any]]
    """The conversation, OpenAI-shaped (roles system, user, assistant with tool_calls, tool)."""
    tools: list[dict[str, Any]] | None = None
    """Native style: OpenAI `tools`; send `tool_choice="auto"` and `parallel_tool_calls=True` with them."""
    json_schema: dict[str, Any] | None = None
    """Guided decoding: the action union (constrained), or the output schema of a final-only turn."""


@dataclass(frozen=True, kw_only=True)
class LoopEvent:
    """A tool event for the mission's event stream: `EventLog.emit(now_s, **event.emit_fields())`."""

    status: str
    """denied, needs_approval, invalid_arguments or failed."""
    agent: str
    """The calling agent."""
    task: str | None
    """The task it runs."""
    message: str
    """Why, in words; names and digests only, never arguments."""
    data: dict[str, Any]
    """tool, arguments_digest, call_id, and the decision for the door's events."""

    def emit_fields(self) -> dict[str, Any]:
        return {"kind": "tool", "status": self.status, "agent": self.agent, "task": self.task,
                "message": self.message, "data": self.data}


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A call that passed the door and the schema check; the actor runs it (after an approval if it needs one)."""

    id: str
    """The call id the result must carry."""
    tool: ToolSpec
    """The tool: its timeout, resources and result limit."""
    arguments: dict[str, Any]
    """Arguments, valid under the tool's schema."""
    authorization: Authorization
    """The door's answer: `allowed` or `needs_approval`."""

    @property
    def name(self) -> str:
        return self.tool.name


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """The outcome of one call, as the model will read it."""

    call_id: str
    """The call's id."""
    name: str
    """The tool's name."""
    content: str
    """The text for the model: the clipped result, or `Error: ...`."""
    ok: bool
    """False when the call failed, was denied or had invalid arguments."""
    duration_s: float = 0.0
    """How long the call ran (the caller measures it)."""

    @classmethod
    def success(cls, call: ToolCall, value: Any, *, duration_s: float = 0.0) -> ToolResult:
        """A returned value as JSON text, clipped to the tool's max_result_chars; not JSON-serialisable fails."""
        try:
            text = result_to_text(value, tool=call.name)
        except ToolError as exc:
            return cls.failure(call, exc, duration_s=duration_s)
        return cls(call_id=call.id, name=call.name, content=clip_result(text, call.tool.max_result_chars), ok=True,
                   duration_s=duration_s)

    @classmethod
    def failure(cls, call: ToolCall, error: BaseException | str, *, duration_s: float = 0.0) -> ToolResult:
        """A tool error the model can read: a ToolError's `why`, or the exception's type and text."""
        why = error if isinstance(error, str) else f"tool {call.name!r} failed: {failure_reason(error)}"
        return cls(call_id=call.id, name=call.name, content=f"Error: {why}", ok=False, duration_s=duration_s)


def failure_reason(error: BaseException) -> str:
    """Why a tool call failed: a ToolError's `why`, else the exception's type and text."""
    return str(error.fields["why"]) if isinstance(error, ToolError) else f"{type(error).__name__}: {error}"


@dataclass(frozen=True, kw_only=True)
class RunTools:
    """Run these calls (concurrently), then pass every result to `on_tool_results` (an empty list if none)."""

    calls: list[ToolCall]
    events: list[LoopEvent] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Finished:
    """The task's answer, valid under expected_output: text, or the parsed JSON value."""

    output: Any
    events: list[LoopEvent] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Repair:
    """The reply was invalid; `message` was appended for the model. Call `next_request()` again."""

    message: str
    events: list[LoopEvent] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Stopped:
    """The loop ended without an answer; the task fails with `AgentStopped(cause, why=reason, fix)`."""

    cause: StopCause
    reason: str
    fix: str
    events: list[LoopEvent] = field(default_factory=list)


Decision = RunTools | Finished | Repair | Stopped


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    """One model call of the transcript."""

    step: int
    finish_reason: str
    tool_calls: int
    latency_s: float
    decision: str


@dataclass(frozen=True, kw_only=True)
class ToolRecord:
    """One tool call of the transcript: names and digests, no content."""

    step: int
    call_id: str
    tool: str
    arguments_digest: str
    status: str
    """ok, error, denied or invalid_arguments."""
    duration_s: float = 0.0
    result_chars: int = 0


@dataclass(frozen=True, kw_only=True)
class LoopSummary:
    """What the task's result reports about its loop."""

    steps: int
    tool_calls: int
    repairs: int
    stop_cause: str | None
    stop_reason: str
    step_records: list[StepRecord]
    tool_records: list[ToolRecord]
