"""`ctx`, what a `kind: python` agent's `async def run(task, ctx)` gets: the governed parts of the control plane.

Its model calls go through the router under the agent's identity, its tool calls through the same door
(`authorize()`) and schema check as the built-in loop's, its memory through the agent's grants.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from controlplane._core.loop_types import LoopEvent, ToolCall
from controlplane._core.tools import authorize, validate_arguments
from controlplane.config.mission import TaskSpec
from controlplane.errors import AccessDenied, ToolError

if TYPE_CHECKING:
    from actors._agent import AgentActor
    from actors._tools import ToolRunner


class AgentTools:
    """`ctx.tools`: the agent's allowed tools. `call` returns the tool's value or raises ToolError/AccessDenied."""

    def __init__(self, ctx: AgentContext, runner: ToolRunner) -> None:
        self._ctx, self._runner = ctx, runner

    def names(self) -> list[str]:
        from controlplane._core.tools import allowed

        return sorted(name for name in self._runner.specs() if allowed(self._ctx.agent.tools, name))

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        arguments = dict(arguments or {})
        specs = self._runner.specs()
        verdict = authorize(self._ctx.agent.name, name, arguments, allow=self._ctx.agent.tools, known_tools=specs)
        if verdict.decision != "allowed":
            self._ctx.emit("denied", verdict.reason, verdict.event_data())
            raise AccessDenied(agent=self._ctx.agent.name, resource=f"tool {name}", granted=self.names())
        invalid = validate_arguments(specs[name], arguments)
        if invalid:
            raise ToolError(tool=name, why=invalid, fix="call it with arguments that match its schema")
        self._ctx.usage["tool_calls"] += 1
        return await self._runner.invoke(ToolCall(id=f"py-{self._ctx.usage['tool_calls']}", tool=specs[name],
                                                  arguments=arguments, authorization=verdict))


class AgentMemory:
    """`ctx.memory`: search and post within the agent's memory grants."""

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx

    async def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        return await self._ctx._actor._memory_search({"query": query, "k": k})

    async def post(self, text: str, topic: str | None = None) -> dict[str, Any]:
        return await self._ctx._actor._memory_post(self._ctx.task, {"text": text, "topic": topic}, self._ctx.attempt)


class AgentContext:
    """The governed parts of the control plane for one task of a python agent."""

    def __init__(self, *, actor: AgentActor, task: TaskSpec, attempt: int, context: dict[str, Any],
                 runner: ToolRunner) -> None:
        self._actor = actor
        self.task, self.attempt = task, attempt
        self.agent = actor.agent
        self.mission_id = actor.mission_id
        self.goal = actor.goal
        self.context = context
        """The outputs of the task's dependencies, by task id."""
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 0, "model_s": 0.0, "tool_calls": 0}
        self.tools = AgentTools(self, runner)
        self.memory = AgentMemory(self)

    async def chat(self, messages: list[dict[str, Any]], *, json_schema: dict[str, Any] | None = None,
                   max_tokens: int | None = None) -> Any:
        """A router call as this agent (its model, limits, budget and priority); returns the ChatResult."""
        started = time.time()
        reply = await self._actor.chat(messages, json_schema=json_schema, max_tokens=max_tokens,
                                       timeout_s=self.task.timeout_s)
        self.usage["prompt_tokens"] += reply.usage.prompt_tokens
        self.usage["completion_tokens"] += reply.usage.completion_tokens
        self.usage["model_calls"] += 1
        self.usage["model_s"] += time.time() - started
        return reply

    @property
    def openai_base_url(self) -> str:
        """The router's OpenAI-compatible endpoint, for any OpenAI-compatible client (LangGraph, the Agents SDK)."""
        if not self._actor.router_url:
            raise ToolError(tool="ctx.openai_base_url", why="the mission was started without the router's URL",
                            fix="start it with `controlplane run`, or pass router_url= to start_mission")
        return self._actor.router_url

    @property
    def openai_headers(self) -> dict[str, str]:
        """Headers that make an outside client's calls count as this agent's."""
        return {"x-mission-id": self.mission_id, "x-agent-id": self.agent.name}

    @property
    def model(self) -> str:
        return self.agent.model

    def emit(self, status: str, message: str, data: dict[str, Any] | None = None) -> None:
        """A custom event in the mission's event stream (no content: say what happened, not the data)."""
        self._actor._emit([LoopEvent(status=status, agent=self.agent.name, task=self.task.id, message=message,
                                     data=dict(data or {}))])
