"""A mission run without Ray: the real `Scheduler` driven by a simulated clock, for timeline and report tests.

Each attempt's duration and detail (router queue, model, tool seconds, dollars) come from a `plan`
callable, so a test can make one agent slow or one model's queue long. The events carry the detail in
their data, the way the agent actor reports it (`queue_s`, `model_s`, `tools_s`, `usd`, `model`, ...).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from controlplane._core.events import EventLog
from controlplane._core.scheduler import Scheduler
from controlplane._core.timeline import ATTEMPT_ENDS, AttemptDetail
from controlplane.config.mission import AgentSpec, Policies, TaskSpec

START_S = 1_000.0


@dataclass(frozen=True, kw_only=True)
class Step:
    """What one attempt does in the simulation."""

    duration_s: float
    detail: AttemptDetail = field(default_factory=AttemptDetail)
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class SyntheticRun:
    events: list[dict[str, Any]]
    result: dict[str, Any]
    details: dict[tuple[str, int], AttemptDetail]


def task(id: str, agent: str, *deps: str, **extra: Any) -> TaskSpec:
    return TaskSpec(id=id, description=f"do {id}", agent=agent, depends_on=list(deps), timeout_s=3600, **extra)


def agent(name: str, role: str | None = None, **extra: Any) -> AgentSpec:
    return AgentSpec(name=name, role=role or name, **extra)


def simulate(tasks: Sequence[TaskSpec], agents: Sequence[AgentSpec], plan: Callable[[str, str, int], Step], *,
             policies: Policies | None = None, startup_s: float = 2.0) -> SyntheticRun:
    """Run the mission on a simulated clock; `plan(task, agent, attempt)` says what each attempt does."""
    log = EventLog("m-synthetic")
    log.emit(START_S, "mission", "starting", message=f"{len(agents)} agents")
    now = START_S + startup_s
    log.emit(now, "mission", "running", message=f"{len(tasks)} tasks")
    sched = Scheduler(tasks, agents, policies or Policies(retry_backoff_s=0.5), log, now)
    in_flight: list[tuple[float, int, Any, Step]] = []
    details: dict[tuple[str, int], AttemptDetail] = {}
    n = 0
    while not sched.finished:
        for a in sched.dispatch(now):
            step = plan(a.task, a.agent, a.attempt)
            heapq.heappush(in_flight, (now + step.duration_s, n, a, step))
            n += 1
        wake = sched.next_wakeup_s()
        if in_flight and (wake is None or in_flight[0][0] <= wake):
            now, _, a, step = heapq.heappop(in_flight)
            details[(a.task, a.attempt)] = step.detail
            tokens = (step.detail.input_tokens, step.detail.output_tokens)
            if step.error:
                sched.on_failure(a.task, a.attempt, step.error, now, tokens=tokens)
            else:
                sched.on_success(a.task, a.attempt, {"output": f"{a.task} done", "prompt_tokens": tokens[0],
                                                     "completion_tokens": tokens[1]}, now)
        elif wake is not None:
            now = wake
        else:
            raise RuntimeError("simulation stuck: nothing in flight and nothing to wait for")
    log.emit(now, "mission", sched.status(), message=sched.reason())
    events = _with_details([e.to_dict() for e in log.events], details)
    return SyntheticRun(events=events, result=_result(sched, now, details), details=details)


def _with_details(events: list[dict[str, Any]], details: dict[tuple[str, int], AttemptDetail]) -> list[dict[str, Any]]:
    """Put each attempt's detail into its end event's data, as the agent actor reports it."""
    attempt_of: dict[str, int] = {}
    for event in events:
        if event.get("kind") != "task":
            continue
        if event["status"] == "running":
            attempt_of[event["task"]] = event["attempt"]
        elif event["status"] in ATTEMPT_ENDS and event["task"] in attempt_of:
            detail = details.get((event["task"], attempt_of.pop(event["task"])))
            if detail is not None:
                data = {k: v for k, v in asdict(detail).items() if v not in (None, 0, 0.0, {})}
                event["data"] = {**event.get("data", {}), **data}
    return events


def _result(sched: Scheduler, now: float, details: dict[tuple[str, int], AttemptDetail]) -> dict[str, Any]:
    tokens = sum(d.input_tokens + d.output_tokens for d in details.values())
    return {"mission_id": "m-synthetic", "name": "synthetic", "goal": "A synthetic mission for the report",
            "status": str(sched.status()), "reason": sched.reason(), "started_at": START_S, "ended_at": now,
            "wall_s": now - START_S, "tasks": [r.to_dict() for r in sched.tasks.values()],
            "usage": {"tokens": tokens, "llm_calls": len(details),
                      "usd": round(sum(d.usd for d in details.values()), 6)},
            "control_plane": {"tokens": 0, "llm_calls": 0}, "conflicts": [],
            "plan": {"mode": "declared", "repairs": [], "fallback": False},
            "budgets": {"max_tokens": 2 * tokens + 1, "max_llm_calls": None, "max_wall_s": 3600.0}}


def launch_run(waves: int = 4) -> SyntheticRun:
    """A readable product-launch run: research fans out, the copywriter queues behind the busy `default`
    model, one research attempt fails once and is retried, a designer works beside them."""
    names = ["lead", "researcher", "copywriter", "designer", "reviewer"]
    agents = [agent("lead"), agent("researcher", max_concurrency=3), agent("copywriter", max_concurrency=2),
              agent("designer", max_concurrency=2), agent("reviewer")]
    tasks = [task("plan", "lead")]
    for w in range(waves):
        tasks += [task(f"research{w}", "researcher", "plan"), task(f"draft{w}", "copywriter", f"research{w}"),
                  task(f"visual{w}", "designer", "plan"), task(f"review{w}", "reviewer", f"draft{w}", f"visual{w}")]
    tasks.append(task("final", "lead", *(f"review{w}" for w in range(waves))))
    seconds = {"lead": 2.0, "researcher": 3.0, "copywriter": 9.0, "designer": 4.0, "reviewer": 1.5}
    queued = {"copywriter": 5.5}
    models = {"designer": "small", "reviewer": "small"}

    def plan(task_id: str, agent_name: str, attempt: int) -> Step:
        n = int(task_id[-1]) if task_id[-1].isdigit() else 0
        duration_s = seconds[agent_name] * (1 + 0.15 * n)
        if (task_id, attempt) == ("research1", 1):
            return Step(duration_s=1.2, error="ReplicaUnavailable: model 'default' timed out")
        queue_s = queued.get(agent_name, 0.2) * (1 + 0.15 * n)
        tools_s = {"web.search": 0.8} if agent_name == "researcher" else {}
        detail = AttemptDetail(queue_s=queue_s, model_s=duration_s - queue_s - sum(tools_s.values()) - 0.3,
                               tools_s=tools_s, model=models.get(agent_name, "default"), usd=0.0004 * duration_s,
                               input_tokens=int(120 * duration_s), output_tokens=int(40 * duration_s))
        return Step(duration_s=duration_s, detail=detail)

    assert set(names) == {a.name for a in agents}
    return simulate(tasks, agents, plan)
