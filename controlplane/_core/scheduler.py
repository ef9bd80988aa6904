"""The mission scheduler: which task runs next, on which agent, and what a result or failure changes.

Pure logic, no Ray, no clock: every call takes `now_s`. The supervisor actor is a thin shell that
turns `Assignment`s into agent calls and reports back with `on_success` / `on_failure`.

Fairness: ready tasks are taken in the order they became ready (declaration order at start), per
target queue (one queue per agent, one per role); across queues the oldest head goes first, so no
agent or role starves another. `AgentSlots` picks which agent of a target takes a task.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from controlplane._core.agent_slots import AgentSlots
from controlplane._core.dag import Dag
from controlplane._core.events import TERMINAL, EventLog, MissionStatus, TaskStatus
from controlplane._core.retry import GiveUp, RetryPolicy, retry_decision
from controlplane._core.task_record import Assignment, TaskRecord
from controlplane._core.timeline import AttemptDetail
from controlplane.config.mission import AgentSpec, Policies, TaskSpec

if TYPE_CHECKING:
    from controlplane._core.recovery import TaskState


class Scheduler:
    """Owns task states; returns assignments; applies retries, fallback and the failure policy."""

    def __init__(self, tasks: Sequence[TaskSpec], agents: Sequence[AgentSpec], policies: Policies,
                 events: EventLog, now_s: float) -> None:
        self.policies = policies
        self.events = events
        self.dag = Dag({t.id: t.depends_on for t in tasks})
        self.tasks = {t.id: TaskRecord(spec=t) for t in tasks}
        self.slots = AgentSlots(agents)
        self._left = {t.id: len(t.depends_on) for t in tasks}
        self._queues: dict[str, deque[str]] = {}
        self._retry_heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._open = len(self.tasks)
        self._running_ids: set[str] = set()
        self.stopped: tuple[MissionStatus, str] | None = None
        self._holds: dict[str, int] = {}
        self._held_children: dict[str, list[str]] = {}
        self._context: dict[str, Any] = {}
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
        return self.slots.in_flight()

    def context_for(self, task_id: str) -> dict[str, Any]:
        """The outputs of a task's dependencies, by task id; a settled conflict's finding in place of an output
        it overruled (`replace_context`)."""
        return {d: self._context.get(d, self.tasks[d].output) for d in self.tasks[task_id].spec.depends_on}

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
                 if q and self.slots.free_agent(target)]
        heapq.heapify(heads)
        out: list[Assignment] = []
        while heads and (max_new is None or len(out) < max_new):
            _, target = heapq.heappop(heads)
            queue, agent = self._queues[target], self.slots.free_agent(target)
            if not queue or agent is None:
                continue
            out.append(self._start(queue.popleft(), agent, now_s))
            if queue and self.slots.free_agent(target):
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
        record.model_calls += int(result.get("model_calls", 0))
        record.tool_calls += int(result.get("tool_calls", 0))
        record.loop = result.get("loop")
        record.error = None
        tokens = int(result.get("prompt_tokens", 0)) + int(result.get("completion_tokens", 0))
        detail = self._charge(record, result.get("detail"))
        self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, attempt=attempt,
                         data={"tokens": tokens, "output": record.output, "usd": float(result.get("usd", 0.0)),
                               "prompt_tokens": int(result.get("prompt_tokens", 0)),
                               "completion_tokens": int(result.get("completion_tokens", 0)),
                               "latency_s": round(now_s - (record.details.get("attempt_start_s") or now_s), 4),
                               **detail})
        if task_id in self._holds:
            self._held_children[task_id] = list(self.dag.dependents[task_id])
        else:
            self._satisfy(self.dag.dependents[task_id], now_s)
        return True

    def hold(self, task_id: str) -> None:
        """Keep the task's dependents that have not started from starting until `release` (its finding is in a
        conflict being settled). Holds nest."""
        if task_id not in self.tasks:
            return
        self._holds[task_id] = self._holds.get(task_id, 0) + 1
        if self._holds[task_id] == 1 and self.tasks[task_id].status == TaskStatus.SUCCEEDED:
            children = [c for c in self.dag.dependents[task_id] if self.tasks[c].status == TaskStatus.PENDING]
            for child in children:
                self._left[child] += 1
            self._held_children[task_id] = children

    def release(self, task_id: str, now_s: float) -> None:
        """End one `hold`; after the last, the dependents it held back become ready as their needs allow."""
        if task_id not in self._holds:
            return
        self._holds[task_id] -= 1
        if self._holds[task_id] == 0:
            del self._holds[task_id]
            self._satisfy(self._held_children.pop(task_id, []), now_s)

    def replace_context(self, task_id: str, finding: Any) -> None:
        """Dependents dispatched from now on see `finding` in place of the task's output."""
        self._context[task_id] = finding

    def _satisfy(self, children: Sequence[str], now_s: float) -> None:
        for child in children:
            self._left[child] -= 1
            if self._left[child] == 0 and self.tasks[child].status == TaskStatus.PENDING:
                self._make_ready(child, now_s)

    def on_failure(self, task_id: str, attempt: int, error: str, now_s: float, *, retryable: bool = True,
                   tokens: tuple[int, int] = (0, 0), cause: BaseException | None = None,
                   detail: Mapping[str, Any] | None = None) -> bool:
        """Retry as the cause says (controlplane._core.retry), then the fallback agent, then the failure
        policy. `cause` is the exception (its class's `retryable` decides); `retryable=False` forbids a
        retry whatever the cause. `detail` is what the failed attempt spent (`AttemptDetail` fields), when
        the agent could say. False if the attempt is stale."""
        record = self._current(task_id, attempt)
        if record is None:
            return False
        self._release(record)
        record.error = error
        record.prompt_tokens += tokens[0]
        record.completion_tokens += tokens[1]
        spent = {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], **self._charge(record, detail)}
        decision = GiveUp(reason="the caller ruled out a retry") if not retryable else retry_decision(
            cause if cause is not None else RuntimeError(error), record.round_attempts, self._retry_policy(record),
            now_s)
        if not isinstance(decision, GiveUp):
            self._set(record, TaskStatus.RETRYING)
            record.ready_at_s = decision.at_s
            record.details["changes"] = decision.changes
            heapq.heappush(self._retry_heap, (record.ready_at_s, attempt, task_id))
            self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, attempt=attempt,
                             message=f"{error}; retry in {decision.at_s - now_s:.2f} s",
                             data={"error": error, "retry_at_s": decision.at_s, "why": decision.reason,
                                   "changes": decision.changes, **spent})
        elif record.spec.fallback_agent and not record.on_fallback:
            record.on_fallback, record.round_attempts = True, 0
            record.details.pop("changes", None)
            self.events.emit(now_s, "task", "fallback", task=task_id, agent=record.spec.fallback_agent,
                             attempt=attempt, message=f"{error}; {record.agent} gave up, fallback agent takes it",
                             data={"error": error, "from_agent": record.agent, "why": decision.reason, **spent})
            self._make_ready(task_id, now_s)
        else:
            self._finish(record, TaskStatus.FAILED, now_s)
            self.events.emit(now_s, "task", record.status, task=task_id, agent=record.agent, attempt=attempt,
                             message=error, data={"error": error, "why": decision.reason, **spent})
            self._apply_failure_policy(task_id, now_s)
        return True

    def hold_agent(self, agent: str) -> None:
        """Give the agent no new task until `release_agent` (its actor is being restarted: a task sent to it now
        would only fail and use up a retry)."""
        self.slots.hold(agent)

    def release_agent(self, agent: str) -> None:
        self.slots.release(agent)

    def add_task(self, spec: TaskSpec, *, delegated_by: str, now_s: float, call_key: str | None = None) -> None:
        """Add a delegated task to the running DAG; it needs nothing, so it is ready at once. `call_key`: the
        `delegate` call that adds it, recorded so that the same call made again finds it.

        Raises ValueError for an id in use or a target no agent serves (the caller checks delegation bounds)."""
        if spec.id in self.tasks:
            raise ValueError(f"task id {spec.id!r} is already in the mission")
        target = spec.agent or f"role:{spec.role}"
        if not self.slots.serves(target):
            raise ValueError(f"no agent serves {target!r}")
        self.tasks[spec.id] = TaskRecord(spec=spec, delegated_by=delegated_by)
        self._counts[TaskStatus.PENDING] += 1
        self.dag.deps[spec.id] = ()
        self.dag.dependents[spec.id] = []
        self._left[spec.id] = 0
        self._open += 1
        self.events.emit(now_s, "task", "delegated", task=spec.id, agent=spec.agent,
                         message=f"added by {delegated_by}" + ("" if spec.agent else f" for role {spec.role!r}"),
                         data={"parent": delegated_by, "task": spec.model_dump(mode="json"),
                               **({"call_key": call_key} if call_key else {})})
        self._make_ready(spec.id, now_s)

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

    def restore(self, saved: Mapping[str, TaskState], now_s: float) -> list[Assignment]:
        """Continue from the state recovered from the mission log (controlplane._core.recovery.replay).

        Call on a new Scheduler before any dispatch. Finished tasks keep their outputs and are never run
        again; attempts that were in flight come back as assignments under their recorded attempt numbers
        (the supervisor relaunches them); retries wait for their recorded times; the rest become ready
        when their dependencies are done. Emits events only for what the log does not hold yet: each relaunch
        (a `running` event marked `resumed`), and the failure policy of a failed task whose consequences were
        cut off (skipped dependents, or the mission stopped)."""
        self._queues.clear()
        self._retry_heap.clear()
        self._open = len(self.tasks)
        for task_id, record in self.tasks.items():
            state = saved.get(task_id)
            record.status = TaskStatus.PENDING if state is None else TaskStatus(state.status)
            if state is not None:
                state.apply_to(record)
            if record.status in TERMINAL:
                self._open -= 1
        self._counts = Counter(record.status for record in self.tasks.values())
        relaunch = []
        for task_id, record in self.tasks.items():
            self._left[task_id] = sum(self.tasks[d].status != TaskStatus.SUCCEEDED for d in record.spec.depends_on)
            if record.status == TaskStatus.RUNNING:
                relaunch.append(self._resume(record, now_s))
            elif record.status == TaskStatus.RETRYING:
                heapq.heappush(self._retry_heap, (record.ready_at_s, record.attempts, task_id))
            elif record.status in (TaskStatus.PENDING, TaskStatus.READY):
                self._set(record, TaskStatus.PENDING)
                if self._left[task_id] == 0:
                    self._make_ready(task_id, now_s, quiet=True)
        for task_id, record in self.tasks.items():
            if record.status == TaskStatus.FAILED and self.stopped is None:
                self._apply_failure_policy(task_id, now_s)
        relaunch = [a for a in relaunch if self.tasks[a.task].status == TaskStatus.RUNNING]
        for a in relaunch:
            self.events.emit(now_s, "task", TaskStatus.RUNNING, task=a.task, agent=a.agent, attempt=a.attempt,
                             data={"deadline_s": a.deadline_s, "changes": a.changes, "resumed": True})
        return relaunch

    # -- internals -------------------------------------------------------------------------------------
    @staticmethod
    def _charge(record: TaskRecord, detail: Mapping[str, Any] | None) -> dict[str, Any]:
        """Add an attempt's dollars to its task; return its detail as event data (queue/model/tool seconds...)."""
        if not detail:
            return {}
        parsed = AttemptDetail.from_data(detail)
        record.usd += parsed.usd
        return parsed.to_data()

    def _retry_policy(self, record: TaskRecord) -> RetryPolicy:
        return RetryPolicy(retries=record.spec.retries, backoff_s=self.policies.retry_backoff_s,
                           backoff_max_s=self.policies.retry_backoff_max_s)

    def _resume(self, record: TaskRecord, now_s: float) -> Assignment:
        agent = record.agent or ""
        record.deadline_s = now_s + record.spec.timeout_s
        record.details["attempt_start_s"] = now_s
        self.slots.resume(agent)
        self._running_ids.add(record.spec.id)
        return Assignment(task=record.spec.id, agent=agent, attempt=record.attempts, deadline_s=record.deadline_s,
                          changes=record.details.pop("changes", {}))

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

    def _make_ready(self, task_id: str, now_s: float, *, quiet: bool = False) -> None:
        record = self.tasks[task_id]
        self._set(record, TaskStatus.READY)
        record.ready_seq = self._seq
        self._seq += 1
        self._queues.setdefault(self._target(record), deque()).append(task_id)
        if not quiet:
            self.events.emit(now_s, "task", record.status, task=task_id, agent=record.spec.agent)

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
        self.slots.start(agent)
        self._running_ids.add(task_id)
        changes = record.details.pop("changes", {})
        self.events.emit(now_s, "task", record.status, task=task_id, agent=agent, attempt=record.attempts,
                         data={"deadline_s": record.deadline_s, "changes": changes})
        return Assignment(task=task_id, agent=agent, attempt=record.attempts, deadline_s=record.deadline_s,
                          changes=changes)

    def _set(self, record: TaskRecord, status: TaskStatus) -> None:
        self._counts[record.status] -= 1
        self._counts[status] += 1
        record.status = status

    def _release(self, record: TaskRecord) -> None:
        if record.agent is not None and record.status == TaskStatus.RUNNING:
            self.slots.done(record.agent)
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
