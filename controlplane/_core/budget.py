"""Mission budgets the supervisor keeps: model calls and wall time, checked with the time passed in.

Tokens and dollars are capped and counted at the router, which reserves every call's worst case before it
runs and charges failed and cancelled calls too (`serving._ledger`); `summarize_usage` turns its accounting
rows into the mission's usage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.config.mission import RESERVED_AGENT_NAMES, Budgets
from controlplane.errors import BudgetExceeded


@dataclass
class BudgetTracker:
    """Counts a mission's model calls. `exceeded(now_s)` says which of max_llm_calls and max_wall_s, if any,
    was reached."""

    budgets: Budgets
    start_s: float
    scope: str = "mission"
    llm_calls: int = 0

    def count_call(self, calls: int = 1) -> None:
        self.llm_calls += calls

    def exceeded(self, now_s: float) -> BudgetExceeded | None:
        """The first cap reached, as an error value (not raised), else None."""
        b = self.budgets
        for name, limit, used in (("max_llm_calls", b.max_llm_calls, self.llm_calls),
                                  ("max_wall_s", b.max_wall_s, round(now_s - self.start_s, 3))):
            if limit is not None and used >= limit:
                return BudgetExceeded(scope=self.scope, budget=name, limit=limit, used=used)
        return None

    def max_new_calls(self, in_flight: int) -> int | None:
        """How many more tasks may start without the calls already counted and running passing
        `max_llm_calls`; None without that cap."""
        limit = self.budgets.max_llm_calls
        return None if limit is None else max(0, limit - self.llm_calls - in_flight)

    def wall_deadline_s(self) -> float | None:
        return None if self.budgets.max_wall_s is None else self.start_s + self.budgets.max_wall_s


def summarize_usage(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A mission's usage from the router's accounting rows (one per agent and model): totals, per agent, and
    the control plane's share (planner, supervisor, memory judge). `llm_calls` counts failed calls too, and
    `tokens`/`usd` what they were charged."""
    by_agent: dict[str, dict[str, Any]] = {}
    for row in rows:
        agent = by_agent.setdefault(row["agent_id"], {"tokens": 0, "usd": 0.0, "llm_calls": 0, "errors": 0})
        agent["tokens"] += row["prompt_tokens"] + row["completion_tokens"]
        agent["usd"] += row["usd"]
        agent["llm_calls"] += row["calls"] + row["errors"]
        agent["errors"] += row["errors"]
    control = [usage for name, usage in by_agent.items() if name in RESERVED_AGENT_NAMES]
    return {**_total(by_agent.values()), "by_agent": {name: _rounded(u) for name, u in sorted(by_agent.items())},
            "control_plane": _total(control)}


def _total(usages: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    usages = list(usages)
    return _rounded({"tokens": sum(u["tokens"] for u in usages), "usd": sum(u["usd"] for u in usages),
                     "llm_calls": sum(u["llm_calls"] for u in usages),
                     "errors": sum(u["errors"] for u in usages)})


def _rounded(usage: Mapping[str, Any]) -> dict[str, Any]:
    return {**usage, "usd": round(usage["usd"], 9)}
