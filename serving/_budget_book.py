"""The budget book: each capped mission's hard caps and settled usage, kept outside the router replica, so that
the replica Serve starts after one dies (or a redeploy's) carries the mission on instead of starting it from zero.

The ledger logic is pure (serving/_ledger.py); this is the Ray shell. A replica reads a mission from the book
once, before the mission's first call or cap there, writes the mission whenever a cap is set, and sends each
capped call's usage once it is settled, without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from serving._ledger import AccountState, BudgetLedger
from serving._limiter import LIMITER_NAMESPACE

logger = logging.getLogger(__name__)
LOAD_TIMEOUT_S = 5.0


@ray.remote(num_cpus=0, max_restarts=-1)
class BudgetBookActor:
    """One per app, detached. A restart of the book itself forgets what it held."""

    def __init__(self) -> None:
        self._ledger = BudgetLedger()

    def load(self, mission_id: str) -> list[AccountState]:
        return self._ledger.export(mission_id)

    def put(self, mission_id: str, states: list[AccountState]) -> None:
        self._ledger.restore(mission_id, states)

    def charge(self, mission_id: str, agent_id: str, tokens: int, usd: float) -> None:
        self._ledger.charge(mission_id, agent_id, tokens=tokens, usd=usd)


class BudgetBook:
    """A replica's door to its app's book, `<app>:budgets`. The book is created by the first replica that caps a
    mission, so an app whose missions have no caps never starts it."""

    def __init__(self, app_name: str, *, resources: dict[str, float] | None = None) -> None:
        self._name, self._resources = f"{app_name}:budgets", resources or None
        try:
            self._actor: Any = ray.get_actor(self._name, namespace=LIMITER_NAMESPACE)
        except ValueError:
            self._actor = None  # no replica before this one capped a mission: nothing to carry on

    async def load(self, mission_id: str) -> list[AccountState]:
        """What the book holds of a mission; nothing when the book does not answer (logged)."""
        if self._actor is None:
            return []
        try:
            return await asyncio.wait_for(self._actor.load.remote(mission_id), LOAD_TIMEOUT_S)
        except Exception as exc:
            logger.warning("the budget book %s does not answer (%s): mission %s's caps and usage start from this "
                           "replica's defaults", self._name, exc, mission_id)
            return []

    async def put(self, mission_id: str, states: list[AccountState]) -> None:
        await self._book().put.remote(mission_id, states)

    def charge(self, mission_id: str, agent_id: str, tokens: int, usd: float) -> None:
        self._book().charge.remote(mission_id, agent_id, tokens, usd)

    def _book(self) -> Any:
        if self._actor is None:
            self._actor = BudgetBookActor.options(  # type: ignore[attr-defined]
                name=self._name, namespace=LIMITER_NAMESPACE, lifetime="detached", get_if_exists=True,
                resources=self._resources).remote()
        return self._actor
