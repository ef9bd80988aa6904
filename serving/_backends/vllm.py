"""The vLLM replica: ray.serve.llm's LLMServer plus the router's batched entry point."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ray.serve.llm import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from controlplane._priority import run_at_normal_priority
from serving._backends.base import CallRunner, OpenAIStreamReader, error_event, this_replica
from serving._engine_args import local_engine_dtype, on_gpu
from serving._engine_cores import (
    RESERVE_ENGINE_CORES_ENV,
    give_node_engine_cores,
    keep_node_off_engine_cores,
    widen_own_cores,
)
from serving._fields import SAMPLING_KEYS
from serving._gpu_start import one_engine_start_per_gpu
from serving._orphans import start_engine_watchdog
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

    async def __init__(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[misc]  # Serve LLM's async init
        self._reserved_cores: set[int] = set()
        run_at_normal_priority()  # before the engine's processes start: they inherit it
        self._engine_watchdog = start_engine_watchdog()  # a killed replica must not leave its engine running
        self._calls = CallRunner()
        # dtype `auto` is resolved here, where the engine runs: native bfloat16 depends on this node's CPU
        llm_config = kwargs["llm_config"] if "llm_config" in kwargs else args[0]
        bundles = (llm_config.placement_group_config or {}).get("bundles", [])
        llm_config.update_engine_kwargs(dtype=local_engine_dtype(llm_config.engine_kwargs.get("dtype", "auto"),
                                                                 on_gpu=on_gpu(bundles)))
        reserve_cores = not on_gpu(bundles) and os.environ.get(RESERVE_ENGINE_CORES_ENV) == "1"
        if reserve_cores:
            widen_own_cores()  # vLLM binds its worker within the cores its engine inherits
        async with one_engine_start_per_gpu(bundles):
            await super().__init__(*args, **kwargs)
        if reserve_cores:
            self._reserved_cores, _ = keep_node_off_engine_cores()

    async def __del__(self) -> None:
        await super().__del__()
        give_node_engine_cores(self._reserved_cores)

    async def run_batch(self, calls: list[dict[str, Any]], affinity_key: str | None = None
                        ) -> AsyncIterator[list[dict[str, Any]]]:
        """`affinity_key` is read by the affinity request router, which picks this replica."""
        async for events in self._calls.fan_in(calls, self._one, this_replica()):
            yield events

    async def cancel_calls(self, call_ids: list[str], replica_id: str | None = None) -> int:
        """End these calls and abort their engine requests (`replica_id` is read by the request router,
        which sends this call to that replica)."""
        return self._calls.cancel(call_ids)

    async def unfinished_calls(self, replica_id: str | None = None) -> int:
        """Requests vLLM's engine has not finished (aborted ones leave at once)."""
        engine: Any = self.engine
        return engine._engine_client.get_num_unfinished_requests()

    async def prefix_cache_stats(self, replica_id: str | None = None) -> dict[str, Any]:
        """This replica's id and vLLM's prefix-cache counters (tokens queried, tokens hit) since start."""
        from prometheus_client import REGISTRY

        stats: dict[str, Any] = {"replica": this_replica(), "queries": 0.0, "hits": 0.0}
        for metric in REGISTRY.collect():
            if metric.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits"):
                key = metric.name.rsplit("_", 1)[1]
                stats[key] += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return stats

    async def reset_prefix_cache_of(self, replica_id: str | None = None) -> bool:
        """Empty this replica's prefix cache (benchmarks of cold caches); `replica_id` picks the replica."""
        engine: Any = self.engine
        await engine.reset_prefix_cache()
        return True

    def _openai_request(self, call: dict[str, Any]):
        common = dict(model=self._llm_config.model_id, max_tokens=call["max_tokens"],
                      temperature=call.get("temperature", 0.0), stream=True,
                      stream_options={"include_usage": True},
                      **{key: call[key] for key in SAMPLING_KEYS if key in call})
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
        yield reader.done(replica=this_replica())
