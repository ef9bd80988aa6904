"""The slack a task's model calls carry to the router under `policies.critical_path_first`: how much later the task
could finish without delaying the mission. Pure logic."""

from __future__ import annotations

from controlplane._core.scheduler import Scheduler


class TaskSlack:
    """A task's slack in seconds: its slack in the planned DAG counted in tasks (every task one), times the mean time
    of the attempts that succeeded so far (1 s before any). A delegated task has its parent's."""

    def __init__(self) -> None:
        self._in_tasks: dict[str, float] | None = None
        self._succeeded_s = 0.0
        self._succeeded = 0

    def attempt_succeeded(self, seconds: float) -> None:
        self._succeeded_s += seconds
        self._succeeded += 1

    def of(self, scheduler: Scheduler, task_id: str) -> float:
        if self._in_tasks is None:
            self._in_tasks = scheduler.dag.slack(dict.fromkeys(scheduler.dag.deps, 1.0))
        record = scheduler.tasks[task_id]
        while task_id not in self._in_tasks and record.delegated_by is not None:
            task_id, record = record.delegated_by, scheduler.tasks[record.delegated_by]
        mean_s = self._succeeded_s / self._succeeded if self._succeeded else 1.0
        return self._in_tasks.get(task_id, 0.0) * mean_s
