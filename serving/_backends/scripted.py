"""The scripted engine: deterministic replies with a fixed latency, for tests of the control path.

It runs inside a real replica behind the real router; only the text generation is scripted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from serving._backends.base import fan_in, replica_id


def count_tokens(text: str) -> int:
    """The scripted engine's token count: whitespace-separated words (at least 1 for non-empty)."""
    return len(text.split()) or (1 if text else 0)


class ScriptedEngine:
    def __init__(self, replies: Sequence[Mapping[str, str]]) -> None:
        self._rules = [(re.compile(rule["match"]), rule["text"]) for rule in replies]

    def reply(self, messages: Sequence[Mapping[str, str]], *, choice: Sequence[str] | None = None,
              json_schema: Mapping[str, Any] | None = None) -> str:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        matched = next((text for pattern, text in self._rules if pattern.search(last_user)), None)
        if choice:
            return matched if matched in choice else choice[0]
        if json_schema is not None:
            if matched is None:
                return json.dumps(minimal_instance(json_schema, json_schema, f"scripted reply to: {last_user[:80]}"))
            json.loads(matched)
            return matched
        if matched is not None:
            return matched
        return f"scripted reply to: {last_user[:80]}"


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


def truncate(text: str, max_tokens: int) -> tuple[str, str]:
    """Cut `text` to `max_tokens` words; returns the text and the finish reason."""
    words = text.split()
    if count_tokens(text) <= max_tokens:
        return text, "stop"
    return " ".join(words[:max_tokens]), "length"


class ScriptedReplica:
    """A replica whose engine is the scripted one: real Serve, real batching, scripted text."""

    def __init__(self, replies: list[dict[str, str]], latency_s: float) -> None:
        self._engine = ScriptedEngine(replies)
        self._latency_s = latency_s

    async def run_batch(self, calls: list[dict[str, Any]], affinity_key: str | None = None
                        ) -> AsyncIterator[list[dict[str, Any]]]:
        """`affinity_key` is read by the affinity request router, which picks this replica."""
        async for events in fan_in([self._one(call) for call in calls]):
            yield events

    async def _one(self, call: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        messages = call.get("messages") or [{"role": "user", "content": call["prompt"]}]
        text = self._engine.reply(messages, choice=call.get("choice"), json_schema=call.get("json_schema"))
        text, finish_reason = truncate(text, call["max_tokens"])
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        yield {"delta": text}
        yield {"done": True, "finish_reason": finish_reason, "replica": replica_id(),
               "prompt_tokens": sum(count_tokens(m["content"]) for m in messages),
               "completion_tokens": count_tokens(text)}
