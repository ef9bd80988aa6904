"""The router deployment: the OpenAI-compatible HTTP API and the handle API, on one RouterCore."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.util import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane._core.placement import head_pin
from controlplane._priority import run_at_normal_priority
from controlplane._tracing import ENDPOINT_ENV
from controlplane.config import OpenAIModelSpec, ServingConfig
from controlplane.errors import ControlPlaneError, SpecError
from serving import _http
from serving._auth import Authenticator
from serving._backends.remote import RemoteBackend
from serving._batcher import Batcher
from serving._budget_book import BudgetBook
from serving._constrained import ConstrainedBackend
from serving._core import Backend, Call, RouterCore
from serving._keys import ApiKeyStore
from serving._limiter import SharedLimits, start_limiter
from serving._secrets import load_or_create_root_secret
from serving._stream import first_event_or_a_silent_run
from serving._tool_calls import ReplyAssembler
from serving._trace_sinks import RouterTracing, traced
from serving._types import ChatRequest, ChatResult, Identity, Usage

DEFAULT_HTTP_MAX_TOKENS = 256
STREAM_COMMIT_S = 0.5
"""A streamed HTTP call that has run on its backend this long without a first event gets its 200 then; errors
after that come in the stream."""
STREAM_HEARTBEAT_S = 0.2
"""From then until its first event, an SSE comment line every interval. Writing is how a proxy in front notices
a client that has gone: HAProxy, once a response has started or while Serve reloads it, notices a client that
closed only when it next writes to it (docs/serving.md)."""
app = FastAPI(title="controlplane router")


@app.exception_handler(StarletteHTTPException)
async def _not_served(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """No route took the request (FastAPI raises nothing else here): an OpenAI-shaped 404 or 405 with the fix."""
    return _http.not_served(request.method, request.url.path, request.scope.get("root_path", ""),
                            _http.endpoints_of(request.app.routes))


class _Metrics:
    """Ray metrics of every call, tagged by mission, agent and model."""

    def __init__(self) -> None:
        tags = ("mission_id", "agent_id", "model")
        self.calls = metrics.Counter("controlplane_router_calls", "Model calls", tag_keys=(*tags, "outcome"))
        self.prompt = metrics.Counter("controlplane_router_prompt_tokens", "Prompt tokens", tag_keys=tags)
        self.completion = metrics.Counter("controlplane_router_completion_tokens", "Completion tokens", tag_keys=tags)
        self.usd = metrics.Counter("controlplane_router_usd", "Cost of completed calls in USD", tag_keys=tags)
        bounds = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
        self.ttft = metrics.Histogram("controlplane_router_ttft_s", "Time to first token", bounds, tag_keys=("model",))
        self.latency = metrics.Histogram("controlplane_router_latency_s", "Call latency", bounds, tag_keys=("model",))

    def record(self, model: str, identity: Identity, final: dict[str, Any] | None) -> None:
        tags = {"mission_id": identity.mission_id, "agent_id": identity.agent_id, "model": model}
        self.calls.inc(1, {**tags, "outcome": "ok" if final else "error"})
        if final:
            for counter, value in ((self.prompt, final["prompt_tokens"]), (self.completion, final["completion_tokens"]),
                                   (self.usd, final["usd"])):
                if value > 0:  # Ray's Counter refuses 0 (a free model, an empty reply)
                    counter.inc(value, tags)
            self.ttft.observe(final["ttft_s"], {"model": model})
            self.latency.observe(final["latency_s"], {"model": model})


def _call_of(request: ChatRequest, identity: Identity) -> Call:
    body = request.model_dump(include={"max_tokens", "temperature", "json_schema", "choice"})
    body.update(request.sampling())
    body.update(request.tool_body())
    body["messages"] = [m.to_wire() for m in request.messages]
    return Call(model=request.model, body=body, identity=identity, timeout_s=request.timeout_s,
                slack_s=request.slack_s)


def _result(reply: ReplyAssembler) -> ChatResult:
    final = reply.final
    return ChatResult(text=reply.text, tool_calls=reply.tool_calls(), model=final["model"], backend=final["backend"],
                      usage=Usage(prompt_tokens=final["prompt_tokens"], completion_tokens=final["completion_tokens"],
                                  usd=final["usd"]),
                      ttft_s=final["ttft_s"], latency_s=final["latency_s"], queue_s=final["queue_s"],
                      finish_reason=final["finish_reason"])


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event


def _cancel_when_this_request_ends(future: asyncio.Future[Any]) -> None:
    """Cancel `future` (a no-op once it is done) when the task that serves this request ends, however it ends:
    Serve cancels that task when its client goes."""
    task = asyncio.current_task()
    assert task is not None
    task.add_done_callback(lambda _: future.cancel())


def _shared(config: ServingConfig, app_name: str, on_head: dict[str, float]) -> SharedLimits | None:
    """With several router replicas, the rpm, tpm and max_in_flight limits go through the app's limiter actor
    (started by the first replica)."""
    if config.router.replicas == 1:
        return None
    return SharedLimits(start_limiter(app_name, resources=on_head),
                        holder=ray.get_runtime_context().get_actor_name() or "")


@serve.deployment(max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Router:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:
        run_at_normal_priority()
        self._config = ServingConfig.model_validate(config)
        self._config.check_env()
        router = self._config.router
        backends = {name: RemoteBackend(spec) if isinstance(spec, OpenAIModelSpec)
                    else Batcher(handles[name], max_size=router.batch_max_size, wait_s=router.batch_wait_s)
                    for name, spec in self._config.models.items()}
        self._batchers = {name: backend for name, backend in backends.items() if isinstance(backend, Batcher)}
        styled: dict[str, Backend] = {
            name: ConstrainedBackend(backend) if self._config.models[name].tool_style == "constrained" else backend
            for name, backend in backends.items()}
        app_name, on_head = serve.get_replica_context().app_name, head_pin(ray.cluster_resources())
        self._core = RouterCore(self._config, styled, on_record=_Metrics().record,
                                shared=_shared(self._config, app_name, on_head),
                                book=BudgetBook(app_name, resources=on_head, start=router.replicas > 1))
        self._auth = Authenticator(root_secret=load_or_create_root_secret(),
                                   keys=ApiKeyStore(router.auth.api_keys_file),
                                   allow_anonymous=router.auth.allow_anonymous)
        self._tracing = RouterTracing(os.environ.get(ENDPOINT_ENV) or None)

    def _handle_call(self, request: ChatRequest) -> Call:
        return _call_of(request, self._auth.for_handle(request.token, request.priority, now_s=time.time()))

    def __del__(self) -> None:  # Serve calls it when the replica shuts down: flush the spans still queued
        RouterTracing.shutdown()

    def _traced(self, call: Call, carrier: dict[str, str], sink: Any = None) -> AsyncIterator[dict[str, Any]]:
        """The call's events, recorded on a `chat` span that continues the caller's trace (see _trace_sinks)."""
        span = self._tracing.open(model=call.model, mission_id=call.identity.mission_id,
                                  agent=call.identity.agent_id, body=call.body, carrier=carrier, sink=sink)
        return traced(self._core.stream(call), span)

    # The handle API (actors call these through RouterClient; no HTTP hop).
    async def chat(self, request: ChatRequest) -> ChatResult:
        reply = ReplyAssembler()
        async for event in self._traced(self._handle_call(request), request.trace, request.trace_sink):
            reply.add(event)
        return _result(reply)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[str | ChatResult]:
        reply = ReplyAssembler()
        async for event in self._traced(self._handle_call(request), request.trace, request.trace_sink):
            reply.add(event)
            if event.get("done"):
                yield _result(reply)
            elif event.get("delta"):
                yield event["delta"]

    async def running_config(self) -> dict[str, Any]:
        """The serving config this router runs (deploy() compares it to skip needless redeploys)."""
        return self._config.model_dump(mode="json")

    async def usage(self, mission_id: str | None = None) -> list[dict[str, Any]]:
        return await self._core.usage(mission_id)

    async def batch_stats(self) -> dict[str, dict[str, int]]:
        return {name: {"batches": b.batches, "calls": b.calls} for name, b in self._batchers.items()}

    async def set_budget(self, token: str, agent_id: str | None = None, *, max_tokens: int | None = None,
                         max_usd: float | None = None) -> None:
        claims = self._auth.supervisor(token, action="router.set_budget", now_s=time.time())
        await self._core.set_budget(claims.mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)

    async def set_mission_weight(self, mission_id: str, weight: float) -> None:
        self._core.set_mission_weight(mission_id, weight)

    async def breaker_state(self, model: str) -> str:
        return self._core.breaker_state(model)

    async def flush_traces(self) -> bool:
        """Export the spans still queued in this replica (a mission calls it before it ends)."""
        return await asyncio.to_thread(self._tracing.flush)

    # The HTTP API.
    @app.get("/v1/models")
    async def http_models(self, request: Request) -> JSONResponse:
        try:
            self._auth.for_http(_http.credentials(request.headers), now_s=time.time())
        except ControlPlaneError as exc:
            return _http.error_from_exception(exc)
        return JSONResponse({"object": "list", "data": [_http.model_json(name, spec.kind)
                                                        for name, spec in self._config.models.items()]})

    @app.get("/v1/models/{model:path}")
    async def http_model(self, model: str, request: Request) -> JSONResponse:
        try:
            self._auth.for_http(_http.credentials(request.headers), now_s=time.time())
            self._core.check_model(model)
        except ControlPlaneError as exc:
            return _http.error_from_exception(exc)
        return JSONResponse(_http.model_json(model, self._config.models[model].kind))

    @app.post("/v1/chat/completions")
    async def http_chat(self, request: Request):
        return await self._http(request, _http.ChatBody)

    @app.post("/v1/completions")
    async def http_completions(self, request: Request):
        return await self._http(request, _http.CompletionBody)

    async def _http(self, request: Request, body_cls: type) -> JSONResponse | StreamingResponse:
        try:
            body = self._http_body(await request.body(), body_cls, request.headers)
            identity, key = self._auth.for_http(_http.credentials(request.headers, body), now_s=time.time())
            dispatched = asyncio.Event()
            call = _http.to_call(body, identity, DEFAULT_HTTP_MAX_TOKENS, key,
                                 on_dispatch=dispatched.set if body.stream else None)
            events = self._traced(call, RouterTracing.carrier_of(request.headers))
            if not body.stream:
                return await self._http_reply(call, events)
            first = asyncio.ensure_future(anext(events))
            _cancel_when_this_request_ends(first)
            await first_event_or_a_silent_run(first, dispatched, STREAM_COMMIT_S)
            if first.done():
                first.result()
        except ControlPlaneError as exc:
            return _http.error_from_exception(exc)
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(self._sse(call, first, events, include_usage), media_type="text/event-stream")

    async def _http_reply(self, call: Call, events: AsyncIterator[dict[str, Any]]) -> JSONResponse:
        reply = ReplyAssembler()
        async for event in events:
            reply.add(event)
        return JSONResponse(_http.reply_json(call, reply))

    def _http_body(self, raw: bytes, body_cls: type, headers: Any) -> Any:
        """The parsed body; a caller without valid credentials learns nothing about a bad body (401 first)."""
        try:
            return _http.parse_body(raw, body_cls)
        except SpecError:
            self._auth.for_http(_http.credentials(headers), now_s=time.time())
            raise

    async def _sse(self, call: Call, first: asyncio.Future[dict[str, Any]], events: AsyncIterator[dict[str, Any]],
                   include_usage: bool) -> AsyncIterator[str]:
        """The call's SSE chunks, after a comment line every STREAM_HEARTBEAT_S while the first one is due."""
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            while not first.done():
                done, _ = await asyncio.wait([first], timeout=STREAM_HEARTBEAT_S)
                if not done:
                    yield ": waiting for the first token\n\n"
            async for event in _chain(first.result(), events):
                yield _http.sse_chunk(call, request_id, event, include_usage)
        except ControlPlaneError as exc:
            yield _http.sse_error(exc)
        yield "data: [DONE]\n\n"
