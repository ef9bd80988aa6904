"""The supervisor's budget desk: arms the router's hard token and USD caps, counts model calls against
`max_llm_calls` (logged, so a resumed mission starts from what was used), and reads the mission's usage back
from the router, whose ledger is the authority for tokens and dollars."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controlplane._core.budget import BudgetTracker, summarize_usage
from controlplane._logfile import MissionLogWriter
from controlplane.config.mission import MissionSpec

logger = logging.getLogger(__name__)
USAGE_TIMEOUT_S = 10.0


class BudgetDesk:
    def __init__(self, spec: MissionSpec, *, mission_id: str, router: Any, writer: MissionLogWriter,
                 start_s: float) -> None:
        self._spec, self._mission_id, self._router, self._writer = spec, mission_id, router, writer
        self.tracker = BudgetTracker(spec.budgets, start_s=start_s)
        self.usage = summarize_usage([])
        """The mission's usage as the router last reported it."""

    async def arm(self, control_token: str) -> None:
        """The router's hard token and USD caps of this mission and of each capped agent."""
        budgets = self._spec.budgets
        if budgets.max_tokens is not None or budgets.max_usd is not None:
            await self._router.set_budget(control_token, max_tokens=budgets.max_tokens, max_usd=budgets.max_usd)
        for agent in self._spec.agents:
            if agent.budget is not None:
                await self._router.set_budget(control_token, agent.name, max_tokens=agent.budget.max_tokens,
                                              max_usd=agent.budget.max_usd)

    async def read_usage(self) -> dict[str, Any]:
        """The mission's usage from the router; the last one seen when the router does not answer."""
        try:
            rows = await asyncio.wait_for(self._router.usage(self._mission_id), USAGE_TIMEOUT_S)
            self.usage = summarize_usage(rows)
        except Exception as exc:
            logger.warning("mission %s: the router's usage is unavailable (%s); showing the last seen",
                           self._mission_id, exc)
        return self.usage

    def count_calls(self, agent: str, *, calls: int = 1, tokens: int = 0) -> None:
        """Count model calls against max_llm_calls, and log them. Tokens and USD are charged by the router."""
        self.tracker.count_call(calls)
        self._writer.append("budget.charge", {"agent": agent, "tokens": tokens, "calls": calls}, wait=False)
