"""The built-in tools every agent may be granted: memory.search, memory.post and delegate.

Only their specs live here; the agent actor executes them (memory calls, or a child task via the supervisor).
Their schemas bound every string and number, so a small model under guided decoding cannot run away.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane._core.tools import ToolSpec
from controlplane.config._tools import BUILTIN_TOOL_NAMES

DELEGATE, MEMORY_POST, MEMORY_SEARCH = BUILTIN_TOOL_NAMES

MEMORY_SEARCH_TOOL = ToolSpec(
    name=MEMORY_SEARCH, description="Search the team's shared memory for notes relevant to a query.",
    parameters={"type": "object", "additionalProperties": False, "required": ["query"], "properties": {
        "query": {"type": "string", "maxLength": 300, "description": "What to look for."},
        "k": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3, "description": "How many notes."}}},
    timeout_s=30.0, max_result_chars=3000)

MEMORY_POST_TOOL = ToolSpec(
    name=MEMORY_POST, description="Post a finding to the team's shared memory so other agents can use it.",
    parameters={"type": "object", "additionalProperties": False, "required": ["text"], "properties": {
        "text": {"type": "string", "maxLength": 2000, "description": "The finding, self-contained."},
        "topic": {"type": "string", "maxLength": 80, "description": "Topic; default: the task's topic."}}},
    timeout_s=30.0, side_effects=True, idempotent=False, max_result_chars=500)


def delegate_tool(targets: Sequence[str]) -> ToolSpec:
    """The `delegate` tool for an agent that may hand work to `targets` (agent names and roles)."""
    if not targets:
        raise ValueError("delegate needs at least one agent or role to delegate to")
    return ToolSpec(
        name=DELEGATE, description="Hand a subtask to another agent or role of the team; its result comes back.",
        parameters={"type": "object", "additionalProperties": False, "required": ["to", "description"],
                    "properties": {
                        "to": {"type": "string", "enum": sorted(set(targets)), "description": "Agent or role."},
                        "description": {"type": "string", "maxLength": 1000,
                                        "description": "What they must do, self-contained."}}},
        timeout_s=600.0, side_effects=True, idempotent=True, max_result_chars=4000)  # a repeat finds its child


def builtin_tools(*, delegate_targets: Sequence[str] = ()) -> dict[str, ToolSpec]:
    """The built-ins by name; `delegate` only when there is someone to delegate to."""
    tools = {MEMORY_SEARCH: MEMORY_SEARCH_TOOL, MEMORY_POST: MEMORY_POST_TOOL}
    if delegate_targets:
        tools[DELEGATE] = delegate_tool(delegate_targets)
    return tools


def check_delegation(*, depth: int, max_depth: int, task_count: int, max_tasks: int) -> str | None:
    """Why a task at delegation `depth` may not add a child task now, or None when it may.

    `depth` is 0 for a declared task and its parent's depth + 1 for a delegated one; `task_count` counts the
    mission's tasks, declared and delegated. The reason goes to the model as the tool's error.
    """
    if depth + 1 > max_depth:
        return (f"delegation refused: this task is at delegation depth {depth} and the mission allows "
                f"{max_depth} (delegation.max_depth); do this part yourself")
    if task_count >= max_tasks:
        return (f"delegation refused: the mission already has {task_count} tasks, its limit "
                f"(delegation.max_tasks); do this part yourself")
    return None
