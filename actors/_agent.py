"""AgentActor: one agent of a mission. A step is memory.search -> router chat -> memory.post -> result."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from controlplane._core.prompts import StepResult, as_text, build_messages, output_schema, parse_output
from controlplane.config.mission import AgentSpec, TaskSpec

logger = logging.getLogger(__name__)
POST_CHARS = 2000


@ray.remote(num_cpus=0)
class AgentActor:
    """Runs task steps for one agent. Stateless between steps; the supervisor owns the mission state."""

    def __init__(self, *, mission_id: str, goal: str, agent: AgentSpec, router: Any, memory: Any = None,
                 log_content: bool = False) -> None:
        self.mission_id = mission_id
        self.goal = goal
        self.agent = agent
        self.router = router
        self.memory = memory
        self.log_content = log_content

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

    async def run(self, task: TaskSpec, attempt: int, context: dict[str, Any], token: str) -> StepResult:
        """One step of `task`, under the capability token the supervisor issued for it (the router and memory
        take the agent's identity from it). Raises on failure (the supervisor retries or falls back)."""
        from serving import ChatMessage, ChatRequest

        started = time.time()
        hits = await self._recall(task, token)
        messages = build_messages(self.agent, goal=self.goal, task=task, context=context, memory_hits=hits)
        if self.log_content:
            logger.info("agent %s task %s prompt: %s", self.agent.name, task.id, messages)
        request = ChatRequest(
            model=self.agent.model, messages=[ChatMessage(**m) for m in messages],
            max_tokens=self.agent.max_tokens, temperature=self.agent.temperature,
            json_schema=output_schema(task), timeout_s=task.timeout_s, token=token)
        called = time.time()
        reply = await self.router.chat(request)
        latency = time.time() - called
        output = parse_output(task, reply.text)
        if self.log_content:
            logger.info("agent %s task %s output: %s", self.agent.name, task.id, reply.text)
        posted = await self._post(task, output, token)
        return StepResult(output=output, prompt_tokens=reply.usage.prompt_tokens,
                          completion_tokens=reply.usage.completion_tokens, usd=reply.usage.usd, attempt=attempt,
                          started_at_s=started, ended_at_s=time.time(), model_latency_s=latency,
                          memory_hits=len(hits), posted=posted)

    async def _recall(self, task: TaskSpec, token: str) -> list[str]:
        if self.memory is None or "memory.search" not in self.agent.tools or self.agent.memory_k == 0:
            return []
        from memory import SearchFilters

        scored = []
        for namespace in self.agent.memory.read:
            found = await self.memory.search.remote(
                task.description, k=self.agent.memory_k, namespace=namespace, token=token,
                filters=SearchFilters(mission_id=self.mission_id))
            scored += [(hit.score, f"{hit.entry.agent_id}: {hit.entry.text}") for hit in found[0]]
        scored.sort(key=lambda pair: -pair[0])
        return [text for _, text in scored[: self.agent.memory_k]]

    async def _post(self, task: TaskSpec, output: Any, token: str) -> int:
        if self.memory is None or "memory.post" not in self.agent.tools or not self.agent.memory.write:
            return 0
        from memory import NewEntry

        entry = NewEntry(mission_id=self.mission_id, agent_id=self.agent.name, task_id=task.id,
                         namespace=self.agent.memory.write[0], topic=task.topic or task.id,
                         text=as_text(output)[:POST_CHARS] or "(empty)", metadata={"role": self.agent.role})
        receipts = await self.memory.post.remote([entry], token=token)
        return len(receipts)
