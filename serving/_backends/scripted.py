"""The scripted engine: deterministic replies with a fixed latency, for tests of the control path.

It runs inside a real replica behind the real router; only the text generation is scripted.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from serving._backends.base import CallRunner, this_replica


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
                return json.dumps({})
            json.loads(matched)
            return matched
        if matched is not None:
            return matched
        return f"scripted reply to: {last_user[:80]}"


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
        self._calls = CallRunner()

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
        messages = call.get("messages") or [{"role": "user", "content": call["prompt"]}]
        text = self._engine.reply(messages, choice=call.get("choice"), json_schema=call.get("json_schema"))
        text, finish_reason = truncate(text, call["max_tokens"])
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        yield {"delta": text}
        yield {"done": True, "finish_reason": finish_reason, "replica": this_replica(),
               "prompt_tokens": sum(count_tokens(m["content"]) for m in messages),
               "completion_tokens": count_tokens(text)}
