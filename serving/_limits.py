"""Token buckets and admission: who may send a model call now. Pure logic, time passed in.

A bucket holds up to `capacity` units and refills at `capacity / 60` units per second, so a
`rpm` or `tpm` limit is a bucket whose capacity is the per-minute figure. Admission charges the
request bucket 1 and the token bucket the request's estimated tokens, then reconciles the token
bucket with the real usage once the call returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.errors import BackpressureError


class TokenBucket:
    """`capacity` units that refill evenly over one minute. `None` capacity means unlimited."""

    def __init__(self, capacity: float | None, now_s: float) -> None:
        self.capacity = capacity
        self._level = capacity or 0.0
        self._at_s = now_s

    def _refill(self, now_s: float) -> None:
        if self.capacity is None:
            return
        elapsed_s = max(0.0, now_s - self._at_s)
        self._level = min(self.capacity, self._level + elapsed_s * self.capacity / 60.0)
        self._at_s = max(self._at_s, now_s)

    def wait_s(self, amount: float, now_s: float) -> float:
        """Seconds until `amount` units are available; 0 when they are now."""
        if self.capacity is None:
            return 0.0
        self._refill(now_s)
        need = min(amount, self.capacity) - self._level
        return 0.0 if need <= 0 else need * 60.0 / self.capacity

    def full(self, now_s: float) -> bool:
        """Whether it holds its whole capacity: then it is as good as a new bucket."""
        if self.capacity is None:
            return True
        self._refill(now_s)
        return self._level >= self.capacity

    def take(self, amount: float, now_s: float) -> None:
        """Take `amount` (the level may go negative when reconciling real usage)."""
        if self.capacity is None:
            return
        self._refill(now_s)
        self._level -= amount

    def give_back(self, amount: float, now_s: float) -> None:
        if self.capacity is None:
            return
        self._refill(now_s)
        self._level = min(self.capacity, self._level + amount)


@dataclass(kw_only=True)
class ScopeLimits:
    """The limits of one scope (an agent, a mission, or a backend)."""

    rpm: float | None = None
    """Requests per minute; None = unlimited."""
    tpm: float | None = None
    """Tokens (prompt + completion) per minute; None = unlimited."""
    max_in_flight: int | None = None
    """Calls running at once; None = unlimited."""


@dataclass
class _ScopeState:
    requests: TokenBucket
    tokens: TokenBucket
    in_flight: int = 0


@dataclass
class Admission:
    """Per-scope buckets and in-flight counts; a scope is a string like `agent:a1`. (Budgets: `BudgetLedger`.)"""

    limits_by_kind: dict[str, ScopeLimits]
    """Limits for each scope kind (`agent`, `mission`, `model`); the kind is the text before ':'."""
    forget_every_s: float = 60.0
    """How often the scopes with no call running and full buckets (as good as new ones) are forgotten, so that
    the agents and missions that came and went do not pile up."""
    _scopes: dict[str, _ScopeState] = field(default_factory=dict)
    _overrides: dict[str, ScopeLimits] = field(default_factory=dict)
    _forgot_at_s: float | None = None

    def set_limits(self, scope: str, limits: ScopeLimits, now_s: float) -> None:
        """Give one scope (e.g. `mission:m1`) its own limits; its usage so far is kept."""
        self._overrides[scope] = limits
        state = self._state(scope, now_s)
        state.requests = TokenBucket(limits.rpm, now_s)
        state.tokens = TokenBucket(limits.tpm, now_s)

    def _state(self, scope: str, now_s: float) -> _ScopeState:
        state = self._scopes.get(scope)
        if state is None:
            limits = self.limits(scope)
            state = _ScopeState(TokenBucket(limits.rpm, now_s), TokenBucket(limits.tpm, now_s))
            self._scopes[scope] = state
        return state

    def limits(self, scope: str) -> ScopeLimits:
        """The scope's own limits if it has them, else those of its kind."""
        if scope in self._overrides:
            return self._overrides[scope]
        return self.limits_by_kind.get(scope.split(":", 1)[0], ScopeLimits())

    def admit(self, scopes: list[str], est_tokens: int, now_s: float) -> None:
        """Charge every scope for one call of `est_tokens`, or raise and charge none."""
        self._forget_idle(now_s)
        for scope in scopes:
            self._check(scope, est_tokens, now_s)
        for scope in scopes:
            state = self._state(scope, now_s)
            state.requests.take(1, now_s)
            state.tokens.take(est_tokens, now_s)
            state.in_flight += 1

    def _check(self, scope: str, est_tokens: int, now_s: float) -> None:
        limits, state = self.limits(scope), self._state(scope, now_s)
        if limits.max_in_flight is not None and state.in_flight >= limits.max_in_flight:
            raise BackpressureError(scope=scope, limit=f"max_in_flight={limits.max_in_flight}",
                                    retry_after_s=1.0)
        wait_s = state.requests.wait_s(1, now_s)
        if wait_s > 0:
            raise BackpressureError(scope=scope, limit=f"rpm={limits.rpm:g}", retry_after_s=wait_s)
        wait_s = state.tokens.wait_s(est_tokens, now_s)
        if wait_s > 0:
            raise BackpressureError(scope=scope, limit=f"tpm={limits.tpm:g}", retry_after_s=wait_s)

    def release(self, scopes: list[str], est_tokens: int, used_tokens: int, now_s: float) -> None:
        """End a call admitted with `est_tokens` that really used `used_tokens` (0 if it failed)."""
        for scope in scopes:
            state = self._state(scope, now_s)
            state.in_flight = max(0, state.in_flight - 1)
            if used_tokens >= est_tokens:
                state.tokens.take(used_tokens - est_tokens, now_s)
            else:
                state.tokens.give_back(est_tokens - used_tokens, now_s)

    def _forget_idle(self, now_s: float) -> None:
        if self._forgot_at_s is not None and now_s - self._forgot_at_s < self.forget_every_s:
            return
        self._forgot_at_s = now_s
        for scope, state in list(self._scopes.items()):
            if state.in_flight == 0 and state.requests.full(now_s) and state.tokens.full(now_s):
                del self._scopes[scope]

    def scopes(self) -> list[str]:
        """The scopes it keeps state for."""
        return list(self._scopes)

    def in_flight(self, scope: str) -> int:
        state = self._scopes.get(scope)
        return 0 if state is None else state.in_flight
