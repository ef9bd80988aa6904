from controlplane import BudgetExceeded
from controlplane._core.budget import BudgetTracker
from controlplane.config import Budgets


def test_token_call_and_wall_budgets():
    t = BudgetTracker(Budgets(max_tokens=100, max_llm_calls=3, max_wall_s=10), start_s=1000.0)
    assert t.exceeded(1001) is None
    t.charge("a", tokens=60)
    t.charge("b", tokens=30)
    assert t.exceeded(1001) is None and t.tokens_by_agent == {"a": 60, "b": 30}
    t.charge("a", tokens=20)
    err = t.exceeded(1001)
    assert isinstance(err, BudgetExceeded) and err.budget == "max_tokens" and err.used == 110
    assert "raise budgets.max_tokens" in str(err)


def test_calls_budget_stops_new_starts_and_wall_deadline():
    t = BudgetTracker(Budgets(max_llm_calls=3, max_wall_s=5), start_s=0.0)
    t.charge("a", tokens=1)
    assert t.may_start(in_flight=1) and not t.may_start(in_flight=2)
    assert t.exceeded(4.9) is None and t.exceeded(5.0).budget == "max_wall_s"
    assert t.wall_deadline_s() == 5.0
    assert BudgetTracker(Budgets(), start_s=0).exceeded(1e9) is None
