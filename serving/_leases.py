"""Shared limits for N router replicas: one book of buckets hands out leases of units. Pure logic, time passed in.

The limiter (one actor) owns a bucket per scope (`model:m:rpm`, `agent:m1/a1:tpm`, `key:k1:rpm`, ...). A replica
admits a call from units it holds; when it holds too few it asks the limiter for a lease, which is taken out
of the bucket. Units leave a bucket only as leases, so N replicas together never admit more than one exact
limiter would: the error is one-sided. What a replica holds unused is lost to the others until it gives it
back (at most `ttl_s` later), so admissions may fall short of the exact limit by at most
N x `max_lease` units at any moment: with `max_lease = 1%` of the capacity and 3 replicas, within 3%.

A replica's request for a lease carries the scope's quota, so the limiter needs no config: it makes a scope's
bucket when the first request comes (or the quota changes), and drops buckets once they are full again, since
a full bucket is what the next request would make.

Calls in flight (`max_in_flight`) are not leased but counted exactly: `SlotBook` holds one slot per running call
and scope, taken before the call and handed back when it ends.

`SharedAdmission` is a replica's side: what one call takes from the limiter, and hands back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class Quota:
    """A bucket: `capacity` units, refilled evenly at `refill_per_s`."""

    capacity: float
    """Most units the bucket holds; an `rpm` limit is capacity=rpm."""
    refill_per_s: float
    """Units added per second; an `rpm` limit refills rpm/60."""

    @classmethod
    def per_minute(cls, limit: float) -> Quota:
        return cls(capacity=limit, refill_per_s=limit / 60.0)


@dataclass(frozen=True, kw_only=True)
class Lease:
    """Units handed to one replica; `retry_after_s` says when to ask again if it got fewer than it wanted."""

    scope: str
    units: float
    retry_after_s: float = 0.0


@dataclass
class _Bucket:
    quota: Quota
    level: float
    at_s: float

    def refill(self, now_s: float) -> None:
        elapsed = max(0.0, now_s - self.at_s)
        self.level = min(self.quota.capacity, self.level + elapsed * self.quota.refill_per_s)
        self.at_s = max(self.at_s, now_s)


class LeaseBook:
    """The limiter's side: one bucket per scope with a quota; scopes without one are unlimited."""

    def __init__(self, *, max_lease_fraction: float = 0.01, forget_every_s: float = 60.0) -> None:
        self.max_lease_fraction = max_lease_fraction
        self.forget_every_s = forget_every_s
        self._buckets: dict[str, _Bucket] = {}
        self._forgot_at_s: float | None = None

    def set_quota(self, scope: str, quota: Quota, now_s: float) -> None:
        """Give a scope its bucket (full); the same quota again changes nothing."""
        if scope not in self._buckets or self._buckets[scope].quota != quota:
            self._buckets[scope] = _Bucket(quota, quota.capacity, now_s)

    def max_lease(self, scope: str) -> float:
        bucket = self._buckets.get(scope)
        return math.inf if bucket is None else max(1.0, math.floor(bucket.quota.capacity * self.max_lease_fraction))

    def grant(self, scope: str, want: float, now_s: float, *, at_least: float = 0.0,
              quota: Quota | None = None) -> Lease:
        """Up to `want` whole units (capped at `max_lease`, but never below `at_least`) out of the bucket, or none
        while it holds fewer than `at_least`; then `retry_after_s` says when it will. A call larger than the
        bucket takes it full, and the level goes below zero (as one replica's own bucket does). A `quota` gives
        the scope its bucket if it has none or another quota."""
        if quota is not None:
            self._forget_full(now_s)
            self.set_quota(scope, quota, now_s)
        bucket = self._buckets.get(scope)
        if bucket is None:
            return Lease(scope=scope, units=want)
        bucket.refill(now_s)
        need = max(min(at_least, bucket.quota.capacity), 1.0)  # units are whole requests or tokens
        if bucket.level < need:
            return Lease(scope=scope, units=0.0, retry_after_s=self._wait_s(bucket, need))
        units = max(float(math.floor(min(want, self.max_lease(scope), bucket.level))), at_least)
        bucket.level -= units
        return Lease(scope=scope, units=units)

    def charge(self, scope: str, units: float, now_s: float) -> None:
        """Take units whatever the level (a call that used more tokens than it reserved); the bucket may go
        below zero, which delays the next grants."""
        bucket = self._buckets.get(scope)
        if bucket is not None and units > 0:
            bucket.refill(now_s)
            bucket.level -= units

    def give_back(self, scope: str, units: float, now_s: float) -> None:
        """Units a replica leased and did not use."""
        bucket = self._buckets.get(scope)
        if bucket is not None and units > 0:
            bucket.refill(now_s)
            bucket.level = min(bucket.quota.capacity, bucket.level + units)

    def level(self, scope: str, now_s: float) -> float:
        bucket = self._buckets.get(scope)
        if bucket is None:
            return math.inf
        bucket.refill(now_s)
        return bucket.level

    def _forget_full(self, now_s: float) -> None:
        """Drop the buckets that are full again, at most once per `forget_every_s`."""
        if self._forgot_at_s is not None and now_s - self._forgot_at_s < self.forget_every_s:
            return
        self._forgot_at_s = now_s
        for scope, bucket in list(self._buckets.items()):
            bucket.refill(now_s)
            if bucket.level >= bucket.quota.capacity:
                del self._buckets[scope]

    def scopes(self) -> list[str]:
        return list(self._buckets)

    @staticmethod
    def _wait_s(bucket: _Bucket, need: float) -> float:
        if bucket.quota.refill_per_s == 0:
            return math.inf  # it never refills
        return (need - bucket.level) / bucket.quota.refill_per_s


class SlotBook:
    """Calls in flight shared by N replicas: a scope's `capacity` slots, each held by one call of one replica from
    its admission to its end. A call takes one slot of each of its scopes (its agent's, its mission's) under one
    id, all or none. Slots have ids, so that handing one back twice, or one that was never taken, changes
    nothing. A replica that died holding slots is asked about (`holder_alive`) only when a scope is full, and its
    slots are freed then. A replica that answered, or that asked for a slot itself, is taken to run for
    `alive_for_s`, so that calls refused one after another do not ask again each time."""

    def __init__(self, holder_alive: Callable[[str], bool], *, alive_for_s: float = 2.0) -> None:
        self._holder_alive = holder_alive
        self._alive_for_s = alive_for_s
        self._held: dict[str, dict[str, str]] = {}  # scope -> slot id -> holder
        self._seen_alive_at_s: dict[str, float] = {}

    def take(self, slots: list[tuple[str, int]], holder: str, slot: str, now_s: float) -> str | None:
        """Slot `slot` of each (scope, capacity) for `holder`; None when taken, else the first scope whose
        `capacity` slots are all held by replicas that still run (and nothing is taken)."""
        self._seen_alive_at_s[holder] = now_s
        for scope, capacity in slots:
            if not self._has_room(scope, capacity, now_s):
                return scope
        for scope, _ in slots:
            self._held.setdefault(scope, {})[slot] = holder
        return None

    def give_back(self, scopes: list[str], slot: str) -> None:
        """The end of the call that took `slot` of `scopes`."""
        for scope in scopes:
            held = self._held.get(scope)
            if held is not None and held.pop(slot, None) is not None and not held:
                del self._held[scope]

    def in_flight(self, scope: str) -> int:
        return len(self._held.get(scope, {}))

    def _has_room(self, scope: str, capacity: int, now_s: float) -> bool:
        held = self._held.get(scope, {})
        if len(held) < capacity:
            return True
        self._seen_alive_at_s = {h: at_s for h, at_s in self._seen_alive_at_s.items()
                                 if now_s - at_s < self._alive_for_s}
        gone = {h for h in set(held.values()) if not self._runs(h, now_s)}
        for freed in [s for s, h in held.items() if h in gone]:
            del held[freed]
        return len(held) < capacity

    def _runs(self, holder: str, now_s: float) -> bool:
        if holder in self._seen_alive_at_s:
            return True
        if self._holder_alive(holder):
            self._seen_alive_at_s[holder] = now_s
            return True
        return False


LeaseRequest = tuple[str, float, float, Quota]
"""(scope, want, at_least, quota), as `LeaseBook.grant` takes them."""


def take_slots_and_leases(slot_book: SlotBook, lease_book: LeaseBook, slots: list[tuple[str, int]], holder: str,
                          slot: str, requests: list[LeaseRequest], now_s: float) -> tuple[str | None, list[Lease]]:
    """A call's slots and its leases, all or none: the first slot scope refused and no lease; or no refusal and a
    lease per request. When a lease has fewer units than its `at_least`, the call is refused, so its slots are
    handed back (the leases granted stay with the replica, for its next calls)."""
    refused = slot_book.take(slots, holder, slot, now_s) if slots else None
    if refused is not None:
        return refused, []
    leases = [lease_book.grant(scope, want, now_s, at_least=at_least, quota=quota)
              for scope, want, at_least, quota in requests]
    if slots and any(lease.units < at_least for lease, (_, _, at_least, _) in zip(leases, requests, strict=True)):
        slot_book.give_back([scope for scope, _ in slots], slot)
    return None, leases


@dataclass
class _Held:
    units: float = 0.0
    expires_at_s: float = 0.0


@dataclass
class LeaseHolder:
    """A replica's side: the units it holds per scope, usable until they expire (then handed back)."""

    ttl_s: float = 1.0
    """How long leased units stay usable before they go back to the limiter for other replicas."""
    _held: dict[str, _Held] = field(default_factory=dict)
    _returns: dict[str, float] = field(default_factory=dict)

    def take(self, scope: str, amount: float, now_s: float) -> bool:
        """Use `amount` held units; False (and nothing taken) when fewer are held and unexpired."""
        held = self._held.get(scope)
        if held is None or held.expires_at_s <= now_s or held.units + 1e-9 < amount:
            return False
        held.units -= amount
        return True

    def add(self, lease: Lease, now_s: float) -> None:
        """Units granted by the limiter; they (and what is held already) last `ttl_s` from now."""
        held = self._held.setdefault(lease.scope, _Held())
        if held.expires_at_s <= now_s:
            self._expire(lease.scope, held)
        held.units += lease.units
        held.expires_at_s = now_s + self.ttl_s

    def put_back(self, scope: str, units: float, now_s: float) -> None:
        """Units a call reserved but did not use (an estimate above the real usage)."""
        held = self._held.get(scope)
        if held is not None and held.expires_at_s > now_s:
            held.units += units

    def expired(self, now_s: float) -> dict[str, float]:
        """Unused units whose time is up, by scope; they are forgotten here (their scopes too) and go back to the
        limiter."""
        for scope, held in list(self._held.items()):
            if held.expires_at_s <= now_s:
                self._expire(scope, held)
                del self._held[scope]
        out, self._returns = self._returns, {}
        return out

    def scopes(self) -> set[str]:
        """The scopes this replica holds a lease of (expired ones until `expired` forgets them)."""
        return set(self._held)

    def release_all(self) -> dict[str, float]:
        """Everything held or due back, by scope, to return now (the replica is going away)."""
        for scope, held in self._held.items():
            self._expire(scope, held)
        out, self._returns = self._returns, {}
        return out

    def _expire(self, scope: str, held: _Held) -> None:
        if held.units > 0:
            self._returns[scope] = self._returns.get(scope, 0.0) + held.units
        held.units = 0.0

    def held(self, scope: str, now_s: float) -> float:
        held = self._held.get(scope)
        return 0.0 if held is None or held.expires_at_s <= now_s else held.units


class Shared(Protocol):
    """The limiter, as a replica reaches it (serving/_limiter.py: SharedLimits)."""

    async def take(self, slots: list[tuple[str, int]], wants: list[tuple[str, float, Quota]]) -> str: ...

    def settle(self, scope: str, reserved: float, used: float) -> None: ...

    def give_slots(self, scopes: list[str], slot: str) -> None: ...


@dataclass
class SharedTake:
    """What a call took of the limits every replica shares: a slot of each of its `max_in_flight` scopes (under
    one id), and units of its rpm and tpm buckets."""

    slot: str = ""
    slot_scopes: list[str] = field(default_factory=list)
    unit_scopes: list[str] = field(default_factory=list)


class SharedAdmission:
    """A call's share of the limits every router replica shares, from the limiter: taken before the call runs,
    handed back when it ends."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    async def take(self, limits_by_scope: dict[str, Any], est_tokens: int) -> SharedTake:
        """A slot of each `max_in_flight` scope (each scope's ScopeLimits), a request of each `rpm` bucket and the
        `est_tokens` of each `tpm` one, all or none; what this replica holds too few of comes from the limiter in
        one round trip."""
        slots = [(f"{scope}:in_flight", limits.max_in_flight) for scope, limits in limits_by_scope.items()
                 if limits.max_in_flight is not None]
        wants = _amounts(limits_by_scope, est_tokens)
        slot = await self._shared.take(slots, wants)
        return SharedTake(slot=slot, slot_scopes=[scope for scope, _ in slots],
                          unit_scopes=[scope for scope, _, _ in wants])

    def give_back(self, taken: SharedTake, est_tokens: int, used_tokens: int) -> None:
        """The call's slots, and what its buckets did not use: the `tpm` tokens beyond `used_tokens`, and the
        `rpm` request of a call refused or failed before it ran (`used_tokens` 0)."""
        if taken.slot:
            self._shared.give_slots(taken.slot_scopes, taken.slot)
        for scope in taken.unit_scopes:
            if scope.endswith(":tpm"):
                self._shared.settle(scope, est_tokens, used_tokens)
            elif used_tokens == 0:
                self._shared.settle(scope, 1, 0)


def _amounts(limits_by_scope: dict[str, Any], est_tokens: int) -> list[tuple[str, float, Quota]]:
    out: list[tuple[str, float, Quota]] = []
    for scope, limits in limits_by_scope.items():
        if limits.rpm is not None:
            out.append((f"{scope}:rpm", 1.0, Quota.per_minute(limits.rpm)))
        if limits.tpm is not None:
            out.append((f"{scope}:tpm", float(est_tokens), Quota.per_minute(limits.tpm)))
    return out
