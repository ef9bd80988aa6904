"""The actors' tracing helpers without Ray: the mission span is the parent of each attempt's span, an attempt's
router calls carry that span's context and the mission's sink, and a failed attempt keeps its detail."""

import asyncio

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors._observe import (
    AttemptObserver,
    MissionTrace,
    attach_detail,
    detail_of,
    late_model_calls,
    mission_tracing,
    model_calls_of,
    request_trace,
)
from controlplane import _tracing as tracing
from controlplane._core.prompts import StepResult
from controlplane._core.timeline import AttemptDetail
from controlplane._tracing import TracingConfig
from serving import ChatMessage, ChatRequest, ChatResult, Usage

SINK = TracingConfig(file_path="/runs/m-1/traces.jsonl", otlp_endpoint=None)


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure(TracingConfig(otlp_endpoint=None), exporters=[exporter], batch=False)
    yield exporter
    tracing.shutdown()


def reply(queue_s=0.5, latency_s=2.0):
    return ChatResult(text="ok", model="default", backend="scripted", finish_reason="stop", ttft_s=1.0,
                      latency_s=latency_s, queue_s=queue_s, usage=Usage(prompt_tokens=10, completion_tokens=3,
                                                                        usd=0.002))


def test_an_attempt_is_a_child_of_the_mission_and_its_router_calls_carry_the_attempt(spans):
    mission = MissionTrace("m-1", "launch")
    carrier = tracing.inject()
    with AttemptObserver(agent="writer", mission_id="m-1", task_id="draft", attempt=1, trace=carrier,
                         sink=SINK) as observer:
        fields = observer.request_fields()
        request = ChatRequest(model="default", messages=[ChatMessage(role="user", content="hi")], **fields)
        observer.chat_done(reply())
        with observer.tool("web.search"):
            pass
    mission.end("succeeded", "")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    workflow, agent = by_name["invoke_workflow launch"], by_name["invoke_agent writer"]
    assert agent.parent.span_id == workflow.context.span_id
    assert by_name["execute_tool web.search"].parent.span_id == agent.context.span_id
    assert request.trace_sink == SINK and f"{agent.context.span_id:016x}" in request.trace["traceparent"]
    assert agent.attributes["controlplane.queue_s"] == 0.5 and agent.attributes["controlplane.usage.usd"] == 0.002
    assert workflow.attributes["controlplane.mission.status"] == "succeeded"
    detail = observer.detail()
    assert (detail.queue_s, detail.model_s, detail.model, set(detail.tools_s)) == (0.5, 1.5, "default",
                                                                                   {"web.search"})


def test_a_mission_knows_whether_it_is_traced_and_a_dropped_one_hands_its_agents_no_tracing():
    assert not MissionTrace("m-1", "launch").sampled  # tracing off
    for ratio, sampled in ((1.0, True), (0.0, False)):
        config = TracingConfig(otlp_endpoint=None, sample_ratio=ratio)
        tracing.configure(config, exporters=[InMemorySpanExporter()])
        mission = MissionTrace("m-1", "launch")
        assert mission.sampled is sampled
        assert mission.handed_on(config) == (config if sampled else None)
        mission.end("succeeded", "")
    tracing.shutdown()


def test_a_failed_attempt_marks_its_span_and_keeps_its_detail(spans):
    with pytest.raises(ValueError) as raised:
        with AttemptObserver(agent="writer", mission_id="m-1", task_id="draft", attempt=2, trace=None,
                             sink=SINK) as observer:
            observer.chat_done(reply(queue_s=3.0, latency_s=3.5))
            raise ValueError("the model returned invalid JSON")
    assert AttemptDetail.from_data(detail_of(raised.value)).queue_s == 3.0
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"


def test_an_attempts_model_call_records_are_sent_on_their_own_only_when_it_is_cancelled():
    sent: list[list[dict]] = []
    record = {"agent": "w", "task": "t", "outcome": "CancelledError"}

    def send(records: list[dict]) -> str:
        sent.append(records)
        return f"delivery-{len(sent)}"

    observers: list[AttemptObserver] = []

    def attempt(outcome: BaseException | None) -> AttemptObserver:
        observer = AttemptObserver(agent="w", mission_id="m", task_id="t", attempt=len(observers) + 1, trace=None,
                                   sink=None, send_model_calls=send)
        observers.append(observer)
        with observer:
            observer.model_calls.append(record)
            if outcome is not None:
                raise outcome
        return observer

    assert attempt(None).model_calls == [record] and sent == []  # the result carries them
    with pytest.raises(ValueError) as raised:
        attempt(ValueError("bad"))
    assert model_calls_of(raised.value) == [record] and sent == []  # the exception carries them
    for _ in range(2):
        with pytest.raises(asyncio.CancelledError):
            attempt(asyncio.CancelledError())
    assert sent == [[record], [record]]  # nobody awaits a cancelled attempt's outcome
    # each cancelled attempt keeps its own delivery, which the agent awaits before the cancellation ends
    assert [o.sent_model_calls for o in observers] == [None, None, "delivery-1", "delivery-2"]


def test_an_attempt_whose_code_meets_its_cancellation_with_an_error_sends_its_records():
    """Nobody awaits the outcome of a cancelled attempt, whatever its code raised instead."""
    sent: list[list[dict]] = []
    record = {"agent": "w", "task": "t", "outcome": "ok"}

    async def attempt() -> tuple[AttemptObserver, BaseException]:
        observer = AttemptObserver(agent="w", mission_id="m", task_id="t", attempt=1, trace=None, sink=None,
                                   send_model_calls=lambda records: sent.append(records) or "delivery")
        try:
            with observer:
                observer.model_calls.append(record)
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    raise RuntimeError("cleanup failed") from None
        except RuntimeError as error:
            return observer, error
        raise AssertionError("the attempt did not fail")

    async def cancelled() -> tuple[AttemptObserver, BaseException]:
        run = asyncio.create_task(attempt())
        await asyncio.sleep(0)
        run.cancel()
        return await run

    observer, error = asyncio.run(cancelled())
    assert sent == [[record]] and observer.sent_model_calls == "delivery"
    assert model_calls_of(error) == []  # sent once, not also on the error


def test_without_tracing_nothing_is_added_to_requests():
    assert request_trace(None) == {}
    assert mission_tracing(None, log_content=True) is None
    assert mission_tracing(SINK, log_content=True).content is True
    with AttemptObserver(agent="w", mission_id="m", task_id="t", attempt=1, trace=None, sink=None) as observer:
        observer.chat_done(reply())
    assert observer.request_fields() == {} and observer.detail().queue_s == 0.5


def test_a_cancelled_attempt_that_ended_anyway_gives_its_records_from_its_result_or_error():
    record = {"agent": "w", "task": "t", "outcome": "ok"}

    async def outcomes() -> list[list[dict]]:
        loop = asyncio.get_running_loop()
        finished, failed, stopped, pending = (loop.create_future() for _ in range(4))
        finished.set_result(StepResult(output="x", prompt_tokens=1, completion_tokens=1, attempt=1, started_at_s=0.0,
                                       ended_at_s=1.0, model_latency_s=1.0, model_call_records=[record]))
        failed.set_exception(attach_detail(ValueError("bad"), AttemptDetail(), [record]))
        stopped.set_exception(asyncio.CancelledError())  # the agent sent the records of an attempt it stopped
        return [late_model_calls(f) for f in (finished, failed, stopped, pending)]

    assert asyncio.run(outcomes()) == [[record], [record], [], []]
