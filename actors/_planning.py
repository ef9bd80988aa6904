"""The supervisor's planning phase for `plan: auto`: the planner model's plan, repaired and logged, and (with
`policies.approve_plan`) approved by a person before any task runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from actors._approvals import ApprovalGate
from actors._observe import request_trace
from controlplane._core.events import EventLog, MissionStatus
from controlplane._core.planner import plan_schema, planner_messages, repair_plan
from controlplane._core.tools import arguments_digest
from controlplane._tracing import TracingConfig
from controlplane.config.mission import MissionSpec, TaskSpec
from controlplane.errors import ApprovalDenied


async def plan_mission(spec: MissionSpec, *, router: Any, log: EventLog, control_token: Callable[[str], str],
                       count_call: Callable[[], None], tracing: TracingConfig | None
                       ) -> tuple[list[TaskSpec], dict[str, Any]]:
    """A `plan: auto` mission's tasks from one planner call (`count_call` counts it), with the plan's record: its
    tasks, repairs and whether it fell back. A failed call falls back to `repair_plan`'s plan."""
    from serving import ChatMessage, ChatRequest

    log.emit(time.time(), "mission", MissionStatus.PLANNING, agent="planner")
    p = spec.planner
    request = ChatRequest(
        model=p.model, max_tokens=p.max_tokens,
        messages=[ChatMessage(**m) for m in planner_messages(spec.goal, spec.agents, p.max_tasks)],
        json_schema=plan_schema([a.name for a in spec.agents], p.max_tasks),
        token=control_token("planner"), priority="control", **request_trace(tracing))
    raw, notes = "", []
    try:
        count_call()
        raw = (await router.chat(request)).text
    except Exception as exc:
        notes.append(f"planner call failed ({type(exc).__name__}: {exc})")
    plan = repair_plan(raw, spec.agents, spec.goal, p.max_tasks)
    repairs = notes + plan.repairs
    info: dict[str, Any] = {"mode": "auto", "repairs": repairs, "fallback": plan.fallback,
            "tasks": [t.model_dump(mode="json") for t in plan.tasks]}
    log.emit(time.time(), "plan", "planned", agent="planner", data=info,
             message=f"{len(plan.tasks)} tasks, {len(repairs)} repairs")
    return plan.tasks, info


async def approve_plan(plan_info: dict[str, Any], approvals: ApprovalGate) -> None:
    """No task runs before a person approves the plan (`controlplane approvals RUN` shows it); the approval is
    added to `plan_info`."""
    approval = await approvals.wait("plan", agent="planner", tool="plan",
                                    arg_digest=arguments_digest(plan_info["tasks"]), arguments=plan_info["tasks"])
    plan_info["approval"] = asdict(approval)
    if approval.status != "approved":
        raise ApprovalDenied(subject="the plan", approval_id=approval.id, decided_by=approval.decided_by or "",
                             reason=approval.reason)
