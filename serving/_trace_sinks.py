"""The router's spans, for a router that many missions share.

Each call's `chat` span goes where its caller's spans go: a handle call names its sink (`ChatRequest.trace_sink`:
the mission's traces file and OTLP endpoint), and the router keeps, per trace, the sink to export that trace's
spans to. An HTTP call has no sink of its own: it uses the sink its mission's handle calls named (mission id from
its identity), else the router's own OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` in the router's environment),
else it is not traced. One batch processor (one thread) serves every sink; a sink's exporters are made once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from controlplane import _tracing as tracing
from controlplane._trace_file import OtlpJsonLinesExporter
from controlplane._tracing import TracingConfig

ROUTER_SERVICE = "controlplane.router"
MAX_TRACES = 4096
"""Traces (and missions) whose sink the router remembers; the oldest are forgotten first."""
MAX_SINKS = 256
"""Sinks whose exporters the router keeps."""
TRACE_HEADERS = ("traceparent", "tracestate")
_SinkKey = tuple[str | None, str | None]


def _key(sink: TracingConfig) -> _SinkKey:
    return (sink.file_path, sink.otlp_endpoint)


class _Lru(OrderedDict):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class SinkRouter(SpanExporter):
    """Sends each span to the exporters of its trace's sink; spans of traces with no sink go to `default`."""

    def __init__(self, default: TracingConfig | None = None, *, max_traces: int = MAX_TRACES) -> None:
        self.default = default
        self._sink_of_trace = _Lru(max_traces)
        self._sink_of_mission = _Lru(max_traces)
        self._exporters = _Lru(MAX_SINKS)
        self._otlp: dict[str, SpanExporter] = {}
        self._lock = threading.Lock()

    def route(self, trace_id: int, sink: TracingConfig, mission_id: str | None = None) -> None:
        """Export the spans of `trace_id` to `sink` (and remember it for the mission's later HTTP calls)."""
        with self._lock:
            self._sink_of_trace.put(trace_id, sink)
            if mission_id is not None:
                self._sink_of_mission.put(mission_id, sink)

    def sink_for(self, mission_id: str) -> TracingConfig | None:
        """The sink a mission's handle calls named, else the router's default."""
        with self._lock:
            return self._sink_of_mission.get(mission_id, self.default)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        groups: dict[_SinkKey, tuple[TracingConfig, list[ReadableSpan]]] = {}
        with self._lock:
            for span in spans:
                sink = self._sink_of_trace.get(span.context.trace_id, self.default)
                if sink is not None:
                    groups.setdefault(_key(sink), (sink, []))[1].append(span)
        ok = True
        for sink, members in groups.values():
            for exporter in self._exporters_of(sink):
                ok = exporter.export(members) == SpanExportResult.SUCCESS and ok
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _exporters_of(self, sink: TracingConfig) -> list[SpanExporter]:
        with self._lock:
            found = self._exporters.get(_key(sink))
            if found is None:
                found = [OtlpJsonLinesExporter(sink.file_path)] if sink.file_path else []
                if sink.otlp_endpoint:
                    found.append(self._otlp_exporter(sink.otlp_endpoint))
            self._exporters.put(_key(sink), found)
            return found

    def _otlp_exporter(self, endpoint: str) -> SpanExporter:
        """One OTLP/HTTP exporter (one connection pool) per endpoint, shared by the sinks that name it."""
        if endpoint not in self._otlp:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self._otlp[endpoint] = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
        return self._otlp[endpoint]

    def shutdown(self) -> None:
        with self._lock:
            exporters = list(self._otlp.values())
        for exporter in exporters:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class CallSpan:
    """The router's `chat` span of one call, and whether the call's sink records content."""

    span: Any
    content: bool


class RouterTracing:
    """The router process's tracing: configured once per replica, one `chat` span per traced call."""

    def __init__(self, default_endpoint: str | None) -> None:
        default = TracingConfig(service_name=ROUTER_SERVICE, file_path=None, otlp_endpoint=default_endpoint)
        self.sinks = SinkRouter(default if default_endpoint else None)
        tracing.configure(TracingConfig(service_name=ROUTER_SERVICE, file_path=None, otlp_endpoint=None),
                          exporters=[self.sinks])

    def open(self, *, model: str, mission_id: str, agent: str, body: Mapping[str, Any],
             carrier: Mapping[str, str] | None, sink: TracingConfig | None) -> CallSpan | None:
        """A started `chat` span for a call, or None when the call's spans would go nowhere or its trace is
        sampled out."""
        sink = sink or self.sinks.sink_for(mission_id)
        if sink is None:
            return None
        span = tracing.start_chat(model, agent=agent, mission_id=mission_id, max_tokens=body.get("max_tokens"),
                                  temperature=body.get("temperature"), parent=carrier,
                                  messages=body.get("messages") or body.get("prompt"), content=sink.content)
        if not span.is_recording():  # the caller's trace was sampled out
            return None
        self.sinks.route(span.get_span_context().trace_id, sink, mission_id)
        return CallSpan(span=span, content=sink.content)

    @staticmethod
    def carrier_of(headers: Mapping[str, str]) -> dict[str, str]:
        """The W3C trace context of an HTTP request's headers."""
        return {name: headers[name] for name in TRACE_HEADERS if headers.get(name)}

    @staticmethod
    def flush(timeout_s: float = 10.0) -> bool:
        return tracing.force_flush(timeout_s)

    @staticmethod
    def shutdown() -> None:
        tracing.shutdown()


async def traced(events: AsyncIterator[dict[str, Any]], call: CallSpan | None) -> AsyncIterator[dict[str, Any]]:
    """The router's events of one call, recorded on its `chat` span (None: passed through untouched): the queue
    wait as an event stamped when the call left the queue, usage, cost and finish reason; errors; the end."""
    if call is None:
        async for event in events:
            yield event
        return
    span, parts = call.span, list[str]()
    try:
        async for event in events:
            if event.get("done"):
                _record_final(span, event, "".join(parts) if call.content else None, call.content)
            elif call.content:
                parts.append(event.get("delta", ""))
            yield event
    except GeneratorExit:
        span.set_attribute("controlplane.abandoned", True)
        raise
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        span.end()


def _record_final(span: Any, final: Mapping[str, Any], output: str | None, content: bool) -> None:
    queue_s = float(final.get("queue_s", 0.0))
    tracing.queue_wait(queue_s, model=final["model"], span=span, timestamp_ns=span.start_time + int(queue_s * 1e9))
    tracing.record_chat_result(span, input_tokens=final["prompt_tokens"], output_tokens=final["completion_tokens"],
                               finish_reasons=[final["finish_reason"]], response_model=final["model"],
                               usd=final.get("usd"), output=output, content=content)
