"""The supervisor's conflict desk: applies the mission's conflict policy to each contradiction memory reports.

A decision is applied, not only recorded:
- in memory, the overruled finding is superseded by the one that stands (a resolver's synthesis is posted
  first, and supersedes both);
- the dependents of the overruled task get the finding that stands as its context; while a conflict is being
  settled, the dependents of both tasks that have not started wait (`Scheduler.hold`);
- the decision, its reason and what was applied go into the result (`conflicts`) and the event stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from actors._observe import model_calls_of
from controlplane._core.conflicts import (
    ConflictDecision,
    Finding,
    assign_sides,
    decide_majority,
    decide_priority,
    decide_resolver,
    resolver_task,
)
from controlplane._core.mission_log import attempt_key
from controlplane._core.scheduler import Scheduler
from controlplane._ray_errors import cause_of
from controlplane.config import MissionSpec, TaskSpec

logger = logging.getLogger(__name__)
MAJORITY_K = 50


class ConflictDesk:
    """Queue of conflict events; each is settled in its own asyncio task so the loop never waits on it."""

    def __init__(self, spec: MissionSpec, *, mission_id: str, emit: Callable[..., Any], agent: Callable[[str], Any],
                 memory: Callable[[], Any], count_calls: Callable[..., None],
                 record_model_calls: Callable[[list[dict[str, Any]]], None], supervisor_token: Callable[[], str],
                 agent_token: Callable[[str, float], str], scheduler: Callable[[], Scheduler | None],
                 wake: Callable[[], None]) -> None:
        """`emit` records an event, `agent(name)` gives an agent's handle, `memory()` the memory actor's,
        `count_calls(agent, calls=, tokens=)` counts a resolver's model calls against the mission's budget and
        `record_model_calls` puts them in the audit log, `supervisor_token()` and `agent_token(name, timeout_s)`
        mint the tokens for the supervisor's memory calls and the resolver's task (the router charges both
        to the mission), `scheduler()` is the mission's scheduler (None before the plan), `wake()` wakes the
        supervisor's loop once held tasks may start."""
        self._spec, self._mission_id = spec, mission_id
        self._emit, self._agent, self._memory, self._count_calls = emit, agent, memory, count_calls
        self._record_model_calls = record_model_calls
        self._supervisor_token, self._agent_token = supervisor_token, agent_token
        self._scheduler, self._wake = scheduler, wake
        self.decisions: list[dict[str, Any]] = []
        self._queued: list[tuple[Any, bool]] = []  # (conflict, whether a supervisor before a restart detected it)
        self._running: dict[asyncio.Task, Any] = {}

    def queue(self, conflict: Any, *, reopened: bool = False) -> None:
        """Take a conflict; the dependents of both tasks wait until it is settled (when the policy says so)."""
        self._queued.append((conflict, reopened))
        sched = self._scheduler()
        if sched is not None and self._spec.policies.conflicts.settle_before_dependents:
            for task_id in _tasks_of(conflict):
                sched.hold(task_id)

    def resume(self, decisions: list[dict[str, Any]]) -> None:
        """Carry the decisions of a mission resumed from its log over, with the context they replaced."""
        self.decisions.extend(decisions)
        sched = self._scheduler()
        for decision in decisions:
            for task_id, finding in decision.get("applied", {}).get("context", {}).items():
                if sched is not None:
                    sched.replace_context(task_id, finding)

    async def reopen(self, detected: Iterable[dict[str, Any]]) -> None:
        """Settle the conflicts that the supervisor detected before it restarted and had not settled (their
        `conflict.detected` records' data); their findings come back from memory."""
        from memory import Conflict

        memory, token = self._memory(), self._supervisor_token()
        for data in detected:
            await self._drop_resolver_run(data["entries"])
            existing, new = await asyncio.gather(*(memory.get.remote(i, token=token) for i in data["entries"]))
            if existing is None or new is None:
                self._emit(time.time(), "conflict", "unresolved", message="its findings are no longer in memory",
                           data={"entries": data["entries"]})
            else:
                self.queue(Conflict(topic=data["topic"], existing=existing, new=new, similarity=data["similarity"],
                                    verdict="contradict"), reopened=True)

    async def _drop_resolver_run(self, entries: list[int]) -> None:
        """Stop the resolver's run that the supervisor before the restart started for this conflict: nothing waits
        for its answer, and it would hold the resolver while the conflict is settled again."""
        resolver = self._spec.policies.conflicts.resolver_agent
        if self._spec.policies.conflicts.policy != "resolver" or resolver is None:
            return
        key = attempt_key(self._mission_id, _resolver_task(entries), 1)
        try:
            await self._agent(resolver).drop_attempts.remote([key])
        except Exception as exc:  # a dead agent runs nothing; Ray restarts it for the new run
            logger.warning("mission %s: resolver %s could not drop %s: %s", self._mission_id, resolver, key, exc)

    def settle(self, now_s: float) -> None:
        while self._queued:
            conflict, reopened = self._queued.pop(0)
            if reopened:
                self._emit(now_s, "conflict", "reopened", agent=conflict.new.agent_id,
                           message=f"topic {conflict.topic!r}: settled again after the supervisor restarted",
                           data={"entries": _entries(conflict)})
            else:
                self._emit(now_s, "conflict", "detected", agent=conflict.new.agent_id,
                           message=f"topic {conflict.topic!r}: {conflict.existing.agent_id} vs "
                                   f"{conflict.new.agent_id} (similarity {conflict.similarity:.2f})",
                           data={"topic": conflict.topic, "entries": _entries(conflict),
                                 "similarity": conflict.similarity})
            task = asyncio.ensure_future(self._resolve(conflict))
            self._running[task] = conflict
            task.add_done_callback(lambda done: self._running.pop(done, None))

    async def drain(self, timeout_s: float) -> None:
        """Settle what is queued and wait for the checks running; those still running after `timeout_s` are
        cancelled and recorded as unresolved, never dropped."""
        self.settle(time.time())
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout_s)
        for task, conflict in list(self._running.items()):
            task.cancel()
            self._emit(time.time(), "conflict", "unresolved",
                       message=f"still being settled when the mission ended (after {timeout_s:g} s)",
                       data={"entries": _entries(conflict)})

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
                decision = await self._ask_resolver(conflict, existing, new, policy.resolver_agent or "")
            applied = await self._apply(conflict, decision)
        except Exception as exc:
            logger.exception("mission %s: conflict on %r not settled", self._mission_id, conflict.topic)
            self._emit(time.time(), "conflict", "unresolved", message=f"{type(exc).__name__}: {exc}",
                       data={"entries": _entries(conflict)})
            return
        finally:
            self._release(conflict)
        self._record({**decision.to_dict(), "applied": applied, "entries": _entries(conflict)})

    async def _apply(self, conflict: Any, decision: ConflictDecision) -> dict[str, Any]:
        """Supersede the overruled finding(s) in memory and give their tasks' dependents the one that stands."""
        memory, token = self._memory(), self._supervisor_token()
        if decision.winner is None:
            from memory import NewEntry

            synthesis = NewEntry(mission_id=self._mission_id, agent_id=self._spec.policies.conflicts.resolver_agent,
                                 namespace=conflict.new.namespace, topic=conflict.topic,
                                 text=decision.text, metadata={"resolves": [conflict.existing.id, conflict.new.id]})
            receipts = await memory.post.remote([synthesis], token=token)
            stands, overruled = receipts[0].id, [conflict.existing, conflict.new]
        else:
            won_existing = decision.winner == conflict.existing.agent_id
            stands = conflict.existing.id if won_existing else conflict.new.id
            overruled = [conflict.new if won_existing else conflict.existing]
        superseded = await memory.supersede.remote([e.id for e in overruled], by=stands, token=token)
        context = {e.task_id: decision.text for e in overruled if e.task_id}
        sched = self._scheduler()
        for task_id, finding in context.items():
            if sched is not None:
                sched.replace_context(task_id, finding)
        return {"stands": stands, "superseded": superseded, "context": context}

    def _release(self, conflict: Any) -> None:
        sched = self._scheduler()
        if sched is not None and self._spec.policies.conflicts.settle_before_dependents:
            for task_id in _tasks_of(conflict):
                sched.release(task_id, time.time())
            self._wake()

    def _record(self, decision: dict[str, Any]) -> None:
        self.decisions.append(decision)
        self._emit(time.time(), "conflict", "resolved", agent=decision["winner"], message=decision["reason"],
                   data=decision)

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

    async def _ask_resolver(self, conflict: Any, existing: Finding, new: Finding, resolver: str) -> ConflictDecision:
        task = TaskSpec(id=_resolver_task(_entries(conflict)), agent=resolver, retries=0,
                        description=resolver_task(conflict.topic, existing, new), topic=f"{conflict.topic}-resolution")
        try:
            result = await asyncio.wait_for(
                self._agent(resolver).run.remote(task, 1, {}, self._agent_token(resolver, task.timeout_s)),
                task.timeout_s)
        except (TimeoutError, asyncio.CancelledError):  # the agent sends the records of the calls it stops
            self._agent(resolver).cancel_attempts.remote([attempt_key(self._mission_id, task.id, 1)])
            raise
        except Exception as exc:
            self._record_model_calls(model_calls_of(cause_of(exc)))
            raise
        self._record_model_calls(result.model_call_records)
        self._count_calls(resolver, calls=result.model_calls, tokens=result.prompt_tokens + result.completion_tokens)
        return decide_resolver(conflict.topic, existing, new, resolver=resolver, synthesis=str(result.output))


def _entries(conflict: Any) -> list[int]:
    """The conflict's two memory entries (existing, new): its key in the mission log."""
    return [conflict.existing.id, conflict.new.id]


def _resolver_task(entries: list[int]) -> str:
    """The id of the resolver's task for the conflict of these entries: the same after a restart of the supervisor."""
    return f"resolve-{entries[0]}-{entries[1]}"


def _tasks_of(conflict: Any) -> list[str]:
    return [task_id for task_id in {conflict.existing.task_id, conflict.new.task_id} if task_id]
