"""Hard token and dollar budgets per mission and per agent: reserve the worst case before a call, settle
the true usage after. Pure logic; thread-safe.

Invariant: for every capped account, settled + reserved <= cap, because a reservation is refused unless it
fits and a call is never charged more than it reserved, except in `settle` when the caller's worst case was
wrong (the excess is counted in `overrun_tokens`, so a test can see the bound fail). Dollars are kept as
integer pico-USD, so sums and comparisons are exact.

What a call is charged:
- `settle` (the call finished): its real prompt and completion tokens.
- `release` (it failed, timed out or was cancelled): what the caller says the backend processed, i.e. the
  prompt once the call was dispatched plus the tokens generated so far, and 0 when it never left the router,
  capped at the reservation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.errors import BackpressureError, BudgetExceeded

PICO_USD = 10**12
RETRY_AFTER_S = 1.0


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """What one model's tokens cost."""

    input_usd_per_1m: float = 0.0
    """USD per million prompt tokens."""
    output_usd_per_1m: float = 0.0
    """USD per million completion tokens."""


def cost_pico_usd(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> int:
    # USD per 1M tokens equals 1e6 pico-USD per token.
    return (prompt_tokens * round(price.input_usd_per_1m * 1_000_000)
            + completion_tokens * round(price.output_usd_per_1m * 1_000_000))


def cost_usd(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> float:
    return cost_pico_usd(price, prompt_tokens, completion_tokens) / PICO_USD


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """A worst case held against a mission's and an agent's budgets until settled or released."""

    id: int
    mission_id: str
    agent_id: str
    prompt_tokens: int
    """The caller's upper bound of the prompt's tokens."""
    max_tokens: int
    price: ModelPrice
    pico_usd: int
    holder: str | None = None
    """Who holds it (the budget book's router replica), for `lapse`."""
    lease_until_s: float | None = None
    """After this, its holder is taken for dead (see `lapse`)."""
    request: tuple[str, int] | None = None
    """The (sender, number) of the request that asked for it, so that the request sent again finds it."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens


@dataclass(frozen=True, kw_only=True)
class Charge:
    """What a settled or released call cost."""

    prompt_tokens: int
    completion_tokens: int
    usd: float
    overrun_tokens: int
    """Tokens beyond the reservation (0 unless the caller's worst case was wrong)."""


@dataclass(frozen=True, kw_only=True)
class Spend:
    """An account's usage: settled, and held by calls in flight."""

    tokens: int
    usd: float
    reserved_tokens: int
    reserved_usd: float


@dataclass(frozen=True, kw_only=True)
class AccountState:
    """One account as the budget book keeps it, so that a router replica started later can carry it on."""

    agent_id: str | None
    """None for the mission's own account."""
    max_tokens: int | None
    max_pico_usd: int | None
    used_tokens: int
    used_pico_usd: int


@dataclass
class _Account:
    max_tokens: int | None = None
    max_pico_usd: int | None = None
    used_tokens: int = 0
    used_pico_usd: int = 0
    reserved_tokens: int = 0
    reserved_pico_usd: int = 0

    def spend(self) -> Spend:
        return Spend(tokens=self.used_tokens, usd=self.used_pico_usd / PICO_USD, reserved_tokens=self.reserved_tokens,
                     reserved_usd=self.reserved_pico_usd / PICO_USD)


class BudgetLedger:
    """Token and USD caps per mission and per (mission, agent); None = uncapped (usage is still kept)."""

    def __init__(self, *, mission_max_tokens: int | None = None, mission_max_usd: float | None = None) -> None:
        """The caps of a mission that `set_budget` did not name."""
        self._default = (mission_max_tokens, _pico(mission_max_usd))
        self._accounts: dict[str, dict[str | None, _Account]] = {}
        """Per mission, its own account (None) and its agents'."""
        self._open: dict[int, Reservation] = {}
        self.last_reservation_id = 0
        """The highest id given to a reservation."""
        self._lock = threading.Lock()
        self.overrun_tokens = 0
        """Tokens settled beyond their reservations, over the ledger's life."""

    def set_default_caps(self, *, mission_max_tokens: int | None, mission_max_usd: float | None) -> None:
        """The caps of missions that `set_budget` did not name, from their next account on."""
        with self._lock:
            self._default = (mission_max_tokens, _pico(mission_max_usd))

    def set_budget(self, mission_id: str, agent_id: str | None, *, max_tokens: int | None,
                   max_usd: float | None) -> None:
        """Cap a mission (agent_id None) or one of its agents; usage so far is kept."""
        with self._lock:
            account = self._account(mission_id, agent_id)
            account.max_tokens, account.max_pico_usd = max_tokens, _pico(max_usd)

    def reserve(self, mission_id: str, agent_id: str, *, prompt_tokens: int, max_tokens: int,
                price: ModelPrice, holder: str | None = None, lease_until_s: float | None = None,
                request: tuple[str, int] | None = None) -> Reservation:
        """Hold the call's worst case against the mission and the agent, or raise and hold nothing.

        BudgetExceeded when the call cannot fit even once every call in flight has settled;
        BackpressureError when it may fit after they settle."""
        with self._lock:
            self.last_reservation_id += 1
            reservation = Reservation(id=self.last_reservation_id, mission_id=mission_id, agent_id=agent_id,
                                      prompt_tokens=prompt_tokens, max_tokens=max_tokens, price=price,
                                      pico_usd=cost_pico_usd(price, prompt_tokens, max_tokens),
                                      holder=holder, lease_until_s=lease_until_s, request=request)
            accounts = self._accounts_of(mission_id, agent_id)
            for scope, account in accounts:
                _check(scope, account, reservation)
            for _, account in accounts:
                account.reserved_tokens += reservation.tokens
                account.reserved_pico_usd += reservation.pico_usd
            self._open[reservation.id] = reservation
            return reservation

    def settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int) -> Charge:
        """Close a finished call: charge its true usage, give back the rest of its reservation."""
        with self._lock:
            overrun = max(0, prompt_tokens + completion_tokens - reservation.tokens)
            self.overrun_tokens += overrun
            return self._close(reservation, prompt_tokens, completion_tokens, overrun)

    def release(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int) -> Charge:
        """Close a failed, timed-out or cancelled call: charge what the backend processed (0 if it never
        reached one), at most what was reserved."""
        with self._lock:
            return self._close(reservation, min(prompt_tokens, reservation.prompt_tokens),
                               min(completion_tokens, reservation.max_tokens), 0)

    def lapse(self, lapsed: Callable[[Reservation], bool]) -> list[Reservation]:
        """Close the open reservations `lapsed` picks (their holder is gone), charging each its worst case: no one
        can say any more what the backend processed, and a hard cap must count the most it may have."""
        with self._lock:
            closed = [r for r in self._open.values() if lapsed(r)]
            for reservation in closed:
                self._close(reservation, reservation.prompt_tokens, reservation.max_tokens, 0)
            return closed

    def holders(self) -> set[str]:
        """The holders of the open reservations."""
        with self._lock:
            return {r.holder for r in self._open.values() if r.holder is not None}

    def charge(self, mission_id: str, agent_id: str, *, tokens: int, usd: float) -> None:
        """Count usage settled elsewhere (the budget book, for the replica that settled it)."""
        with self._lock:
            for _, account in self._accounts_of(mission_id, agent_id):
                account.used_tokens += tokens
                account.used_pico_usd += round(usd * PICO_USD)

    def has_caps(self, mission_id: str, agent_id: str | None, *, max_tokens: int | None,
                 max_usd: float | None) -> bool:
        """Whether a mission (agent_id None) or one of its agents has exactly these caps."""
        with self._lock:
            account = self._account(mission_id, agent_id)
            return (account.max_tokens, account.max_pico_usd) == (max_tokens, _pico(max_usd))

    def mission_capped(self, mission_id: str) -> bool:
        """Whether the mission or any of its agents has a cap."""
        with self._lock:
            return any(a.max_tokens is not None or a.max_pico_usd is not None
                       for a in self._accounts.get(mission_id, {}).values())

    def capped(self, mission_id: str, agent_id: str) -> bool:
        """Whether a call of this agent counts against any cap."""
        with self._lock:
            return any(account.max_tokens is not None or account.max_pico_usd is not None
                       for _, account in self._accounts_of(mission_id, agent_id))

    def export(self, mission_id: str) -> list[AccountState]:
        """The caps and settled usage of a mission and its agents."""
        with self._lock:
            return [AccountState(agent_id=agent_id, max_tokens=a.max_tokens, max_pico_usd=a.max_pico_usd,
                                 used_tokens=a.used_tokens, used_pico_usd=a.used_pico_usd)
                    for agent_id, a in self._accounts.get(mission_id, {}).items()]

    def restore(self, mission_id: str, states: list[AccountState], *, keep_defaults: bool = True) -> None:
        """Carry on a mission from its exported accounts: their usage replaces this ledger's, and so do their
        caps, except that a cap of None leaves this ledger's default in place unless `keep_defaults` is False."""
        with self._lock:
            for state in states:
                account = self._account(mission_id, state.agent_id)
                account.used_tokens, account.used_pico_usd = state.used_tokens, state.used_pico_usd
                if state.max_tokens is not None or not keep_defaults:
                    account.max_tokens = state.max_tokens
                if state.max_pico_usd is not None or not keep_defaults:
                    account.max_pico_usd = state.max_pico_usd

    def open_reservations(self, mission_id: str) -> list[Reservation]:
        """A mission's calls in flight."""
        with self._lock:
            return [r for r in self._open.values() if r.mission_id == mission_id]

    def reopen(self, reservations: list[Reservation], *, last_reservation_id: int) -> None:
        """Hold again the reservations an exported ledger held (their accounts restored first). That ledger had
        given ids up to `last_reservation_id`, so later reservations here get ids after them."""
        with self._lock:
            for reservation in reservations:
                for _, account in self._accounts_of(reservation.mission_id, reservation.agent_id):
                    account.reserved_tokens += reservation.tokens
                    account.reserved_pico_usd += reservation.pico_usd
                self._open[reservation.id] = reservation
            self.last_reservation_id = max(self.last_reservation_id, last_reservation_id)

    def spend(self, mission_id: str, agent_id: str | None = None) -> Spend:
        """A mission's (agent_id None) or an agent's usage."""
        with self._lock:
            account = self._accounts.get(mission_id, {}).get(agent_id)
            return (account or _Account()).spend()

    def _close(self, reservation: Reservation, prompt_tokens: int, completion_tokens: int, overrun: int) -> Charge:
        if self._open.pop(reservation.id, None) is None:
            raise ValueError(f"reservation {reservation.id} is already settled or released")
        pico_usd = cost_pico_usd(reservation.price, prompt_tokens, completion_tokens)
        for _, account in self._accounts_of(reservation.mission_id, reservation.agent_id):
            account.reserved_tokens -= reservation.tokens
            account.reserved_pico_usd -= reservation.pico_usd
            account.used_tokens += prompt_tokens + completion_tokens
            account.used_pico_usd += pico_usd
        return Charge(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usd=pico_usd / PICO_USD,
                      overrun_tokens=overrun)

    def _accounts_of(self, mission_id: str, agent_id: str) -> list[tuple[str, _Account]]:
        return [(f"mission {mission_id!r}", self._account(mission_id, None)),
                (f"agent {agent_id!r} of mission {mission_id!r}", self._account(mission_id, agent_id))]

    def _account(self, mission_id: str, agent_id: str | None) -> _Account:
        accounts = self._accounts.setdefault(mission_id, {})
        account = accounts.get(agent_id)
        if account is None:
            caps = self._default if agent_id is None else (None, None)
            account = accounts[agent_id] = _Account(*caps)
        return account


def _check(scope: str, account: _Account, reservation: Reservation) -> None:
    for budget, cap, used, held, need, unit in (
            ("max_tokens", account.max_tokens, account.used_tokens, account.reserved_tokens, reservation.tokens, 1),
            ("max_usd", account.max_pico_usd, account.used_pico_usd, account.reserved_pico_usd, reservation.pico_usd,
             PICO_USD)):
        if cap is None:
            continue
        if used + need > cap:
            raise BudgetExceeded(scope=scope, budget=budget, limit=_in(cap, unit), used=_in(used, unit))
        if used + held + need > cap:
            raise BackpressureError(scope=scope, limit=f"{budget}={_in(cap, unit):g} ({_in(held, unit):g} held by "
                                    f"calls in flight, {_in(need, unit):g} asked)", retry_after_s=RETRY_AFTER_S)


def _in(amount: int, unit: int) -> int | float:
    return amount if unit == 1 else amount / unit


def _pico(usd: float | None) -> int | None:
    return None if usd is None else round(usd * PICO_USD)
