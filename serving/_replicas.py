"""Replica deployments. Each exposes `run_batch(calls)`: the router moves a batch of calls to a
replica as ONE Serve call; the replica fans the batch into its engine concurrently (vLLM then
batches them continuously) and streams back lists of events tagged with each call's index.

`VLLMReplica` lives in `_vllm_replica` so that importing `serving` does not import vLLM.

A call is a dict: `messages` (or `prompt` for /v1/completions), `max_tokens`, `temperature`,
`json_schema`, `choice`. Events: `{"i", "delta"}`, then one final `{"i", "done": True,
"finish_reason", "prompt_tokens", "completion_tokens", "replica"}` or
`{"i", "done": True, "error": {"status", "message"}}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from serving._scripted import ScriptedEngine, count_tokens, truncate

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
