"""The vLLM replica: ray.serve.llm's LLMServer plus the router's batched entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray.serve.llm import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from serving._backends.base import OpenAIStreamReader, error_event, fan_in, replica_id
from serving._tool_calls import tool_fields


def _structured(call: dict[str, Any]) -> dict[str, Any] | None:
    """The call's constraint in vLLM's `structured_outputs` form (guided decoding)."""
    if call.get("json_schema") is not None:
        return {"json": call["json_schema"]}
    if call.get("choice"):
        return {"choice": call["choice"]}
    return None


class VLLMReplica(LLMServer):
    """ray.serve.llm's LLMServer plus a batched entry point for the router."""

    async def run_batch(self, calls: list[dict[str, Any]], affinity_key: str | None = None
                        ) -> AsyncIterator[list[dict[str, Any]]]:
        """`affinity_key` is read by the affinity request router, which picks this replica."""
        async for events in fan_in([self._one(call) for call in calls]):
            yield events

    def _openai_request(self, call: dict[str, Any]):
        common = dict(model=self._llm_config.model_id, max_tokens=call["max_tokens"],
                      temperature=call.get("temperature", 0.0), stream=True,
                      stream_options={"include_usage": True})
        structured = _structured(call)
        if structured is not None:
            common["structured_outputs"] = structured
        if "prompt" in call:
            return "completions", CompletionRequest(prompt=call["prompt"], **common)
        return "chat", ChatCompletionRequest(messages=call["messages"], **tool_fields(call), **common)

    async def _one(self, call: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        method, request = self._openai_request(call)
        reader = OpenAIStreamReader(completions=method == "completions")
        async for item in getattr(self.engine, method)(request):
            if not isinstance(item, str):  # an ErrorResponse before the stream started
                yield error_event(item.error.code, item.error.message)
                return
            for line in item.splitlines():
                for event in reader.read(line):
                    yield event
                    if event.get("done"):
                        return
        yield reader.done(replica=replica_id())
