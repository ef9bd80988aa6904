"""What an app's budget book keeps, without Ray (the actor is serving/_budget_book.py).

With one router replica, the book keeps each capped mission's caps and settled usage, so that the replica Serve
starts after one dies carries them on. With several, it is the authority: every capped call reserves its worst
case here, so one cap binds all the replicas, and every replica's calls are counted here, so a mission's usage is
whole whichever replica is asked.

Every change goes to a `BookStore` as it is made, as how to make its mission's record, so that a book that
restarts carries on from it (the Ray one writes the records to the cluster's GCS)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from controlplane.errors import BackpressureError, ControlPlaneError, SpecError
from serving._accounting import Ledger, UsageTotals
from serving._ledger import AccountState, BudgetLedger, ModelPrice, Reservation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MissionRecord:
    """All the book keeps of one mission."""

    accounts: list[AccountState]
    open: list[Reservation]
    """Its calls in flight."""
    usage: list[dict[str, Any]]
    """Its usage rows (`Ledger.snapshot`)."""
    loaded: bool
    last_reservation_id: int
    """The book's last reservation id when the record was saved."""
    applied: dict[str, int]
    """Per sender, the number of its last message applied to the mission."""


@dataclass(frozen=True)
class ReserveRequest:
    """A call's worst case, as its router replica asks the book to hold it."""

    mission_id: str
    agent_id: str
    prompt_tokens: int
    max_tokens: int
    price: ModelPrice
    lease_s: float
    holder: str | None = None
    """The router replica that asks: the book charges the calls it held if it is gone."""
    request: tuple[str, int] | None = None
    """Its (sender, number): the same request sent again gets the same reservation."""


@dataclass(frozen=True)
class DefaultCaps:
    max_tokens: int | None
    max_usd: float | None


Record = MissionRecord | DefaultCaps
Posted = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A message a replica sent without waiting: the BookKeeper method, its arguments and its keyword arguments."""


class BookStore(Protocol):
    """Where the book saves what it keeps: one record per mission, and the default caps. A change is saved as
    how to make its key's record, so that a store may make it once for many changes (the Ray one makes it when
    it writes the key, under the book's lock)."""

    def save(self, key: str, record_of: Callable[[], Record]) -> None: ...

    def load_all(self) -> dict[str, Record]: ...


DEFAULTS_KEY = "defaults"
MISSION_KEY = "mission:"


class BookKeeper:
    def __init__(self, *, holder_alive: Callable[[str], bool] = lambda holder: True,
                 store: BookStore | None = None) -> None:
        """`holder_alive` says whether a router replica that holds reservations still runs. What `store` holds,
        a book before this one saved: it is carried on."""
        self.budgets = BudgetLedger()
        self.usage = Ledger()
        self._holder_alive = holder_alive
        self._store = store
        self._loaded: set[str] = set()
        """Missions a replica has read for a call: their caps are fixed from then on."""
        self._applied: dict[str, dict[str, int]] = {}
        """Per mission and sender, the number of the last message applied (see `_first_time`)."""
        if store is not None:
            self._restore(store.load_all())

    def load(self, mission_id: str) -> list[AccountState]:
        if mission_id not in self._loaded:
            self._loaded.add(mission_id)
            self._save([mission_id])
        return self.budgets.export(mission_id)

    def put(self, mission_id: str, states: list[AccountState]) -> None:
        self.budgets.restore(mission_id, states)
        self._save([mission_id])

    def charge(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals,
               message: tuple[str, int] | None = None) -> None:
        """A call of a capped mission that a lone replica settled: charged against the caps, and counted in the
        usage rows."""
        if not self._first_time(mission_id, message):
            return
        self.budgets.charge(mission_id, agent_id, tokens=totals.prompt_tokens + totals.completion_tokens,
                            usd=totals.usd)
        self.usage.add(mission_id, agent_id, model, totals)
        self._save([mission_id])

    def apply(self, messages: Iterable[Posted]) -> None:
        """Messages a replica sent without waiting for them (`charge`, `settle`, `record`), in its order."""
        methods: dict[str, Callable[..., None]] = {"charge": self.charge, "settle": self.settle, "record": self.record}
        for method, args, kwargs in messages:
            methods[method](*args, **kwargs)

    def set_default_caps(self, max_tokens: int | None, max_usd: float | None) -> None:
        """The router's default mission caps (`router.mission.token_budget`, `usd_budget`); each replica sends
        its config's when it starts, so a redeploy's replace them for missions not seen yet."""
        self.budgets.set_default_caps(mission_max_tokens=max_tokens, mission_max_usd=max_usd)
        if self._store is not None:
            self._store.save(DEFAULTS_KEY, partial(DefaultCaps, max_tokens, max_usd))

    def set_budget(self, mission_id: str, agent_id: str | None, *, max_tokens: int | None,
                   max_usd: float | None) -> None:
        """Cap a mission or one of its agents for every replica; usage so far is kept. Each replica reads a
        mission's caps once, before it serves the mission's first call, so new caps after that are refused (the
        same caps again are not: a resumed mission arms them again)."""
        if mission_id in self._loaded and not self.budgets.has_caps(mission_id, agent_id, max_tokens=max_tokens,
                                                                    max_usd=max_usd):
            who = f"mission {mission_id!r}" + (f", agent {agent_id!r}" if agent_id else "")
            raise SpecError(where="budgets", value=f"max_tokens={max_tokens}, max_usd={max_usd} for {who}",
                            why="the mission has already made model calls, and with several router replicas each "
                                "replica reads a mission's caps once, before its first call there",
                            fix="arm a mission's caps before its first model call (its supervisor does), or serve "
                                "it with router.replicas: 1")
        self.budgets.set_budget(mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)
        self._save([mission_id])

    def reserve(self, mission_id: str, agent_id: str, *, prompt_tokens: int, max_tokens: int, price: ModelPrice,
                holder: str | None = None, now_s: float, lease_s: float,
                request: tuple[str, int] | None = None) -> Reservation:
        """A call's worst case, held until its replica settles it (see `reserve_many`). Raises as
        `BudgetLedger.reserve` does."""
        [answer] = self.reserve_many([ReserveRequest(mission_id, agent_id, prompt_tokens, max_tokens, price,
                                                     lease_s, holder, request)], now_s=now_s)
        if isinstance(answer, ControlPlaneError):
            raise answer
        return answer

    def reserve_many(self, requests: Iterable[ReserveRequest], *,
                     now_s: float) -> list[Reservation | ControlPlaneError]:
        """Calls' worst cases, held in order until their replicas settle them; each refusal is answered in its
        call's place, as the error `BudgetLedger.reserve` raises. The missions they change are saved once, after
        the last. A reservation whose holder is gone, or that its lease outlived, is charged its worst case: the
        leases are checked on every reservation, the holders only when the calls in flight leave no room. A
        `request` sent again gets the reservation it was granted, if it is still open."""
        changed: set[str] = set()
        answers: list[Reservation | ControlPlaneError] = []
        try:
            for wanted in requests:
                try:
                    answers.append(self._reserve(wanted, now_s, changed))
                except ControlPlaneError as exc:
                    answers.append(exc)
        finally:
            self._save(changed)
        return answers

    def _reserve(self, wanted: ReserveRequest, now_s: float, changed: set[str]) -> Reservation:
        granted_before = [r for r in self.budgets.open_reservations(wanted.mission_id)
                          if wanted.request and r.request == wanted.request]
        if granted_before:
            return granted_before[0]
        changed.update(r.mission_id for r in self._lapse(
            lambda r: r.lease_until_s is not None and r.lease_until_s < now_s, "within its lease"))

        def attempt() -> Reservation:
            granted = self.budgets.reserve(wanted.mission_id, wanted.agent_id, prompt_tokens=wanted.prompt_tokens,
                                           max_tokens=wanted.max_tokens, price=wanted.price, holder=wanted.holder,
                                           lease_until_s=now_s + wanted.lease_s, request=wanted.request)
            changed.add(wanted.mission_id)
            return granted

        try:
            return attempt()
        except BackpressureError:
            gone = {h for h in self.budgets.holders() if not self._holder_alive(h)}
            freed = self._lapse(lambda r: r.holder in gone, "by its router replica, which is gone")
            changed.update(r.mission_id for r in freed)
            if not freed:
                raise
            return attempt()

    def settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int,
               message: tuple[str, int] | None = None) -> None:
        if not self._first_time(reservation.mission_id, message):
            return
        self._settle(reservation, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self._save([reservation.mission_id])

    def record(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals,
               settles: Reservation | None = None, message: tuple[str, int] | None = None) -> None:
        """Count a call's usage row and settle its reservation, if it held one, with the same tokens."""
        if not self._first_time(mission_id, message):
            return
        if settles is not None:
            self._settle(settles, prompt_tokens=totals.prompt_tokens, completion_tokens=totals.completion_tokens)
        self.usage.add(mission_id, agent_id, model, totals)
        self._save([mission_id])

    def _settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int) -> None:
        try:
            self.budgets.settle(reservation, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        except ValueError:
            logger.warning("a call of mission %s (agent %s) was settled too late: it stays charged its worst case",
                           reservation.mission_id, reservation.agent_id)

    def _lapse(self, lapsed: Callable[[Reservation], bool], why: str) -> list[Reservation]:
        closed = self.budgets.lapse(lapsed)
        for reservation in closed:
            logger.warning("a call of mission %s (agent %s) was not settled %s: it is charged its worst case, %d "
                           "tokens", reservation.mission_id, reservation.agent_id, why, reservation.tokens)
        return closed

    def _first_time(self, mission_id: str, message: tuple[str, int] | None) -> bool:
        """Whether a message, numbered in order by its sender, is new. Ray sends a message again to the book it
        restarts when the one before died before answering, even if that one had applied it."""
        if message is None:
            return True
        sender, number = message
        applied = self._applied.setdefault(mission_id, {})
        if number <= applied.get(sender, 0):
            return False
        applied[sender] = number
        return True

    def _save(self, mission_ids: Iterable[str]) -> None:
        if self._store is None:
            return
        for mission_id in mission_ids:
            self._store.save(MISSION_KEY + mission_id, partial(self._record, mission_id))

    def _record(self, mission_id: str) -> MissionRecord:
        return MissionRecord(accounts=self.budgets.export(mission_id),
                             open=self.budgets.open_reservations(mission_id), usage=self.usage.snapshot(mission_id),
                             loaded=mission_id in self._loaded, last_reservation_id=self.budgets.last_reservation_id,
                             applied=dict(self._applied.get(mission_id, {})))

    def _restore(self, records: dict[str, Record]) -> None:
        defaults = records.get(DEFAULTS_KEY)
        if isinstance(defaults, DefaultCaps):
            self.budgets.set_default_caps(mission_max_tokens=defaults.max_tokens, mission_max_usd=defaults.max_usd)
        for key, record in records.items():
            if not isinstance(record, MissionRecord):
                continue
            mission_id = key.removeprefix(MISSION_KEY)
            try:  # read it all before anything changes: a record another version saved may lack a field
                rows = [(row["agent_id"], row["model"],
                         UsageTotals(**{k: v for k, v in row.items() if k not in ("mission_id", "agent_id", "model")}))
                        for row in record.usage]
                accounts, calls_open, last_id = record.accounts, record.open, record.last_reservation_id
                loaded, applied = record.loaded, dict(record.applied)
            except (AttributeError, KeyError, TypeError) as exc:
                logger.error("the budget book could not read mission %r's record (%s: %s); it goes on without it",
                             mission_id, type(exc).__name__, exc)
                continue
            self.budgets.restore(mission_id, accounts, keep_defaults=False)
            self.budgets.reopen(calls_open, last_reservation_id=last_id)
            for agent_id, model, totals in rows:
                self.usage.add(mission_id, agent_id, model, totals)
            if loaded:
                self._loaded.add(mission_id)
            self._applied[mission_id] = applied
