"""A router replica's hard caps, without Serve: each call's worst case is held before it runs and its usage is
settled after, in this replica's ledger and, when the app's budget book decides, in the book too.

With one router replica, this replica's ledger decides, and the book keeps each capped mission's caps, usage and
usage rows for the replica Serve starts after this one. With several, the book decides for all of them
(serving/_bookkeeper.py). The book is reached through `Book`; serving/_budget_book.py is the Ray one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.config import ServingConfig
from controlplane.errors import SpecError
from serving._accounting import UsageTotals
from serving._ledger import AccountState, BudgetLedger, Charge, ModelPrice, Reservation
from serving._tool_calls import message_text, tools_text

MESSAGE_OVERHEAD_TOKENS = 8
"""Chat-template tokens around one message, at most (role markers, separators)."""
PROMPT_OVERHEAD_TOKENS = 32
"""Template tokens per prompt, at most (a default system prompt, the generation prompt)."""
BOOK_LEASE_GRACE_S = 30.0
"""How long past its deadline a call's reservation in the book outlives a replica that never settles it."""


class Book(Protocol):
    """Where capped missions' caps and usage outlive this replica, and, with several router replicas, where
    they are kept for all of them (serving/_budget_book.py: BudgetBook)."""

    async def load(self, mission_id: str) -> list[AccountState]: ...

    async def put(self, mission_id: str, states: list[AccountState]) -> None: ...

    def charge(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals) -> None: ...

    def set_default_caps(self, max_tokens: int | None, max_usd: float | None) -> None: ...

    async def set_budget(self, mission_id: str, agent_id: str | None, *, max_tokens: int | None,
                         max_usd: float | None) -> None: ...

    async def reserve(self, mission_id: str, agent_id: str, *, prompt_tokens: int, max_tokens: int,
                      price: ModelPrice, lease_s: float) -> Reservation: ...

    def settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int) -> None: ...

    def record(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals,
               settles: Reservation | None = None) -> None: ...

    async def usage(self, mission_id: str | None) -> list[dict[str, Any]]: ...


def worst_case_prompt_tokens(body: dict[str, Any], context_limit: int) -> int:
    """An upper bound of the prompt's tokens, for budget reservations: a byte-level tokenizer makes at most
    one token per UTF-8 byte, plus template tokens; and the engine refuses prompt + max_tokens > its context."""
    texts = [body["prompt"]] if "prompt" in body else [*map(message_text, body["messages"])]
    texts += [tools_text(body)] if body.get("tools") else []
    bound = sum(len(text.encode()) + MESSAGE_OVERHEAD_TOKENS for text in texts) + PROMPT_OVERHEAD_TOKENS
    return min(bound, context_limit - body["max_tokens"])


@dataclass(frozen=True)
class Hold:
    """A call's worst case, held in this replica's ledger and, when the book decides and the call is capped,
    in the book."""

    own: Reservation
    booked: Reservation | None


class RouterCaps:
    def __init__(self, config: ServingConfig, book: Book | None) -> None:
        mission = config.router.mission
        self.config = config
        self.ledger = BudgetLedger(mission_max_tokens=mission.token_budget, mission_max_usd=mission.usd_budget)
        self._book = book
        self._deciding_book = book if config.router.replicas > 1 else None
        """With several replicas, the book keeps the caps, holds capped calls' reservations and counts usage."""
        if self._deciding_book is not None:
            self._deciding_book.set_default_caps(mission.token_budget, mission.usd_budget)
        self._prices = {name: ModelPrice(**spec.price.model_dump()) for name, spec in config.models.items()}
        self._loaded: set[str] = set()
        """Missions whose accounts were read from the book (or that it did not hold)."""
        self._load_lock = asyncio.Lock()

    async def set_budget(self, mission_id: str, agent_id: str | None, *, max_tokens: int | None,
                         max_usd: float | None) -> None:
        """See `RouterCore.set_budget`."""
        if self._deciding_book is not None:
            await self._deciding_book.set_budget(mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)
            return
        replicas = self.config.router.replicas
        if replicas > 1 and (max_tokens is not None or max_usd is not None):
            who = f"mission {mission_id!r}" + (f", agent {agent_id!r}" if agent_id else "")
            raise SpecError(where="router.replicas", value=replicas,
                            why=f"the hard cap of {who} would bind only the one router replica that receives it, "
                                "as this router has no budget book",
                            fix="deploy the router with serving.deploy (it gives every replica the app's book), "
                                "or use router.replicas: 1")
        await self.load(mission_id)
        self.ledger.set_budget(mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)
        if self._book is not None:
            await self._book.put(mission_id, self.ledger.export(mission_id))

    async def load(self, mission_id: str) -> None:
        """Carry on the caps and usage the book holds of a mission, once, before this replica first uses them."""
        if self._book is None or mission_id in self._loaded:
            return
        async with self._load_lock:
            if mission_id not in self._loaded:
                self.ledger.restore(mission_id, await self._book.load(mission_id))
                self._loaded.add(mission_id)

    async def usage(self, mission_id: str | None) -> list[dict[str, Any]] | None:
        """The usage rows the book keeps: every replica's when it decides, or a capped mission's (with the calls
        of the replicas before this one); None when this replica's own rows are the ones to read."""
        if self._deciding_book is not None:
            return await self._deciding_book.usage(mission_id)
        if self._book is not None and mission_id is not None:
            await self.load(mission_id)
            if self.ledger.mission_capped(mission_id):
                return await self._book.usage(mission_id)
        return None

    async def reserve(self, model: str, mission_id: str, agent_id: str, body: dict[str, Any],
                      timeout_s: float) -> Hold:
        """Hold the call's worst case, or raise (BudgetExceeded, BackpressureError) and hold nothing. The book's
        hold is awaited, so that every replica's calls count against one cap."""
        prompt_tokens = worst_case_prompt_tokens(body, self.config.models[model].max_context_tokens)
        size = {"prompt_tokens": prompt_tokens, "max_tokens": body["max_tokens"], "price": self._prices[model]}
        booked = None
        try:
            if self._deciding_book is not None and self.ledger.capped(mission_id, agent_id):
                booked = await self._deciding_book.reserve(mission_id, agent_id, **size,
                                                            lease_s=timeout_s + BOOK_LEASE_GRACE_S)
            return Hold(self.ledger.reserve(mission_id, agent_id, **size), booked)
        except BaseException:
            self._drop_booked(booked)
            raise

    def settle(self, hold: Hold, *, prompt_tokens: int, completion_tokens: int) -> Charge:
        """A finished call's true usage, in this replica's ledger (the book's is settled by `record`)."""
        return self.ledger.settle(hold.own, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def release(self, hold: Hold, *, prompt_tokens: int, completion_tokens: int) -> Charge:
        """A failed call's usage, in this replica's ledger (the book's is settled by `record`)."""
        return self.ledger.release(hold.own, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def drop(self, hold: Hold) -> None:
        """A call that never ran: nothing charged here or in the book."""
        self.ledger.release(hold.own, prompt_tokens=0, completion_tokens=0)
        self._drop_booked(hold.booked)

    def record(self, model: str, mission_id: str, agent_id: str, totals: UsageTotals, hold: Hold) -> None:
        """Count a settled call in the book: when it decides, with the reservation it settles from the same
        totals (one message); else when the mission has caps, which the book charges."""
        if self._deciding_book is not None:
            self._deciding_book.record(mission_id, agent_id, model, totals, settles=hold.booked)
        elif self._book is not None and self.ledger.mission_capped(mission_id):
            self._book.charge(mission_id, agent_id, model, totals)

    def _drop_booked(self, booked: Reservation | None) -> None:
        if booked is not None and self._deciding_book is not None:
            self._deciding_book.settle(booked, prompt_tokens=0, completion_tokens=0)
