"""Mission budgets: tokens, model calls and wall time, checked with the time passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.config.mission import Budgets
from controlplane.errors import BudgetExceeded


@dataclass
class BudgetTracker:
    """Counts what a mission used. `exceeded(now_s)` says which cap, if any, was reached."""

    budgets: Budgets
    start_s: float
    scope: str = "mission"
    tokens: int = 0
    llm_calls: int = 0
    tokens_by_agent: dict[str, int] = field(default_factory=dict)

    def charge(self, agent: str, *, tokens: int, calls: int = 1) -> None:
        self.tokens += tokens
        self.llm_calls += calls
        self.tokens_by_agent[agent] = self.tokens_by_agent.get(agent, 0) + tokens

    def exceeded(self, now_s: float) -> BudgetExceeded | None:
        """The first cap reached, as an error value (not raised), else None."""
        b = self.budgets
        for name, limit, used in (("max_tokens", b.max_tokens, self.tokens),
                                  ("max_llm_calls", b.max_llm_calls, self.llm_calls),
                                  ("max_wall_s", b.max_wall_s, round(now_s - self.start_s, 3))):
            if limit is not None and used >= limit:
                return BudgetExceeded(scope=self.scope, budget=name, limit=limit, used=used)
        return None

    def may_start(self, in_flight: int) -> bool:
        """False when the calls already running would use up `max_llm_calls`: start no more."""
        limit = self.budgets.max_llm_calls
        return limit is None or self.llm_calls + in_flight < limit

    def wall_deadline_s(self) -> float | None:
        return None if self.budgets.max_wall_s is None else self.start_s + self.budgets.max_wall_s
