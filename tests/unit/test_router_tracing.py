"""The router's side of tracing, on the real RouterCore with fake backends (no Ray): the queue wait measured
and put on the `chat` span as an event, the caller's trace continued, and each call's spans sent to its own
mission's sink, so one shared router writes each mission's file."""

import asyncio
import time

import pytest

from controlplane import ReplicaUnavailable
from controlplane import _tracing as tracing
from controlplane._trace_file import read_spans
from controlplane._tracing import TracingConfig
from controlplane.config import ServingConfig
from serving import Identity
from serving._core import Call, RouterCore
from serving._trace_sinks import RouterTracing, traced

SECRET = "the launch codename is BLUEBIRD"
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


class SlowBackend:
    def __init__(self, delay_s=0.0, fail=False):
        self.delay_s, self.fail = delay_s, fail

    async def stream(self, call, affinity_key):
        await asyncio.sleep(self.delay_s)
        if self.fail:
            yield {"done": True, "error": {"status": 503, "message": "replica gone"}}
            return
        yield {"delta": "scripted words"}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 2}


@pytest.fixture
def router_tracing():
    yield RouterTracing(default_endpoint=None)
    tracing.shutdown()


def core(delay_s=0.0, fail=False):
    config = ServingConfig.model_validate({"models": {"m": {"kind": "scripted", "limits": {"max_in_flight": 1},
                                                            "price": {"input_usd_per_1m": 1000.0}}}})
    return RouterCore(config, {"m": SlowBackend(delay_s, fail)})


def call(mission="m-1", agent="writer"):
    return Call(model="m", body={"messages": [{"role": "user", "content": SECRET}], "max_tokens": 8},
                identity=Identity(mission_id=mission, agent_id=agent))


async def through(router_tracing, the_core, the_call, *, sink, carrier=None):
    span = router_tracing.open(model=the_call.model, mission_id=the_call.identity.mission_id,
                               agent=the_call.identity.agent_id, body=the_call.body, carrier=carrier, sink=sink)
    return [event async for event in traced(the_core.stream(the_call), span)]


def sink(tmp_path, name, content=False):
    return TracingConfig(file_path=str(tmp_path / name / "traces.jsonl"), otlp_endpoint=None, content=content)


def test_queue_wait_is_measured_at_the_gate_and_is_an_event_on_the_chat_span(router_tracing, tmp_path):
    the_core, mission = core(delay_s=0.2), sink(tmp_path, "m-1")

    async def two_at_once():
        return await asyncio.gather(through(router_tracing, the_core, call(), sink=mission),
                                    through(router_tracing, the_core, call(), sink=mission))

    first, second = (events[-1] for events in asyncio.run(two_at_once()))
    assert first["queue_s"] < 0.05 and 0.15 < second["queue_s"] < 0.5  # the second waited for the one slot
    assert second["latency_s"] - second["queue_s"] == pytest.approx(0.2, abs=0.1)
    router_tracing.flush()
    spans = read_spans(mission.file_path)
    assert [s["name"] for s in spans] == ["chat m", "chat m"] and all(s["service"] == "controlplane.router"
                                                                        for s in spans)
    attributes = spans[0]["attributes"]
    assert {"gen_ai.operation.name", "gen_ai.request.model", "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons", "gen_ai.agent.name",
            "controlplane.usage.usd"} <= set(attributes)
    assert attributes["gen_ai.agent.name"] == "writer" and attributes["gen_ai.conversation.id"] == "m-1"
    assert attributes["controlplane.usage.usd"] == pytest.approx(7 * 1000 / 1e6)
    assert all(s["events"] == ["controlplane.router.queue_wait"] for s in spans)


def test_the_event_is_stamped_when_the_call_left_the_queue(router_tracing, tmp_path):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    router_tracing.sinks._exporters.put((None, None), [memory])  # a sink whose exporter is in memory
    the_core = core(delay_s=0.2)

    async def two_at_once():
        nowhere = TracingConfig(file_path=None, otlp_endpoint=None)
        await asyncio.gather(through(router_tracing, the_core, call(), sink=nowhere),
                             through(router_tracing, the_core, call(), sink=nowhere))

    asyncio.run(two_at_once())
    router_tracing.flush()
    for span in memory.get_finished_spans():
        (event,) = span.events
        waited_s = event.attributes["controlplane.queue.wait_s"]
        assert event.timestamp == span.start_time + int(waited_s * 1e9)
        assert event.timestamp < span.end_time


def test_one_shared_router_writes_each_missions_spans_to_its_own_file(router_tracing, tmp_path):
    the_core = core()
    one, two = sink(tmp_path, "m-1"), sink(tmp_path, "m-2")
    carrier = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}

    async def calls():
        await through(router_tracing, the_core, call("m-1"), sink=one, carrier=carrier)
        await through(router_tracing, the_core, call("m-2"), sink=two)
        await through(router_tracing, the_core, call("m-1"), sink=None)  # an HTTP call of m-1: m-1's sink
        assert router_tracing.open(model="m", mission_id="other", agent="a", body={}, carrier=None,
                                   sink=None) is None  # no sink, no default endpoint: not traced at all

    asyncio.run(calls())
    router_tracing.flush()
    first, second = read_spans(one.file_path), read_spans(two.file_path)
    assert len(first) == 2 and len(second) == 1
    assert {s["attributes"]["gen_ai.conversation.id"] for s in first} == {"m-1"}
    assert second[0]["attributes"]["gen_ai.conversation.id"] == "m-2"
    continued = next(s for s in first if s["trace_id"] == TRACE_ID)
    assert continued["parent_id"] == PARENT_ID  # the caller's trace goes on through the router


def test_content_only_when_the_callers_sink_asks_for_it(router_tracing, tmp_path):
    the_core = core()
    quiet, loud = sink(tmp_path, "quiet"), sink(tmp_path, "loud", content=True)
    asyncio.run(through(router_tracing, the_core, call("q"), sink=quiet))
    asyncio.run(through(router_tracing, the_core, call("l"), sink=loud))
    router_tracing.flush()
    (quiet_span,) = read_spans(quiet.file_path)
    (loud_span,) = read_spans(loud.file_path)
    assert not any(SECRET in str(v) for v in quiet_span["attributes"].values())
    assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(quiet_span["attributes"])
    assert SECRET in loud_span["attributes"]["gen_ai.input.messages"]
    assert loud_span["attributes"]["gen_ai.output.messages"] == "scripted words"


def test_a_failed_call_ends_its_span_with_the_error(router_tracing, tmp_path):
    mission = sink(tmp_path, "m-1")
    with pytest.raises(ReplicaUnavailable):
        asyncio.run(through(router_tracing, core(fail=True), call(), sink=mission))
    router_tracing.flush()
    (span,) = read_spans(mission.file_path)
    assert "gen_ai.usage.input_tokens" not in span["attributes"]
    line = open(mission.file_path).read()
    assert '"status":{"code":2' in line and "ReplicaUnavailable" in line


def test_http_headers_carry_the_trace_context():
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "k=v", "x-agent-id": "a"}
    assert RouterTracing.carrier_of(headers) == {"traceparent": headers["traceparent"], "tracestate": "k=v"}
    assert RouterTracing.carrier_of({}) == {}


def test_untraced_calls_pass_through_untouched():
    async def run():
        return [event async for event in traced(core().stream(call()), None)]

    started = time.perf_counter()
    events = asyncio.run(run())
    assert events[0] == {"delta": "scripted words"} and events[-1]["queue_s"] >= 0
    assert time.perf_counter() - started < 5


def test_a_call_of_a_sampled_out_trace_is_served_and_makes_no_span(router_tracing, tmp_path):
    the_core, mission = core(), sink(tmp_path, "m-1")
    sampled_out = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    assert router_tracing.open(model="m", mission_id="m-1", agent="writer", body={}, carrier=sampled_out,
                               sink=mission) is None
    events = asyncio.run(through(router_tracing, the_core, call(), sink=mission, carrier=sampled_out))
    assert events[-1]["done"] and events[-1]["completion_tokens"] == 2
    router_tracing.flush()
    assert not (tmp_path / "m-1" / "traces.jsonl").exists()
