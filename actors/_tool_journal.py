"""Exactly-once side effects: a tool marked `side_effects: true` runs under the supervisor's tool-call journal.

Before the call the agent asks the supervisor (`tool_intent`), which answers from the mission log:
- the call was recorded with a result (an earlier attempt, or before a crash): the result is replayed, the tool
  is not run again;
- it was recorded without a result (in flight at a crash): it runs again only if the tool is `idempotent: true`,
  else the task fails with ToolCallInDoubt;
- not recorded: the intent is made durable, the tool runs, and its result is recorded (`tool_result`).

`delegate` runs in the supervisor, which journals it there: the agent sends the intent with the call
(`supervisor_builtins`).

A call's key is `<mission>/<task>/call/<n>`, n counting the task's side-effecting calls from 0, so it is the
same across every attempt of the task: retries and resumes replay rather than repeat. Tools without side
effects run as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from actors._tools import ToolRunner
from controlplane._core.loop_types import ToolCall, failure_reason
from controlplane._core.mission_log import digest
from controlplane._core.recovery import Execute, Refuse, Replay, ToolCallJournal
from controlplane._core.tools import ToolSpec
from controlplane._logfile import MissionLogWriter
from controlplane.errors import ToolCallInDoubt, ToolError

SupervisorBuiltin = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]


class JournaledToolRunner(ToolRunner):
    """A ToolRunner whose side-effecting calls go through the supervisor's journal (see the module doc), for
    the built-in loop (`run`) and a python agent's `ctx.tools.call` (`invoke`) alike."""

    def __init__(self, *, supervisor: Any, task: str, attempt_key: str, call_prefix: str,
                 supervisor_builtins: Mapping[str, tuple[ToolSpec, SupervisorBuiltin]] | None = None,
                 **runner: Any) -> None:
        """`call_prefix` is `<mission>/<task>`; `attempt_key` the attempt's (recorded with the intent).
        `supervisor_builtins` are side-effecting built-ins the supervisor runs itself (`delegate`): each gets the
        call's arguments and its intent, and the supervisor journals the call where it runs it, in one round trip."""
        super().__init__(**runner)
        self._supervisor, self._task, self._attempt_key, self._prefix = supervisor, task, attempt_key, call_prefix
        self._by_supervisor = dict(supervisor_builtins or {})
        self._calls = 0

    def specs(self) -> dict[str, ToolSpec]:
        return super().specs() | {name: spec for name, (spec, _) in self._by_supervisor.items()}

    async def invoke(self, call: ToolCall) -> Any:
        """The tool's value, or its recorded value (a recorded failure raises ToolError again) without running it."""
        if not call.tool.side_effects or self._supervisor is None:
            return await super().invoke(call)
        index, self._calls = self._calls, self._calls + 1  # taken before any await: calls keep their order
        intent = {"call_key": ToolCallJournal.key(self._prefix, index), "tool": call.name, "task": self._task,
                  "attempt_key": self._attempt_key, "call_index": index, "args_digest": digest(call.arguments),
                  "side_effects": True, "idempotent": call.tool.idempotent}
        if call.name in self._by_supervisor:
            return await self._by_supervisor[call.name][1](call.arguments, intent)
        run_here = super().invoke
        return await run_journaled(intent, ask=lambda: self._supervisor.tool_intent.remote(**intent),
                                   execute=lambda: run_here(call),
                                   record=lambda result: self._supervisor.tool_result.remote(**result))


async def run_journaled(intent: dict[str, Any], *, ask: Callable[[], Awaitable[dict[str, Any]]],
                        execute: Callable[[], Awaitable[Any]],
                        record: Callable[[dict[str, Any]], Awaitable[None]]) -> Any:
    """One side-effecting call under the journal: `ask` for the verdict on `intent`, then replay the recorded value
    (a recorded failure raises ToolError again), refuse a call in doubt, or `execute` it and `record` its result."""
    verdict = await ask()
    if verdict["action"] == "replay":
        if verdict["outcome"] != "ok":
            raise ToolError(tool=intent["tool"], why=str(verdict["result"]),
                            fix="it failed in an earlier attempt and is not run again; go on without it")
        return verdict["result"]
    if verdict["action"] == "refuse":
        raise ToolCallInDoubt(tool=intent["tool"], call_key=intent["call_key"], args_digest=intent["args_digest"])
    started = time.perf_counter()
    try:
        value = await execute()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await record(_result(intent, "error", failure_reason(exc), started))
        raise
    await record(_result(intent, "ok", value if _is_json(value) else str(value), started))
    return value


def _result(intent: dict[str, Any], outcome: str, result: Any, started: float) -> dict[str, Any]:
    return {"call_key": intent["call_key"], "tool": intent["tool"], "outcome": outcome, "result": result,
            "result_digest": digest(result), "duration_s": round(time.perf_counter() - started, 6)}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class ToolJournalDesk:
    """The supervisor's side: answers `tool_intent` from the journal and makes intents and results durable."""

    def __init__(self, writer: MissionLogWriter, journal: ToolCallJournal) -> None:
        """`journal` holds the calls recorded so far (a resumed mission's come from the log)."""
        self.writer, self.journal = writer, journal
        self._running: dict[str, asyncio.Future] = {}  # call key -> a call `run` runs now

    async def intent(self, *, actor: str, durable: bool = True, **intent: Any) -> dict[str, Any]:
        """Replay a recorded result, refuse a call in doubt, or record the intent (durably) and let it run."""
        verdict = verdict_of(self.journal.decide(intent["call_key"], args_digest=intent["args_digest"]))
        if verdict["action"] == "execute":
            await self._record("tool.intent", intent, actor=actor, durable=durable)
        return verdict

    async def result(self, *, actor: str, durable: bool = True, **result: Any) -> None:
        await self._record("tool.result", result, actor=actor, durable=durable)

    async def run(self, intent: dict[str, Any], execute: Callable[[], Awaitable[Any]], *, actor: str) -> Any:
        """A side-effecting call the supervisor runs itself (a delegation), journaled here as an agent's call is.
        Its two records are not waited for: whatever the call causes is recorded after them in the same log, and
        the log is made durable in order, so no effect of it outlives a crash that loses them. The same call made
        again while it runs (Ray retried a dead supervisor's call, and the attempt that made it was relaunched)
        waits for that run."""
        key = intent["call_key"]
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(run_journaled(
                intent, ask=lambda: self.intent(actor=actor, durable=False, **intent), execute=execute,
                record=lambda result: self.result(actor="agent", durable=False, **result)))
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(running)

    async def _record(self, kind: str, data: dict[str, Any], *, actor: str, durable: bool) -> None:
        record = self.writer.append(kind, data, actor=actor, wait=False)
        if durable:
            await self.writer.durable(record)
        self.journal.apply(record)


def verdict_of(decision: Replay | Execute | Refuse) -> dict[str, Any]:
    """The answer to `tool_intent`, as plain data for the agent."""
    if isinstance(decision, Replay):
        return {"action": "replay", "result": decision.result, "outcome": decision.outcome}
    if isinstance(decision, Refuse):
        return {"action": "refuse", "reason": decision.reason}
    return {"action": "execute", "reason": decision.reason}
