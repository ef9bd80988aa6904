"""A mission's attempts in flight, for its supervisor: each assignment goes to its agent as `AgentActor.run`, and
its outcome goes back to the scheduler. A timed-out or stopped attempt is cancelled into the agent's step, which
gets CANCEL_GRACE_S at the mission's end to stop its tool and model calls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors._budgets import BudgetDesk
from actors._delegation import DelegationDesk
from actors._durable import budget_fields
from actors._metrics import MissionMetrics
from actors._observe import detail_of, late_model_calls, model_calls_of
from controlplane import _tracing
from controlplane._core.events import EventLog
from controlplane._core.mission_log import attempt_key
from controlplane._core.scheduler import Scheduler
from controlplane._core.slack import TaskSlack
from controlplane._core.task_record import Assignment
from controlplane._ray_errors import cause_of
from controlplane.config.mission import AgentSpec, MissionSpec
from controlplane.errors import BudgetExceeded

logger = logging.getLogger(__name__)
CANCEL_GRACE_S = 1.0
"""How long a cancelled agent step may take to cancel its tool calls and model calls before the agent is killed."""


class Attempts:
    def __init__(self, spec: MissionSpec, *, mission_id: str, scheduler: Callable[[], Scheduler],
                 agent: Callable[[str], Any], replace_agent: Callable[[str], None],
                 agent_token: Callable[[AgentSpec, float], str], log: EventLog, budgets: BudgetDesk,
                 metrics: MissionMetrics, delegation: DelegationDesk,
                 record_model_calls: Callable[[list[dict[str, Any]]], None],
                 mission_over_budget: Callable[[BudgetExceeded], None], wake: Callable[[], None]) -> None:
        self._spec, self._mission_id, self._scheduler = spec, mission_id, scheduler
        self._agent, self._replace_agent = agent, replace_agent
        self._agent_token, self._log, self._budgets, self._metrics = agent_token, log, budgets, metrics
        self._delegation, self._record_model_calls = delegation, record_model_calls
        self._mission_over_budget, self._wake = mission_over_budget, wake
        self._running: dict[str, tuple[int, asyncio.Future]] = {}
        self._cancelled_refs: list[Any] = []
        self._slack = TaskSlack()

    async def relaunch(self, assignments: list[Assignment]) -> None:
        """Send again the attempts that a supervisor that since restarted had sent, once their agents have stopped
        the old runs: nothing waits for those runs' results, and they would spend on, and hold the agent's slots."""
        keys: dict[str, list[str]] = {}
        for a in assignments:
            keys.setdefault(a.agent, []).append(attempt_key(self._mission_id, a.task, a.attempt))
        answers = await asyncio.gather(*(self._agent(name).drop_attempts.remote(agent_keys)
                                         for name, agent_keys in keys.items()), return_exceptions=True)
        for name, answer in zip(keys, answers, strict=True):
            if isinstance(answer, BaseException):  # a dead agent runs nothing; Ray restarts it for the launch
                logger.warning("mission %s: agent %s could not drop the attempts it ran before the restart: %s",
                               self._mission_id, name, answer)
            elif answer:
                self._log.emit(time.time(), "agent", "dropped", agent=name,
                               message=f"stopped {len(answer)} attempts the supervisor had sent before it "
                                       f"restarted ({', '.join(answer)}); they run again")
        for a in assignments:
            self.launch(a)

    def launch(self, a: Assignment) -> None:
        """Send the attempt to its agent. One that cannot be sent (an argument that does not serialise, a broken
        handle) fails as an attempt, so it is retried or falls back; the scheduler already counts it as running."""
        scheduler = self._scheduler()
        try:
            spec = scheduler.tasks[a.task].spec
            token = self._agent_token(self._spec.agent(a.agent), spec.timeout_s)
            slack_s = self._slack.of(scheduler, a.task) if self._spec.policies.critical_path_first else None
            ref = self._agent(a.agent).run.remote(spec, a.attempt, scheduler.context_for(a.task), token,
                                                   trace=_tracing.inject(), slack_s=slack_s)
        except Exception as exc:
            logger.exception("mission %s: task %s attempt %d could not be sent to agent %s", self._mission_id, a.task,
                             a.attempt, a.agent)
            ref = asyncio.get_running_loop().create_future()
            ref.set_exception(exc)
        self._running[a.task] = (a.attempt, asyncio.ensure_future(self._await(a, ref)))

    def time_out(self, now: float) -> None:
        """Cancel the attempts past their deadline; each fails as timed out."""
        scheduler = self._scheduler()
        for task_id in scheduler.expired(now):
            attempt, future = self._running.pop(task_id)
            future.cancel()
            scheduler.on_failure(task_id, attempt, f"timed out after {scheduler.tasks[task_id].spec.timeout_s:g} s",
                                 now)

    def cancel(self, task_ids: list[str] | None = None) -> None:
        """Cancel these attempts (all of them: None); `drain` then lets their agent steps stop."""
        for task_id in list(self._running) if task_ids is None else task_ids:
            entry = self._running.pop(task_id, None)
            if entry is not None:
                entry[1].cancel()

    async def drain(self) -> None:
        """Give the cancelled agent steps CANCEL_GRACE_S to stop their tool and model calls."""
        await asyncio.sleep(0)  # the cancelled _await tasks send their cancellations
        if self._cancelled_refs:
            outcomes = [asyncio.wrap_future(ref.future()) for ref in self._cancelled_refs]
            await asyncio.wait(outcomes, timeout=CANCEL_GRACE_S)
            for outcome in outcomes:
                self._record_model_calls(late_model_calls(outcome))

    async def _await(self, a: Assignment, ref: Any) -> None:
        started = time.time()
        try:
            result = await ref
        except asyncio.CancelledError:
            if isinstance(ref, ray.ObjectRef):
                self._agent(a.agent).cancel_attempts.remote([attempt_key(self._mission_id, a.task, a.attempt)])
                self._cancelled_refs.append(ref)
            raise
        except Exception as exc:
            cause = cause_of(exc)
            self._record_model_calls(model_calls_of(cause))
            if isinstance(exc, RayActorError):
                self._replace_agent(a.agent)
            if isinstance(cause, BudgetExceeded) and cause.scope.startswith("mission "):
                self._log.emit(time.time(), "budget", "exceeded", agent=a.agent, message=str(cause),
                               data=budget_fields(cause))
                self._mission_over_budget(cause)
                return
            self._metrics.attempt_done(a.agent, latency_s=time.time() - started, tokens=0, ok=False)
            self._scheduler().on_failure(a.task, a.attempt, f"{type(cause).__name__}: {cause}", time.time(),
                                         cause=cause, detail=detail_of(cause))
        else:
            self._record_model_calls(result.model_call_records)
            tokens = result.prompt_tokens + result.completion_tokens
            self._budgets.count_calls(a.agent, calls=result.model_calls, tokens=tokens)
            self._metrics.attempt_done(a.agent, latency_s=time.time() - started, tokens=tokens, ok=True)
            self._slack.attempt_succeeded(time.time() - started)
            self._scheduler().on_success(a.task, a.attempt, result.fields(), time.time())
        finally:
            current = self._running.get(a.task)
            if current is not None and current[0] == a.attempt:
                del self._running[a.task]
            self._delegation.settle(a.task)
            self._wake()
