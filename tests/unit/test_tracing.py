"""Tracing: one trace across an inject/extract hop, GenAI attribute names, no content unless asked, a no-op
while off, and spans that reach both the OTLP JSON file and a real OTLP/HTTP receiver."""

import base64
import json
import threading

import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane import _tracing as tracing
from controlplane._trace_file import read_spans, to_otlp_json
from controlplane._tracing import TracingConfig
from tests.helpers.otlp_receiver import OtlpReceiver

SECRET = "launch on the 3rd, codename BLUEBIRD"
CONTENT_KEYS = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                "gen_ai.tool.call.result", "gen_ai.retrieval.query.text"}


@pytest.fixture(autouse=True)
def _tracing_off_after():
    yield
    tracing.shutdown()


def in_memory(**config) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(otlp_endpoint=None, **config), exporters=[exporter], batch=False)
    return exporter


def in_another_process(fn, *args):
    """Run `fn` in a fresh thread: no context is inherited, only what the carrier holds."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    thread.join()
    return out[0]


def agent_step(carrier):
    with tracing.invoke_agent("writer", mission_id="m-1", task_id="draft", attempt=2, parent=carrier):
        with tracing.memory("search_memory", "shared", agent="writer", query=SECRET):
            pass
        with tracing.execute_tool("web.search", agent="writer", call_id="c1", arguments={"q": SECRET}) as tool:
            tracing.record_tool_result(tool, SECRET)
        return tracing.inject()


def router_call(carrier):
    with tracing.chat("default", agent="writer", mission_id="m-1", max_tokens=64, temperature=0.0,
                      messages=[{"role": "user", "content": SECRET}], parent=carrier) as span:
        tracing.queue_wait(0.25, model="default")
        tracing.record_chat_result(span, input_tokens=12, output_tokens=5, finish_reasons=["stop"],
                                   response_model="default", usd=0.0012, output=SECRET)


def a_mission():
    with tracing.invoke_workflow("m-1", "launch"):
        carrier = tracing.inject()
    agent_carrier = in_another_process(agent_step, carrier)
    in_another_process(router_call, agent_carrier)


def by_name(spans):
    return {s.name: s for s in spans}


def test_off_is_a_shared_no_op():
    assert not tracing.enabled() and tracing.inject() == {} and tracing.extract({"traceparent": "x"}) is None
    assert tracing.chat("m") is tracing.invoke_agent("a", mission_id="m", task_id="t", attempt=1)
    with tracing.chat("m") as span:
        tracing.record_chat_result(span, input_tokens=1, output_tokens=1)
        tracing.queue_wait(1.0, model="m")
        assert not span.is_recording()


def test_one_trace_across_actor_and_router_hops():
    exporter = in_memory()
    a_mission()
    spans = by_name(exporter.get_finished_spans())
    workflow, agent = spans["invoke_workflow launch"], spans["invoke_agent writer"]
    chat, tool, memory = spans["chat default"], spans["execute_tool web.search"], spans["search_memory shared"]
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert workflow.parent is None
    assert agent.parent.span_id == workflow.context.span_id
    assert tool.parent.span_id == memory.parent.span_id == chat.parent.span_id == agent.context.span_id
    assert [e.name for e in chat.events] == ["controlplane.router.queue_wait"]
    assert chat.events[0].attributes["controlplane.queue.wait_s"] == 0.25


def test_genai_attribute_names():
    exporter = in_memory()
    a_mission()
    spans = by_name(exporter.get_finished_spans())
    assert dict(spans["chat default"].attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "default", "gen_ai.agent.name": "writer",
        "gen_ai.conversation.id": "m-1", "gen_ai.provider.name": "controlplane", "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.0, "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ("stop",), "gen_ai.response.model": "default",
        "controlplane.usage.usd": 0.0012}
    agent = spans["invoke_agent writer"].attributes
    assert (agent["gen_ai.operation.name"], agent["gen_ai.agent.name"], agent["controlplane.task.attempt"]) == \
        ("invoke_agent", "writer", 2)
    assert spans["invoke_workflow launch"].attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert spans["execute_tool web.search"].attributes["gen_ai.tool.name"] == "web.search"
    assert spans["search_memory shared"].attributes["gen_ai.data_source.id"] == "shared"


def test_no_content_unless_turned_on():
    exporter = in_memory(content=False)
    a_mission()
    for span in exporter.get_finished_spans():
        assert not CONTENT_KEYS & set(span.attributes)
        assert not any(SECRET in str(v) for v in span.attributes.values())
    exporter = in_memory(content=True)
    a_mission()
    recorded = {k for span in exporter.get_finished_spans() for k in span.attributes}
    assert CONTENT_KEYS <= recorded


def test_an_outside_callers_traceparent_is_continued():
    exporter = in_memory()
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    router_call({"traceparent": f"00-{trace_id}-{span_id}-01"})
    (chat,) = exporter.get_finished_spans()
    assert (format(chat.context.trace_id, "032x"), format(chat.parent.span_id, "016x")) == (trace_id, span_id)
    assert tracing.extract({"traceparent": "garbage"}) is None


def test_the_file_holds_otlp_json_lines(tmp_path):
    path = tmp_path / "run" / "traces.jsonl"
    tracing.configure(TracingConfig(service_name="controlplane.test", file_path=str(path), otlp_endpoint=None))
    a_mission()
    tracing.shutdown()  # flushes the batch
    spans = {s["name"]: s for s in read_spans(path)}
    assert set(spans) == {"invoke_workflow launch", "invoke_agent writer", "search_memory shared",
                          "execute_tool web.search", "chat default"}
    chat, agent = spans["chat default"], spans["invoke_agent writer"]
    assert len(chat["trace_id"]) == 32 and chat["trace_id"] == agent["trace_id"]
    assert chat["parent_id"] == agent["span_id"] and chat["service"] == "controlplane.test"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 12 and chat["events"] == [
        "controlplane.router.queue_wait"]
    for line in path.read_text().splitlines():  # each line is an ExportTraceServiceRequest (ids in hex)
        ParseDict(_ids_to_base64(json.loads(line)), ExportTraceServiceRequest())


def test_the_file_encoding_equals_the_otlp_protobuf_encoding():
    exporter = in_memory()
    a_mission()
    spans = exporter.get_finished_spans()
    assert any(s.parent is not None and s.parent.is_remote for s in spans)
    mine = ParseDict(_ids_to_base64(to_otlp_json(spans)), ExportTraceServiceRequest())
    assert mine == encode_spans(spans)


def _ids_to_base64(node):
    if isinstance(node, dict):
        return {k: base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId")
                else _ids_to_base64(v) for k, v in node.items()}
    return [_ids_to_base64(v) for v in node] if isinstance(node, list) else node


def test_spans_reach_a_real_otlp_http_receiver():
    with OtlpReceiver() as receiver:
        tracing.configure(TracingConfig(service_name="controlplane.test", otlp_endpoint=receiver.endpoint))
        a_mission()
        tracing.shutdown()
        spans = {s["name"]: s for s in receiver.spans()}
    assert set(receiver.paths) == {"/v1/traces"}
    assert spans["chat default"]["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert spans["chat default"]["parent_id"] == spans["invoke_agent writer"]["span_id"]
    assert spans["invoke_workflow launch"]["service"] == "controlplane.test"


def test_the_endpoint_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert TracingConfig().otlp_endpoint == "http://collector:4318"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert TracingConfig().otlp_endpoint is None


def test_a_sampled_out_mission_records_no_span_in_any_process_and_its_carrier_says_so():
    exporter = in_memory(sample_ratio=0.0)
    a_mission()
    assert exporter.get_finished_spans() == ()
    with tracing.invoke_workflow("m-2", "launch"):
        carrier = tracing.inject()
    assert int(carrier["traceparent"].split("-")[3], 16) & 1 == 0  # valid ids, the sampled flag off: children follow
    tracing.configure(TracingConfig(otlp_endpoint=None), exporters=[exporter], batch=False)  # a process tracing all
    in_another_process(agent_step, carrier)
    assert exporter.get_finished_spans() == ()


def test_a_ratio_keeps_or_drops_whole_missions():
    exporter = in_memory(sample_ratio=0.5)
    for _ in range(200):
        a_mission()
    by_trace: dict[int, set[str]] = {}
    for span in exporter.get_finished_spans():
        by_trace.setdefault(span.context.trace_id, set()).add(span.name)
    assert 60 < len(by_trace) < 140  # about half the missions
    assert all(len(names) == 5 for names in by_trace.values())  # every kept mission whole


@pytest.mark.parametrize(("sampler", "arg", "ratio"), [(None, None, 1.0), ("always_off", None, 0.0),
                                                       ("parentbased_always_off", None, 0.0),
                                                       ("parentbased_traceidratio", "0.1", 0.1),
                                                       ("TraceIdRatio", None, 1.0)])
def test_the_sample_ratio_comes_from_opentelemetrys_variables(monkeypatch, sampler, arg, ratio):
    for name, value in (("OTEL_TRACES_SAMPLER", sampler), ("OTEL_TRACES_SAMPLER_ARG", arg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert tracing.sample_ratio_from_env() == ratio


@pytest.mark.parametrize(("sampler", "arg", "named"), [("jaeger_remote", None, "OTEL_TRACES_SAMPLER='jaeger_remote'"),
                                                       ("traceidratio", "half", "OTEL_TRACES_SAMPLER_ARG='half'"),
                                                       ("traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG='1.5'")])
def test_a_sampler_controlplane_cannot_apply_is_refused_naming_the_variable_and_the_fix(monkeypatch, sampler, arg,
                                                                                       named):
    from controlplane.errors import SetupError

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(SetupError) as raised:
        tracing.sample_ratio_from_env()
    assert named in str(raised.value) and "Fix:" in str(raised.value) and "0.1" in str(raised.value)
    with pytest.raises(ValueError, match="sample_ratio=1.5"):
        TracingConfig(sample_ratio=1.5)
