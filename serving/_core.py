"""The router's control path, without Serve: size checks, breaker and fallback, admission,
the priority gate, deadlines, and accounting. `Router` (the Serve deployment) is a shell on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.errors import BackpressureError, ReplicaUnavailable, SpecError
from serving._accounting import Ledger
from serving._affinity import prefix_key
from serving._breaker import CircuitBreaker
from controlplane.config import ServingConfig
from serving._gate import Gate
from serving._leases import shared_amounts
from serving._limits import Admission, ScopeLimits
from serving._stream import within
from serving._types import Identity

logger = logging.getLogger(__name__)


class Backend(Protocol):
    def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]: ...


class Shared(Protocol):
    """Limits shared by every replica of the router (serving/_limiter.py: SharedLimits)."""

    async def acquire(self, scope: str, amount: float) -> None: ...

    def settle(self, scope: str, reserved: float, used: float) -> None: ...


@dataclass(kw_only=True)
class Call:
    """One admitted unit of work: a chat (`messages`) or a completion (`prompt`)."""

    model: str
    body: dict[str, Any]
    """messages or prompt, max_tokens, temperature, json_schema, choice."""
    identity: Identity = field(default_factory=Identity)
    timeout_s: float | None = None


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A tokenizer-free estimate (4 characters a token) used for admission and size checks."""
    if "prompt" in body:
        return len(body["prompt"]) // 4 + 1
    return sum(len(m["content"]) // 4 + 4 for m in body["messages"])


class RouterCore:
    def __init__(self, config: ServingConfig, backends: dict[str, Backend], *,
                 clock: Callable[[], float] = time.monotonic,
                 on_record: Callable[[str, Identity, dict[str, Any] | None], None] | None = None,
                 shared: Shared | None = None) -> None:
        self.config = config
        self._shared = shared
        self.ledger = Ledger()
        self._backends = backends
        self._clock = clock
        self._on_record = on_record or (lambda model, identity, final: None)
        router = config.router
        self._admission = Admission({"agent": ScopeLimits(**router.agent.model_dump()),
                                     "mission": ScopeLimits(**router.mission.model_dump())})
        for name, spec in config.models.items():
            self._admission.set_limits(f"model:{name}", ScopeLimits(rpm=spec.limits.rpm, tpm=spec.limits.tpm),
                                       clock())
        self._breakers = {name: CircuitBreaker(**spec.breaker.model_dump()) for name, spec in config.models.items()}
        self._gates = {name: Gate(slots=spec.limits.max_in_flight or router.max_in_flight_per_model,
                                  max_queue=router.max_queue, scope=f"model:{name}")
                       for name, spec in config.models.items()}

    def breaker_state(self, model: str) -> str:
        self._known(model)
        return self._breakers[model].state(self._clock())

    def _known(self, model: str) -> None:
        if model not in self.config.models:
            raise SpecError(where="model", value=model, why=f"no such model; known: {sorted(self.config.models)}",
                            fix="use one of the known model names")

    def set_mission_budget(self, mission_id: str, token_budget: int | None) -> None:
        """A mission's own hard cap on tokens (the mission spec's budget); None = the config's."""
        limits = ScopeLimits(**self.config.router.mission.model_dump())
        if token_budget is not None:
            limits.token_budget = token_budget
        self._admission.set_limits(f"mission:{mission_id}", limits, self._clock())

    def set_mission_weight(self, mission_id: str, weight: float) -> None:
        """A mission's share of each model while calls wait (default 1): weighted fair queueing between missions."""
        for gate in self._gates.values():
            gate.set_weight(mission_id, weight)

    def used_tokens(self, mission_id: str) -> int:
        return self._admission.used_tokens(f"mission:{mission_id}")

    def check(self, call: Call) -> None:
        """Refuse a call that can never succeed: unknown model, absurd sizes."""
        self._known(call.model)
        limit = self.config.models[call.model].max_context_tokens
        if call.body["max_tokens"] >= limit:
            raise SpecError(where="max_tokens", value=call.body["max_tokens"],
                            why=f"it must be below the context limit of {limit} tokens of model {call.model!r}",
                            fix="ask for fewer tokens")
        prompt_tokens = estimate_prompt_tokens(call.body)
        if prompt_tokens + call.body["max_tokens"] > limit:
            raise SpecError(where="messages", value=f"about {prompt_tokens} prompt tokens",
                            why=f"prompt plus max_tokens={call.body['max_tokens']} exceeds the context limit "
                                f"of {limit} tokens of model {call.model!r}",
                            fix="shorten the prompt or lower max_tokens")

    def _pick_model(self, name: str) -> str:
        """The model itself, or its fallback chain while its breaker is open."""
        seen = []
        while True:
            seen.append(name)
            breaker = self._breakers[name]
            if breaker.allow(self._clock()):
                return name
            fallback = self.config.models[name].fallback
            if fallback is None or fallback in seen:
                raise ReplicaUnavailable(
                    model=seen[0], why=f"the circuit breaker of {name!r} is open after repeated failures; "
                    f"retry in {breaker.retry_after_s(self._clock()):.1f} s",
                    fix="check its replicas with `serve status`, or set a fallback model in the serving config")
            name = fallback

    async def stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        """`{"delta"}` events, then a final event with the model, usage and timings.

        A backend that fails before its first event hands the call to its fallback model, if any.
        """
        self.check(call)
        model, tried = self._pick_model(call.model), []
        while True:
            started = False
            try:
                async for event in self._attempt(model, call):
                    started = True
                    yield event
                return
            except ReplicaUnavailable:
                fallback = self.config.models[model].fallback
                tried.append(model)
                if started or fallback is None or fallback in tried:
                    raise
                logger.warning("model %r failed; its fallback %r takes the call", model, fallback)
                model = self._pick_model(fallback)

    async def _attempt(self, model: str, call: Call) -> AsyncIterator[dict[str, Any]]:
        ident = call.identity
        scopes = [f"agent:{ident.mission_id}/{ident.agent_id}", f"mission:{ident.mission_id}", f"model:{model}"]
        est_tokens = estimate_prompt_tokens(call.body) + call.body["max_tokens"]
        start_s = self._clock()
        shared = await self._admit_shared(model, est_tokens)
        try:
            self._admission.admit(scopes, est_tokens, start_s)
        except Exception:
            self._settle_shared(shared, est_tokens, 0)
            self._breakers[model].abandon(start_s)
            raise
        final: dict[str, Any] | None = None
        try:
            async for event in self._run(model, call, start_s):
                if event.get("done"):
                    final = event
                yield event
        finally:
            used = final["prompt_tokens"] + final["completion_tokens"] if final else 0
            self._admission.release(scopes, est_tokens, used, self._clock())
            self._settle_shared(shared, est_tokens, used)
            self._account(model, ident, final)

    async def _admit_shared(self, model: str, est_tokens: int) -> list[str]:
        """Take the call's share of the limits every replica shares (a model's rpm and tpm); all or none."""
        if self._shared is None:
            return []
        taken: list[str] = []
        try:
            for scope, amount in shared_amounts(model, self.config.models[model].limits, est_tokens):
                await self._shared.acquire(scope, amount)
                taken.append(scope)
        except BaseException:
            self._settle_shared(taken, est_tokens, 0)
            self._breakers[model].abandon(self._clock())
            raise
        return taken

    def _settle_shared(self, scopes: list[str], est_tokens: int, used_tokens: int) -> None:
        for scope in scopes:
            if scope.endswith(":tpm"):
                self._shared.settle(scope, est_tokens, used_tokens)
            elif used_tokens == 0 and scope.endswith(":rpm"):
                self._shared.settle(scope, 1, 0)  # refused or failed before it ran: the request is given back

    def _account(self, model: str, ident: Identity, final: dict[str, Any] | None) -> None:
        if final is None:
            self.ledger.record_error(ident.mission_id, ident.agent_id, model)
        else:
            self.ledger.record(ident.mission_id, ident.agent_id, model, prompt_tokens=final["prompt_tokens"],
                               completion_tokens=final["completion_tokens"], ttft_s=final["ttft_s"],
                               latency_s=final["latency_s"])
        self._on_record(model, ident, final)

    async def _run(self, model: str, call: Call, start_s: float) -> AsyncIterator[dict[str, Any]]:
        timeout_s = call.timeout_s or self.config.router.request_timeout_s
        deadline_s = start_s + timeout_s
        gate, breaker = self._gates[model], self._breakers[model]
        cost = estimate_prompt_tokens(call.body) + call.body["max_tokens"]
        try:
            await gate.acquire(call.identity.priority, max(0.0, deadline_s - self._clock()),
                               flow=call.identity.mission_id, cost=cost)
        except Exception:
            breaker.abandon(self._clock())
            raise
        key = prefix_key(call.body["messages"]) if "messages" in call.body else None
        events = self._backends[model].stream(call.body, key)
        try:
            async for event in self._timed(model, within(events, deadline_s - self._clock(),
                                                            self.config.router.stream_interval_s), start_s, timeout_s):
                yield event
        finally:
            gate.release()

    async def _timed(self, model: str, events: AsyncIterator[dict[str, Any]], start_s: float,
                     timeout_s: float) -> AsyncIterator[dict[str, Any]]:
        """The backend's events, with errors and timeouts raised and timings added."""
        breaker, ttft_s = self._breakers[model], None
        while True:
            try:
                event = await anext(events)
            except asyncio.TimeoutError:
                breaker.record_failure(self._clock())
                raise ReplicaUnavailable(model=model, why=f"no reply within timeout_s={timeout_s:g}",
                                         fix="raise timeout_s, or add replicas") from None
            if "error" in event:
                self._raise_backend_error(model, event["error"])
            if ttft_s is None and event.get("delta"):
                ttft_s = self._clock() - start_s
            if event.get("done"):
                breaker.record_success(self._clock())
                latency_s = self._clock() - start_s
                yield {**event, "model": model, "backend": self.config.models[model].kind,
                       "ttft_s": latency_s if ttft_s is None else ttft_s, "latency_s": latency_s}
                return
            yield event

    def _raise_backend_error(self, model: str, error: dict[str, Any]) -> None:
        status, message = error["status"], error["message"]
        now_s = self._clock()
        if status == 429:
            self._breakers[model].record_success(now_s)
            raise BackpressureError(scope=f"model:{model}", limit="the backend's rate limit",
                                    retry_after_s=error.get("retry_after_s", 1.0))
        if status < 500:
            self._breakers[model].record_success(now_s)
            raise SpecError(where=f"request to model {model!r}", value=status, why=message,
                            fix="correct the request as the message says")
        self._breakers[model].record_failure(now_s)
        raise ReplicaUnavailable(model=model, why=message)
