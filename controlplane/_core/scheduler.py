"""The mission scheduler: which task runs next, on which agent, and what a result or failure changes.

Pure logic, no Ray, no clock: every call takes `now_s`. The supervisor actor is a thin shell that
turns `Assignment`s into agent calls and reports back with `on_success` / `on_failure`.

Fairness: ready tasks are taken in the order they became ready (declaration order at start), per
target queue (one queue per agent, one per role); across queues the oldest head goes first, so no
agent or role starves another. A role task goes to the least-loaded agent of that role, ties to the
one assigned least recently.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane._core.dag import Dag
from controlplane._core.events import TERMINAL, EventLog, MissionStatus, TaskStatus
from controlplane._core.conflicts import backoff_s
from controlplane.config.mission import AgentSpec, Policies, TaskSpec


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """Run `task` on `agent`; `attempt` counts every attempt of the task from 1."""

    task: str
    agent: str
    attempt: int
    deadline_s: float


@dataclass(kw_only=True)
class TaskRecord:
    """The live state of one task."""

    spec: TaskSpec
    status: TaskStatus = TaskStatus.PENDING
    agent: str | None = None
    attempts: int = 0
    round_attempts: int = 0
    on_fallback: bool = False
    ready_seq: int = 0
    ready_at_s: float = 0.0
    deadline_s: float = float("inf")
    started_at_s: float | None = None
    ended_at_s: float | None = None
    output: Any = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.spec.id, "agent": self.agent, "status": str(self.status), "output": self.output,
                "attempts": self.attempts, "error": self.error,
                "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
                "started_at": self.started_at_s, "ended_at": self.ended_at_s, "depends_on": self.spec.depends_on}


class Scheduler:
    """Owns task states; returns assignments; applies retries, fallback and the failure policy."""

    def __init__(self, tasks: Sequence[TaskSpec], agents: Sequence[AgentSpec], policies: Policies,
                 events: EventLog, now_s: float) -> None:
        self.policies = policies
        self.events = events
        self.dag = Dag({t.id: t.depends_on for t in tasks})
        self.tasks = {t.id: TaskRecord(spec=t) for t in tasks}
        self.agents = {a.name: a for a in agents}
        self.roles = {a.role: [b.name for b in agents if b.role == a.role] for a in agents}
        self.running: dict[str, int] = {a.name: 0 for a in agents}
        self._last_assigned = {a.name: -1 for a in agents}
        self._assign_count = 0
        self._left = {t.id: len(t.depends_on) for t in tasks}
        self._queues: dict[str, deque[str]] = {}
        self._retry_heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._open = len(self.tasks)
        self._running_ids: set[str] = set()
        self.stopped: tuple[MissionStatus, str] | None = None
        self._counts = Counter({TaskStatus.PENDING: len(self.tasks)})
        for task in tasks:
            if not task.depends_on:
                self._make_ready(task.id, now_s)

    # -- queries ---------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.stopped is not None or self._open == 0

    def status(self) -> MissionStatus:
        if self.stopped is not None:
            return self.stopped[0]
        if not self.finished:
            return MissionStatus.RUNNING
        ok = all(r.status == TaskStatus.SUCCEEDED for r in self.tasks.values())
        return MissionStatus.SUCCEEDED if ok else MissionStatus.FAILED

    def reason(self) -> str:
        if self.stopped is not None:
            return self.stopped[1]
        counts = self.counts()
        return ", ".join(f"{n} {s}" for s, n in counts.items() if n)

    def counts(self) -> dict[str, int]:
        """Tasks by state; kept as states change, so asking costs nothing at any mission size."""
        return {str(s): self._counts[s] for s in TaskStatus}

    def in_flight(self) -> int:
        return sum(self.running.values())

    def context_for(self, task_id: str) -> dict[str, Any]:
        """The outputs of a task's dependencies, by task id."""
        return {d: self.tasks[d].output for d in self.tasks[task_id].spec.depends_on}

    def expired(self, now_s: float) -> list[str]:
        """Running tasks past their deadline (the supervisor aborts them and reports a failure)."""
        return sorted(t for t in self._running_ids if self.tasks[t].deadline_s <= now_s)

    def next_wakeup_s(self) -> float | None:
        """The earliest deadline or retry time, or None when only results can change anything."""
        times = [self.tasks[t].deadline_s for t in self._running_ids]
        if self._retry_heap:
            times.append(self._retry_heap[0][0])
        finite = [t for t in times if t != float("inf")]
        return min(finite) if finite else None

    # -- decisions -------------------------------------------------------------------------------------
    def dispatch(self, now_s: float, *, max_new: int | None = None) -> list[Assignment]:
        """Assign ready tasks to agents with free capacity, oldest first; at most `max_new`."""
        if self.stopped is not None:
            return []
        while self._retry_heap and self._retry_heap[0][0] <= now_s:
            _, _, task_id = heapq.heappop(self._retry_heap)
            self._make_ready(task_id, now_s)
        heads = [(self.tasks[q[0]].ready_seq, target) for target, q in self._queues.items()
                 if q and self._free_agent(target)]
        heapq.heapify(heads)
        out: list[Assignment] = []
        while heads and (max_new is None or len(out) < max_new):
            _, target = heapq.heappop(heads)
            queue, agent = self._queues[target], self._free_agent(target)
            if not queue or agent is None:
                continue
            out.append(self._start(queue.popleft(), agent, now_s))
            if queue and self._free_agent(target):
                heapq.heappush(heads, (self.tasks[queue[0]].ready_seq, target))
        return out

    def on_success(self, task_id: str, attempt: int, result: dict[str, Any], now_s: float) -> bool:
        """Record a result; dependents whose needs are all met become ready. False if the attempt is stale."""
        record = self._current(task_id, attempt)
        if record is None:
            return False
        self._release(record)
        self._finish(record, TaskStatus.SUCCEEDED, now_s)
        record.output = result.get("output")
        record.prompt_tokens += int(result.get("prompt_tokens", 0))
        record.completion_tokens += int(result.get("completion_tokens", 0))
        record.error = None
        tokens = int(result.get("prompt_tokens", 0)) + int(result.get("completion_tokens", 0))
        self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, attempt=attempt,
                         data={"tokens": tokens, "latency_s": round(now_s - (record.details.get("attempt_start_s")
                                                                          or now_s), 4)})
        for child in self.dag.dependents[task_id]:
            self._left[child] -= 1
            if self._left[child] == 0 and self.tasks[child].status == TaskStatus.PENDING:
                self._make_ready(child, now_s)
        return True

    def on_failure(self, task_id: str, attempt: int, error: str, now_s: float, *, retryable: bool = True,
                   tokens: tuple[int, int] = (0, 0)) -> bool:
        """Retry with backoff, then the fallback agent, then the failure policy. False if stale."""
        record = self._current(task_id, attempt)
        if record is None:
            return False
        self._release(record)
        record.error = error
        record.prompt_tokens += tokens[0]
        record.completion_tokens += tokens[1]
        if retryable and record.round_attempts <= record.spec.retries:
            wait = backoff_s(record.round_attempts, base_s=self.policies.retry_backoff_s,
                             max_s=self.policies.retry_backoff_max_s)
            self._set(record, TaskStatus.RETRYING)
            record.ready_at_s = now_s + wait
            heapq.heappush(self._retry_heap, (record.ready_at_s, attempt, task_id))
            self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, attempt=attempt,
                             message=f"{error}; retry in {wait:.2f} s")
        elif record.spec.fallback_agent and not record.on_fallback:
            record.on_fallback, record.round_attempts = True, 0
            self.events.emit(now_s, "task", "fallback", task=task_id, agent=record.spec.fallback_agent,
                             attempt=attempt, message=f"{error}; {record.agent} gave up, fallback agent takes it")
            self._make_ready(task_id, now_s)
        else:
            self._finish(record, TaskStatus.FAILED, now_s)
            self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, attempt=attempt,
                             message=error)
            self._apply_failure_policy(task_id, now_s)
        return True

    def stop(self, status: MissionStatus, reason: str, now_s: float) -> list[str]:
        """End the mission: every unfinished task is cancelled. Returns the tasks that were running."""
        running = sorted(self._running_ids)
        for task_id, record in self.tasks.items():
            if record.status not in TERMINAL:
                self._release(record)
                self._finish(record, TaskStatus.CANCELLED, now_s)
                self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, message=reason)
        self._queues.clear()
        self._retry_heap.clear()
        if self.stopped is None:
            self.stopped = (status, reason)
        return running

    # -- internals -------------------------------------------------------------------------------------
    def _apply_failure_policy(self, task_id: str, now_s: float) -> None:
        if self.policies.on_failure == "fail_mission":
            self.stop(MissionStatus.FAILED, f"task {task_id!r} failed (policy fail_mission)", now_s)
            return
        for child in self.dag.descendants(task_id):
            record = self.tasks[child]
            if record.status not in TERMINAL:
                self._finish(record, TaskStatus.SKIPPED, now_s)
                self.events.emit(now_s, "task", record.status, task=child,
                                 message=f"depends on failed task {task_id!r} (policy skip_dependents)")

    def _target(self, record: TaskRecord) -> str:
        if record.on_fallback:
            return record.spec.fallback_agent or ""
        return record.spec.agent or f"role:{record.spec.role}"

    def _make_ready(self, task_id: str, now_s: float) -> None:
        record = self.tasks[task_id]
        self._set(record, TaskStatus.READY)
        record.ready_seq = self._seq
        self._seq += 1
        self._queues.setdefault(self._target(record), deque()).append(task_id)
        self.events.emit(now_s, "task", record.status, task=task_id, agent=record.spec.agent)

    def _free_agent(self, target: str) -> str | None:
        names = self.roles[target[5:]] if target.startswith("role:") else [target]
        free = [n for n in names if self.running[n] < self.agents[n].max_concurrency]
        return min(free, key=lambda n: (self.running[n], self._last_assigned[n])) if free else None

    def _start(self, task_id: str, agent: str, now_s: float) -> Assignment:
        record = self.tasks[task_id]
        self._set(record, TaskStatus.RUNNING)
        record.agent = agent
        record.attempts += 1
        record.round_attempts += 1
        record.deadline_s = now_s + record.spec.timeout_s
        record.details["attempt_start_s"] = now_s
        if record.started_at_s is None:
            record.started_at_s = now_s
        self.running[agent] += 1
        self._running_ids.add(task_id)
        self._last_assigned[agent] = self._assign_count
        self._assign_count += 1
        self.events.emit(now_s, "task", record.status, task=task_id, agent=agent, attempt=record.attempts)
        return Assignment(task=task_id, agent=agent, attempt=record.attempts, deadline_s=record.deadline_s)

    def _set(self, record: TaskRecord, status: TaskStatus) -> None:
        self._counts[record.status] -= 1
        self._counts[status] += 1
        record.status = status

    def _release(self, record: TaskRecord) -> None:
        if record.agent is not None and record.status == TaskStatus.RUNNING:
            self.running[record.agent] -= 1
            self._running_ids.discard(record.spec.id)
        record.deadline_s = float("inf")

    def _finish(self, record: TaskRecord, status: TaskStatus, now_s: float) -> None:
        self._set(record, status)
        record.ended_at_s = now_s
        self._open -= 1

    def _current(self, task_id: str, attempt: int) -> TaskRecord | None:
        record = self.tasks.get(task_id)
        if record is None or record.status != TaskStatus.RUNNING or record.attempts != attempt:
            return None
        return record
