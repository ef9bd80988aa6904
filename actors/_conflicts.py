"""The supervisor's conflict desk: applies the mission's conflict policy to each contradiction memory reports.

The decision and its reason go into the result (`conflicts`) and the event stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from controlplane._core.conflicts import (
    ConflictDecision,
    Finding,
    assign_sides,
    decide_majority,
    decide_priority,
    decide_resolver,
    resolver_task,
)
from controlplane.config import MissionSpec, TaskSpec

logger = logging.getLogger(__name__)
MAJORITY_K = 50


class ConflictDesk:
    """Queue of conflict events; each is settled in its own asyncio task so the loop never waits on it."""

    def __init__(self, spec: MissionSpec, *, mission_id: str, emit: Callable[..., Any], agent: Callable[[str], Any],
                 memory: Callable[[], Any], count_call: Callable[[], None], supervisor_token: Callable[[], str],
                 agent_token: Callable[[str, float], str]) -> None:
        """`emit` records an event, `agent(name)` gives an agent's handle, `memory()` the memory actor's,
        `count_call()` counts a resolver's model call, `supervisor_token()` and `agent_token(name, timeout_s)`
        mint the tokens for the supervisor's memory search and the resolver's task (the router charges both
        to the mission)."""
        self._spec, self._mission_id = spec, mission_id
        self._emit, self._agent, self._memory, self._count_call = emit, agent, memory, count_call
        self._supervisor_token, self._agent_token = supervisor_token, agent_token
        self.decisions: list[dict[str, Any]] = []
        self._queued: list[Any] = []
        self._running: set[asyncio.Task] = set()

    def queue(self, conflict: Any) -> None:
        self._queued.append(conflict)

    def settle(self, now_s: float) -> None:
        while self._queued:
            conflict = self._queued.pop(0)
            self._emit(now_s, "conflict", "detected", agent=conflict.new.agent_id,
                              message=f"topic {conflict.topic!r}: {conflict.existing.agent_id} vs "
                                      f"{conflict.new.agent_id} (similarity {conflict.similarity:.2f})")
            task = asyncio.ensure_future(self._resolve(conflict))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def drain(self, timeout_s: float) -> None:
        """Settle what is queued and wait for the checks running; those still running after `timeout_s` are
        cancelled and recorded as unresolved, never dropped."""
        self.settle(time.time())
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout_s)
        for task in list(self._running):
            task.cancel()
            self._emit(time.time(), "conflict", "unresolved",
                       message=f"still being settled when the mission ended (after {timeout_s:g} s)")

    def _finding(self, entry: Any) -> Finding:
        roles = {a.name: a.role for a in self._spec.agents}
        return Finding(agent=entry.agent_id, role=roles.get(entry.agent_id, ""), text=entry.text,
                       entry_id=str(entry.id))

    async def _resolve(self, conflict: Any) -> None:
        policy = self._spec.policies.conflicts
        existing, new = self._finding(conflict.existing), self._finding(conflict.new)
        try:
            if policy.policy == "priority":
                decision = decide_priority(conflict.topic, existing, new, policy.role_priority)
            elif policy.policy == "majority":
                sides = await self._sides(conflict)
                decision = decide_majority(conflict.topic, existing, new, sides, policy.role_priority)
            else:
                decision = await self._ask_resolver(conflict.topic, existing, new, policy.resolver_agent or "")
        except Exception as exc:
            logger.exception("mission %s: conflict on %r not settled", self._mission_id, conflict.topic)
            self._emit(time.time(), "conflict", "unresolved", message=f"{type(exc).__name__}: {exc}")
            return
        self._record(decision)

    def _record(self, decision: ConflictDecision) -> None:
        self.decisions.append(decision.to_dict())
        self._emit(time.time(), "conflict", "resolved", agent=decision.winner, message=decision.reason,
                          data=decision.to_dict())

    async def _sides(self, conflict: Any) -> dict[str, Any]:
        """Which of the two findings each other agent's post on the topic is closer to."""
        hits = await self._memory().search.remote(
            [conflict.existing.text, conflict.new.text], k=MAJORITY_K, namespace=conflict.new.namespace,
            token=self._supervisor_token(), filters={"mission_id": self._mission_id, "topic": conflict.topic})
        near_old = {h.entry.id: h.score for h in hits[0]}
        near_new = {h.entry.id: h.score for h in hits[1]}
        scores: dict[str, tuple[float, float]] = {}
        for entry in sorted({h.entry.id: h.entry for h in hits[0] + hits[1]}.values(), key=lambda e: e.id):
            if entry.agent_id not in (conflict.existing.agent_id, conflict.new.agent_id):
                scores[entry.agent_id] = (near_old.get(entry.id, -1.0), near_new.get(entry.id, -1.0))
        return assign_sides(scores)

    async def _ask_resolver(self, topic: str, existing: Finding, new: Finding, resolver: str) -> ConflictDecision:
        n = len(self.decisions) + len(self._running)
        task = TaskSpec(id=f"resolve-{n}", agent=resolver, description=resolver_task(topic, existing, new),
                        retries=0, topic=f"{topic}-resolution")
        result = await self._agent(resolver).run.remote(task, 1, {}, self._agent_token(resolver, task.timeout_s))
        self._count_call()
        return decide_resolver(topic, existing, new, resolver=resolver, synthesis=str(result.output))
