"""Tracing: OpenTelemetry spans named after the GenAI semantic conventions, one tracer provider per process.

Off until `configure()` is called in a process; while off every helper is a shared no-op and `inject()`
returns `{}`. When on, spans go to an OTLP JSON lines file when one is set (`_trace_file`: one
`ExportTraceServiceRequest` per line, as the OpenTelemetry Collector's file exporter writes them) and to
OTLP/HTTP when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`). Prompts, outputs, tool arguments and
memory queries go into spans only when `TracingConfig.content` is on.

One mission is one trace: a caller passes `inject()` across a Ray call or a Serve request and the callee
opens its span with `parent=` that carrier (W3C `traceparent`). An HTTP request's headers are a carrier too.
So sampling keeps or drops whole missions: a trace's root decides by its trace id (`TracingConfig.sample_ratio`)
and every span under it follows its parent's decision, in any process.

Spans: `invoke_workflow` (a mission), `invoke_agent` (a task attempt), `chat` (a model call),
`execute_tool`, `memory` (search_memory / update_memory), and `queue_wait` as an event on the current span.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from controlplane._trace_file import OtlpJsonLinesExporter
from controlplane.errors import SetupError

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SAMPLER_ENV, SAMPLER_ARG_ENV = "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_FIXED_SAMPLERS = {"always_on": 1.0, "parentbased_always_on": 1.0, "always_off": 0.0, "parentbased_always_off": 0.0}
PROVIDER_NAME = "controlplane"
MAX_QUEUED_SPANS = 16_384  # per exporter, before the batch processor drops spans
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True, kw_only=True)
class TracingConfig:
    """How a process traces. Picklable: the driver builds it and hands it to every actor."""

    service_name: str = "controlplane"
    """`service.name` of this process's spans, e.g. controlplane.supervisor, controlplane.router."""
    file_path: str | None = None
    """The OTLP JSON lines file (e.g. `<run dir>/traces.jsonl`); processes may share it (one append per batch)."""
    otlp_endpoint: str | None = field(default_factory=lambda: os.environ.get(ENDPOINT_ENV) or None)
    """OTLP/HTTP base URL (spans go to `<endpoint>/v1/traces`); None sends nothing over the network."""
    content: bool = False
    """Record prompts, outputs, tool arguments and memory queries in spans."""
    sample_ratio: float = 1.0
    """The share of traces kept, decided at each trace's root by its id (a mission is one trace); spans with a
    parent follow the parent's decision. `sample_ratio_from_env()` reads OpenTelemetry's variables."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"TracingConfig.sample_ratio={self.sample_ratio!r}: a share of traces, from 0 to 1")


def sample_ratio_from_env() -> float:
    """`TracingConfig.sample_ratio` from OpenTelemetry's standard `OTEL_TRACES_SAMPLER` (and `_ARG`) where a
    mission starts; the mission carries it to every process, whatever their own environment says."""
    name = os.environ.get(SAMPLER_ENV, "").strip().lower() or "parentbased_always_on"
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    known = ", ".join([*_FIXED_SAMPLERS, *_RATIO_SAMPLERS])
    if name not in _RATIO_SAMPLERS:
        raise SetupError(what=f"{SAMPLER_ENV}={name!r} is not a sampler controlplane can apply to a mission "
                              f"(it keeps or drops whole missions; known: {known})",
                         fix=f"unset {SAMPLER_ENV}, or set it to parentbased_traceidratio with {SAMPLER_ARG_ENV}=0.1 "
                             "to trace one mission in ten")
    arg = os.environ.get(SAMPLER_ARG_ENV, "").strip() or "1.0"
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise SetupError(what=f"{SAMPLER_ARG_ENV}={arg!r} is not a share of traces from 0 to 1 ({SAMPLER_ENV}={name} "
                              "needs one)",
                         fix=f"set {SAMPLER_ARG_ENV} to a number from 0 to 1, e.g. 0.1 to trace one mission in ten")
    return ratio


class _NoSpan:
    """What the helpers yield while tracing is off: every call does nothing."""

    def set_attribute(self, key: str, value: Any) -> None: ...
    def set_attributes(self, attributes: Mapping[str, Any]) -> None: ...
    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None: ...
    def record_exception(self, exception: BaseException) -> None: ...
    def set_status(self, status: Any, description: str | None = None) -> None: ...
    def end(self, end_time: int | None = None) -> None: ...
    def is_recording(self) -> bool:
        return False


class _NoOp:
    """A reusable context manager that yields the no-op span."""

    def __enter__(self) -> _NoSpan:
        return NO_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


NO_SPAN, _NO_OP = _NoSpan(), _NoOp()


@dataclass(kw_only=True)
class _State:
    config: TracingConfig
    provider: TracerProvider
    tracer: trace.Tracer


_state: _State | None = None
_lock = threading.Lock()


def configure(config: TracingConfig, *, exporters: Sequence[SpanExporter] = (), batch: bool = True) -> None:
    """Turn tracing on in this process (idempotent for the same config). `exporters` add to the file and OTLP
    ones (tests pass an in-memory exporter); `batch=False` exports each span as it ends."""
    global _state
    with _lock:
        if _state is not None and _state.config == config and not exporters:
            return
        if _state is not None:
            _state.provider.shutdown()
        provider = TracerProvider(resource=Resource.create({"service.name": config.service_name,
                                                            "service.instance.id": str(os.getpid())}),
                                  sampler=ParentBasedTraceIdRatio(config.sample_ratio))
        for exporter in [*_exporters_for(config), *exporters]:
            provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUED_SPANS) if batch
                                        else SimpleSpanProcessor(exporter))
        _state = _State(config=config, provider=provider, tracer=provider.get_tracer("controlplane"))


def _exporters_for(config: TracingConfig) -> list[SpanExporter]:
    out: list[SpanExporter] = []
    if config.file_path:
        out.append(OtlpJsonLinesExporter(config.file_path))
    if config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        out.append(OTLPSpanExporter(endpoint=f"{config.otlp_endpoint.rstrip('/')}/v1/traces"))
    return out


def shutdown() -> None:
    """Flush every exporter and turn tracing off in this process."""
    global _state
    with _lock:
        if _state is not None:
            _state.provider.shutdown()
            _state = None


def force_flush(timeout_s: float = 10.0) -> bool:
    return _state.provider.force_flush(int(timeout_s * 1000)) if _state is not None else True


def enabled() -> bool:
    return _state is not None


def content_enabled() -> bool:
    return _state is not None and _state.config.content


# -- context across boundaries -----------------------------------------------------------------------------
def inject() -> dict[str, str]:
    """The current span's context as W3C headers (`traceparent`, `tracestate`); `{}` while tracing is off."""
    if _state is None:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context a carrier (a dict from `inject()`, or HTTP headers) holds; None when it holds none."""
    if not carrier or _state is None:
        return None
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _span(name: str, kind: trace.SpanKind, attributes: Mapping[str, Any],
          parent: Mapping[str, str] | None) -> Any:
    assert _state is not None
    return _state.tracer.start_as_current_span(name, context=extract(parent), kind=kind,
                                               attributes={k: v for k, v in attributes.items() if v is not None})


def _content(span: Any, key: str, value: Any, content: bool | None = None) -> None:
    wanted = _state is not None and (_state.config.content if content is None else content)
    if wanted and value is not None:
        span.set_attribute(key, value if isinstance(value, str) else json.dumps(value, default=str))


# -- spans -------------------------------------------------------------------------------------------------
def invoke_workflow(mission_id: str, name: str, *, parent: Mapping[str, str] | None = None) -> Any:
    """The mission: the root of its trace (or a child of an outside caller's `parent`)."""
    if _state is None:
        return _NO_OP
    return _span(f"invoke_workflow {name}", trace.SpanKind.INTERNAL,
                 {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": name,
                  "gen_ai.conversation.id": mission_id, "gen_ai.provider.name": PROVIDER_NAME}, parent)


def invoke_agent(agent: str, *, mission_id: str, task_id: str, attempt: int,
                 parent: Mapping[str, str] | None = None) -> Any:
    """One task attempt on an agent."""
    if _state is None:
        return _NO_OP
    return _span(f"invoke_agent {agent}", trace.SpanKind.INTERNAL,
                 {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                  "gen_ai.agent.id": f"{mission_id}:{agent}", "gen_ai.conversation.id": mission_id,
                  "gen_ai.provider.name": PROVIDER_NAME, "controlplane.task.id": task_id,
                  "controlplane.task.attempt": attempt}, parent)


def chat(model: str, *, agent: str | None = None, mission_id: str | None = None, max_tokens: int | None = None,
         temperature: float | None = None, messages: Any = None, parent: Mapping[str, str] | None = None) -> Any:
    """One model call; finish it with `record_chat_result`. `messages` are kept only with content on."""
    if _state is None:
        return _NO_OP
    cm = _span(f"chat {model}", trace.SpanKind.CLIENT,
               _chat_attributes(model, agent, mission_id, max_tokens, temperature), parent)
    return _with_content(cm, "gen_ai.input.messages", messages)


def start_chat(model: str, *, agent: str | None = None, mission_id: str | None = None,
               max_tokens: int | None = None, temperature: float | None = None, messages: Any = None,
               parent: Mapping[str, str] | None = None, content: bool | None = None) -> Any:
    """Like `chat`, but the span is not made current and the caller ends it (`span.end()`): for a call that
    ends in another task, such as a streamed reply. `content` overrides this process's setting for the call."""
    if _state is None:
        return NO_SPAN
    span = _state.tracer.start_span(f"chat {model}", context=extract(parent), kind=trace.SpanKind.CLIENT,
                                    attributes={k: v for k, v in _chat_attributes(
                                        model, agent, mission_id, max_tokens, temperature).items() if v is not None})
    _content(span, "gen_ai.input.messages", messages, content)
    return span


def _chat_attributes(model: str, agent: str | None, mission_id: str | None, max_tokens: int | None,
                     temperature: float | None) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": mission_id, "gen_ai.provider.name": PROVIDER_NAME,
            "gen_ai.request.max_tokens": max_tokens, "gen_ai.request.temperature": temperature}


def record_chat_result(span: Any, *, input_tokens: int, output_tokens: int, finish_reasons: Sequence[str] = (),
                       response_model: str | None = None, usd: float | None = None, output: Any = None,
                       content: bool | None = None) -> None:
    """Usage, finish reasons and cost of a finished model call (`output` only with content on; `content`
    overrides this process's setting for the call)."""
    if not span.is_recording():
        return
    span.set_attributes({"gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
                         "gen_ai.response.finish_reasons": list(finish_reasons)})
    if response_model is not None:
        span.set_attribute("gen_ai.response.model", response_model)
    if usd is not None:
        span.set_attribute("controlplane.usage.usd", usd)
    _content(span, "gen_ai.output.messages", output, content)


def execute_tool(tool: str, *, agent: str | None = None, call_id: str | None = None, arguments: Any = None,
                 parent: Mapping[str, str] | None = None) -> Any:
    """One tool call (`arguments` only with content on; a result via `record_tool_result`)."""
    if _state is None:
        return _NO_OP
    cm = _span(f"execute_tool {tool}", trace.SpanKind.INTERNAL,
               {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.call.id": call_id,
                "gen_ai.agent.name": agent, "gen_ai.provider.name": PROVIDER_NAME}, parent)
    return _with_content(cm, "gen_ai.tool.call.arguments", arguments)


def record_tool_result(span: Any, result: Any) -> None:
    _content(span, "gen_ai.tool.call.result", result)


def memory(operation: str, namespace: str, *, agent: str | None = None, query: str | None = None,
           parent: Mapping[str, str] | None = None) -> Any:
    """A memory operation, `search_memory` or `update_memory` (the proposed GenAI memory names);
    `query` only with content on."""
    if _state is None:
        return _NO_OP
    cm = _span(f"{operation} {namespace}", trace.SpanKind.CLIENT,
               {"gen_ai.operation.name": operation, "gen_ai.data_source.id": namespace, "gen_ai.agent.name": agent,
                "gen_ai.provider.name": PROVIDER_NAME}, parent)
    return _with_content(cm, "gen_ai.retrieval.query.text", query)


def queue_wait(waited_s: float, *, model: str, span: Any = None, timestamp_ns: int | None = None) -> None:
    """The router's queue wait of a call, as an event on `span` (default: the current span), stamped when the
    wait ended (`timestamp_ns`, default now)."""
    if _state is None:
        return
    target = span if span is not None else trace.get_current_span()
    target.add_event("controlplane.router.queue_wait", {"controlplane.queue.wait_s": waited_s,
                                                       "gen_ai.request.model": model}, timestamp=timestamp_ns)


def _with_content(cm: Any, key: str, value: Any) -> Any:
    return _recording(cm, key, value) if value is not None and content_enabled() else cm


@contextmanager
def _recording(cm: Any, key: str, value: Any) -> Iterator[Any]:
    with cm as span:
        _content(span, key, value)
        yield span
