"""An agent step's prompt: role, instructions, task, dependency results and memory hits; and its output."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from controlplane._core.timeline import AttemptDetail
from controlplane.config.mission import AgentSpec, TaskSpec

CONTEXT_CHARS_PER_DEP = 600
MEMORY_CHARS_PER_HIT = 300


@dataclass(frozen=True, kw_only=True)
class StepResult:
    """What one agent step returns to the supervisor."""

    output: Any
    """The answer: text, or the parsed object for a JSON-schema task."""
    prompt_tokens: int
    """Prompt tokens of the model call."""
    completion_tokens: int
    """Completion tokens of the model call."""
    usd: float = 0.0
    """What the model call cost, as the router charged it."""
    attempt: int
    """The attempt this result belongs to."""
    started_at_s: float
    """Unix time the step began."""
    ended_at_s: float
    """Unix time the step ended."""
    model_latency_s: float
    """Seconds spent in the router call."""
    memory_hits: int = 0
    """Memory hits put into the prompt (`fixed_memory`)."""
    posted: int = 0
    """Entries posted to memory."""
    model_calls: int = 1
    """Router calls the step made (the loop's steps, repair turns included)."""
    tool_calls: int = 0
    """Tool calls the model asked for, denied ones included."""
    tools_s: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each tool, by name."""
    loop: dict[str, Any] | None = None
    """The tool loop's transcript: steps, calls (names and argument digests, never arguments), stop cause."""
    detail: AttemptDetail = field(default_factory=AttemptDetail)
    """Where the attempt's time and money went: router queue, model and tool seconds, dollars, tokens, model."""
    model_call_records: list[dict[str, Any]] = field(default_factory=list)
    """The attempt's `model.call` audit records; the supervisor moves them into the mission log."""

    def fields(self) -> dict[str, Any]:
        """The fields by name, the detail as a dict. Unlike `asdict`, the other values are not deep-copied (the
        supervisor takes this for every result)."""
        return {**vars(self), "detail": asdict(self.detail)}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, sort_keys=True)


def build_messages(agent: AgentSpec, *, goal: str, task: TaskSpec, context: Mapping[str, Any],
                   memory_hits: Sequence[str] = ()) -> list[dict[str, str]]:
    """System prompt from role + instructions; user prompt from goal, task, dependency results, memory hits."""
    system = f"You are the {agent.role} of a team. {agent.instructions}".strip()
    parts = [f"Team goal: {goal}", f"Your task ({task.id}): {task.description}"]
    if context:
        parts.append("Results of earlier tasks:")
        parts += [f"[{dep}] {_clip(as_text(out), CONTEXT_CHARS_PER_DEP)}" for dep, out in context.items()]
    if memory_hits:
        parts.append("Notes from shared memory:")
        parts += [f"- {_clip(hit, MEMORY_CHARS_PER_HIT)}" for hit in memory_hits]
    if isinstance(task.expected_output, str):
        parts.append(f"Expected output: {task.expected_output}")
    elif isinstance(task.expected_output, dict):
        parts.append("Answer with JSON that matches the required schema.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]


def output_schema(task: TaskSpec) -> dict[str, Any] | None:
    """The JSON schema to constrain decoding with, when the task asks for structured output."""
    return task.expected_output if isinstance(task.expected_output, dict) else None


def parse_output(task: TaskSpec, text: str) -> Any:
    """Text as is; for a JSON-schema task the parsed object (ValueError when it is not JSON)."""
    if output_schema(task) is None:
        return text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"task {task.id!r} asked for JSON but the model returned invalid JSON ({exc.msg} "
                         f"at char {exc.pos})") from None
