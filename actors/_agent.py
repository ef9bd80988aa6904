"""AgentActor: one agent of a mission. It acts: `kind: llm` runs the tool-calling loop of
`controlplane._core.agent_loop` (the decisions are there; this shell does the router calls and runs the
tools), `kind: python` runs the user's `async def run(task, ctx)` with governed parts in `ctx`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any

import ray

from actors._context import AgentContext
from actors._tools import Builtin, ToolRunner
from controlplane._core.agent_loop import AgentLoop
from controlplane._core.builtins import MEMORY_POST_TOOL, MEMORY_SEARCH_TOOL, delegate_tool
from controlplane._core.entrypoints import load_python_agent, python_agent_run
from controlplane._core.loop_types import Finished, LoopEvent, LoopLimits, RunTools, Stopped
from controlplane._core.prompts import StepResult, as_text, build_messages
from controlplane._core.tools import ToolSpec, allowed, tool_from_decl
from controlplane.config.mission import AgentSpec, MissionSpec, TaskSpec
from controlplane.config._tools import ToolDecl
from controlplane.errors import AgentStopped

logger = logging.getLogger(__name__)
POST_CHARS = 2000
GRAMMAR_SLACK_TOKENS = 32


def delegate_targets(spec: MissionSpec, agent: AgentSpec) -> list[str]:
    """Whom `agent` may delegate to: the other agents, and the roles another agent plays (never only itself)."""
    others = [a for a in spec.agents if a.name != agent.name]
    return sorted({a.name for a in others} | {a.role for a in others})


@dataclasses.dataclass
class _Usage:
    """What one task's model calls and tool calls cost, summed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    model_s: float = 0.0
    tools_s: dict[str, float] = dataclasses.field(default_factory=dict)

    def add_reply(self, reply: Any, latency_s: float) -> None:
        self.prompt_tokens += reply.usage.prompt_tokens
        self.completion_tokens += reply.usage.completion_tokens
        self.model_calls += 1
        self.model_s += latency_s


@ray.remote(num_cpus=0)
class AgentActor:
    """Runs tasks for one agent. Stateless between tasks; the supervisor owns the mission state."""

    def __init__(self, *, mission_id: str, goal: str, agent: AgentSpec, router: Any, memory: Any = None,
                 supervisor: Any = None, tools: list[ToolDecl] | None = None, mcp: Any = None,
                 workspace: str | None = None, delegate_targets: list[str] | None = None,
                 router_url: str | None = None, log_content: bool = False) -> None:
        self.mission_id, self.goal, self.agent = mission_id, goal, agent
        self.router, self.memory, self.supervisor, self.mcp = router, memory, supervisor, mcp
        self.router_url, self.log_content = router_url, log_content
        if workspace:
            os.environ["CONTROLPLANE_WORKSPACE"] = workspace  # the file tools read it in this process
        self._workspace = workspace
        self._functions = {d.name: tool_from_decl(d, where=f"tools({d.name})") for d in tools or []
                           if allowed(agent.tools, d.name)}
        self._delegate_targets = list(delegate_targets or [])
        self._python = python_agent_run(load_python_agent(agent.entrypoint, where=f"agents({agent.name}).entrypoint")
                                        ) if agent.kind == "python" and agent.entrypoint else None
        self._mcp_specs: dict[str, ToolSpec] = {}

    async def ready(self) -> dict[str, Any]:
        """Where Ray placed this agent: node and GPU ids (logical GPUs included).

        Also warms this process's path to the router (a cheap call that runs no model), and learns the
        mission's MCP tools, so the first task pays for neither."""
        try:
            await self.router.breaker_state(self.agent.model)
        except Exception as exc:  # an unknown model or a router hiccup shows up on the first real call
            logger.info("agent %s: router warm-up failed: %s", self.agent.name, exc)
        if self.mcp is not None:
            self._mcp_specs = await self.mcp.tools.remote()
        context = ray.get_runtime_context()
        return {"agent": self.agent.name, "node_id": context.get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    async def run(self, task: TaskSpec, attempt: int, context: dict[str, Any]) -> StepResult:
        """One attempt of `task`. Raises on failure (the supervisor retries or falls back)."""
        started = time.time()
        runner = self._runner(task, attempt)
        if self._python is not None:
            return await self._run_python(task, attempt, context, runner, started)
        return await self._run_loop(task, attempt, context, runner, started)

    # -- kind: llm -------------------------------------------------------------------------------------
    async def _run_loop(self, task: TaskSpec, attempt: int, context: dict[str, Any], runner: ToolRunner,
                        started: float) -> StepResult:
        hits = await self._recall(task) if self.agent.fixed_memory else []
        loop = AgentLoop(
            agent=self.agent.name, task=task.id,
            messages=build_messages(self.agent, goal=self.goal, task=task, context=context, memory_hits=hits),
            known_tools=runner.specs(), allow=self.agent.tools, expected_output=task.expected_output,
            tool_style=self.agent.tool_style or "constrained",
            max_string_chars=max(16, self.agent.max_tokens - GRAMMAR_SLACK_TOKENS),
            limits=LoopLimits(max_steps=task.max_steps or self.agent.max_steps,
                              max_tool_calls=self.agent.max_tool_calls if task.max_tool_calls is None
                              else task.max_tool_calls, loop_repeat_limit=self.agent.loop_repeat_limit))
        usage = _Usage()
        while True:
            request = loop.next_request()
            called = time.time()
            reply = await self.chat(request.messages, json_schema=request.json_schema, tools=request.tools,
                                    timeout_s=task.timeout_s)
            usage.add_reply(reply, time.time() - called)
            decision = loop.on_reply(reply.text, getattr(reply, "tool_calls", None), reply.finish_reason,
                                     latency_s=time.time() - called)
            self._emit(decision.events)
            if isinstance(decision, RunTools):
                results = await asyncio.gather(*(runner.run(call) for call in decision.calls))
                for result in results:
                    usage.tools_s[result.name] = usage.tools_s.get(result.name, 0.0) + result.duration_s
                self._emit(loop.on_tool_results(results))
            elif isinstance(decision, Stopped):
                raise AgentStopped(agent=self.agent.name, task=task.id, cause=decision.cause, why=decision.reason,
                                   fix=decision.fix)
            elif isinstance(decision, Finished):
                break
        posted = await self._post(task, decision.output, attempt) if self.agent.fixed_memory else 0
        summary = loop.summary()
        return StepResult(output=decision.output, prompt_tokens=usage.prompt_tokens,
                          completion_tokens=usage.completion_tokens, attempt=attempt, started_at_s=started,
                          ended_at_s=time.time(), model_latency_s=usage.model_s, memory_hits=len(hits),
                          posted=posted, model_calls=usage.model_calls, tool_calls=summary.tool_calls,
                          tools_s=usage.tools_s, loop=dataclasses.asdict(summary))

    async def chat(self, messages: list[dict[str, Any]], *, json_schema: dict[str, Any] | None = None,
                   tools: list[dict[str, Any]] | None = None, timeout_s: float | None = None,
                   max_tokens: int | None = None) -> Any:
        """One router call under this agent's identity."""
        from serving import ChatRequest, Identity

        fields: dict[str, Any] = {
            "model": self.agent.model, "messages": messages, "max_tokens": max_tokens or self.agent.max_tokens,
            "temperature": self.agent.temperature, "json_schema": json_schema, "timeout_s": timeout_s,
            "identity": Identity(mission_id=self.mission_id, agent_id=self.agent.name, priority="normal")}
        if tools:
            fields["tools"] = tools
        if self.log_content:
            logger.info("agent %s prompt: %s", self.agent.name, messages[-1])
        return await self.router.chat(ChatRequest.model_validate(fields))

    def _emit(self, events: list[LoopEvent]) -> None:
        """Tool events (denials, invalid calls, failures) reach the mission's event stream as they happen."""
        if events and self.supervisor is not None:
            self.supervisor.on_agent_events.remote([event.emit_fields() for event in events])

    # -- kind: python ----------------------------------------------------------------------------------
    async def _run_python(self, task: TaskSpec, attempt: int, context: dict[str, Any], runner: ToolRunner,
                          started: float) -> StepResult:
        assert self._python is not None
        ctx = AgentContext(actor=self, task=task, attempt=attempt, context=context, runner=runner)
        output = await self._python(task, ctx)
        return StepResult(output=output, prompt_tokens=ctx.usage["prompt_tokens"],
                          completion_tokens=ctx.usage["completion_tokens"], attempt=attempt, started_at_s=started,
                          ended_at_s=time.time(), model_latency_s=ctx.usage["model_s"],
                          model_calls=ctx.usage["model_calls"], tool_calls=ctx.usage["tool_calls"])

    # -- tools -----------------------------------------------------------------------------------------
    def _runner(self, task: TaskSpec, attempt: int) -> ToolRunner:
        builtins: dict[str, tuple[ToolSpec, Builtin]] = {}
        if self.memory is not None:
            builtins[MEMORY_SEARCH_TOOL.name] = (MEMORY_SEARCH_TOOL, self._memory_search)
            builtins[MEMORY_POST_TOOL.name] = (
                MEMORY_POST_TOOL, lambda args: self._memory_post(task, args, attempt))
        if self.supervisor is not None and self._delegate_targets:
            spec = delegate_tool(self._delegate_targets)
            builtins[spec.name] = (spec, lambda args: self.supervisor.delegate.remote(task.id, args["to"],
                                                                                    args["description"]))
        return ToolRunner(functions=self._functions, builtins=builtins, mcp=self.mcp, mcp_specs=self._mcp_specs,
                          workspace=self._workspace)

    async def _memory_search(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        hits = await self._search(args["query"], int(args.get("k", 3)))
        return [{"agent": agent, "text": text, "score": round(score, 3)} for score, agent, text in hits]

    async def _memory_post(self, task: TaskSpec, args: dict[str, Any], attempt: int) -> dict[str, Any]:
        posted = await self._post(task, args["text"], attempt, topic=args.get("topic"))
        return {"posted": posted, "namespace": self.agent.memory.write[0] if self.agent.memory.write else None}

    async def _search(self, query: str, k: int) -> list[tuple[float, str, str]]:
        from memory import SearchFilters

        scored: list[tuple[float, str, str]] = []
        for namespace in self.agent.memory.read:
            found = await self.memory.search.remote(query, k=k, namespace=namespace, as_agent=self.agent.name,
                                                    filters=SearchFilters(mission_id=self.mission_id))
            scored += [(hit.score, hit.entry.agent_id, hit.entry.text) for hit in found[0]]
        scored.sort(key=lambda hit: -hit[0])
        return scored[:k]

    async def _recall(self, task: TaskSpec) -> list[str]:
        if self.memory is None or self.agent.memory_k == 0:
            return []
        return [f"{agent}: {text}" for _, agent, text in await self._search(task.description, self.agent.memory_k)]

    async def _post(self, task: TaskSpec, output: Any, attempt: int, *, topic: str | None = None) -> int:
        if self.memory is None or not self.agent.memory.write:
            return 0
        from memory import NewEntry

        entry = NewEntry(mission_id=self.mission_id, agent_id=self.agent.name, task_id=task.id,
                         namespace=self.agent.memory.write[0], topic=topic or task.topic or task.id,
                         text=as_text(output)[:POST_CHARS] or "(empty)", metadata={"role": self.agent.role})
        receipts = await self.memory.post.remote([entry], as_agent=self.agent.name)
        return len(receipts)
