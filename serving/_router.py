"""The router deployment: the OpenAI-compatible HTTP API and the handle API, on one RouterCore."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.util import metrics

from controlplane._core.placement import head_pin
from controlplane.errors import ControlPlaneError
from serving import _http
from serving._batcher import Batcher
from controlplane.config import OpenAIModelSpec, ServingConfig
from serving._core import Call, RouterCore
from serving._leases import shared_quotas
from serving._limiter import SharedLimits, start_limiter
from serving._backends.remote import RemoteBackend
from serving._types import ChatRequest, ChatResult, Identity, Usage

DEFAULT_HTTP_MAX_TOKENS = 256
app = FastAPI(title="controlplane router")


class _Metrics:
    """Ray metrics of every call, tagged by mission, agent and model."""

    def __init__(self) -> None:
        tags = ("mission_id", "agent_id", "model")
        self.calls = metrics.Counter("controlplane_router_calls", "Model calls", tag_keys=(*tags, "outcome"))
        self.prompt = metrics.Counter("controlplane_router_prompt_tokens", "Prompt tokens", tag_keys=tags)
        self.completion = metrics.Counter("controlplane_router_completion_tokens", "Completion tokens", tag_keys=tags)
        bounds = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
        self.ttft = metrics.Histogram("controlplane_router_ttft_s", "Time to first token", bounds, tag_keys=("model",))
        self.latency = metrics.Histogram("controlplane_router_latency_s", "Call latency", bounds, tag_keys=("model",))

    def record(self, model: str, identity: Identity, final: dict[str, Any] | None) -> None:
        tags = {"mission_id": identity.mission_id, "agent_id": identity.agent_id, "model": model}
        self.calls.inc(1, {**tags, "outcome": "ok" if final else "error"})
        if final:
            self.prompt.inc(final["prompt_tokens"], tags)
            self.completion.inc(final["completion_tokens"], tags)
            self.ttft.observe(final["ttft_s"], {"model": model})
            self.latency.observe(final["latency_s"], {"model": model})


def _call_of(request: ChatRequest) -> Call:
    body = request.model_dump(include={"max_tokens", "temperature", "json_schema", "choice"})
    body["messages"] = [m.model_dump() for m in request.messages]
    return Call(model=request.model, body=body, identity=request.identity, timeout_s=request.timeout_s)


def _result(text: str, final: dict[str, Any]) -> ChatResult:
    return ChatResult(text=text, model=final["model"], backend=final["backend"],
                      usage=Usage(prompt_tokens=final["prompt_tokens"], completion_tokens=final["completion_tokens"]),
                      ttft_s=final["ttft_s"], latency_s=final["latency_s"], finish_reason=final["finish_reason"])


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event


def _shared(config: ServingConfig) -> SharedLimits | None:
    """With several router replicas, the models' rpm/tpm go through the app's limiter actor (started by the first
    replica that needs it)."""
    quotas = shared_quotas(config.models)
    if config.router.replicas == 1 or not quotas:
        return None
    limiter = start_limiter(serve.get_replica_context().app_name, quotas,
                            resources=head_pin(ray.cluster_resources()))
    return SharedLimits(limiter)


@serve.deployment(max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Router:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:
        self._config = ServingConfig.model_validate(config)
        self._config.check_env()
        router = self._config.router
        backends = {name: RemoteBackend(spec) if isinstance(spec, OpenAIModelSpec)
                    else Batcher(handles[name], max_size=router.batch_max_size, wait_s=router.batch_wait_s)
                    for name, spec in self._config.models.items()}
        self._batchers = {name: backend for name, backend in backends.items() if isinstance(backend, Batcher)}
        self._core = RouterCore(self._config, backends, on_record=_Metrics().record, shared=_shared(self._config))

    # The handle API (actors call these through RouterClient; no HTTP hop).
    async def chat(self, request: ChatRequest) -> ChatResult:
        parts, final = [], None
        async for event in self._core.stream(_call_of(request)):
            if event.get("done"):
                final = event
            else:
                parts.append(event["delta"])
        return _result("".join(parts), final)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[str | ChatResult]:
        parts = []
        async for event in self._core.stream(_call_of(request)):
            if event.get("done"):
                yield _result("".join(parts), event)
            else:
                parts.append(event["delta"])
                yield event["delta"]

    async def running_config(self) -> dict[str, Any]:
        """The serving config this router runs (deploy() compares it to skip needless redeploys)."""
        return self._config.model_dump(mode="json")

    async def usage(self, mission_id: str | None = None) -> list[dict[str, Any]]:
        return self._core.ledger.snapshot(mission_id)

    async def batch_stats(self) -> dict[str, dict[str, int]]:
        return {name: {"batches": b.batches, "calls": b.calls} for name, b in self._batchers.items()}

    async def set_mission_budget(self, mission_id: str, token_budget: int | None) -> None:
        self._core.set_mission_budget(mission_id, token_budget)

    async def set_mission_weight(self, mission_id: str, weight: float) -> None:
        self._core.set_mission_weight(mission_id, weight)

    async def breaker_state(self, model: str) -> str:
        return self._core.breaker_state(model)

    # The HTTP API.
    @app.get("/v1/models")
    async def http_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": spec.kind}
                                           for name, spec in self._config.models.items()]}

    @app.post("/v1/chat/completions")
    async def http_chat(self, request: Request):
        return await self._http(request, _http.ChatBody)

    @app.post("/v1/completions")
    async def http_completions(self, request: Request):
        return await self._http(request, _http.CompletionBody)

    async def _http(self, request: Request, body_cls: type) -> JSONResponse | StreamingResponse:
        try:
            body = _http.parse_body(await request.body(), body_cls)
            call = _http.to_call(body, request.headers, DEFAULT_HTTP_MAX_TOKENS)
            events = self._core.stream(call)
            first = await anext(events)
        except ControlPlaneError as exc:
            return _http.error_from_exception(exc)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(self._sse(call, first, events, include_usage), media_type="text/event-stream")
        parts, final = [], first
        try:
            async for event in _chain(first, events):
                if event.get("done"):
                    final = event
                else:
                    parts.append(event["delta"])
        except ControlPlaneError as exc:
            return _http.error_from_exception(exc)
        return JSONResponse(_http.reply_json(call, "".join(parts), final))

    async def _sse(self, call: Call, first: dict[str, Any], events: AsyncIterator[dict[str, Any]],
                   include_usage: bool) -> AsyncIterator[str]:
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            async for event in _chain(first, events):
                yield _http.sse_chunk(call, request_id, event, include_usage)
        except ControlPlaneError as exc:
            yield _http.sse_error(exc)
        yield "data: [DONE]\n\n"
