"""The supervisor's delegation desk: an agent's `delegate` tool adds a child task to the running DAG and waits
for its outcome, within the mission's `delegation` limits (depth and task count)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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
                 is_agent: Callable[[str], bool], wake: Callable[[], None]) -> None:
        self._spec, self._scheduler, self._is_agent, self._wake = spec, scheduler, is_agent, wake
        self._depth: dict[str, int] = {}
        self._waiting: dict[str, asyncio.Future] = {}

    async def delegate(self, parent: str, to: str, description: str) -> Any:
        """Add a child task of `parent` for agent or role `to`, wait for it, and return its output. A refusal or
        the child's failure raises a `ToolError`, which the calling model reads as the tool's error."""
        sched = self._scheduler()
        if sched is None or parent not in sched.tasks:
            raise ToolError(tool="delegate", why=f"task {parent!r} is not running in this mission",
                            fix="delegate only from a running task")
        depth = self._depth.get(parent, 0)
        limits = self._spec.delegation
        refused = check_delegation(depth=depth, max_depth=limits.max_depth, task_count=len(sched.tasks),
                                   max_tasks=limits.max_tasks)
        if refused:
            raise ToolError(tool="delegate", why=refused, fix="do this part yourself")
        parent_spec = sched.tasks[parent].spec
        child_id = f"{parent}.d{sum(1 for t in sched.tasks.values() if t.delegated_by == parent) + 1}"
        target = {"agent": to} if self._is_agent(to) else {"role": to}
        child = TaskSpec(id=child_id, description=description, timeout_s=parent_spec.timeout_s,
                         topic=f"{parent_spec.topic or parent}-{child_id}", **target)
        sched.add_task(child, delegated_by=parent, now_s=time.time())
        self._depth[child_id] = depth + 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[child_id] = waiter
        self._wake()
        return await waiter

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
