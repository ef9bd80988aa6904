"""The timeline: one bar per attempt, the critical path over the actual run, and a bottleneck named with its reason."""

import pytest

from controlplane._core.timeline import (
    AttemptDetail,
    agent_stats,
    build_timeline,
    deps_from_result,
    find_bottleneck,
    name_bottleneck,
)
from tests.helpers.synthetic_run import Step, agent, simulate, task


def work(seconds: float, *, queue_s: float = 0.0, model: str = "default", tools_s=None, usd: float = 0.0) -> Step:
    model_s = seconds - queue_s - sum((tools_s or {}).values()) - 0.05
    return Step(duration_s=seconds, detail=AttemptDetail(queue_s=queue_s, model_s=model_s, tools_s=tools_s or {},
                                                         model=model, usd=usd, input_tokens=100, output_tokens=20))


def timeline_of(run, **kwargs):
    return build_timeline(run.events, deps_from_result(run.result), **kwargs)


def test_critical_path_follows_the_dependency_that_ended_last():
    tasks = [task("a", "w1"), task("b", "w2", "a"), task("c", "w3", "a"), task("d", "w1", "b", "c")]
    seconds = {"a": 1.0, "b": 1.0, "c": 5.0, "d": 2.0}
    run = simulate(tasks, [agent("w1"), agent("w2"), agent("w3")], lambda t, a, n: work(seconds[t]))
    timeline = timeline_of(run)
    assert timeline.critical_path == ("a", "c", "d")
    assert timeline.critical_s == pytest.approx(8.0)
    assert sum(p.seconds for p in timeline.path_parts) == pytest.approx(timeline.critical_s)
    assert timeline.startup_s == pytest.approx(2.0) and timeline.makespan_s == pytest.approx(10.0)
    assert {p.task for p in timeline.path_parts} == {"a", "c", "d"}


def test_a_busy_agent_puts_its_waiting_task_on_the_path_as_waiting():
    # w1 runs a (4 s) and b (1 s) one at a time: b waits for the agent, not for a dependency.
    run = simulate([task("a", "w1"), task("b", "w1")], [agent("w1")], lambda t, a, n: work(4.0 if t == "a" else 1.0))
    timeline = timeline_of(run)
    b = next(bar for bar in timeline.bars if bar.task == "b")
    assert b.segments[0].kind == "wait" and b.segments[0].duration_s == pytest.approx(4.0)
    assert timeline.critical_path == ("b",)
    assert find_bottleneck(timeline).part == "wait"


def test_retries_are_separate_attempts_with_backoff_between():
    def plan(t, a, n):
        return Step(duration_s=1.0, error="boom") if (t, n) == ("a", 1) else work(2.0)

    run = simulate([task("a", "w"), task("b", "w", "a")], [agent("w")], plan)
    timeline = timeline_of(run)
    bars = [b for b in timeline.bars if b.task == "a"]
    assert [(b.attempt, b.outcome) for b in bars] == [(1, "retrying"), (2, "succeeded")]
    assert bars[0].message == "boom; retry in 0.50 s"
    assert bars[0].segments[-1].kind == "backoff" and bars[0].segments[-1].duration_s == pytest.approx(0.5)
    assert bars[0].finish_s == pytest.approx(bars[1].ready_s)
    assert len(timeline.bars) == 3
    retry_s = sum(p.seconds for p in timeline.path_parts if p.part == "retry")
    assert retry_s == pytest.approx(1.5)  # the failed attempt and its backoff are on the path


@pytest.mark.parametrize(("slots", "part"), [(1, "wait"), (4, "model")])
def test_a_slow_agent_is_named_as_the_bottleneck(slots, part):
    # One slot: its tasks queue behind each other (waiting); four: its own model work is what is slow.
    agents = [agent("lead"), agent("researcher"), agent("copywriter", max_concurrency=slots), agent("reviewer")]
    tasks = [task("plan", "lead")]
    for i in range(4):
        tasks += [task(f"research{i}", "researcher", "plan"), task(f"copy{i}", "copywriter", f"research{i}"),
                  task(f"review{i}", "reviewer", f"copy{i}")]
    slow = {"copywriter": 9.0}
    run = simulate(tasks, agents, lambda t, a, n: work(slow.get(a, 1.0), queue_s=0.1))
    found = find_bottleneck(timeline_of(run))
    assert (found.kind, found.name) == ("agent", "copywriter")
    assert found.share > 0.5 and found.part == part and found.queueing == (part == "wait")
    assert name_bottleneck(timeline_of(run)).startswith("copywriter: ")


def test_an_overloaded_model_queue_is_named_as_the_bottleneck():
    names = ["lead", "researcher", "copywriter", "reviewer"]
    tasks = [task(f"t{i}", names[i], *([f"t{i - 1}"] if i else [])) for i in range(4)]
    run = simulate(tasks, [agent(n) for n in names],
                   lambda t, a, n: work(10.0, queue_s=7.0) if a != "lead" else work(2.0, model="small"))
    found = find_bottleneck(timeline_of(run))
    assert (found.kind, found.name, found.part) == ("model", "default", "queue")
    assert found.queueing and found.share == pytest.approx(21.0 / 32.0)
    assert found.sentence == ("model `default`: 66% of the critical path, all of it waiting in the router queue "
                              "(queueing)")


def test_one_agent_behind_a_busy_model_is_named_with_the_model_queue():
    run = simulate([task("a", "copywriter"), task("b", "reviewer", "a")], [agent("copywriter"), agent("reviewer")],
                   lambda t, a, n: work(10.0, queue_s=7.0, model="default") if a == "copywriter"
                   else work(4.0, model="small"))
    sentence = name_bottleneck(timeline_of(run))
    assert sentence == ("copywriter: 71% of the critical path, 70% of it waiting in the router queue behind the "
                        "`default` model (queueing)")


def test_a_slow_tool_is_named_by_its_name():
    run = simulate([task("a", "w")], [agent("w")], lambda t, a, n: work(10.0, tools_s={"web.search": 8.0,
                                                                                         "calc": 0.5}))
    found = find_bottleneck(timeline_of(run))
    assert (found.kind, found.name) == ("agent", "w")  # ties go to the agent
    assert found.part == "tool"
    assert found.sentence == "w: 100% of the critical path, 80% of it running the tool `web.search` (work)"


def test_detail_passed_in_wins_and_overreported_time_is_scaled_to_the_attempt():
    run = simulate([task("a", "w")], [agent("w")], lambda t, a, n: Step(duration_s=2.0))
    detail = AttemptDetail(queue_s=3.0, model_s=1.0, model="m")
    bar = timeline_of(run, details={("a", 1): detail}).bars[0]
    assert [(s.kind, s.duration_s) for s in bar.segments] == [("queue", pytest.approx(1.5)),
                                                              ("model", pytest.approx(0.5))]


def test_a_live_view_ends_running_attempts_now():
    events = [{"seq": 0, "time_s": 100.0, "kind": "mission", "status": "starting"},
              {"seq": 1, "time_s": 101.0, "kind": "task", "status": "ready", "task": "a"},
              {"seq": 2, "time_s": 101.5, "kind": "task", "status": "running", "task": "a", "agent": "w",
               "attempt": 1}]
    timeline = build_timeline(events, {"a": []}, now_s=110.0)
    (bar,) = timeline.bars
    assert (bar.outcome, bar.end_s, timeline.critical_path) == ("running", 10.0, ("a",))
    assert [s.kind for s in bar.segments] == ["wait", "other"]


def test_no_tasks_no_bottleneck():
    timeline = build_timeline([{"seq": 0, "time_s": 1.0, "kind": "mission", "status": "starting"}], {})
    assert timeline.bars == () and find_bottleneck(timeline) is None
    assert "no bottleneck" in name_bottleneck(timeline)


def test_agent_stats_sum_tokens_dollars_and_latency():
    run = simulate([task("a", "w"), task("b", "w")], [agent("w")], lambda t, a, n: work(2.0 if t == "a" else 4.0,
                                                                                         usd=0.25))
    stats = agent_stats(timeline_of(run))["w"]
    assert (stats.attempts, stats.tokens, stats.usd, stats.busy_s) == (2, 240, 0.5, 6.0)
    assert (stats.latency_p50_s, stats.latency_max_s) == (2.0, 4.0)
