"""What every backend shares. A replica exposes `run_batch(calls)`: the router moves a batch of calls to a
replica as ONE Serve call; the replica fans the batch into its engine concurrently (vLLM then
batches them continuously) and streams back lists of events tagged with each call's index.
A remote backend streams the same events for one call.

`VLLMReplica` lives in `vllm.py` so that importing `serving` does not import vLLM.

A call is a dict: `messages` (or `prompt` for /v1/completions), `max_tokens`, `temperature`,
`json_schema`, `choice`, and the tool fields of `serving._tool_calls`. Events: `{"i", "delta"}` and
`{"i", "tool_calls": [delta, ...]}` (OpenAI's streamed tool-call deltas), then one final `{"i", "done": True,
"finish_reason", "prompt_tokens", "completion_tokens", "replica"}` or
`{"i", "done": True, "error": {"status", "message"}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

logger = logging.getLogger(__name__)


async def fan_in(streams: list[AsyncIterator[dict[str, Any]]]) -> AsyncIterator[list[dict[str, Any]]]:
    """Run the streams concurrently; yield whatever events are ready, tagged with the stream index."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for event in stream:
                queue.put_nowait({"i": index, **event})
        except Exception as exc:  # one failed call must not end its batch-mates
            logger.warning("call %d of a batch failed: %r", index, exc)
            queue.put_nowait({"i": index, "done": True, "error": {"status": 500, "message": repr(exc)}})
        finally:
            queue.put_nowait(None)

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            remaining -= sum(item is None for item in items)
            events = [item for item in items if item is not None]
            if events:
                yield events
    finally:
        for task in tasks:
            task.cancel()


def replica_id() -> str:
    """This Serve replica's id; final events carry it, so routing can be observed."""
    return serve.get_replica_context().replica_id.unique_id


def error_event(status: int, message: str) -> dict[str, Any]:
    return {"done": True, "error": {"status": status, "message": message}}


class OpenAIStreamReader:
    """Turns the `data:` lines of an OpenAI SSE stream (chat or completions) into backend events."""

    def __init__(self, *, completions: bool) -> None:
        self._completions = completions
        self._finish_reason = "stop"
        self._usage: dict[str, Any] = {}

    def read(self, line: str) -> list[dict[str, Any]]:
        """The events of one line; an error chunk becomes a final error event."""
        if not line.startswith("data: ") or line == "data: [DONE]":
            return []
        chunk = json.loads(line[len("data: "):])
        if "error" in chunk:
            return [error_event(chunk["error"].get("code") or 500, chunk["error"]["message"])]
        self._usage = chunk.get("usage") or self._usage
        events = []
        for choice in chunk.get("choices", []):
            delta = choice.get("delta") or {}
            text = choice.get("text") if self._completions else delta.get("content")
            if text:
                events.append({"delta": text})
            if delta.get("tool_calls"):
                events.append({"tool_calls": delta["tool_calls"]})
            self._finish_reason = choice.get("finish_reason") or self._finish_reason
        return events

    def done(self, **extra: Any) -> dict[str, Any]:
        """The final event, with the usage the stream reported."""
        return {"done": True, "finish_reason": self._finish_reason, **extra,
                "prompt_tokens": self._usage.get("prompt_tokens", 0),
                "completion_tokens": self._usage.get("completion_tokens", 0)}
