"""The mission runtime on real Ray, with the scripted engine behind the real router (fast, deterministic)."""

from __future__ import annotations

import pytest

from controlplane import AgentSpec, TaskSpec
from controlplane._core.prompts import build_messages
from tests.helpers import agent, by_id, run_mission, task


def test_independent_tasks_run_in_parallel_across_agents(router):
    fan = [task(f"w{i}", f"a{i}") for i in range(4)]
    result = run_mission(router, {"agents": [agent(f"a{i}", model="scripted-slow") for i in range(4)],
                          "tasks": fan + [task("join", "a0", deps=tuple(f"w{i}" for i in range(4)))]})
    assert result["status"] == "succeeded", result["reason"]
    tasks = by_id(result)
    fan_tasks = [tasks[f"w{i}"] for i in range(4)]
    # All four started before any of them ended: they overlapped (each model call takes 200 ms).
    assert max(t["started_at"] for t in fan_tasks) < min(t["ended_at"] for t in fan_tasks)
    assert tasks["join"]["started_at"] >= max(t["ended_at"] for t in fan_tasks)
    fan_span = max(t["ended_at"] for t in fan_tasks) - min(t["started_at"] for t in fan_tasks)
    assert fan_span < 2 * 0.2 + 0.3, fan_span  # sequential would take >= 0.8 s


def test_max_concurrency_runs_tasks_side_by_side_on_one_agent(router):
    data = {"agents": [agent("solo", model="scripted-slow", max_concurrency=3)],
            "tasks": [task(f"t{i}", "solo") for i in range(3)]}
    tasks = by_id(run_mission(router, data)).values()
    assert max(t["started_at"] for t in tasks) < min(t["ended_at"] for t in tasks)


def test_dependency_results_reach_the_dependent_prompt(router):
    data = {"agents": [agent("a"), agent("b")],
            "tasks": [task("first", "a", "What is the capital of France?"),
                      task("second", "b", "Use the earlier answer", deps=("first",))]}
    result = run_mission(router, data)
    tasks = by_id(result)
    assert tasks["first"]["output"] == "Paris"
    # The scripted engine counts prompt words; the dependent's prompt must hold the dependency's result.
    spec_b, second = AgentSpec(**data["agents"][1]), TaskSpec(**data["tasks"][1])
    with_ctx = build_messages(spec_b, goal="Test the runtime", task=second, context={"first": "Paris"})
    without = build_messages(spec_b, goal="Test the runtime", task=second, context={})
    words = lambda msgs: sum(len(m["content"].split()) for m in msgs)  # noqa: E731
    assert tasks["second"]["tokens"]["prompt"] == words(with_ctx) != words(without)


def test_timeouts_retry_with_backoff_then_the_fallback_agent_takes_over(router):
    data = {"agents": [agent("slow", model="scripted-slow"), agent("quick")],
            "policies": {"retry_backoff_s": 0.05},
            "tasks": [task("t", "slow", timeout_s=0.1, retries=1, fallback_agent="quick")]}
    result = run_mission(router, data)
    t = by_id(result)["t"]
    assert result["status"] == "succeeded"
    assert (t["agent"], t["status"]) == ("quick", "succeeded")
    trail = [(e["status"], e.get("agent")) for e in result["events"] if e.get("task") == "t"]
    # The slow agent gets 1 + retries attempts (each times out), then the fallback agent takes the task.
    assert [a for s, a in trail if s == "running"][:2] == ["slow", "slow"]
    assert ("retrying", "slow") in trail and ("fallback", "quick") in trail
    assert trail.index(("fallback", "quick")) > trail.index(("retrying", "slow"))
    retry_messages = [e["message"] for e in result["events"] if e["status"] == "retrying"]
    assert retry_messages[0].startswith("timed out after 0.1 s")


def test_a_bad_request_is_not_retried_and_goes_to_the_fallback(router):
    data = {"agents": [agent("broken", model="no-such-model"), agent("ok")],
            "tasks": [task("t", "broken", retries=3, fallback_agent="ok")]}
    t = by_id(run_mission(router, data))["t"]
    assert (t["status"], t["agent"], t["attempts"]) == ("succeeded", "ok", 2)


def test_skip_dependents_policy_keeps_the_rest_of_the_mission_going(router):
    data = {"agents": [agent("broken", model="no-such-model"), agent("ok")],
            "policies": {"on_failure": "skip_dependents"},
            "tasks": [task("bad", "broken", retries=0), task("after", "ok", deps=("bad",)), task("side", "ok")]}
    result = run_mission(router, data)
    tasks = by_id(result)
    assert result["status"] == "failed"
    assert {k: v["status"] for k, v in tasks.items()} == {"bad": "failed", "after": "skipped", "side": "succeeded"}
    assert "no-such-model" in tasks["bad"]["error"]


def test_fail_mission_policy_stops_and_keeps_partial_results(router):
    data = {"agents": [agent("broken", model="no-such-model"), agent("ok")],
            "tasks": [task("good", "ok"), task("bad", "broken", retries=0, deps=("good",)),
                      task("never", "ok", deps=("bad",))]}
    result = run_mission(router, data)
    tasks = by_id(result)
    assert result["status"] == "failed" and "'bad' failed" in result["reason"]
    assert tasks["good"]["status"] == "succeeded" and tasks["good"]["output"]
    assert tasks["never"]["status"] == "cancelled"


def test_a_budget_stops_the_mission_gracefully_with_partial_results(router):
    data = {"agents": [agent("a")], "budgets": {"max_llm_calls": 2},
            "tasks": [task("t1", "a"), task("t2", "a", deps=("t1",)), task("t3", "a", deps=("t2",))]}
    result = run_mission(router, data)
    tasks = by_id(result)
    assert result["status"] == "budget_exceeded" and "max_llm_calls" in result["reason"]
    assert [tasks[t]["status"] for t in ("t1", "t2", "t3")] == ["succeeded", "succeeded", "cancelled"]
    assert result["usage"]["llm_calls"] == 2


def test_structured_output_is_parsed_json(router):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    data = {"agents": [agent("a")], "tasks": [task("t", "a", "json please", expected_output=schema)]}
    assert by_id(run_mission(router, data))["t"]["output"] == {"answer": "yes"}


def test_auto_plan_falls_back_and_says_so_when_the_planner_answer_is_unusable(router):
    # `scripted-tools` answers the planner with JSON that has no `tasks`: the fallback plan replaces it.
    data = {"agents": [agent("a", role="researcher"), agent("b", role="writer")], "tasks": [], "plan": "auto",
            "planner": {"model": "scripted-tools", "max_tasks": 4}}
    result = run_mission(router, data)
    assert result["status"] == "succeeded"
    assert result["plan"]["fallback"] and any("unusable" in r for r in result["plan"]["repairs"])
    assert [t["id"] for t in result["tasks"]] == ["t1", "t2"] and result["tasks"][1]["depends_on"] == ["t1"]
    assert result["control_plane"]["llm_calls"] == 1 and result["control_plane"]["tokens"] > 0
    assert any(e["kind"] == "plan" for e in result["events"])


def test_the_planners_call_runs_while_the_agents_start(router):
    data = {"agents": [agent("a", role="researcher"), agent("b", role="writer")], "tasks": [], "plan": "auto",
            "planner": {"model": "scripted-tools", "max_tasks": 4}}
    result = run_mission(router, data)
    assert result["status"] == "succeeded", result["reason"]
    at = {(e["kind"], e["status"]): e["time_s"] for e in result["events"]}
    assert at[("plan", "planned")] < at[("mission", "placed")] < at[("mission", "running")]


@pytest.mark.parametrize("count", [2])
def test_every_transition_is_one_event_in_order(router, count):
    result = run_mission(router, {"agents": [agent("a")], "tasks": [task(f"t{i}", "a") for i in range(count)]})
    events = result["events"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["status"] == "starting" and events[-1]["status"] == "succeeded"
    for tid in ("t0", "t1"):
        assert [e["status"] for e in events if e.get("task") == tid] == ["ready", "running", "succeeded"]
