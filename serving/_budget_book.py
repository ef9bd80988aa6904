"""The budget book: an app's detached actor that keeps its capped missions' caps and usage outside the router
replicas (the logic is serving/_bookkeeper.py; this is the Ray shell).

With one router replica, the replica reads a mission from the book once, before the mission's first call or cap
there, writes the mission whenever a cap is set, and sends the usage of each call of a capped mission once it is
settled, without waiting, so that the replica Serve starts after one dies (or a redeploy's) carries the mission's
caps and usage on.

With several, the book is the authority: caps are set there, every capped call awaits its reservation there, and
every call's usage row goes there without waiting. A replica's reservations that ask while its last batch is on its
way go together as the next, so the book saves them at once; so do the messages it waits for no answer to (usage
rows, settlements), in the order it made them, and every other message goes after those.

The book saves each change in the cluster's GCS (its internal key-value store, where Serve keeps its own
checkpoints), and answers a replica that waits for it once its change is there, so that when its process dies,
the book Ray restarts carries on with the caps, calls in flight and usage rows it held.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list, _internal_kv_put

from controlplane._core.batching import GroupSender, Outbox
from controlplane.errors import BackpressureError, ControlPlaneError
from serving._accounting import UsageTotals
from serving._bookkeeper import BookKeeper, Posted, Record, ReserveRequest
from serving._detached import LIMITER_NAMESPACE, check_runs_this_code, code_version
from serving._ledger import AccountState, ModelPrice, Reservation
from serving._limiter import replica_alive

logger = logging.getLogger(__name__)
LOAD_TIMEOUT_S = 5.0
RESERVE_TIMEOUT_S = 5.0
WRITE_RETRY_S = 0.5
WRITE_LINGER_S = 0.005


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class BudgetBookActor:
    """One per app, detached; a restart carries on from what it saved in the GCS. A method whose answer a replica
    awaits answers once its change (and every one before it) is saved; the others return at once, and their
    changes are saved in the background. A message the book was handling when it died is sent again to the one Ray
    restarts; each carries its sender's (name, number), so that one applied before is not applied twice.
    Refusals come back as values, so that the replica raises them as they are."""

    def __init__(self, name: str) -> None:
        self._store = GcsBookStore(name)
        self._keeper = BookKeeper(holder_alive=replica_alive, store=self._store)
        self._lock = self._store.lock
        """Held while the keeper changes, so that the store's writer makes whole records."""
        self._code_version = code_version()

    def code_version(self) -> str:
        return self._code_version

    def load(self, mission_id: str) -> list[AccountState]:
        with self._lock:
            states = self._keeper.load(mission_id)
        self._store.wait_saved()
        return states

    def put(self, mission_id: str, states: list[AccountState]) -> None:
        with self._lock:
            self._keeper.put(mission_id, states)
        self._store.wait_saved()

    def set_default_caps(self, max_tokens: int | None, max_usd: float | None) -> None:
        with self._lock:
            self._keeper.set_default_caps(max_tokens, max_usd)

    def set_budget(self, mission_id: str, agent_id: str | None, max_tokens: int | None,
                   max_usd: float | None) -> ControlPlaneError | None:
        try:
            with self._lock:
                self._keeper.set_budget(mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)
        except ControlPlaneError as exc:
            return exc
        self._store.wait_saved()
        return None

    def reserve_many(self, requests: list[ReserveRequest]) -> list[Reservation | ControlPlaneError]:
        with self._lock:
            answers = self._keeper.reserve_many(requests, now_s=time.time())
        self._store.wait_saved()
        return answers

    def apply(self, messages: list[Posted]) -> None:
        with self._lock:
            self._keeper.apply(messages)

    def usage(self, mission_id: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return self._keeper.usage.snapshot(mission_id)


class BudgetBook:
    """A replica's door to its app's book, `<app>:budgets`. With one router replica the book is created by the
    first replica that caps a mission, so an app whose missions have no caps never starts it; with several
    (`start=True`), each replica starts it, or finds it, when it starts."""

    def __init__(self, app_name: str, *, resources: dict[str, float] | None = None, start: bool = False) -> None:
        self._name, self._resources = f"{app_name}:budgets", resources or None
        self._holder = ray.get_runtime_context().get_actor_name()
        """This replica's actor name: the book charges the calls it held if it is gone."""
        self._sender, self._numbers = uuid.uuid4().hex, itertools.count(1)
        """Numbers this door's messages in order, for the book to apply each once."""
        self._actor: Any = self._find()
        self._reservations = GroupSender(self._reserve_many, unclaimed=self._let_go)
        self._outbox: Outbox[Posted] = Outbox(lambda messages: self._book().apply.remote(messages))
        """The messages no caller waits for, in order; every other message goes after those waiting there."""
        if start:
            self._book()

    async def load(self, mission_id: str) -> list[AccountState]:
        """What the book holds of a mission; nothing when there is no book or it does not answer (logged)."""
        self._actor = self._actor or self._find()
        if self._actor is None:
            return []
        self._outbox.flush()
        try:
            return await asyncio.wait_for(self._actor.load.remote(mission_id), LOAD_TIMEOUT_S)
        except Exception as exc:
            logger.warning("the budget book %s does not answer (%s): mission %s's caps and usage start from this "
                           "replica's defaults", self._name, exc, mission_id)
            return []

    async def put(self, mission_id: str, states: list[AccountState]) -> None:
        await self._in_order().put.remote(mission_id, states)

    def charge(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals) -> None:
        self._outbox.post(("charge", (mission_id, agent_id, model, totals), {"message": self._message()}))

    def set_default_caps(self, max_tokens: int | None, max_usd: float | None) -> None:
        self._in_order().set_default_caps.remote(max_tokens, max_usd)

    async def set_budget(self, mission_id: str, agent_id: str | None, *, max_tokens: int | None,
                         max_usd: float | None) -> None:
        refused = await self._in_order().set_budget.remote(mission_id, agent_id, max_tokens, max_usd)
        if refused is not None:
            raise refused

    async def reserve(self, mission_id: str, agent_id: str, *, prompt_tokens: int, max_tokens: int,
                      price: ModelPrice, lease_s: float) -> Reservation:
        """A capped call's worst case, held in the book. The calls that ask while this replica's last batch is on
        its way go to the book together, as one message it saves once."""
        request = ReserveRequest(mission_id, agent_id, prompt_tokens, max_tokens, price, lease_s, self._holder,
                                 self._message())
        try:
            answer = await asyncio.wait_for(self._reservations.ask(request), RESERVE_TIMEOUT_S)
        except (asyncio.TimeoutError, RayActorError):  # it is slow, or restarting
            raise BackpressureError(scope=f"the budget book {self._name}", limit=f"{RESERVE_TIMEOUT_S:g} s answer",
                                    retry_after_s=1.0) from None
        if isinstance(answer, ControlPlaneError):
            raise answer
        return answer

    def settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int) -> None:
        self._outbox.post(("settle", (reservation,), {"prompt_tokens": prompt_tokens,
                                                      "completion_tokens": completion_tokens,
                                                      "message": self._message()}))

    def record(self, mission_id: str, agent_id: str, model: str, totals: UsageTotals,
               settles: Reservation | None = None) -> None:
        self._outbox.post(("record", (mission_id, agent_id, model, totals), {"settles": settles,
                                                                             "message": self._message()}))

    async def usage(self, mission_id: str | None) -> list[dict[str, Any]]:
        return await self._in_order().usage.remote(mission_id)

    async def _reserve_many(self, requests: list[ReserveRequest]) -> list[Reservation | ControlPlaneError]:
        return await self._in_order().reserve_many.remote(requests)

    def _let_go(self, answer: Reservation | ControlPlaneError) -> None:
        """A reservation that came after its call stopped waiting for it (timed out, refused by the limiter, or
        cancelled): settled at nothing, so that the book does not hold it until its lease ends."""
        if isinstance(answer, Reservation):
            self.settle(answer, prompt_tokens=0, completion_tokens=0)

    def _message(self) -> tuple[str, int]:
        return self._sender, next(self._numbers)

    def _in_order(self) -> Any:
        """The book, for a message sent after those waiting in the outbox."""
        self._outbox.flush()
        return self._book()

    def _find(self) -> Any:
        try:
            book = ray.get_actor(self._name, namespace=LIMITER_NAMESPACE)
        except ValueError:
            return None
        check_runs_this_code(book, self._name)
        return book

    def _book(self) -> Any:
        if self._actor is None:
            self._actor = BudgetBookActor.options(  # type: ignore[attr-defined]
                name=self._name, namespace=LIMITER_NAMESPACE, lifetime="detached", get_if_exists=True,
                resources=self._resources).remote(self._name)
        return self._actor


def _gcs_put(key: str, value: bytes) -> None:
    _internal_kv_put(key, value, namespace=LIMITER_NAMESPACE)


class GcsBookStore:
    """A book's records in the GCS's internal key-value store, under `<book name>/`. A writer thread writes them
    in order, a batch at a time: each key saved meanwhile once, its record made as the batch is written, with
    `lock` held. A batch that no one waits for lingers `WRITE_LINGER_S` first, so that the usage of a call and the
    reservation of the next one, which a replica waits for, go in one write, and a mission's record is made once
    for many calls' usage."""

    def __init__(self, book_name: str, *, put: Callable[[str, bytes], None] = _gcs_put) -> None:
        self._prefix = f"{book_name}/"
        self._put = put
        self.lock = threading.Lock()
        """Held by the book while it changes what the records are made of, and by the writer while it makes them."""
        self._pending: dict[str, Callable[[], Record]] = {}
        self._saves = self._written = self._waiting = 0
        """How many records were saved, how many of those are in the GCS, and how many callers wait for it."""
        self._progress = threading.Condition()
        threading.Thread(target=self._write, name="budget-book-writer", daemon=True).start()

    def save(self, key: str, record_of: Callable[[], Record]) -> None:
        with self._progress:
            self._pending[key] = record_of
            self._saves += 1
            self._progress.notify_all()

    def wait_saved(self) -> None:
        """Return once every record saved so far is in the GCS."""
        with self._progress:
            wanted, self._waiting = self._saves, self._waiting + 1
            self._progress.notify_all()
            self._progress.wait_for(lambda: self._written >= wanted)
            self._waiting -= 1

    def load_all(self) -> dict[str, Record]:
        records = {}
        for key in _internal_kv_list(self._prefix, namespace=LIMITER_NAMESPACE):
            value = _internal_kv_get(key, namespace=LIMITER_NAMESPACE)
            if value is None:
                continue
            try:
                records[key.decode().removeprefix(self._prefix)] = pickle.loads(value)
            except Exception as exc:  # saved by another version, whose classes this one lacks
                logger.error("the budget book could not read its record %r (%s: %s); it goes on without it",
                             key.decode(), type(exc).__name__, exc)
        return records

    def _write(self) -> None:
        while True:
            with self._progress:
                self._progress.wait_for(lambda: bool(self._pending))
                self._progress.wait_for(lambda: self._waiting > 0, timeout=WRITE_LINGER_S)
                batch, self._pending, upto = self._pending, {}, self._saves
            with self.lock:
                values = {key: pickle.dumps(record_of()) for key, record_of in batch.items()}
            try:
                for key, value in values.items():
                    self._put(self._prefix + key, value)
            except Exception as exc:  # the GCS is away: keep the batch, under anything saved since
                logger.warning("the budget book could not save its records in the GCS (%s); retrying", exc)
                with self._progress:
                    self._pending = {**batch, **self._pending}
                time.sleep(WRITE_RETRY_S)
                continue
            with self._progress:
                self._written = upto
                self._progress.notify_all()
