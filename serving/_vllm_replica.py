"""The vLLM replica: ray.serve.llm's LLMServer plus the router's batched entry point."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from ray.serve.llm import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from serving._replicas import error_event, fan_in, replica_id


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
        return "chat", ChatCompletionRequest(messages=call["messages"], **common)

    async def _one(self, call: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        method, request = self._openai_request(call)
        finish_reason, usage = "stop", {}
        async for item in getattr(self.engine, method)(request):
            if not isinstance(item, str):  # an ErrorResponse before the stream started
                yield error_event(item.error.code, item.error.message)
                return
            for line in item.splitlines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    yield error_event(chunk["error"].get("code") or 500, chunk["error"]["message"])
                    return
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    text = choice.get("text") if method == "completions" else choice["delta"].get("content")
                    if text:
                        yield {"delta": text}
                    finish_reason = choice.get("finish_reason") or finish_reason
        yield {"done": True, "finish_reason": finish_reason, "replica": replica_id(),
               "prompt_tokens": usage.get("prompt_tokens", 0),
               "completion_tokens": usage.get("completion_tokens", 0)}
