"""SupervisorActor: owns one mission's state and drives the plain `Scheduler`.

The loop: stop on cancel or budget -> time out expired attempts -> settle conflicts -> dispatch ready
tasks -> sleep until a result, a deadline, or a signal. Each tick sits in its own try/except, so one
bad task or one bug in a tick never kills the loop. Every transition goes to the one event stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors._agent import AgentActor
from actors._conflicts import ConflictDesk
from actors._gang import Gang, reserve_agents
from actors._memory import memory_needed, start_memory
from actors._metrics import MissionMetrics
from controlplane._core.budget import BudgetTracker
from controlplane.errors import is_retryable
from controlplane._core.events import EventLog, MissionStatus
from controlplane._core.planner import plan_schema, planner_messages, repair_plan
from controlplane._core.scheduler import Assignment, Scheduler
from controlplane.config.mission import MissionSpec, TaskSpec

logger = logging.getLogger(__name__)
SLOW_TICK_S = 0.05
AGENT_START_TIMEOUT_S = 300.0
AGENT_MAX_RESTARTS = 8
"""Ray recreates an agent whose process or node died (on another node, in its placement-group bundle); the
attempt it was running fails with RayActorError and is retried like any other failure."""


@ray.remote(num_cpus=0)
class SupervisorActor:
    """Owns one mission's state. Query methods are idempotent; callers may retry."""

    def __init__(self, spec: MissionSpec, *, mission_id: str, router: Any, namespace: str,
                 memory_dir: str | None = None) -> None:
        self.spec, self.mission_id, self.router, self.namespace = spec, mission_id, router, namespace
        self.memory_dir = memory_dir
        self.log = EventLog(mission_id)
        self.started_s = time.time()
        self.ended_s: float | None = None
        self.budget = BudgetTracker(spec.budgets, start_s=self.started_s)
        self.sched: Scheduler | None = None
        self.final: tuple[MissionStatus, str] | None = None
        self.phase = MissionStatus.STARTING
        self.agents: dict[str, Any] = {}
        self.memory: Any = None
        self.placement: dict[str, Any] = {}
        self.gang: Gang | None = None
        self.control = {"tokens": 0, "llm_calls": 0}
        self.plan_info: dict[str, Any] = {"mode": spec.plan, "repairs": [], "fallback": False}
        self.metrics = MissionMetrics(mission_id)
        self.conflicts = ConflictDesk(spec, emit=self.log.emit, agent=self._agent, memory=self._memory,
                                      charge=self.budget.charge, mission_id=mission_id)
        self._attempts: dict[str, tuple[int, asyncio.Future]] = {}
        self._cancel_reason: str | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._main: asyncio.Task | None = None
        self._metrics_at = 0.0

    # -- API -------------------------------------------------------------------------------------------
    async def start(self) -> str:
        """Start the mission (idempotent); returns the mission id."""
        if self._main is None and not self._done.is_set():
            self._main = asyncio.get_running_loop().create_task(self._run())
        return self.mission_id

    async def cancel(self, reason: str = "cancelled by user") -> str:
        """Stop the mission: running steps are cancelled, agents killed, state kept. Returns the final status."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        if self._main is None:  # never started: nothing runs, just record it
            self.final, self.ended_s = (MissionStatus.CANCELLED, reason), time.time()
            self.log.emit(self.ended_s, "mission", MissionStatus.CANCELLED, message=reason)
            self._done.set()
        elif self.phase in (MissionStatus.STARTING, MissionStatus.PLANNING):
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
        """Where the mission stands: status, tasks by state, busy agents, tokens, elapsed time."""
        counts = self.sched.counts() if self.sched else {}
        return {"mission_id": self.mission_id, "name": self.spec.name, "status": str(self.status()),
                "reason": self.final[1] if self.final else "", "tasks": counts,
                "busy_agents": {a: n for a, n in (self.sched.running if self.sched else {}).items() if n},
                "tokens": self.budget.tokens, "llm_calls": self.budget.llm_calls,
                "elapsed_s": round((self.ended_s or time.time()) - self.started_s, 3), "done": self._done.is_set()}

    async def events_since(self, cursor: int) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.log.since(cursor)]

    async def result(self) -> dict[str, Any]:
        """The full record: status, every task (output, attempts, tokens, times), usage, conflicts, plan."""
        status = self.status()
        return {"mission_id": self.mission_id, "name": self.spec.name, "goal": self.spec.goal,
                "status": str(status), "reason": self.final[1] if self.final else "",
                "started_at": self.started_s, "ended_at": self.ended_s,
                "wall_s": (self.ended_s or time.time()) - self.started_s,
                "tasks": [r.to_dict() for r in self.sched.tasks.values()] if self.sched else [],
                "usage": {"tokens": self.budget.tokens, "llm_calls": self.budget.llm_calls,
                          "tokens_by_agent": dict(self.budget.tokens_by_agent)},
                "control_plane": dict(self.control), "conflicts": list(self.conflicts.decisions),
                "plan": self.plan_info, "budgets": self.spec.budgets.model_dump(), "agents": self.placement}

    async def on_memory_event(self, event: Any) -> None:
        """Called by the memory actor; conflicts are queued and settled by the loop."""
        if getattr(event, "kind", None) == "conflict":
            self.conflicts.queue(event)
            self._wake.set()

    # -- the mission -----------------------------------------------------------------------------------
    async def _run(self) -> None:
        self.log.emit(time.time(), "mission", MissionStatus.STARTING, message=f"{len(self.spec.agents)} agents")
        try:
            await self._start_actors()
            tasks = await self._plan()
            self.sched = Scheduler(tasks, self.spec.agents, self.spec.policies, self.log, time.time())
            self.phase = MissionStatus.RUNNING
            self.log.emit(time.time(), "mission", MissionStatus.RUNNING, message=f"{len(tasks)} tasks")
            await self._loop()
            await self.conflicts.drain(timeout_s=60.0)
            self.final = (self.sched.status(), self.sched.reason())
        except asyncio.CancelledError:
            self.final = (MissionStatus.CANCELLED, self._cancel_reason or "cancelled")
        except Exception as exc:
            logger.exception("mission %s failed outside a task", self.mission_id)
            self.final = (MissionStatus.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            self.ended_s = time.time()
            self._teardown()
            if self.sched is not None:
                self.metrics.states(self.sched.counts())
            self.log.emit(self.ended_s, "mission", self.final[0] if self.final else MissionStatus.FAILED,
                          message=self.final[1] if self.final else "")
            self._done.set()

    async def _start_actors(self) -> None:
        if memory_needed(self.spec):
            self.memory = start_memory(self.spec, self.mission_id, self.memory_dir,
                                       app_name=getattr(self.router, "app_name", None))
            await asyncio.gather(*(self.memory.grant.remote(a.name, a.memory.read, a.memory.write)
                                   for a in self.spec.agents))
            await self.memory.subscribe.remote(ray.get_runtime_context().current_actor, ["conflicts"])
        self.gang = await reserve_agents(self.spec, self.mission_id, note=self._placement_note)
        for a in self.spec.agents:
            self.agents[a.name] = AgentActor.options(
                name=f"{self.mission_id}:{a.name}", namespace=self.namespace, num_cpus=a.resources.num_cpus,
                num_gpus=a.resources.num_gpus, max_concurrency=a.max_concurrency, max_restarts=AGENT_MAX_RESTARTS,
                **self.gang.options_for(a.name),
            ).remote(mission_id=self.mission_id, goal=self.spec.goal, agent=a, router=self.router,
                     memory=self.memory, log_content=self.spec.policies.log_content)
        placed = await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in self.agents.values())),
                                        AGENT_START_TIMEOUT_S)
        self.placement = {p["agent"]: p for p in placed}
        self.log.emit(time.time(), "mission", "placed", message=f"{len(placed)} agents ready",
                      data={"gpu_ids": {p["agent"]: p["gpu_ids"] for p in placed}})

    def _placement_note(self, message: str) -> None:
        logger.info("mission %s: %s", self.mission_id, message)
        self.log.emit(time.time(), "mission", "waiting", message=message)

    async def _replaced(self, agent: str) -> None:
        """Record where Ray recreated an agent that died with its node."""
        try:
            placed = await self.agents[agent].ready.remote()
        except Exception as exc:
            self.log.emit(time.time(), "agent", "lost", agent=agent, message=f"not recreated: {exc}")
            return
        self.placement[agent] = placed
        self.log.emit(time.time(), "agent", "replaced", agent=agent, message=f"now on node {placed['node_id']}",
                      data=placed)

    async def _plan(self) -> list[TaskSpec]:
        if self.spec.plan == "declared":
            return list(self.spec.tasks)
        from serving import ChatMessage, ChatRequest, Identity

        self.phase = MissionStatus.PLANNING
        self.log.emit(time.time(), "mission", MissionStatus.PLANNING, agent="planner")
        p = self.spec.planner
        request = ChatRequest(
            model=p.model, max_tokens=p.max_tokens,
            messages=[ChatMessage(**m) for m in planner_messages(self.spec.goal, self.spec.agents, p.max_tasks)],
            json_schema=plan_schema([a.name for a in self.spec.agents], p.max_tasks),
            identity=Identity(mission_id=self.mission_id, agent_id="planner", priority="control"))
        raw, notes = "", []
        try:
            reply = await self.router.chat(request)
            raw = reply.text
            self.charge_control(reply.usage.prompt_tokens + reply.usage.completion_tokens)
        except Exception as exc:
            notes.append(f"planner call failed ({type(exc).__name__}: {exc})")
        plan = repair_plan(raw, self.spec.agents, self.spec.goal, p.max_tasks)
        self.plan_info = {"mode": "auto", "repairs": notes + plan.repairs, "fallback": plan.fallback,
                          "tasks": [t.model_dump(include={"id", "agent", "description", "depends_on"})
                                    for t in plan.tasks]}
        self.log.emit(time.time(), "plan", "planned", agent="planner", data=self.plan_info,
                      message=f"{len(plan.tasks)} tasks, {len(self.plan_info['repairs'])} repairs")
        return plan.tasks

    def _agent(self, name: str) -> Any:
        return self.agents[name]

    def _memory(self) -> Any:
        return self.memory

    def charge_control(self, tokens: int) -> None:
        self.control["tokens"] += tokens
        self.control["llm_calls"] += 1
        self.budget.charge("control-plane", tokens=tokens)

    async def _loop(self) -> None:
        assert self.sched is not None
        while not self.sched.finished:
            t0 = time.perf_counter()
            pause_s = 0.0
            try:
                self._tick(time.time())
            except Exception:
                logger.exception("mission %s: supervisor tick failed; the loop goes on", self.mission_id)
                pause_s = 0.1
            took = time.perf_counter() - t0
            if took > SLOW_TICK_S:
                logger.warning("mission %s: slow tick %.3f s with %d tasks in flight", self.mission_id, took,
                               self.sched.in_flight())
            if self.sched.finished:
                break
            wakes = [t for t in (self.sched.next_wakeup_s(), self.budget.wall_deadline_s()) if t is not None]
            timeout = max(pause_s, min(wakes) - time.time()) if wakes else (pause_s or None)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _tick(self, now: float) -> None:
        sched = self.sched
        if self._cancel_reason is not None:
            return self._stop(MissionStatus.CANCELLED, self._cancel_reason, now)
        exceeded = self.budget.exceeded(now)
        if exceeded is not None:
            self.log.emit(now, "budget", "exceeded", message=str(exceeded))
            return self._stop(MissionStatus.BUDGET_EXCEEDED, str(exceeded), now)
        for task_id in sched.expired(now):
            attempt, future = self._attempts.pop(task_id)
            future.cancel()
            sched.on_failure(task_id, attempt, f"timed out after {sched.tasks[task_id].spec.timeout_s:g} s", now)
        self.conflicts.settle(now)
        limit = self.spec.budgets.max_llm_calls
        max_new = None if limit is None else max(0, limit - self.budget.llm_calls - sched.in_flight())
        for assignment in sched.dispatch(now, max_new=max_new):
            self._launch(assignment)
        if now - self._metrics_at > 0.5:
            self._metrics_at = now
            self.metrics.states(sched.counts())

    def _launch(self, a: Assignment) -> None:
        spec = self.sched.tasks[a.task].spec
        ref = self.agents[a.agent].run.remote(spec, a.attempt, self.sched.context_for(a.task))
        self._attempts[a.task] = (a.attempt, asyncio.ensure_future(self._await(a, ref)))

    async def _await(self, a: Assignment, ref: Any) -> None:
        started = time.time()
        try:
            result = await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except Exception as exc:
            cause = exc.cause if isinstance(exc, RayTaskError) else exc
            retryable = is_retryable(cause)
            if isinstance(exc, RayActorError):
                asyncio.ensure_future(self._replaced(a.agent))
            self.metrics.attempt_done(a.agent, latency_s=time.time() - started, tokens=0, ok=False)
            self.sched.on_failure(a.task, a.attempt, f"{type(cause).__name__}: {cause}", time.time(),
                                  retryable=retryable)
        else:
            tokens = result.prompt_tokens + result.completion_tokens
            self.budget.charge(a.agent, tokens=tokens)
            self.metrics.attempt_done(a.agent, latency_s=time.time() - started, tokens=tokens, ok=True)
            self.sched.on_success(a.task, a.attempt, asdict(result), time.time())
        finally:
            current = self._attempts.get(a.task)
            if current is not None and current[0] == a.attempt:
                del self._attempts[a.task]
            self._wake.set()

    def _stop(self, status: MissionStatus, reason: str, now: float) -> None:
        for task_id in self.sched.stop(status, reason, now):
            entry = self._attempts.pop(task_id, None)
            if entry is not None:
                entry[1].cancel()

    def _teardown(self) -> None:
        for _, future in self._attempts.values():
            future.cancel()
        self._attempts.clear()
        for handle in [*self.agents.values(), *([self.memory] if self.memory is not None else [])]:
            try:
                ray.kill(handle)
            except Exception:
                logger.exception("mission %s: could not kill an actor", self.mission_id)
        if self.gang is not None:
            self.gang.release()

