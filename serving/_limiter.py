"""Shared limits across router replicas: the limiter actor (one per app) and each replica's client.

The lease logic is pure (serving/_leases.py); this is the Ray shell around it. A replica admits a call from
units it holds and asks the limiter for a lease only when it runs short, so most calls cost no actor hop.
Calls in flight (`max_in_flight`) are slots: a call takes one of each of its scopes from the limiter and hands
them back when it ends, one round trip each, so the count is exact across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from controlplane.errors import BackpressureError
from serving._detached import LIMITER_NAMESPACE, check_runs_this_code, code_version
from serving._leases import Lease, LeaseBook, LeaseHolder, LeaseRequest, Quota, SlotBook, take_slots_and_leases

logger = logging.getLogger(__name__)
ANSWER_TIMEOUT_S = 5.0
"""How long a call waits for a lease before it is refused (a BackpressureError)."""


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class LimiterActor:
    """The one book of shared limits of an app. A restart refills every bucket (a short overshoot, once); Ray
    sends the requests it had not answered to the restarted limiter."""

    def __init__(self, max_lease_fraction: float = 0.01) -> None:
        self._book = LeaseBook(max_lease_fraction=max_lease_fraction)
        self._slots = SlotBook(holder_alive=replica_alive)
        self._code_version = code_version()

    def code_version(self) -> str:
        return self._code_version

    def take(self, slots: list[tuple[str, int]], holder: str, slot: str, requests: list[LeaseRequest],
             expired: dict[str, float]) -> tuple[str | None, list[Lease]]:
        """The `expired` units of `holder` back, then a call's slots and leases (`take_slots_and_leases`)."""
        self.give_back(expired)
        return take_slots_and_leases(self._slots, self._book, slots, holder, slot, requests, time.monotonic())

    def give_slots(self, scopes: list[str], slot: str) -> None:
        self._slots.give_back(scopes, slot)

    def in_flight(self, scope: str) -> int:
        return self._slots.in_flight(scope)

    def give_back(self, units_by_scope: dict[str, float]) -> None:
        for scope, units in units_by_scope.items():
            self._book.give_back(scope, units, time.monotonic())

    def charge(self, scope: str, units: float) -> None:
        self._book.charge(scope, units, time.monotonic())

    def level(self, scope: str) -> float:
        return self._book.level(scope, time.monotonic())


def start_limiter(app_name: str, *, resources: dict[str, float] | None = None) -> Any:
    """The app's limiter actor, named `<app>:limiter`, detached (created once, found by every replica). Each
    request for a lease carries its scope's quota, so a redeployed config's changed quotas reach it with the
    next call (an unchanged bucket keeps its level). SetupError when the one found runs other code."""
    name = f"{app_name}:limiter"
    limiter = LimiterActor.options(name=name, namespace=LIMITER_NAMESPACE, lifetime="detached",  # type: ignore[attr-defined]
                                   get_if_exists=True, resources=resources or None).remote()
    check_runs_this_code(limiter, name)
    return limiter


def replica_alive(name: str) -> bool:
    """Whether the Serve replica actor `name` (a router replica) still runs."""
    from ray.serve._private.constants import SERVE_NAMESPACE

    try:
        ray.get_actor(name, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


class SharedLimits:
    """A replica's door to the shared limits: `slot = await take(slots, wants)` before a call, with its
    `max_in_flight` (scope, capacity) slots and its rpm/tpm (scope, amount, quota) wants; `settle` and `give_slots`
    after. `holder` is this replica's actor name, by which the limiter frees the slots of a replica that died."""

    def __init__(self, limiter: Any, *, holder: str, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self._limiter = limiter
        self._holder_name = holder
        self._slot_ids = itertools.count()
        self._answer_timeout_s = answer_timeout_s
        self._holder = LeaseHolder(ttl_s=ttl_s)
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    async def take(self, slots: list[tuple[str, int]], wants: list[tuple[str, float, Quota]]) -> str:
        """A slot of each (scope, capacity), under the id returned ("" for no slots), and `amount` units of each
        (scope, amount, quota), all or none. The units come from those this replica holds; the slots, and the
        leases of the scopes it holds too few of, from the limiter in one round trip. BackpressureError naming the
        first scope refused, and nothing taken."""
        taken: list[tuple[str, float]] = []
        try:
            short = self._take_held(wants, taken)
            if not slots and not short:
                return ""
            async with contextlib.AsyncExitStack() as locked:
                for scope in sorted({scope for scope, _, _ in short}):  # one lease at a time per scope; in order
                    await locked.enter_async_context(self._locks.setdefault(scope, asyncio.Lock()))
                short = self._take_held(short, taken)  # other calls may have leased meanwhile
                if not slots and not short:
                    return ""
                slot = f"{self._holder_name}/{next(self._slot_ids)}" if slots else ""
                leases = await self._ask(slots, slot, short)
                for lease in leases:
                    if lease.units > 0:
                        self._holder.add(lease, self._clock())
                for (scope, amount, quota), lease in zip(short, leases, strict=True):
                    if self._take_held([(scope, amount, quota)], taken):  # refused: the limiter gave the slots back
                        owner, kind = scope.rsplit(":", 1)
                        raise BackpressureError(scope=owner, limit=f"shared {kind}={quota.capacity:g}",
                                                retry_after_s=lease.retry_after_s)
                return slot
        except BaseException:
            for scope, amount in taken:
                self._holder.put_back(scope, amount, self._clock())
            raise

    def _take_held(self, wants: list[tuple[str, float, Quota]],
                   taken: list[tuple[str, float]]) -> list[tuple[str, float, Quota]]:
        """Take what this replica holds enough of (adding it to `taken`); the rest, still wanted."""
        short = []
        for scope, amount, quota in wants:
            if self._holder.take(scope, amount, self._clock()):
                taken.append((scope, amount))
            else:
                short.append((scope, amount, quota))
        return short

    async def _ask(self, slots: list[tuple[str, int]], slot: str, short: list[tuple[str, float, Quota]]) -> list[Lease]:
        """The limiter's leases of `short` (as much of each as the lease cap allows, and at least the amount
        wanted), once it took `slot` of each of `slots`; it takes the units this replica's expired leases hold
        back first."""
        requests = [(scope, math.inf, amount, quota) for scope, amount, quota in short]
        try:
            refused, leases = await asyncio.wait_for(
                self._limiter.take.remote(slots, self._holder_name, slot, requests, self._expired()),
                self._answer_timeout_s)
        except BaseException as exc:  # the limiter may still take them: Ray runs this caller's calls in order
            if slots:
                self.give_slots([scope for scope, _ in slots], slot)
            if isinstance(exc, (asyncio.TimeoutError, RayActorError)):  # it is slow, or restarting
                raise self._no_answer() from None
            raise
        if refused is not None:
            capacity = dict(slots)[refused]
            raise BackpressureError(scope=refused.rsplit(":", 1)[0], limit=f"shared max_in_flight={capacity}",
                                    retry_after_s=1.0)
        return leases

    def give_slots(self, scopes: list[str], slot: str) -> None:
        """The end of the call that took `slot` of `scopes` (sent in the background, so this never waits)."""
        self._limiter.give_slots.remote(scopes, slot)

    def settle(self, scope: str, reserved: float, used: float) -> None:
        """After a call: units reserved but unused are kept for the next call; an overrun is charged (in the
        background, so this never waits)."""
        if used < reserved:
            self._holder.put_back(scope, reserved - used, self._clock())
        elif used > reserved and not self._holder.take(scope, used - reserved, self._clock()):
            self._limiter.charge.remote(scope, used - reserved)

    def _no_answer(self) -> BackpressureError:
        """The limiter did not answer in time (it is slow, or restarting)."""
        return BackpressureError(scope="the router's limiter", limit=f"{self._answer_timeout_s:g} s answer",
                                 retry_after_s=1.0)

    def _expired(self) -> dict[str, float]:
        """The units of the leases that expired, taken from this replica's hold; and the locks of scopes it holds
        nothing of any more dropped (one lock per scope in use, not per scope ever seen)."""
        expired = self._holder.expired(self._clock())
        for scope in set(self._locks) - self._holder.scopes():
            if not self._locks[scope].locked():
                del self._locks[scope]
        return expired

    async def close(self) -> None:
        """Hand every held unit back (a replica scaling in)."""
        held = self._holder.release_all()
        if held:
            await self._limiter.give_back.remote(held)
