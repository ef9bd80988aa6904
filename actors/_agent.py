"""AgentActor: one agent of a mission. A step is memory.search -> router chat -> memory.post -> result."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from actors._observe import AttemptObserver, configure_process
from controlplane import _tracing
from controlplane._core.prompts import StepResult, as_text, build_messages, output_schema, parse_output
from controlplane._tracing import TracingConfig
from controlplane.config.mission import AgentSpec, TaskSpec

logger = logging.getLogger(__name__)
POST_CHARS = 2000


@ray.remote(num_cpus=0)
class AgentActor:
    """Runs task steps for one agent. Stateless between steps; the supervisor owns the mission state."""

    def __init__(self, *, mission_id: str, goal: str, agent: AgentSpec, router: Any, memory: Any = None,
                 log_content: bool = False, tracing: TracingConfig | None = None) -> None:
        self.mission_id = mission_id
        self.goal = goal
        self.agent = agent
        self.router = router
        self.memory = memory
        self.log_content = log_content
        self.tracing = tracing
        configure_process(tracing, "controlplane.agent")

    async def ready(self) -> dict[str, Any]:
        """Where Ray placed this agent: node and GPU ids (logical GPUs included).

        Also warms this process's path to the router (a cheap call that runs no model), so the first
        task does not pay for setting up the Serve handle."""
        try:
            await self.router.breaker_state(self.agent.model)
        except Exception as exc:  # an unknown model or a router hiccup shows up on the first real call
            logger.info("agent %s: router warm-up failed: %s", self.agent.name, exc)
        context = ray.get_runtime_context()
        return {"agent": self.agent.name, "node_id": context.get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    async def flush_traces(self) -> None:
        """Export this agent's queued spans (the supervisor calls it before the mission's actors are killed)."""
        _tracing.force_flush()

    async def run(self, task: TaskSpec, attempt: int, context: dict[str, Any],
                  trace: dict[str, str] | None = None) -> StepResult:
        """One step of `task`, in an `invoke_agent` span under the supervisor's `trace` carrier. Raises on
        failure (the supervisor retries or falls back); the exception carries the attempt's detail."""
        with AttemptObserver(agent=self.agent.name, mission_id=self.mission_id, task_id=task.id, attempt=attempt,
                             trace=trace, sink=self.tracing) as observer:
            return await self._step(task, attempt, context, observer)

    async def _step(self, task: TaskSpec, attempt: int, context: dict[str, Any],
                    observer: AttemptObserver) -> StepResult:
        from serving import ChatMessage, ChatRequest, Identity

        started = time.time()
        hits = await self._recall(task)
        messages = build_messages(self.agent, goal=self.goal, task=task, context=context, memory_hits=hits)
        if self.log_content:
            logger.info("agent %s task %s prompt: %s", self.agent.name, task.id, messages)
        request = ChatRequest(
            model=self.agent.model, messages=[ChatMessage(**m) for m in messages],
            max_tokens=self.agent.max_tokens, temperature=self.agent.temperature,
            json_schema=output_schema(task), timeout_s=task.timeout_s,
            identity=Identity(mission_id=self.mission_id, agent_id=self.agent.name, priority="normal"),
            **observer.request_trace())
        called = time.time()
        reply = await self.router.chat(request)
        latency = time.time() - called
        observer.chat_done(reply)
        output = parse_output(task, reply.text)
        if self.log_content:
            logger.info("agent %s task %s output: %s", self.agent.name, task.id, reply.text)
        posted = await self._post(task, output)
        return StepResult(output=output, prompt_tokens=reply.usage.prompt_tokens,
                          completion_tokens=reply.usage.completion_tokens, attempt=attempt, started_at_s=started,
                          ended_at_s=time.time(), model_latency_s=latency, memory_hits=len(hits), posted=posted,
                          detail=observer.detail())

    async def _recall(self, task: TaskSpec) -> list[str]:
        if self.memory is None or "memory.search" not in self.agent.tools or self.agent.memory_k == 0:
            return []
        from memory import SearchFilters

        scored = []
        for namespace in self.agent.memory.read:
            with _tracing.memory("search_memory", namespace, agent=self.agent.name, query=task.description):
                found = await self.memory.search.remote(
                    task.description, k=self.agent.memory_k, namespace=namespace, as_agent=self.agent.name,
                    filters=SearchFilters(mission_id=self.mission_id))
            scored += [(hit.score, f"{hit.entry.agent_id}: {hit.entry.text}") for hit in found[0]]
        scored.sort(key=lambda pair: -pair[0])
        return [text for _, text in scored[: self.agent.memory_k]]

    async def _post(self, task: TaskSpec, output: Any) -> int:
        if self.memory is None or "memory.post" not in self.agent.tools or not self.agent.memory.write:
            return 0
        from memory import NewEntry

        entry = NewEntry(mission_id=self.mission_id, agent_id=self.agent.name, task_id=task.id,
                         namespace=self.agent.memory.write[0], topic=task.topic or task.id,
                         text=as_text(output)[:POST_CHARS] or "(empty)", metadata={"role": self.agent.role})
        with _tracing.memory("update_memory", entry.namespace, agent=self.agent.name):
            receipts = await self.memory.post.remote([entry], as_agent=self.agent.name)
        return len(receipts)
