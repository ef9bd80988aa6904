"""Per-attempt detail: the agent's sums of its model calls and tools, carried by the scheduler's attempt events
(success and failure) into the timeline, with the dollars on the task."""

import pickle
from dataclasses import asdict

from actors._observe import attach_detail, detail_of, model_calls_of
from controlplane import ReplicaUnavailable
from controlplane._core.attempt_meter import AttemptMeter
from controlplane._core.events import EventLog
from controlplane._core.prompts import StepResult
from controlplane._core.scheduler import Scheduler
from controlplane._core.timeline import AttemptDetail, build_timeline, slowest_agent
from controlplane.config.mission import AgentSpec, Policies, TaskSpec


def metered() -> AttemptDetail:
    meter = AttemptMeter()
    meter.add_chat(queue_s=0.5, latency_s=2.0, usd=0.001, model="default", input_tokens=100, output_tokens=20)
    meter.add_chat(queue_s=0.25, latency_s=1.0, usd=0.002, model="small", input_tokens=50, output_tokens=10)
    meter.add_tool("web.search", 0.3)
    meter.add_tool("web.search", 0.2)
    return meter.detail()


def test_the_meter_splits_router_latency_into_queue_and_model_time():
    detail = metered()
    assert (detail.queue_s, detail.model_s, detail.tool_s) == (0.75, 2.25, 0.5)
    assert (detail.input_tokens, detail.output_tokens, detail.model) == (150, 30, "small")
    assert round(detail.usd, 6) == 0.003
    assert AttemptDetail.from_data(detail.to_data()) == detail
    assert AttemptDetail().to_data() == {}


def scheduler() -> tuple[Scheduler, EventLog]:
    log = EventLog("m")
    tasks = [TaskSpec(id="a", description="a", agent="w", retries=1), TaskSpec(id="b", description="b", agent="w")]
    sched = Scheduler(tasks, [AgentSpec(name="w", role="w", max_concurrency=2)], Policies(retry_backoff_s=0.1), log,
                      now_s=0.0)
    return sched, log


def test_attempt_events_carry_the_detail_of_successes_and_failures():
    sched, log = scheduler()
    detail = metered()
    a, b = sched.dispatch(0.0)
    failed = AttemptDetail(queue_s=4.0, usd=0.01, model="default")
    sched.on_failure(a.task, a.attempt, "ReplicaUnavailable: down", 5.0, detail=asdict(failed))
    step = StepResult(output="ok", prompt_tokens=150, completion_tokens=30, attempt=1, started_at_s=0.0,
                      ended_at_s=4.0, model_latency_s=3.0, detail=detail, loop={"steps": 1})
    assert step.fields() == asdict(step) and step.fields()["loop"] is step.loop  # the same, but not deep-copied
    sched.on_success(b.task, b.attempt, step.fields(), 4.0)
    ends = {(e.task, e.status): e.data for e in log.events if e.status in ("retrying", "succeeded")}
    assert AttemptDetail.from_data(ends[("a", "retrying")]) == failed
    assert AttemptDetail.from_data(ends[("b", "succeeded")]) == detail
    assert ends[("b", "succeeded")]["tokens"] == 180
    assert sched.tasks["a"].to_dict()["usd"] == 0.01 and sched.tasks["b"].to_dict()["usd"] == 0.003

    bars = {b.task: b for b in build_timeline([e.to_dict() for e in log.events], {"a": [], "b": []}).bars}
    assert [s.kind for s in bars["b"].segments] == ["queue", "model", "tool", "other"]
    assert [(s.kind, s.duration_s) for s in bars["a"].segments] == [("queue", 4.0), ("other", 1.0)]


def test_a_failed_attempts_detail_and_model_calls_travel_with_its_exception_across_pickling():
    detail, calls = metered(), [{"agent": "w", "task": "a", "outcome": "ok"}]
    for error in (ValueError("not JSON"), ReplicaUnavailable(model="default", why="down")):
        copy = pickle.loads(pickle.dumps(attach_detail(error, detail, calls)))
        assert AttemptDetail.from_data(detail_of(copy)) == detail
        assert model_calls_of(copy) == calls
        assert str(copy) == str(error)
    assert detail_of(RuntimeError("plain")) is None and model_calls_of(RuntimeError("plain")) == []


def test_the_slowest_agent_is_the_one_with_the_longest_median_attempt_running_ones_count():
    sched, log = scheduler()
    events = [e.to_dict() for e in log.events]
    assert slowest_agent(build_timeline(events, {})) is None
    sched.dispatch(1.0)
    timeline = build_timeline([e.to_dict() for e in log.events], {"a": [], "b": []}, now_s=11.0)
    name, stats = slowest_agent(timeline)
    assert name == "w" and stats.latency_p50_s == 10.0 and stats.attempts == 2
