from controlplane import BudgetExceeded
from controlplane._core.budget import BudgetTracker, summarize_usage
from controlplane.config import Budgets


def test_call_and_wall_budgets():
    t = BudgetTracker(Budgets(max_tokens=100, max_llm_calls=3, max_wall_s=10), start_s=1000.0)
    assert t.exceeded(1001) is None
    t.count_call()
    t.count_call(2)
    err = t.exceeded(1001)
    assert isinstance(err, BudgetExceeded) and err.budget == "max_llm_calls" and err.used == 3
    assert "raise budgets.max_llm_calls" in str(err)


def test_calls_budget_stops_new_starts_and_wall_deadline():
    t = BudgetTracker(Budgets(max_llm_calls=3, max_wall_s=5), start_s=0.0)
    t.count_call()
    assert (t.max_new_calls(in_flight=1), t.max_new_calls(in_flight=2), t.max_new_calls(in_flight=5)) == (1, 0, 0)
    assert t.exceeded(4.9) is None and t.exceeded(5.0).budget == "max_wall_s"
    assert t.wall_deadline_s() == 5.0
    assert BudgetTracker(Budgets(), start_s=0).exceeded(1e9) is None
    assert BudgetTracker(Budgets(), start_s=0).max_new_calls(in_flight=9) is None


def row(agent, model="default", *, prompt=0, completion=0, usd=0.0, calls=0, errors=0):
    return {"mission_id": "m", "agent_id": agent, "model": model, "prompt_tokens": prompt,
            "completion_tokens": completion, "usd": usd, "calls": calls, "errors": errors}


def test_usage_comes_from_the_routers_rows_per_agent_with_the_control_planes_share():
    usage = summarize_usage([row("writer", prompt=100, completion=20, usd=0.5, calls=2, errors=1),
                             row("writer", "small", prompt=10, completion=5, usd=0.25, calls=1),
                             row("planner", prompt=40, completion=10, usd=0.125, calls=1),
                             row("memory-judge", prompt=30, completion=1, calls=1)])
    assert usage["by_agent"]["writer"] == {"tokens": 135, "usd": 0.75, "llm_calls": 4, "errors": 1}
    assert (usage["tokens"], usage["usd"], usage["llm_calls"], usage["errors"]) == (216, 0.875, 6, 1)
    assert usage["control_plane"] == {"tokens": 81, "usd": 0.125, "llm_calls": 2, "errors": 0}
    assert summarize_usage([]) == {"tokens": 0, "usd": 0.0, "llm_calls": 0, "errors": 0, "by_agent": {},
                                   "control_plane": {"tokens": 0, "usd": 0.0, "llm_calls": 0, "errors": 0}}
