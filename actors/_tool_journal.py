"""Exactly-once side effects: a tool marked `side_effects: true` runs under the supervisor's tool-call journal.

Before the call the agent asks the supervisor (`tool_intent`), which answers from the mission log:
- the call was recorded with a result (an earlier attempt, or before a crash): the result is replayed, the tool
  is not run again;
- it was recorded without a result (in flight at a crash): it runs again only if the tool is `idempotent: true`,
  else the task fails with ToolCallInDoubt;
- not recorded: the intent is made durable, the tool runs, and its result is recorded (`tool_result`).

A call's key is `<mission>/<task>/call/<n>`, n counting the task's side-effecting calls from 0, so it is the
same across every attempt of the task: retries and resumes replay rather than repeat. Tools without side
effects run as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from actors._tools import ToolRunner
from controlplane._core.loop_types import ToolCall, failure_reason
from controlplane._core.mission_log import digest
from controlplane._core.recovery import Execute, Refuse, Replay, ToolCallJournal
from controlplane._logfile import MissionLogWriter
from controlplane.errors import ToolCallInDoubt, ToolError


class JournaledToolRunner(ToolRunner):
    """A ToolRunner whose side-effecting calls go through the supervisor's journal (see the module doc), for
    the built-in loop (`run`) and a python agent's `ctx.tools.call` (`invoke`) alike."""

    def __init__(self, *, supervisor: Any, task: str, attempt_key: str, call_prefix: str, **runner: Any) -> None:
        """`call_prefix` is `<mission>/<task>`; `attempt_key` the attempt's (recorded with the intent)."""
        super().__init__(**runner)
        self._supervisor, self._task, self._attempt_key, self._prefix = supervisor, task, attempt_key, call_prefix
        self._calls = 0

    async def invoke(self, call: ToolCall) -> Any:
        """The tool's value, or its recorded value (a recorded failure raises ToolError again) without running it."""
        if not call.tool.side_effects or self._supervisor is None:
            return await super().invoke(call)
        index, self._calls = self._calls, self._calls + 1  # taken before any await: calls keep their order
        key = ToolCallJournal.key(self._prefix, index)
        verdict = await self._supervisor.tool_intent.remote(
            call_key=key, tool=call.name, task=self._task, attempt_key=self._attempt_key, call_index=index,
            args_digest=digest(call.arguments), side_effects=True, idempotent=call.tool.idempotent)
        if verdict["action"] == "replay":
            if verdict["outcome"] != "ok":
                raise ToolError(tool=call.name, why=str(verdict["result"]),
                                fix="it failed in an earlier attempt and is not run again; go on without it")
            return verdict["result"]
        if verdict["action"] == "refuse":
            raise ToolCallInDoubt(tool=call.name, call_key=key, args_digest=digest(call.arguments))
        started = time.perf_counter()
        try:
            value = await super().invoke(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._record(key, call, "error", failure_reason(exc), started)
            raise
        await self._record(key, call, "ok", value if _is_json(value) else str(value), started)
        return value

    async def _record(self, key: str, call: ToolCall, outcome: str, result: Any, started: float) -> None:
        await self._supervisor.tool_result.remote(
            call_key=key, tool=call.name, outcome=outcome, result=result, result_digest=digest(result),
            duration_s=round(time.perf_counter() - started, 6))


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

    async def intent(self, *, actor: str, **intent: Any) -> dict[str, Any]:
        """Replay a recorded result, refuse a call in doubt, or record the intent (durably) and let it run."""
        verdict = verdict_of(self.journal.decide(intent["call_key"], args_digest=intent["args_digest"]))
        if verdict["action"] == "execute":
            await self._record("tool.intent", intent, actor=actor)
        return verdict

    async def result(self, *, actor: str, **result: Any) -> None:
        await self._record("tool.result", result, actor=actor)

    async def _record(self, kind: str, data: dict[str, Any], *, actor: str) -> None:
        record = self.writer.append(kind, data, actor=actor, wait=False)
        await self.writer.durable(record)
        self.journal.apply(record)


def verdict_of(decision: Replay | Execute | Refuse) -> dict[str, Any]:
    """The answer to `tool_intent`, as plain data for the agent."""
    if isinstance(decision, Replay):
        return {"action": "replay", "result": decision.result, "outcome": decision.outcome}
    if isinstance(decision, Refuse):
        return {"action": "refuse", "reason": decision.reason}
    return {"action": "execute", "reason": decision.reason}
