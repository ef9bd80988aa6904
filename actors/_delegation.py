"""The supervisor's delegation desk: an agent's `delegate` tool adds a child task to the running DAG and waits
for its outcome, within the mission's `delegation` limits (depth and task count). The same call made again (its
attempt relaunched after a supervisor restart) waits for the child it added, rather than adding another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from controlplane._core.builtins import check_delegation
from controlplane._core.events import TERMINAL, TaskStatus
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import MissionSpec, TaskSpec
from controlplane.errors import ToolError


class DelegationDesk:
    """`scheduler()` is the mission's scheduler (None before the plan), `is_agent(name)` tells an agent's name
    from a role, `wake()` wakes the supervisor's loop once a child task is added."""

    def __init__(self, spec: MissionSpec, *, scheduler: Callable[[], Scheduler | None],
                 is_agent: Callable[[str], bool], wake: Callable[[], None],
                 recorded: Mapping[str, str] | None = None) -> None:
        """`recorded`: the log's `delegate` calls, call key -> the task each added."""
        self._spec, self._scheduler, self._is_agent, self._wake = spec, scheduler, is_agent, wake
        self._children: dict[str, str] = dict(recorded or {})
        self._waiting: dict[str, asyncio.Future] = {}

    async def delegate(self, parent: str, to: str, description: str, *, call_key: str) -> Any:
        """Add a child task of `parent` for agent or role `to`, wait for it, and return its output. A refusal or
        the child's failure raises a `ToolError`, which the calling model reads as the tool's error."""
        sched = self._scheduler()
        if sched is None or parent not in sched.tasks:
            raise ToolError(tool="delegate", why=f"task {parent!r} is not running in this mission",
                            fix="delegate only from a running task")
        child_id = self._children.get(call_key)
        if child_id is None or child_id not in sched.tasks:
            child_id = self._children[call_key] = self._add_child(sched, parent, to, description, call_key)
        waiter = self._waiting.get(child_id)
        if waiter is None:
            waiter = self._waiting[child_id] = asyncio.get_running_loop().create_future()
        self.settle(child_id)  # a child that ended before a restart answers at once
        return await asyncio.shield(waiter)

    def _add_child(self, sched: Scheduler, parent: str, to: str, description: str, call_key: str) -> str:
        limits = self._spec.delegation
        refused = check_delegation(depth=_depth(sched, parent), max_depth=limits.max_depth,
                                   task_count=len(sched.tasks), max_tasks=limits.max_tasks)
        if refused:
            raise ToolError(tool="delegate", why=refused, fix="do this part yourself")
        parent_spec = sched.tasks[parent].spec
        child_id = f"{parent}.d{sum(1 for t in sched.tasks.values() if t.delegated_by == parent) + 1}"
        target = {"agent": to} if self._is_agent(to) else {"role": to}
        child = TaskSpec(id=child_id, description=description, timeout_s=parent_spec.timeout_s,
                         topic=f"{parent_spec.topic or parent}-{child_id}", **target)
        sched.add_task(child, delegated_by=parent, now_s=time.time(), call_key=call_key)
        self._wake()
        return child_id

    def settle(self, task_id: str) -> None:
        """Hand a finished child task's outcome to the agent that delegated it (a no-op for other tasks)."""
        waiter = self._waiting.get(task_id)
        sched = self._scheduler()
        record = sched.tasks[task_id] if sched is not None else None
        if waiter is None or waiter.done() or record is None or record.status not in TERMINAL:
            return
        del self._waiting[task_id]
        if record.status == TaskStatus.SUCCEEDED:
            waiter.set_result(record.output)
        else:
            waiter.set_exception(ToolError(tool="delegate", why=f"the delegated task {task_id!r} "
                                           f"{record.status}: {record.error or 'no result'}",
                                           fix="do this part yourself, or delegate a smaller task"))

    def cancel_all(self) -> None:
        """The mission ends: every delegating agent's wait is cancelled."""
        for waiter in self._waiting.values():
            waiter.cancel()


def _depth(sched: Scheduler, task_id: str) -> int:
    """How many delegations down from a declared task `task_id` is."""
    depth, parent = 0, sched.tasks[task_id].delegated_by
    while parent is not None:
        depth, parent = depth + 1, sched.tasks[parent].delegated_by
    return depth
