"""The scripted engine: deterministic replies with a fixed latency, for tests of the control path.

It runs inside a real replica behind the real router; only the text generation is scripted. Rules
(`ScriptedRule`) answer the conversation's last turn: its trailing tool results, else its last user message.
A rule replies with text or with a tool call. A tool call goes out natively when the request offers the tool
in `tools` (a `tool_style: native` model), or as the constrained action JSON when the request's JSON schema
admits it (the router's constrained tool calls, or an agent loop's action schema); so one script plays
multi-turn tool-calling transcripts in either style.

`faults` (a `ScriptedFaultSpec`) makes the replica fail calls on purpose, at random and in one outage window, so
chaos tests drive the router's breaker, fallback and the supervisor's retries; `fault_record()` says what it did.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema

from controlplane.config.serving import ScriptedFaultSpec, ScriptedRule
from serving._backends.base import CallRunner, error_event, this_replica
from serving._constrained import TOOL_RESULT_PREFIX, result_line, tool_names
from serving._tool_calls import message_text


def count_tokens(text: str) -> int:
    """The scripted engine's token count: whitespace-separated words (at least 1 for non-empty)."""
    return len(text.split()) or (1 if text else 0)


@dataclass(frozen=True, kw_only=True)
class ScriptedAnswer:
    """What the engine replies."""

    text: str
    """The reply text; empty for a native tool call."""
    tool_call: dict[str, Any] | None = None
    """A native tool call in OpenAI's shape (`id`, `type`, `function: {name, arguments}`), or None."""


def last_turn(messages: Sequence[Mapping[str, Any]]) -> tuple[Literal["user", "tool"], str]:
    """The turn a reply answers: trailing `tool` messages, or a last user message of `Result of ...` lines (the
    constrained form of tool results), read as `Result of <tool>: <result>` lines; else the last user message."""
    trailing = len(messages)
    while trailing and messages[trailing - 1]["role"] == "tool":
        trailing -= 1
    if trailing < len(messages):
        names = tool_names(messages)
        return "tool", "\n".join(result_line(message, names) for message in messages[trailing:])
    last = (messages[-1].get("content") or "") if messages and messages[-1]["role"] == "user" else ""
    if last.startswith(TOOL_RESULT_PREFIX):
        return "tool", last
    return "user", next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _first_valid(candidates: Sequence[Any], schema: Mapping[str, Any]) -> Any | None:
    validator = _validator(json.dumps(schema, sort_keys=True))
    return next((candidate for candidate in candidates if validator.is_valid(candidate)), None)


def _shaped(text: str, *, choice: Sequence[str] | None, json_schema: Mapping[str, Any] | None,
            unmatched: bool = False) -> str:
    """The reply under the request's constraint. Under a JSON schema, a rule's JSON text goes out as it is (a
    test may script what a grammar would forbid) and other text as `{"final": text}`; an unmatched turn gives
    the schema's smallest instance (`minimal_instance`)."""
    if choice:
        return text if text in choice else choice[0]
    if json_schema is None:
        return text
    if unmatched:
        return json.dumps(minimal_instance(json_schema, json_schema, text))
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return json.dumps({"final": text})
    return text


class ScriptedEngine:
    def __init__(self, replies: Sequence[Mapping[str, Any]]) -> None:
        self._rules = [(re.compile(rule.match), rule) for rule in map(ScriptedRule.model_validate, replies)]

    def reply(self, messages: Sequence[Mapping[str, Any]], *, choice: Sequence[str] | None = None,
              json_schema: Mapping[str, Any] | None = None, tools: Sequence[Mapping[str, Any]] | None = None,
              tool_choice: Any = None) -> ScriptedAnswer:
        """The first rule that fits the last turn and can answer the request; else `scripted reply to: <turn>`."""
        kind, turn = last_turn(messages)
        native = _callable(tools, tool_choice)
        for pattern, rule in self._rules:
            if rule.turn not in ("any", kind) or not pattern.search(turn):
                continue
            if rule.tool_call is None:
                return ScriptedAnswer(text=_shaped(rule.text or "", choice=choice, json_schema=json_schema))
            name, arguments = rule.tool_call.name, rule.tool_call.arguments
            if name in native:
                function = {"name": name, "arguments": json.dumps(arguments)}
                return ScriptedAnswer(text="", tool_call={"id": f"call_{len(messages)}", "type": "function",
                                                          "function": function})
            action = {"tool": name, "arguments": arguments}
            if json_schema is not None and _first_valid([action], json_schema) is not None:
                return ScriptedAnswer(text=json.dumps(action))
        return ScriptedAnswer(text=_shaped(f"scripted reply to: {turn[:80]}", choice=choice, json_schema=json_schema,
                                           unmatched=True))


def _callable(tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any) -> set[str]:
    """The tools a native request lets the model call."""
    if not tools or tool_choice == "none":
        return set()
    names = {tool["function"]["name"] for tool in tools}
    return names & {tool_choice["function"]["name"]} if isinstance(tool_choice, Mapping) else names


def minimal_instance(schema: Mapping[str, Any], root: Mapping[str, Any], text: str) -> Any:
    """The smallest value the schema accepts, strings filled with `text`; of a union, the branch with a `final`
    answer (an agent's constrained action), so an unscripted step ends its task instead of looping."""
    if "$ref" in schema:
        defs = root.get("$defs") or root.get("definitions") or {}
        return minimal_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], root, text)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        final = [b for b in branches if "final" in (b.get("properties") or {})]
        return minimal_instance((final or branches)[0], root, text)
    if "const" in schema or "enum" in schema:
        return schema.get("const", (schema.get("enum") or [None])[0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: minimal_instance(props.get(name, {}), root, text) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items") or {}, root, text) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return text[: schema.get("maxLength", len(text))] or "x"
    return {"integer": 0, "number": 0, "boolean": False, "null": None}.get(kind)


def truncate(text: str, max_tokens: int, stop: str | Sequence[str] | None = None) -> tuple[str, str]:
    """Cut `text` before its first `stop` string, then to `max_tokens` words; returns the text and the finish
    reason."""
    for marker in [stop] if isinstance(stop, str) else stop or []:
        text = text.split(marker, 1)[0]
    words = text.split()
    if count_tokens(text) <= max_tokens:
        return text, "stop"
    return " ".join(words[:max_tokens]), "length"


class FaultInjector:
    """Which calls of one replica fail (see ScriptedFaultSpec), and a record of what it injected. Pure: the time
    is passed in. The outage starts at the call after `outage_after_calls` and lasts `outage_s`."""

    def __init__(self, spec: ScriptedFaultSpec) -> None:
        self._spec = spec
        self._random = random.Random(spec.seed)
        self.calls = 0
        self.random_failures = 0
        self.outage_started_at_s: float | None = None
        self.outage_failures_at_s: list[float] = []
        self.first_success_after_outage_at_s: float | None = None

    def failure(self, now_s: float) -> str | None:
        """Why the call arriving now fails, or None when it is served."""
        self.calls += 1
        after = self._spec.outage_after_calls
        if after is not None and self.outage_started_at_s is None and self.calls > after:
            self.outage_started_at_s = now_s
        if self.outage_started_at_s is not None and now_s < self.outage_started_at_s + self._spec.outage_s:
            self.outage_failures_at_s.append(now_s)
            return f"injected outage of {self._spec.outage_s:g} s"
        if self._random.random() < self._spec.failure_rate:
            self.random_failures += 1
            return f"injected failure (failure_rate={self._spec.failure_rate:g})"
        return None

    def succeeded(self, now_s: float) -> None:
        """A served call ended now (the first one after the outage is the router's successful probe)."""
        ended = self.outage_ended_at_s
        if ended is not None and now_s >= ended and self.first_success_after_outage_at_s is None:
            self.first_success_after_outage_at_s = now_s

    @property
    def outage_ended_at_s(self) -> float | None:
        started = self.outage_started_at_s
        return None if started is None else started + self._spec.outage_s

    def record(self) -> dict[str, Any]:
        return {"calls": self.calls, "random_failures": self.random_failures,
                "outage_started_at_s": self.outage_started_at_s, "outage_ended_at_s": self.outage_ended_at_s,
                "outage_failures_at_s": list(self.outage_failures_at_s),
                "first_success_after_outage_at_s": self.first_success_after_outage_at_s}


class EngineSteps:
    """An engine's decode steps, one every `step_s` while any call waits for one: every call waiting when a step
    ends gets its next token then, as the sequences of an engine's batch do."""

    def __init__(self, step_s: float) -> None:
        self._step_s = step_s
        self._next: asyncio.Future[None] | None = None

    async def next(self) -> None:
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            loop.call_later(self._step_s, self._end_step)
        await asyncio.shield(self._next)  # a cancelled call leaves the step to the others

    def _end_step(self) -> None:
        step, self._next = self._next, None
        assert step is not None
        step.set_result(None)


class ScriptedReplica:
    """A replica whose engine is the scripted one: real Serve, real batching, scripted text."""

    def __init__(self, replies: list[dict[str, Any]], latency_s: float, faults: dict[str, Any] | None = None,
                 step_s: float | None = None) -> None:
        self._engine = ScriptedEngine(replies)
        self._latency_s = latency_s
        self._steps = EngineSteps(step_s) if step_s is not None else None
        self._calls = CallRunner()
        fault_spec = ScriptedFaultSpec.model_validate(faults) if faults is not None else None
        if fault_spec is not None and fault_spec.start_error:
            raise RuntimeError(fault_spec.start_error)
        self._faults = FaultInjector(fault_spec) if fault_spec is not None else None

    async def fault_record(self) -> dict[str, Any]:
        """What this replica's fault injector did, times in epoch seconds; {} when it injects none."""
        return self._faults.record() if self._faults is not None else {}

    async def run_batch(self, calls: list[dict[str, Any]], affinity_key: str | None = None
                        ) -> AsyncIterator[list[dict[str, Any]]]:
        """`affinity_key` is read by the affinity request router, which picks this replica."""
        async for events in self._calls.fan_in(calls, self._one, this_replica()):
            yield events

    async def cancel_calls(self, call_ids: list[str], replica_id: str | None = None) -> int:
        """End these calls (`replica_id` is read by the request router, which sends this call there)."""
        return self._calls.cancel(call_ids)

    async def unfinished_calls(self) -> int:
        """Calls this replica's engine is still working on."""
        return len(self._calls)

    async def _one(self, call: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        failure = self._faults.failure(time.time()) if self._faults is not None else None
        if failure is not None:
            yield error_event(503, failure)
            return
        messages = call.get("messages") or [{"role": "user", "content": call["prompt"]}]
        answer = self._engine.reply(messages, choice=call.get("choice"), json_schema=call.get("json_schema"),
                                    tools=call.get("tools"), tool_choice=call.get("tool_choice"))
        if answer.tool_call is None:
            text, finish_reason = truncate(answer.text, call["max_tokens"], call.get("stop"))
            event: dict[str, Any] = {"delta": text}
        else:
            text, finish_reason = answer.tool_call["function"]["arguments"], "tool_calls"
            event = {"tool_calls": [{"index": 0, **answer.tool_call}]}
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        if self._steps is not None and "delta" in event:
            for index, word in enumerate(text.split()):
                await self._steps.next()
                yield {"delta": f" {word}" if index else word}
        else:
            yield event
        if self._faults is not None:
            self._faults.succeeded(time.time())
        yield {"done": True, "finish_reason": finish_reason, "replica": this_replica(),
               "prompt_tokens": sum(count_tokens(message_text(m)) for m in messages),
               "completion_tokens": count_tokens(text)}
