"""The OTLP JSON lines file a run's spans go to: one `ExportTraceServiceRequest` per line, ids in hex, as the
OpenTelemetry Collector's file exporter writes them; `read_spans` reads it back."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

SPAN_FLAGS_HAS_IS_REMOTE, SPAN_FLAGS_IS_REMOTE = 0x100, 0x200  # OTLP span flags: is the parent remote?


class OtlpJsonLinesExporter(SpanExporter):
    """Appends one OTLP JSON `ExportTraceServiceRequest` per batch as one line (one write, O_APPEND)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = (json.dumps(to_otlp_json(spans), separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def to_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Spans as an OTLP/JSON `ExportTraceServiceRequest` (camelCase keys, ids in hex, 64-bit ints as strings).

    Written directly rather than through the protobuf encoder: that round trip cost more than the spans."""
    groups: dict[tuple[int, str], tuple[Any, Any, list[dict[str, Any]]]] = {}
    for span in spans:
        scope = span.instrumentation_scope
        key = (id(span.resource), scope.name if scope else "")
        groups.setdefault(key, (span.resource, scope, []))[2].append(_span_json(span))
    by_resource: dict[int, dict[str, Any]] = {}
    for (resource_id, _), (resource, scope, items) in groups.items():
        entry = by_resource.setdefault(resource_id, {"resource": {"attributes": _attrs(resource.attributes)},
                                                     "scopeSpans": []})
        entry["scopeSpans"].append({"scope": {"name": scope.name if scope else ""}, "spans": items})
    return {"resourceSpans": list(by_resource.values())}


def _span_json(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    out: dict[str, Any] = {"traceId": format(ctx.trace_id, "032x"), "spanId": format(ctx.span_id, "016x"),
                           "name": span.name, "kind": span.kind.value + 1,
                           "startTimeUnixNano": str(span.start_time), "endTimeUnixNano": str(span.end_time),
                           "attributes": _attrs(span.attributes), "status": {"code": span.status.status_code.value}}
    out["flags"] = SPAN_FLAGS_HAS_IS_REMOTE | (SPAN_FLAGS_IS_REMOTE if span.parent and span.parent.is_remote else 0)
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [{"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attrs(e.attributes)}
                         for e in span.events]
    return out


def _attrs(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attributes or {}).items()]


def _any_value(value: Any) -> dict[str, Any]:
    kind = _VALUE_KINDS.get(type(value))
    if kind is None:
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {kind: str(value) if kind == "intValue" else value}


_VALUE_KINDS = {bool: "boolValue", int: "intValue", float: "doubleValue", str: "stringValue"}


def read_spans(path: str | Path) -> list[dict[str, Any]]:
    """Every span in an OTLP JSON lines file, flattened: name, ids, service and attributes as plain values."""
    out = []
    for line in Path(path).read_text().splitlines():
        for resource_spans in json.loads(line).get("resourceSpans", []):
            service = _plain(resource_spans.get("resource", {}).get("attributes", [])).get("service.name")
            for scope in resource_spans.get("scopeSpans", []):
                out += [{"name": s["name"], "trace_id": s["traceId"], "span_id": s["spanId"],
                         "parent_id": s.get("parentSpanId"), "service": service,
                         "attributes": _plain(s.get("attributes", [])),
                         "events": [e["name"] for e in s.get("events", [])]} for s in scope.get("spans", [])]
    return out


def _plain(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: _value(a["value"]) for a in attributes}


def _value(value: dict[str, Any]) -> Any:
    (kind, inner), = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [_value(v) for v in inner.get("values", [])]
    return inner
