"""SupervisorActor: owns one mission's state and drives the plain `Scheduler`.

The loop: stop on cancel or budget -> time out expired attempts -> settle conflicts -> dispatch ready
tasks -> sleep until a result, a deadline, or a signal. Each tick sits in its own try/except, so one
bad task or one bug in a tick never kills the loop. Every transition goes to the one event stream.

The supervisor holds its mission's key (never the cluster root secret): it mints a capability token for each
dispatch, arms the router's hard token and USD caps at the start, and reads the mission's usage back from the
router, which charges every call (failed, cancelled, planner and judge calls too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any

import ray

from actors._agent_pool import AgentPool
from actors._approvals import ApprovalGate
from actors._attempts import Attempts
from actors._budgets import BudgetDesk
from actors._conflicts import ConflictDesk
from actors._crew import Crew
from actors._delegation import DelegationDesk
from actors._durable import MissionJournal, Start, budget_fields, default_run_dir, open_mission
from actors._metrics import MissionMetrics
from actors._observe import (
    MissionTrace,
    configure_process,
    mission_tracing,
)
from actors._planning import approve_plan, plan_mission
from actors._together import at_once
from actors._tool_journal import ToolJournalDesk
from controlplane._core.events import EventLog, MissionStatus
from controlplane._core.identity import MissionTokens
from controlplane._core.recovery import rebuild_scheduler
from controlplane._core.results import MissionResult, MissionSummary
from controlplane._core.scheduler import Scheduler
from controlplane._core.tick_guard import TickGuard
from controlplane._ray_errors import cause_of
from controlplane._rundir import write_run_dir
from controlplane._tracing import TracingConfig
from controlplane.config.mission import AgentSpec, MissionSpec, TaskSpec
from controlplane.errors import BudgetExceeded
from serving._keys import revoke_if_seen

logger = logging.getLogger(__name__)
FINISHED_GRACE_S = 60.0  # a finished supervisor answers `result` this long, then ends itself
TOKEN_MARGIN_S = 60.0
"""An agent's token outlives its task's timeout by this much (queueing at the router, the memory post)."""
CONTROL_TOKEN_TTL_S = 600.0


@ray.remote(num_cpus=0)
class SupervisorActor:
    """Owns one mission's state. Query methods are idempotent; callers may retry."""

    def __init__(self, spec: MissionSpec, *, mission_id: str, router: Any, namespace: str, mission_key: bytes,
                 memory_dir: str | None = None, router_url: str | None = None, run_dir: str | None = None,
                 tracing: TracingConfig | None = None, secret_files: dict[str, str] | None = None,
                 api_key: tuple[str, ...] | None = None) -> None:
        """`run_dir`: the run directory (local path or fsspec URL every node sees) holding the mission log;
        when it already holds a log, the mission continues from it (see actors._durable). `secret_files`: the
        driver's root secret and API key file paths (`secret_file_env()`), for the memory actor. They are an
        argument, not the supervisor's runtime_env, which its agents would inherit: an actor with a runtime_env
        of its own cannot start on one of Ray's prestarted workers. `api_key`: (key file, key id, files holding the
        key in clear...) of the HTTP API key made for this mission, revoked (and those files deleted) when it ends,
        also when the driver that made it is gone."""
        self._api_key = api_key
        self.spec, self.mission_id, self.router, self.namespace = spec, mission_id, router, namespace
        self.tracing = mission_tracing(tracing, log_content=spec.policies.log_content)
        configure_process(self.tracing, "controlplane.supervisor")
        self.tokens = MissionTokens(mission_key, mission_id)
        self.run_dir = run_dir or default_run_dir(mission_id)
        self.opened = open_mission(self.run_dir)
        self.writer = self.opened.writer
        self.log: EventLog = MissionJournal(mission_id, self.writer)
        self.log.resume(self.opened.state.events)  # a restarted supervisor's stream goes on, as its log does
        self.started_s = self.opened.state.started_s or time.time()
        self.ended_s: float | None = None
        self.budgets = BudgetDesk(spec, mission_id=mission_id, router=router, writer=self.writer,
                                  start_s=self.started_s)
        self.sched: Scheduler | None = None
        self.final: tuple[MissionStatus, str] | None = None
        self.phase = MissionStatus.STARTING
        self.router_url = router_url
        self.plan_info: dict[str, Any] = {"mode": spec.plan, "repairs": [], "fallback": False}
        self.metrics = MissionMetrics(mission_id)
        self.agents = AgentPool(spec, mission_id, namespace, self.log, hold=self._hold_agent,
                                release=self._agent_back)
        self.crew = Crew(spec, mission_id, namespace, self.log, self.agents, memory_dir=memory_dir,
                         secret_files=secret_files)
        self.conflicts = ConflictDesk(spec, emit=self.log.emit, agent=self._agent, memory=self._memory,
                                      count_calls=self.budgets.count_calls,
                                      record_model_calls=self.on_model_calls,
                                      supervisor_token=self._control_token,
                                      agent_token=lambda name, timeout_s: self._agent_token(spec.agent(name),
                                                                                           timeout_s),
                                      scheduler=lambda: self.sched, wake=self._wake_loop, mission_id=mission_id)
        self.delegation = DelegationDesk(spec, scheduler=lambda: self.sched, is_agent=lambda name: name in self.agents,
                                         wake=self._wake_loop, recorded=self.opened.state.delegations)
        self.attempts = Attempts(spec, mission_id=mission_id, scheduler=lambda: self.scheduler, agent=self._agent,
                                 replace_agent=lambda name: self.agents.replace(name), agent_token=self._agent_token,
                                 log=self.log, budgets=self.budgets, metrics=self.metrics, delegation=self.delegation,
                                 record_model_calls=self.on_model_calls, mission_over_budget=self._over_budget,
                                 wake=self._wake_loop)
        self.approvals = ApprovalGate(emit=self.log.emit, timeout_s=spec.policies.approval_timeout_s,
                                      recorded=self.opened.state.approvals.values())
        self._cancel_reason: str | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._scheduled = asyncio.Event()  # set once self.sched holds the mission's tasks
        self._main: asyncio.Task | None = None
        self._metrics_at = 0.0
        self._ticks = TickGuard()
        self._stored_result: dict[str, Any] | None = None
        self.tool_desk = ToolJournalDesk(self.writer, self.opened.state.tools)
        self._take_over()

    def _take_over(self) -> None:
        """Act on the log found at start: serve a finished mission, or continue one (after a restart)."""
        state = self.opened.state
        if self.opened.start == Start.FINISHED:
            self.final, self.ended_s = (MissionStatus(state.status or "failed"), state.reason), time.time()
            self._stored_result = self.opened.result
            self._done.set()
            if self._stored_result is None:  # it died between its final status and result.json: write it now
                state_tasks = state.task_specs(self.spec.tasks)
                self.sched, _ = rebuild_scheduler(state, state_tasks, self.spec.agents, self.spec.policies,
                                                  EventLog(self.mission_id), time.time())
                ray.get_runtime_context().current_actor.start.remote()
        elif self.opened.start in (Start.RESUME, Start.CANCELLING):
            self._cancel_reason = state.cancel_reason
            logger.warning("mission %s: continuing from its log (%d records, %d tasks done)", self.mission_id,
                           state.last.seq + 1 if state.last else 0, len(state.completed()))
            ray.get_runtime_context().current_actor.start.remote()  # runs once __init__ has returned

    # -- API -------------------------------------------------------------------------------------------
    async def start(self) -> str:
        """Start the mission (idempotent); returns the mission id."""
        if self._main is None and not self._done.is_set():
            self._main = asyncio.get_running_loop().create_task(self._run())
        elif self._done.is_set() and self._stored_result is None:
            await self._finish()
        return self.mission_id

    async def cancel(self, reason: str = "cancelled by user") -> str:
        """Stop the mission: running steps are cancelled, agents killed, state kept. Returns the final status."""
        if self._cancel_reason is None and not self._done.is_set():
            self._cancel_reason = reason
            await self.writer.durable(self.writer.append("mission.cancel", {"reason": reason}, wait=False))
        if self._main is None and not self._done.is_set():  # never started: nothing runs, just record it
            self.final, self.ended_s = (MissionStatus.CANCELLED, reason), time.time()
            self.log.emit(self.ended_s, "mission", MissionStatus.CANCELLED, message=reason)
            await self._finish()
        elif self.phase in (MissionStatus.STARTING, MissionStatus.PLANNING) and self._main is not None:
            self._main.cancel()
        self._wake.set()
        await self._done.wait()
        return str(self.status())

    async def wait(self, timeout_s: float | None = None) -> bool:
        """True once the mission has ended."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def status(self) -> MissionStatus:
        if self.final is not None:
            return self.final[0]
        return self.sched.status() if self.sched is not None and self.phase == MissionStatus.RUNNING else self.phase

    async def summary(self) -> dict[str, Any]:
        """Where the mission stands (`MissionSummary`, as a dict)."""
        usage = await self._usage()
        return MissionSummary(
            mission_id=self.mission_id, name=self.spec.name, status=str(self.status()),
            reason=self.final[1] if self.final else "", tasks=self.sched.counts() if self.sched else {},
            busy_agents={a: n for a, n in (self.sched.slots.running if self.sched else {}).items() if n},
            tokens=usage["tokens"], usd=usage["usd"], llm_calls=usage["llm_calls"],
            elapsed_s=round((self.ended_s or time.time()) - self.started_s, 3), done=self._done.is_set(),
            approvals_waiting=self.approvals.waiting()).to_dict()

    async def events_since(self, cursor: int) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.log.since(cursor)]

    async def result(self) -> dict[str, Any]:
        """The full record (`MissionResult`, as a dict); once ended, the one in `result.json`."""
        if self._stored_result is not None:
            return self._stored_result
        return (await self._result()).to_dict()

    async def _result(self, log_head: dict[str, Any] | None = None) -> MissionResult:
        usage = dict(await self._usage())
        control = usage.pop("control_plane")
        return MissionResult(
            mission_id=self.mission_id, name=self.spec.name, goal=self.spec.goal, status=str(self.status()),
            reason=self.final[1] if self.final else "", started_at=self.started_s, ended_at=self.ended_s,
            wall_s=(self.ended_s or time.time()) - self.started_s,
            tasks=list(self.sched.tasks.values()) if self.sched else [], usage=usage, control_plane=control,
            conflicts=list(self.conflicts.decisions), plan=self.plan_info, budgets=self.spec.budgets.model_dump(),
            agents=self.agents.placement, run_dir=self.run_dir, log_head=log_head)

    async def on_agent_events(self, events: list[dict[str, Any]]) -> None:
        """Tool events from agents (denials, invalid calls, failures), recorded as they happen."""
        for fields in events:
            self.log.emit(time.time(), **fields)

    def on_model_calls(self, calls: list[dict[str, Any]]) -> None:
        """Agents' model calls, for the audit log (`AgentActor._audit_model_call` says what each holds). An
        attempt's calls come with its result or its error instead, see `_await`."""
        for call in calls:
            self.writer.append("model.call", call, actor=call["agent"], wait=False)

    async def tool_intent(self, **intent: Any) -> dict[str, Any]:
        """Before a side-effecting tool call (actors._tool_journal): replay its recorded result, refuse a call
        in doubt, or make its intent durable and let it run. `intent` holds the `tool.intent` record's fields."""
        return await self.tool_desk.intent(actor=self._agent_of(intent["attempt_key"]), **intent)

    async def tool_result(self, **result: Any) -> None:
        """After a side-effecting tool call: its result, durable before the agent goes on."""
        await self.tool_desk.result(actor="agent", **result)

    def _agent_of(self, attempt_key: str) -> str:
        task = attempt_key.split("/")[-2] if attempt_key.count("/") >= 2 else ""
        record = self.sched.tasks.get(task) if self.sched is not None else None
        return (record.agent if record is not None else None) or "agent"

    async def delegate(self, parent: str, to: str, description: str, *, intent: dict[str, Any]) -> Any:
        """Add a child task for agent or role `to` to the running DAG, wait for it, and return its output
        (called by an agent's `delegate` tool; see actors._delegation). The call is journaled here, under the
        agent's `intent`, as a side-effecting tool is: an attempt that runs again gets the recorded output."""
        await self._scheduled.wait()  # a call that Ray retried onto a restarted supervisor waits for its resume
        return await self.tool_desk.run(intent, lambda: self.delegation.delegate(parent, to, description,
                                                                                 call_key=intent["call_key"]),
                                        actor=self._agent_of(intent["attempt_key"]))

    async def request_approval(self, call_id: str, *, agent: str, tool: str, arg_digest: str, task: str,
                               attempt: int, arguments: Any = None) -> dict[str, Any]:
        """Called by an agent whose tool call needs a human approval; returns the decided `Approval` as a dict.
        `arguments`, the call's, are shown to whoever lists the approvals, and kept in no log.

        The task's timeout does not run while it waits; a timeout of the approval itself is a denial."""
        paused = self._extend_deadline(task, attempt, self.spec.policies.approval_timeout_s)
        asked = time.time()
        try:
            approval = await self.approvals.wait(f"{task}#{attempt}:{call_id}", agent=agent, tool=tool,
                                                 arg_digest=arg_digest, arguments=arguments, task=task)
        finally:
            if paused:  # a call that Ray retried onto a restarted supervisor before its resume paused nothing
                self._extend_deadline(task, attempt, (time.time() - asked) - self.spec.policies.approval_timeout_s)
        return asdict(approval)

    async def approvals_pending(self) -> list[dict[str, Any]]:
        """What waits for a decision, oldest first, with each call's arguments."""
        return self.approvals.pending()

    async def decide_approval(self, approval_id: str, approve: bool, by: str, reason: str | None = None
                              ) -> dict[str, Any]:
        """Approve or deny `approval_id` (`ap-<n>`); deciding twice the same way is a no-op. The decision is
        durable before it is answered: a supervisor that restarts keeps it."""
        decided = self.approvals.decide(approval_id, approve=approve, by=by, reason=reason)
        if self.writer.last is not None:
            await self.writer.durable(self.writer.last)
        return asdict(decided)

    def _extend_deadline(self, task: str, attempt: int, seconds: float) -> bool:
        """Move the running attempt's deadline; False when that attempt is not running here."""
        record = self.sched.tasks.get(task) if self.sched is not None else None
        if record is None or record.attempts != attempt:
            return False
        record.deadline_s += seconds
        self._wake.set()
        return True

    async def on_memory_event(self, event: Any) -> None:
        """Called by the memory actor; conflicts are queued and settled by the loop."""
        if getattr(event, "kind", None) == "conflict":
            self.conflicts.queue(event)
            self._wake.set()

    @property
    def scheduler(self) -> Scheduler:
        """The mission's scheduler, which exists from the plan on."""
        assert self.sched is not None, "the mission has no scheduler before its plan"
        return self.sched

    def _wake_loop(self) -> None:
        self._wake.set()

    # -- the mission -----------------------------------------------------------------------------------
    async def _run(self) -> None:
        resuming = self.opened.start != Start.FRESH
        if not resuming:
            await self.writer.durable(self.writer.append("mission.start", {
                "mission_id": self.mission_id, "name": self.spec.name, "format": 1,
                "spec": self.spec.model_dump(mode="json")}, time_s=self.started_s, wait=False))
        self.log.emit(time.time(), "mission", MissionStatus.STARTING, message=f"{len(self.spec.agents)} agents"
                      + (" (resumed from the mission log)" if resuming else ""))
        trace = MissionTrace(self.mission_id, self.spec.name)
        self.tracing = trace.handed_on(self.tracing)
        try:
            if resuming and (self.spec.plan == "declared" or self.opened.state.plan is not None):
                await at_once(self.budgets.arm(self._control_token()), self._start_actors(),
                              self._approve_recorded_plan())
                await self._resume()
            else:  # fresh, or it died while planning: the plan is made (again)
                self.budgets.tracker.llm_calls = self.opened.state.budget.llm_calls
                tasks, _ = await at_once(self._plan(), self._start_actors())  # caps and the planner while agents start
                self.sched = Scheduler(tasks, self.spec.agents, self.spec.policies, self.log, time.time())
                self._scheduled.set()
                self.phase = MissionStatus.RUNNING
                self.log.emit(time.time(), "mission", MissionStatus.RUNNING, message=f"{len(tasks)} tasks")
            await self._loop()
            if self._cancel_reason is None:
                await self.conflicts.drain(timeout_s=60.0)
            self.final = (self.scheduler.status(), self.scheduler.reason())
        except asyncio.CancelledError:
            self.final = (MissionStatus.CANCELLED, self._cancel_reason or "cancelled")
        except Exception as exc:
            logger.exception("mission %s failed outside a task", self.mission_id)
            cause = cause_of(exc)
            self.final = (MissionStatus.FAILED, f"{type(cause).__name__}: {cause}")
        finally:
            self.ended_s = time.time()
            trace.end(str(self.final[0]) if self.final else "failed", self.final[1] if self.final else "")
            await MissionTrace.flush(self.agents.handles.values(), self.router)
            await self._teardown()
            await self._usage()  # the final figures: read once more before the mission counts as done
            if self.sched is not None:
                self.metrics.publish(self.sched.counts())
            self.log.emit(self.ended_s, "mission", self.final[0] if self.final else MissionStatus.FAILED,
                          message=self.final[1] if self.final else "")
            await self._finish()

    async def _approve_recorded_plan(self) -> None:
        """The plan the log holds, whose approval a restart never skips: one that waited for its approval waits on
        (one approved or denied before stays so)."""
        plan = self.opened.state.plan
        if plan is None:
            return
        self.plan_info = {"mode": "auto", "repairs": [], "fallback": False, "tasks": plan, "resumed": True}
        if self.spec.policies.approve_plan and self._cancel_reason is None:
            self.phase = MissionStatus.PLANNING
            await approve_plan(self.plan_info, self.approvals)

    async def _resume(self) -> None:
        """Continue from the log: finished tasks keep their outputs, in-flight attempts run again under their
        attempt numbers, budget used and conflict decisions carry over."""
        state = self.opened.state
        tasks = state.task_specs(self.spec.tasks)
        self.sched, relaunch = rebuild_scheduler(state, tasks, self.spec.agents, self.spec.policies, self.log,
                                                 time.time())
        self._scheduled.set()
        self.budgets.tracker.llm_calls = state.budget.llm_calls
        self.conflicts.resume(state.conflicts)
        await self.conflicts.reopen(state.open_conflicts.values())
        self.phase = MissionStatus.RUNNING
        self.log.emit(time.time(), "mission", MissionStatus.RUNNING,
                      message=f"resumed: {len(state.completed())} of {len(tasks)} tasks already done, "
                              f"{len(relaunch)} relaunched")
        await self.attempts.relaunch(relaunch)

    async def _finish(self) -> None:
        """Revoke the mission's API key, make the log durable, write the run directory (result.json with the log's
        head), end in a while."""
        await asyncio.to_thread(self._revoke_api_key)
        try:
            await asyncio.to_thread(self.writer.flush)
            head = self.writer.head
            result = (await self._result(log_head=None if head is None else head.to_dict())).to_dict()
            self._stored_result = result
            events = [e.to_dict() for e in self.log.since(0)]
            await asyncio.to_thread(write_run_dir, self.run_dir, result, events)
            await asyncio.to_thread(self.writer.close)
        except Exception:
            logger.exception("mission %s: could not write its run directory %s", self.mission_id, self.run_dir)
        finally:
            self._done.set()
            asyncio.get_running_loop().call_later(FINISHED_GRACE_S, self._end_self)

    def _revoke_api_key(self) -> None:
        if self._api_key is None:
            return
        try:
            if not revoke_if_seen(*self._api_key, now_s=time.time()):
                logger.warning("mission %s: its API key file %s is not on this node; the driver revokes the key",
                               self.mission_id, self._api_key[0])
        except Exception:
            logger.exception("mission %s: could not revoke its API key", self.mission_id)

    def _end_self(self) -> None:
        try:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        except Exception:
            logger.exception("mission %s: the finished supervisor could not end itself", self.mission_id)

    # -- identity and budgets ----------------------------------------------------------------------------
    def _control_token(self, agent_id: str = "supervisor") -> str:
        return self.tokens.control(agent_id, now_s=time.time(), ttl_s=CONTROL_TOKEN_TTL_S)

    def _agent_token(self, agent: AgentSpec, timeout_s: float) -> str:
        """A token for one dispatch: the agent's memory namespaces and tools, expiring after the task's timeout."""
        return self.tokens.agent(agent.name, now_s=time.time(), ttl_s=timeout_s + TOKEN_MARGIN_S,
                                 read=agent.memory.read, write=agent.memory.write, tools=agent.tools)

    async def _usage(self) -> dict[str, Any]:
        """The mission's usage from the router while it runs; once ended, the final figures read at its end."""
        return self.budgets.usage if self._done.is_set() else await self.budgets.read_usage()

    async def _start_actors(self) -> None:
        await self.crew.start(router=self.router, router_url=self.router_url,
                              supervisor=ray.get_runtime_context().current_actor, tracing=self.tracing,
                              control_token=self._control_token())

    def _hold_agent(self, name: str) -> None:
        self.scheduler.hold_agent(name)

    def _agent_back(self, name: str) -> None:
        self.scheduler.release_agent(name)
        self._wake.set()

    async def _plan(self) -> list[TaskSpec]:
        """The mission's tasks, once the router holds its caps (the planner's call is under them)."""
        await self.budgets.arm(self._control_token())
        if self.spec.plan == "declared":
            return list(self.spec.tasks)
        self.phase = MissionStatus.PLANNING
        tasks, self.plan_info = await plan_mission(self.spec, router=self.router, log=self.log,
                                                   control_token=self._control_token,
                                                   count_call=lambda: self.budgets.count_calls("planner"),
                                                   tracing=self.tracing)
        if self.spec.policies.approve_plan:
            await approve_plan(self.plan_info, self.approvals)
        return tasks

    def _agent(self, name: str) -> Any:
        return self.agents[name]

    def _memory(self) -> Any:
        return self.crew.memory

    async def _loop(self) -> None:
        assert self.sched is not None
        while not self.sched.finished:
            t0 = time.perf_counter()
            error: Exception | None = None
            try:
                self._tick(time.time())
            except Exception as exc:
                error = exc
            took_s = time.perf_counter() - t0
            verdict = self._ticks.judge(took_s, error)  # raises at the last failure: the mission fails, not spins
            if error is not None:
                logger.error("mission %s: supervisor tick failed; the loop goes on", self.mission_id, exc_info=error)
            if verdict.slow:
                logger.warning("mission %s: slow supervisor tick, %.3f s with %d tasks in flight; likely cause: "
                               "the supervisor's process is short of CPU (many tasks finishing at once, or a busy "
                               "node). Fix: give the supervisor a node with spare CPU (cluster.yaml head), or lower "
                               "agents' max_concurrency", self.mission_id, took_s, self.sched.in_flight())
            if self.sched.finished:
                break
            wakes = [t for t in (self.sched.next_wakeup_s(), self.budgets.tracker.wall_deadline_s()) if t is not None]
            timeout = max(verdict.pause_s, min(wakes) - time.time()) if wakes else (verdict.pause_s or None)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _tick(self, now: float) -> None:
        sched = self.scheduler
        if self._cancel_reason is not None:
            return self._stop(MissionStatus.CANCELLED, self._cancel_reason, now)
        exceeded = self.budgets.tracker.exceeded(now)
        if exceeded is not None:
            self.log.emit(now, "budget", "exceeded", message=str(exceeded), data=budget_fields(exceeded))
            return self._stop(MissionStatus.BUDGET_EXCEEDED, str(exceeded), now)
        self.attempts.time_out(now)
        self.conflicts.settle(now)
        for assignment in sched.dispatch(now, max_new=self.budgets.tracker.max_new_calls(sched.in_flight())):
            self.attempts.launch(assignment)
        if now - self._metrics_at > 0.5:
            self._metrics_at = now
            self.metrics.publish(sched.counts())

    def _stop(self, status: MissionStatus, reason: str, now: float) -> None:
        self.attempts.cancel(self.scheduler.stop(status, reason, now))

    def _over_budget(self, cause: BudgetExceeded) -> None:
        self._stop(MissionStatus.BUDGET_EXCEEDED, str(cause), time.time())

    async def _teardown(self) -> None:
        """Cancel what runs, give cancelled steps CANCEL_GRACE_S to stop their calls, then stop the crew."""
        self.attempts.cancel()
        self.delegation.cancel_all()
        self.approvals.deny_all(self._cancel_reason or "the mission ended")
        await self.attempts.drain()
        await self.crew.stop()
