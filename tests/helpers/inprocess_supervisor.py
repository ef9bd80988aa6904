"""The real SupervisorActor class driven in this process, without Ray: its loop, scheduler, desks and mission log
run for real; its agents are stand-ins (name -> an object with `run.remote(...)`). For tests and bench_scale."""

from __future__ import annotations

import time
from typing import Any

import actors._supervisor as supervisor_module
from actors._supervisor import SupervisorActor
from controlplane._core.events import MissionStatus
from controlplane._core.prompts import StepResult
from controlplane._core.scheduler import Scheduler
from controlplane.config.mission import MissionSpec


class InstantAgent:
    """An agent whose `run.remote(...)` answers at once with a succeeded step (what Ray's actor call would return,
    minus the hop)."""

    def __init__(self) -> None:
        self.run = self
        self._result = StepResult(output="ok", prompt_tokens=10, completion_tokens=2, attempt=1, started_at_s=0.0,
                                  ended_at_s=0.0, model_latency_s=0.0, memory_hits=0, posted=0)

    def remote(self, spec: Any, attempt: int, context: Any, token: str, trace: Any = None,
               slack_s: float | None = None) -> Any:
        async def answer() -> StepResult:
            return self._result
        return answer()


class _NoMetrics:
    """Ray's metrics need a Ray worker; this process is not one."""

    def __init__(self, *_: Any) -> None: ...
    def attempt_done(self, *_: Any, **__: Any) -> None: ...
    def publish(self, *_: Any) -> None: ...


async def run_supervised(spec: MissionSpec, agents: dict[str, Any], run_dir: str, *,
                         mission_id: str) -> tuple[Scheduler, float]:
    """Run `spec`'s tasks through the supervisor's loop, its mission log in `run_dir`; the scheduler at the end and
    the loop's seconds (from the scheduler's creation to its last task)."""
    real_metrics, supervisor_module.MissionMetrics = supervisor_module.MissionMetrics, _NoMetrics
    try:
        sup = SupervisorActor.__ray_metadata__.modified_class(
            spec, mission_id=mission_id, router=None, namespace="in-process", mission_key=b"k" * 32, run_dir=run_dir)
    finally:
        supervisor_module.MissionMetrics = real_metrics
    sup.agents = agents
    began = time.perf_counter()
    sup.sched = Scheduler(list(spec.tasks), spec.agents, spec.policies, sup.log, time.time())
    sup.phase = MissionStatus.RUNNING
    try:
        await sup._loop()
        return sup.sched, time.perf_counter() - began
    finally:
        sup.writer.close()
