"""The tool-calling loop's decisions as a plain state machine; the agent actor does the I/O.

The same machine serves both tool-call styles (see `actions`). The actor drives it like this:

    loop = AgentLoop(agent=..., task=..., messages=..., known_tools=..., allow=agent.tools, ...)
    while True:
        request = loop.next_request()                  # messages, and tools (native) or json_schema
        reply = await router.chat(...)                 # built from the request
        decision = loop.on_reply(reply.text, reply.tool_calls, reply.finish_reason, latency_s=...)
        emit(decision.events)
        if isinstance(decision, RunTools):             # run decision.calls concurrently -> ToolResult each
            emit(loop.on_tool_results(results))
        elif isinstance(decision, Finished | Stopped):
            break                                      # Repair: ask again
    loop.summary()                                     # goes into the task's result

Every call passes through `authorize()` and the tool's schema before it reaches `RunTools`; a denied or
invalid call is answered here with a tool error the model can read, and recorded as an event.
The types it takes and returns live in `loop_types`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from controlplane._core.actions import (
    MAX_STRING_CHARS,
    BadReply,
    FinalAnswer,
    RawCall,
    action_schema,
    constrained_instructions,
    final_only_schema,
    final_value_schema,
    native_assistant_message,
    parse_constrained,
    parse_native,
    strip_fence,
    wire_names,
)
from controlplane._core.loop_types import (
    Decision,
    Finished,
    LoopEvent,
    LoopLimits,
    LoopRequest,
    LoopSummary,
    Repair,
    RunTools,
    StepRecord,
    StopCause,
    Stopped,
    ToolCall,
    ToolRecord,
    ToolResult,
    ToolStyle,
)
from controlplane._core.tools import (
    Authorization,
    ToolSpec,
    allowed,
    arguments_digest,
    authorize,
    schema_errors,
    validate_arguments,
)

MAX_REPAIRS = 1
LAST_STEP_MESSAGE = "This is your last step: give your final answer now."
FIXES: dict[str, str] = {
    "max_steps": "raise the agent's max_steps, or split the task so it needs fewer steps",
    "max_tool_calls": "raise the agent's max_tool_calls, or split the task",
    "loop": "say in the task or the agent's instructions when it is done, or raise loop_repeat_limit",
    "invalid_output": "simplify the task's expected_output schema, or say in the task what each field holds",
    "invalid_reply": "use `tool_style: constrained` for this model (guided JSON), or a larger model",
}


class AgentLoop:
    """One task's tool-calling loop. Not thread-safe; one actor coroutine drives it."""

    def __init__(self, *, agent: str, task: str | None, messages: Sequence[Mapping[str, Any]],
                 known_tools: Mapping[str, ToolSpec], allow: Sequence[str], approve_patterns: Sequence[str] = (),
                 limits: LoopLimits = LoopLimits(), expected_output: str | Mapping[str, Any] | None = None,
                 tool_style: ToolStyle = "constrained", max_string_chars: int = MAX_STRING_CHARS) -> None:
        """`max_string_chars` bounds free strings in the constrained grammar. A token holds at least one
        character, so `max_tokens - 32` guarantees a string closes before max_tokens cuts the reply."""
        self.agent, self.task, self.limits = agent, task, limits
        self.steps = self.tool_calls = self.repairs = 0
        self._known, self._allow, self._approve = dict(known_tools), list(allow), list(approve_patterns)
        self._offered = [known_tools[name] for name in sorted(known_tools) if allowed(allow, name)]
        # With no tool to offer there is no action to choose: the model answers plainly (or in the output schema).
        self.style: ToolStyle = tool_style if self._offered else "native"
        self._wire = wire_names([tool.name for tool in self._offered])
        self._by_wire = {wire: name for name, wire in self._wire.items()}
        self._schema = dict(expected_output) if isinstance(expected_output, Mapping) else None
        final = final_value_schema(expected_output)
        self._action_schema = action_schema(self._offered, final, max_string_chars=max_string_chars)
        self._final_schema = final_only_schema(final, max_string_chars=max_string_chars)
        self._messages = [dict(message) for message in messages]
        if self.style == "constrained":
            self._add_to_system(constrained_instructions(self._offered, structured=self._schema is not None))
        self._state: Literal["model", "tools", "done"] = "model"
        self._final_only = False
        self._repeats: Counter[tuple[str, str]] = Counter()
        self._batch: list[str] = []
        self._awaiting: dict[str, ToolCall] = {}
        self._answered: dict[str, ToolResult] = {}
        self._steps: list[StepRecord] = []
        self._tools: list[ToolRecord] = []
        self._stopped: Stopped | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self._messages)

    @property
    def offered(self) -> list[str]:
        """The tools the model is told of: the known tools the allow-list matches."""
        return [tool.name for tool in self._offered]

    def next_request(self) -> LoopRequest:
        """The next router call. Before the last step (final_on_last_step) it appends LAST_STEP_MESSAGE once."""
        self._expect("model")
        last = self.limits.final_on_last_step and self.steps + 1 >= self.limits.max_steps
        if last and not self._final_only and self._messages[-1].get("content") != LAST_STEP_MESSAGE:
            self._messages.append({"role": "user", "content": LAST_STEP_MESSAGE})
        final_only = self._final_only or last
        messages = list(self._messages)
        if self.style == "constrained":
            return LoopRequest(messages=messages, json_schema=self._final_schema if final_only else self._action_schema)
        if final_only or not self._offered:
            return LoopRequest(messages=messages, json_schema=self._schema)
        return LoopRequest(messages=messages, tools=[tool.openai_tool(self._wire[tool.name]) for tool in self._offered])

    def on_reply(self, text: str, tool_calls: Sequence[Any] | None = None, finish_reason: str = "stop", *,
                 latency_s: float = 0.0) -> Decision:
        """Decide what a model reply means. Native replies carry `tool_calls`; constrained ones only text."""
        self._expect("model")
        self.steps += 1
        self._final_only = False
        parsed: list[RawCall] | FinalAnswer | BadReply
        if self.style == "native":
            calls = parse_native(tool_calls or (), names_by_wire=self._by_wire, step=self.steps)
            self._messages.append(native_assistant_message(text, calls, self._wire))
            parsed = calls or FinalAnswer(value=text)
        else:
            self._messages.append({"role": "assistant", "content": text})
            parsed = parse_constrained(text, step=self.steps)
        if isinstance(parsed, BadReply):
            decision = self._repair(parsed.why, cause="invalid_reply")
        elif isinstance(parsed, FinalAnswer):
            decision = self._on_final(parsed.value)
        else:
            decision = self._on_calls(parsed)
        self._steps.append(StepRecord(step=self.steps, finish_reason=finish_reason, latency_s=latency_s,
                                      tool_calls=len(parsed) if isinstance(parsed, list) else 0,
                                      decision=type(decision).__name__))
        return decision

    def on_tool_results(self, results: Sequence[ToolResult]) -> list[LoopEvent]:
        """Append the results of the calls of the last `RunTools`; returns events for the calls that failed."""
        self._expect("tools")
        by_id = {result.call_id: result for result in results}
        if set(by_id) != set(self._awaiting):
            raise ValueError(f"results for calls {sorted(by_id)}, but the loop awaits {sorted(self._awaiting)}")
        events = []
        for result in results:
            call = self._awaiting[result.call_id]
            self._record(call.id, call.name, call.authorization.arguments_digest, "ok" if result.ok else "error",
                         duration_s=result.duration_s, result_chars=len(result.content))
            if not result.ok:
                events.append(self._event("failed", f"tool {call.name!r} failed", call.id, call.authorization))
        ordered = [self._answered.get(call_id) or by_id[call_id] for call_id in self._batch]
        if self.style == "native":
            self._messages += [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in ordered]
        else:
            self._messages.append({"role": "user", "content": "\n".join(f"Result of {r.name}: {r.content}"
                                                                         for r in ordered)})
        self._batch, self._awaiting, self._answered, self._state = [], {}, {}, "model"
        return events

    def summary(self) -> LoopSummary:
        stopped = self._stopped
        return LoopSummary(steps=self.steps, tool_calls=self.tool_calls, repairs=self.repairs,
                           stop_cause=stopped.cause if stopped else None, stop_reason=stopped.reason if stopped else "",
                           step_records=list(self._steps), tool_records=list(self._tools))

    def _on_calls(self, raw_calls: list[RawCall]) -> Decision:
        keys = [(call.name, arguments_digest(call.arguments)) for call in raw_calls]
        self._repeats.update(keys)
        looping = next((key for key in keys if self._repeats[key] >= self.limits.loop_repeat_limit), None)
        if looping:
            return self._stop("loop", f"tool {looping[0]!r} was called {self._repeats[looping]} times with the same "
                                      f"arguments (digest {looping[1][:12]}); the model is repeating itself")
        if self.tool_calls + len(raw_calls) > self.limits.max_tool_calls:
            return self._stop("max_tool_calls", f"the model asked for {len(raw_calls)} more tool calls after "
                                                f"{self.tool_calls}; max_tool_calls={self.limits.max_tool_calls}")
        if self.steps >= self.limits.max_steps:
            names = ", ".join(call.name for call in raw_calls)
            return self._stop("max_steps", f"reached max_steps={self.limits.max_steps} and the model still asks "
                                           f"for tools ({names}) instead of answering")
        self.tool_calls += len(raw_calls)
        calls, events = [], []
        for raw in raw_calls:
            call, event = self._admit(raw)
            calls += [call] if call else []
            events += [event] if event else []
        self._batch, self._awaiting, self._state = [raw.id for raw in raw_calls], {c.id: c for c in calls}, "tools"
        return RunTools(calls=calls, events=events)

    def _admit(self, raw: RawCall) -> tuple[ToolCall | None, LoopEvent | None]:
        """The door, then the schema: a call to run, or a tool error answered here (and its event)."""
        verdict = authorize(self.agent, raw.name, raw.arguments, allow=self._allow, known_tools=self._known,
                            approve_patterns=self._approve)
        if verdict.decision == "denied":
            return None, self._answer(raw, verdict, "denied", verdict.reason)
        tool = self._known[raw.name]
        invalid = raw.error and f"Invalid arguments for tool {raw.name!r}: {raw.error}"
        invalid = invalid or validate_arguments(tool, raw.arguments)
        if invalid:
            return None, self._answer(raw, verdict, "invalid_arguments", invalid)
        call = ToolCall(id=raw.id, tool=tool, arguments=dict(raw.arguments), authorization=verdict)
        if verdict.decision == "needs_approval":
            return call, self._event("needs_approval", verdict.reason, raw.id, verdict)
        return call, None

    def _answer(self, raw: RawCall, verdict: Authorization, status: str, why: str) -> LoopEvent:
        self._answered[raw.id] = ToolResult(call_id=raw.id, name=raw.name, content=f"Error: {why}", ok=False)
        self._record(raw.id, raw.name, verdict.arguments_digest, status)
        message = verdict.reason if status == "denied" else f"invalid arguments for tool {raw.name!r}"
        return self._event(status, message, raw.id, verdict)

    def _on_final(self, value: Any) -> Decision:
        output, why = self._check_output(value)
        if why is None:
            self._state = "done"
            return Finished(output=output)
        return self._repair(f"your final answer does not match the required output: {why}", cause="invalid_output")

    def _check_output(self, value: Any) -> tuple[Any, str | None]:
        if self._schema is None:
            text = (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).strip()
            return text, None if text else "the answer is empty"
        if self.style == "native":
            try:
                value = json.loads(strip_fence(value))
            except json.JSONDecodeError as exc:
                return None, f"it is not JSON ({exc})"
        return value, schema_errors(self._schema, value)

    def _repair(self, why: str, *, cause: StopCause) -> Decision:
        if self.repairs >= MAX_REPAIRS:
            return self._stop(cause, f"{why} (again after {self.repairs} repair turn)")
        if self.steps >= self.limits.max_steps:
            return self._stop("max_steps", f"reached max_steps={self.limits.max_steps} without a valid answer: {why}")
        self.repairs += 1
        self._final_only = cause == "invalid_output"
        if not self._final_only:
            again = 'Reply again with {"tool": "<name>", "arguments": {...}} or {"final": <answer>}.'
        elif self.style == "constrained":
            again = 'Reply again with only {"final": <the corrected answer>}.'
        else:
            again = "Reply again with only the corrected final answer."
        message = f"{why[0].upper()}{why[1:]}. {again}"
        self._messages.append({"role": "user", "content": message})
        return Repair(message=message)

    def _stop(self, cause: StopCause, reason: str) -> Stopped:
        self._state = "done"
        self._stopped = Stopped(cause=cause, reason=reason, fix=FIXES[cause])
        return self._stopped

    def _record(self, call_id: str, tool: str, digest: str, status: str, *, duration_s: float = 0.0,
                result_chars: int = 0) -> None:
        self._tools.append(ToolRecord(step=self.steps, call_id=call_id, tool=tool, arguments_digest=digest,
                                      status=status, duration_s=duration_s, result_chars=result_chars))

    def _event(self, status: str, message: str, call_id: str, verdict: Authorization) -> LoopEvent:
        return LoopEvent(status=status, agent=self.agent, task=self.task, message=message,
                         data=verdict.event_data() | {"call_id": call_id})

    def _add_to_system(self, text: str) -> None:
        if self._messages and self._messages[0].get("role") == "system":
            self._messages[0]["content"] = f"{self._messages[0]['content']}\n\n{text}".strip()
        else:
            self._messages.insert(0, {"role": "system", "content": text})

    def _expect(self, state: str) -> None:
        if self._state != state:
            raise RuntimeError(f"AgentLoop is in state {self._state!r}, not {state!r}: after RunTools call "
                               "on_tool_results; after Finished or Stopped the loop is over")
