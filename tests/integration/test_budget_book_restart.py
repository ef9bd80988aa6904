"""Durability: kill the budget book's process mid-mission; the book Ray restarts carries on the mission's caps, its
calls in flight and its usage rows from what the book saved in the GCS, and applies the message it was sent but
had not handled. And a replica's concurrent reservations, and the usage messages it sends without waiting, reach
the real book in batches, which hold the cap."""

import asyncio
import os
import signal
import time

import pytest
import ray
from ray.exceptions import RayActorError

from controlplane import BackpressureError, BudgetExceeded, SpecError
from serving._accounting import UsageTotals
from serving._budget_book import BudgetBook
from serving._detached import retire_stale
from serving._ledger import ModelPrice, Reservation
from tests.helpers import actor_pid, wait_for

SIZE = {"price": ModelPrice(), "lease_s": 600.0}


def test_a_budget_book_killed_mid_mission_carries_on_its_caps_calls_in_flight_and_usage(ray_cluster):
    book = BudgetBook("book-restart", start=True)

    async def before_the_kill():
        await book.set_budget("m", None, max_tokens=100, max_usd=None)
        await book.load("m")  # a replica has read the caps: they are fixed from now on
        held = await book.reserve("m", "a", prompt_tokens=20, max_tokens=30, **SIZE)  # in flight across the kill
        done = await book.reserve("m", "a", prompt_tokens=10, max_tokens=10, **SIZE)
        book.record("m", "a", "main", UsageTotals(calls=1, prompt_tokens=6, completion_tokens=4), settles=done)
        await book.load("m")  # an awaited answer comes once every change before it is saved, the record's too
        return held

    held = asyncio.run(before_the_kill())
    first_pid = actor_pid(book._book())
    book._book().__ray_call__.remote(lambda actor: time.sleep(3))  # busy when it dies, with a message queued:
    book.record("m", "b", "main", UsageTotals(calls=1, prompt_tokens=1, completion_tokens=1))  # Ray sends it again
    time.sleep(0.5)
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: actor_pid(book._book()) not in (None, first_pid), timeout_s=60, what="the book's restart")

    async def after_the_restart():
        with pytest.raises(BackpressureError, match="50 held by calls in flight"):  # an empty book would allow it
            await book.reserve("m", "a", prompt_tokens=20, max_tokens=40, **SIZE)
        book.settle(held, prompt_tokens=20, completion_tokens=10)  # the replica settles what the old book granted
        with pytest.raises(BudgetExceeded, match=r"\(40 used of 100\)"):
            await book.reserve("m", "a", prompt_tokens=31, max_tokens=30, **SIZE)
        rows = {row["agent_id"]: row for row in await book.usage("m")}
        assert (rows["a"]["calls"], rows["a"]["prompt_tokens"], rows["a"]["completion_tokens"]) == (1, 6, 4)
        assert rows["b"]["calls"] == 1  # the queued message, applied once by the restarted book
        with pytest.raises(SpecError, match="already made model calls"):
            await book.set_budget("m", None, max_tokens=500, max_usd=None)
        await book.reserve("m", "a", prompt_tokens=30, max_tokens=30, **SIZE)  # what is left still serves

    try:
        asyncio.run(after_the_restart())
    finally:
        ray.kill(book._book(), no_restart=True)


def test_a_book_replaced_for_running_other_code_hands_its_caps_and_usage_to_the_new_one(ray_cluster):
    """An upgrade: `deploy` replaces a book that another controlplane version's code started."""
    book = BudgetBook("book-upgrade", start=True)

    async def before_the_upgrade():
        await book.set_budget("m", None, max_tokens=100, max_usd=None)
        await book.load("m")
        done = await book.reserve("m", "a", prompt_tokens=10, max_tokens=10, **SIZE)
        book.record("m", "a", "main", UsageTotals(calls=1, prompt_tokens=6, completion_tokens=4), settles=done)
        await book.load("m")

    asyncio.run(before_the_upgrade())
    older = book._book()
    ray.get(older.__ray_call__.remote(lambda actor: setattr(actor, "_code_version", "another version")))
    assert retire_stale("book-upgrade") == ["book-upgrade:budgets"]
    with pytest.raises(RayActorError):
        ray.get(older.usage.remote("m"))
    upgraded = BudgetBook("book-upgrade", start=True)

    async def after_the_upgrade():
        with pytest.raises(BudgetExceeded, match=r"\(10 used of 100\)"):
            await upgraded.reserve("m", "a", prompt_tokens=91, max_tokens=10, **SIZE)
        rows = {row["agent_id"]: row for row in await upgraded.usage("m")}
        assert (rows["a"]["calls"], rows["a"]["prompt_tokens"], rows["a"]["completion_tokens"]) == (1, 6, 4)

    try:
        asyncio.run(after_the_upgrade())
    finally:
        ray.kill(upgraded._book(), no_restart=True)


def test_a_replicas_reservations_and_usage_messages_reach_the_book_in_batches_in_order_and_hold_the_cap(ray_cluster):
    book = BudgetBook("book-batches", start=True)

    async def sixteen_at_once():
        await book.set_budget("m", None, max_tokens=400, max_usd=None)
        return await asyncio.gather(*(book.reserve("m", "a", prompt_tokens=20, max_tokens=20, **SIZE)
                                      for _ in range(16)), return_exceptions=True)

    try:
        answers = asyncio.run(sixteen_at_once())
        granted = [answer for answer in answers if isinstance(answer, Reservation)]
        refused = [answer for answer in answers if not isinstance(answer, Reservation)]
        assert len({reservation.id for reservation in granted}) == 10  # 10 x 40 = 400
        assert all(isinstance(error, BackpressureError) for error in refused) and len(refused) == 6
        assert book._reservations.batches <= 2  # not one message each

        async def record_them_then_read():
            for reservation in granted:  # the first goes at once, the other nine wait for it
                book.record("m", "a", "main", UsageTotals(calls=1, prompt_tokens=20, completion_tokens=10),
                            settles=reservation)
            return await book.usage("m")  # sent after the nine, which go first

        [row] = asyncio.run(record_them_then_read())
        assert row["calls"] == 10 and book._outbox.batches == 2
    finally:
        ray.kill(book._book(), no_restart=True)


def test_a_reservation_that_comes_after_its_call_stopped_waiting_is_let_go(ray_cluster):
    book = BudgetBook("book-let-go", start=True)

    async def scenario():
        await book.set_budget("m", None, max_tokens=100, max_usd=None)
        await book.load("m")
        book._book().__ray_call__.remote(lambda actor: time.sleep(1.0))  # busy: the reservation waits for it
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(book.reserve("m", "a", prompt_tokens=20, max_tokens=30, **SIZE), 0.2)
        await asyncio.sleep(1.5)  # the book granted it by now, to a call that had gone
        return await book.reserve("m", "a", prompt_tokens=50, max_tokens=50, **SIZE)  # the whole cap

    try:
        whole = asyncio.run(scenario())
    finally:
        ray.kill(book._book(), no_restart=True)
    assert whole.prompt_tokens + whole.max_tokens == 100  # with the late one held for its 600 s lease, 50 are left
