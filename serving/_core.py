"""The router's control path, without Serve: size checks, breaker and fallback, admission,
the priority gate, deadlines, and accounting. `Router` (the Serve deployment) is a shell on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.config import ServingConfig
from controlplane.errors import BackpressureError, DeadlineExceeded, ReplicaUnavailable, SpecError
from serving._accounting import Ledger
from serving._affinity import affinity_key
from serving._breaker import CircuitBreaker
from serving._caps import Book, Hold, RouterCaps
from serving._gate import Gate
from serving._keys import KeyScope
from serving._leases import Shared, SharedAdmission, SharedTake
from serving._ledger import Charge
from serving._limits import Admission, ScopeLimits
from serving._stream import within
from serving._tool_calls import check_tool_request, message_text, tools_text
from serving._types import Identity

logger = logging.getLogger(__name__)


class Backend(Protocol):
    def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]: ...


@dataclass(kw_only=True)
class Call:
    """One admitted unit of work: a chat (`messages`) or a completion (`prompt`)."""

    model: str
    body: dict[str, Any]
    """messages or prompt, max_tokens, temperature, json_schema, choice, and tools, tool_choice,
    parallel_tool_calls (see `serving._tool_calls`)."""
    identity: Identity = field(default_factory=Identity)
    timeout_s: float | None = None
    slack_s: float | None = None
    """The task's slack in its mission's DAG (ChatRequest.slack_s); None: FIFO among the mission's calls."""
    key: KeyScope | None = None
    """The API key the call came with: its rpm/tpm limits are one more admission scope."""
    on_dispatch: Callable[[], None] | None = None
    """Called when the call leaves the queue for its backend (again if its fallback takes it)."""


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A tokenizer-free estimate (4 characters a token) used for admission and size checks."""
    if "prompt" in body:
        return len(body["prompt"]) // 4 + 1
    return sum(len(message_text(m)) // 4 + 4 for m in body["messages"]) + len(tools_text(body)) // 4


@dataclass
class _Progress:
    """How far a call got, to charge a failed one: the prompt once dispatched, plus what it generated."""

    dispatched: bool = False
    deltas: int = 0
    chars: int = 0

    def seen(self, event: dict[str, Any]) -> None:
        self.deltas += event.get("chunks", 1)
        self.chars += len(event.get("delta", ""))

    def usage(self, body: dict[str, Any]) -> dict[str, int]:
        if not self.dispatched:
            return {"prompt_tokens": 0, "completion_tokens": 0}
        return {"prompt_tokens": estimate_prompt_tokens(body), "completion_tokens": max(self.deltas, self.chars // 4)}


class RouterCore:
    def __init__(self, config: ServingConfig, backends: dict[str, Backend], *,
                 clock: Callable[[], float] = time.monotonic,
                 on_record: Callable[[str, Identity, dict[str, Any] | None], None] | None = None,
                 shared: Shared | None = None, book: Book | None = None) -> None:
        self.config = config
        self._shared = SharedAdmission(shared) if shared is not None else None
        self._pending_holds: set[asyncio.Future[Hold]] = set()
        self.caps = RouterCaps(config, book)
        self.ledger = Ledger()
        self._backends = backends
        self._clock = clock
        self._on_record = on_record or (lambda model, identity, final: None)
        router = config.router
        self._admission = Admission({"agent": ScopeLimits(**router.agent.model_dump()),
                                     "mission": ScopeLimits(**router.mission.model_dump(
                                         exclude={"token_budget", "usd_budget"}))})
        for name, spec in config.models.items():
            self._admission.set_limits(f"model:{name}", ScopeLimits(rpm=spec.limits.rpm, tpm=spec.limits.tpm),
                                       clock())
        self._key_limits: dict[str, ScopeLimits] = {}
        self._breakers = {name: CircuitBreaker(**spec.breaker.model_dump()) for name, spec in config.models.items()}
        self._gates = {name: Gate(slots=spec.limits.max_in_flight or router.max_in_flight_per_model,
                                  max_queue=router.max_queue, scope=f"model:{name}")
                       for name, spec in config.models.items()}

    def breaker_state(self, model: str) -> str:
        self.check_model(model)
        return self._breakers[model].state(self._clock())

    def check_model(self, model: str) -> None:
        """SpecError (the HTTP API answers 404) for a model the config lacks."""
        if model not in self.config.models:
            raise SpecError(where="model", value=model, why=f"no such model; known: {sorted(self.config.models)}",
                            fix="use one of the known model names")

    async def set_budget(self, mission_id: str, agent_id: str | None = None, *, max_tokens: int | None = None,
                         max_usd: float | None = None) -> None:
        """Hard caps of a mission (agent_id None) or of one of its agents; None = uncapped. With a book, the
        mission's caps and usage are written there before this returns.

        With several router replicas, a cap is kept only in the book: it is refused without one, or once a
        replica has served the mission (`BookKeeper.set_budget`)."""
        await self.caps.set_budget(mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)

    def set_mission_weight(self, mission_id: str, weight: float) -> None:
        """A mission's share of each model while calls wait (default 1): weighted fair queueing between missions."""
        for gate in self._gates.values():
            gate.set_weight(mission_id, weight)

    async def usage(self, mission_id: str | None = None) -> list[dict[str, Any]]:
        """Usage rows per (mission, agent, model): from the book when it decides (every replica's), or for a
        mission with caps (the calls of the replicas before this one too); else this replica's."""
        rows = await self.caps.usage(mission_id)
        return self.ledger.snapshot(mission_id) if rows is None else rows

    def used_tokens(self, mission_id: str) -> int:
        return self.caps.ledger.spend(mission_id).tokens

    def check(self, call: Call) -> None:
        """Refuse a call that can never succeed: unknown model, absurd sizes."""
        self.check_model(call.model)
        check_tool_request(call.body)
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
        """`{"delta"}` events, then a final event with the model, usage and timings (`queue_s`: admission
        and the model's gate, before the call went to a backend; `ttft_s`, `latency_s` from admission).

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
        if call.key is not None:
            scopes.append(self._key_scope(call.key, start_s))
        await self.caps.load(ident.mission_id)
        hold, shared = await self._admit(model, call, scopes, est_tokens, start_s)
        final: dict[str, Any] | None = None
        progress = _Progress()
        try:
            async for event in self._run(model, call, start_s, progress):
                if event.get("done"):
                    charge = self.caps.settle(hold, prompt_tokens=event["prompt_tokens"],
                                              completion_tokens=event["completion_tokens"])
                    event = final = {**event, "usd": charge.usd}
                else:
                    progress.seen(event)
                yield event
        finally:
            if final is None:
                charge = self.caps.release(hold, **progress.usage(call.body))
            used = charge.prompt_tokens + charge.completion_tokens
            self._admission.release(scopes, est_tokens, used, self._clock())
            self._give_back_shared(shared, est_tokens, used)
            self._account(model, ident, final, charge, hold)

    async def _admit(self, model: str, call: Call, scopes: list[str], est_tokens: int,
                     start_s: float) -> tuple[Hold, SharedTake]:
        """The call's budget hold, its share of the limits every replica shares, and its admission here; all or
        none. With several replicas the hold (from the budget book) and the share (from the limiter) are asked
        for at once."""
        ident, timeout_s = call.identity, call.timeout_s or self.config.router.request_timeout_s
        reserving = self.caps.reserve(model, ident.mission_id, ident.agent_id, call.body, timeout_s)
        hold, pending, shared = None, None, SharedTake()
        try:
            if self._shared is None:
                hold = await reserving
            else:
                pending = asyncio.ensure_future(reserving)
                shared = await self._shared.take({scope: self._admission.limits(scope) for scope in scopes},
                                                 est_tokens)
                hold = await asyncio.shield(pending)
            self._admission.admit(scopes, est_tokens, start_s)
        except BaseException:
            if hold is not None:
                self.caps.drop(hold)
            elif pending is not None:
                pending.cancel()  # a reservation not sent yet is never made; one sent is let go when it comes
                self._drop_once_held(pending)
            self._give_back_shared(shared, est_tokens, 0)
            self._breakers[model].abandon(start_s)
            raise
        return hold, shared

    def _drop_once_held(self, pending: asyncio.Future[Hold]) -> None:
        """A hold that comes after its call was refused or cancelled (its task ended before the cancel reached
        it): dropped."""
        def drop(done: asyncio.Future[Hold]) -> None:
            self._pending_holds.discard(done)
            if not done.cancelled() and done.exception() is None:
                self.caps.drop(done.result())

        self._pending_holds.add(pending)
        pending.add_done_callback(drop)

    def _give_back_shared(self, taken: SharedTake, est_tokens: int, used_tokens: int) -> None:
        if self._shared is not None:
            self._shared.give_back(taken, est_tokens, used_tokens)

    def _key_scope(self, key: KeyScope, now_s: float) -> str:
        """The admission scope of an API key, with the key's limits (reset only when they change)."""
        scope, limits = f"key:{key.id}", ScopeLimits(rpm=key.rpm, tpm=key.tpm)
        if self._key_limits.get(scope) != limits:
            self._key_limits[scope] = limits
            self._admission.set_limits(scope, limits, now_s)
        return scope

    def _account(self, model: str, ident: Identity, final: dict[str, Any] | None, charge: Charge,
                 hold: Hold) -> None:
        if final is None:
            totals = self.ledger.record_error(ident.mission_id, ident.agent_id, model,
                                              prompt_tokens=charge.prompt_tokens,
                                              completion_tokens=charge.completion_tokens, usd=charge.usd)
        else:
            totals = self.ledger.record(ident.mission_id, ident.agent_id, model, prompt_tokens=final["prompt_tokens"],
                                        completion_tokens=final["completion_tokens"], ttft_s=final["ttft_s"],
                                        latency_s=final["latency_s"], usd=charge.usd)
        self.caps.record(model, ident.mission_id, ident.agent_id, totals, hold)
        self._on_record(model, ident, final)

    async def _run(self, model: str, call: Call, start_s: float, progress: _Progress) -> AsyncIterator[dict[str, Any]]:
        """The call on `model`'s backend. Every call the breaker let through ends in exactly one verdict:
        success, failure, or (cancelled, caller gone, caller's own deadline, refused) no verdict at all."""
        timeout_s = call.timeout_s or self.config.router.request_timeout_s
        deadline_s = start_s + timeout_s
        gate, breaker, verdict = self._gates[model], self._breakers[model], [False]
        cost = estimate_prompt_tokens(call.body) + call.body["max_tokens"]  # its weight in the fair queue
        try:
            await gate.acquire(call.identity.priority, max(0.0, deadline_s - self._clock()),
                               flow=call.identity.mission_id, cost=cost, slack_s=call.slack_s)
            try:
                key = affinity_key(call.body, call.identity)
                progress.dispatched = True
                if call.on_dispatch is not None:
                    call.on_dispatch()
                queue_s = self._clock() - start_s
                events = within(self._backends[model].stream(call.body, key), deadline_s - self._clock(),
                                self.config.router.stream_interval_s)
                async for event in self._timed(model, events, start_s, timeout_s, verdict):
                    yield {**event, "queue_s": queue_s} if event.get("done") else event
            finally:
                gate.release()
        finally:
            if not verdict[0]:
                breaker.abandon(self._clock())

    async def _timed(self, model: str, events: AsyncIterator[dict[str, Any]], start_s: float,
                     timeout_s: float, verdict: list[bool]) -> AsyncIterator[dict[str, Any]]:
        """The backend's events, with errors and timeouts raised and timings added. Sets `verdict[0]` once
        the breaker has heard the outcome."""
        breaker, ttft_s = self._breakers[model], None
        while True:
            try:
                event = await anext(events)
            except asyncio.TimeoutError:
                raise self._timeout(model, timeout_s, verdict) from None
            if "error" in event:
                verdict[0] = True
                self._raise_backend_error(model, event["error"])
            if ttft_s is None and (event.get("delta") or event.get("tool_calls")):
                ttft_s = self._clock() - start_s
            if event.get("done"):
                breaker.record_success(self._clock())
                verdict[0] = True
                latency_s = self._clock() - start_s
                yield {**event, "model": model, "backend": self.config.models[model].kind,
                       "ttft_s": latency_s if ttft_s is None else ttft_s, "latency_s": latency_s}
                return
            yield event

    def _timeout(self, model: str, timeout_s: float, verdict: list[bool]) -> Exception:
        """The router's own limit passing is the backend's fault; a caller's shorter deadline is not."""
        limit_s = self.config.router.request_timeout_s
        if timeout_s < limit_s:
            return DeadlineExceeded(what=f"The call to model {model!r}", timeout_s=timeout_s,
                                    fix=f"raise timeout_s (the router allows up to request_timeout_s={limit_s:g}), "
                                        "or ask for fewer tokens")
        self._breakers[model].record_failure(self._clock())
        verdict[0] = True
        return ReplicaUnavailable(model=model, why=f"no reply within timeout_s={timeout_s:g}",
                                  fix="raise timeout_s, or add replicas")

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
