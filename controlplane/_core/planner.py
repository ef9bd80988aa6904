"""`plan: auto`: the planner prompt, a bounded JSON schema, and validation + repair of what comes back.

A small model follows a schema but not good sense (it makes tasks depend on themselves), so every
generated plan is checked: unknown agents, self-loops, forward or unknown dependencies, duplicates.
Each repair is noted; a plan that cannot be repaired falls back to one task per agent, which is said too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.config.mission import AgentSpec, TaskSpec

MAX_DEPS = 3
MAX_DESCRIPTION_CHARS = 240


def plan_ids(max_tasks: int) -> list[str]:
    return [f"t{i}" for i in range(1, max_tasks + 1)]


def plan_schema(agent_names: Sequence[str], max_tasks: int) -> dict[str, Any]:
    """Every array bounded and every name an enum: a 135M model loops on open-ended arrays."""
    ids = plan_ids(max_tasks)
    task = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "enum": ids},
            "agent": {"type": "string", "enum": list(agent_names)},
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS},
            "depends_on": {"type": "array", "items": {"type": "string", "enum": ids}, "maxItems": MAX_DEPS},
        },
        "required": ["id", "agent", "description", "depends_on"],
        "additionalProperties": False,
    }
    return {"type": "object", "properties": {"tasks": {"type": "array", "items": task, "minItems": 1,
                                                        "maxItems": max_tasks}},
            "required": ["tasks"], "additionalProperties": False}


def planner_messages(goal: str, agents: Sequence[AgentSpec], max_tasks: int) -> list[dict[str, str]]:
    roster = "\n".join(f"- {a.name}: {a.role}" for a in agents)
    system = ("You are a project planner. Split a goal into a few tasks for the listed agents. "
              "Answer with JSON only.")
    user = (f"Goal: {goal}\nAgents:\n{roster}\n"
            f"Write at most {max_tasks} tasks with ids t1, t2, ... in order. Each task names one agent, says "
            "what to do in one sentence, and lists in depends_on only ids of EARLIER tasks whose results it needs.")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A checked plan: tasks that form a DAG over known agents, and what was repaired."""

    tasks: list[TaskSpec]
    """The tasks to run."""
    repairs: list[str]
    """One line per change made to the generated plan."""
    fallback: bool
    """True when the generated plan was unusable and the one-task-per-agent plan replaced it."""


def repair_plan(raw: str | dict[str, Any], agents: Sequence[AgentSpec], goal: str, max_tasks: int) -> Plan:
    """Turn the planner's answer into a runnable plan, noting each repair; fall back when nothing is left."""
    repairs: list[str] = []
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        items = data["tasks"]
        if not isinstance(items, list):
            raise TypeError("`tasks` is not a list")
    except (ValueError, TypeError, KeyError) as exc:
        return fallback_plan(agents, goal, [f"planner answer unusable ({type(exc).__name__}: {exc})"])
    names = {a.name for a in agents}
    tasks: list[TaskSpec] = []
    for n, item in enumerate(items[:max_tasks]):
        task = _repair_item(item, n, names, [t.id for t in tasks], repairs)
        if task is not None:
            tasks.append(task)
    if len(items) > max_tasks:
        repairs.append(f"dropped {len(items) - max_tasks} tasks beyond max_tasks={max_tasks}")
    if not tasks:
        return fallback_plan(agents, goal, repairs + ["no usable task left"])
    return Plan(tasks=tasks, repairs=repairs, fallback=False)


def _repair_item(item: Any, n: int, names: set[str], earlier: list[str], repairs: list[str]) -> TaskSpec | None:
    if not isinstance(item, dict):
        repairs.append(f"task #{n + 1}: not an object, dropped")
        return None
    tid = str(item.get("id") or f"t{n + 1}")
    if tid in earlier:
        repairs.append(f"task #{n + 1}: id {tid!r} used twice, renamed t{n + 1}x")
        tid = f"t{n + 1}x"
    agent = item.get("agent")
    description = str(item.get("description") or "").strip()[:MAX_DESCRIPTION_CHARS]
    if agent not in names:
        repairs.append(f"task {tid}: unknown agent {agent!r}, dropped")
        return None
    if not description:
        repairs.append(f"task {tid}: empty description, dropped")
        return None
    deps: list[str] = []
    for dep in item.get("depends_on") or []:
        if dep == tid:
            repairs.append(f"task {tid}: removed self-dependency")
        elif dep not in earlier:
            repairs.append(f"task {tid}: removed dependency {dep!r} (not an earlier task)")
        elif dep not in deps:
            deps.append(dep)
    return TaskSpec(id=tid, agent=agent, description=description, depends_on=deps, retries=1)


def fallback_plan(agents: Sequence[AgentSpec], goal: str, repairs: list[str]) -> Plan:
    """One task per agent towards the goal; the last agent gathers every other result (fan-in)."""
    *first, last = agents
    tasks = [TaskSpec(id=f"t{i + 1}", agent=a.name, description=f"As the {a.role}, contribute to: {goal}")
             for i, a in enumerate(first)]
    tasks.append(TaskSpec(id=f"t{len(agents)}", agent=last.name, depends_on=[t.id for t in tasks],
                          description=f"As the {last.role}, combine the team's results into the final answer "
                          f"for: {goal}"))
    return Plan(tasks=tasks, repairs=repairs + ["used the fallback plan: one task per agent, last one gathers"],
                fallback=True)
