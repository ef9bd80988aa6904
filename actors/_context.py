"""`ctx`, what a `kind: python` agent's `async def run(task, ctx)` gets: the governed parts of the control plane.

Its model calls go through the router under the agent's identity (the task's capability token), its tool calls
through the same door (`authorize()`) and schema check as the built-in loop's, its memory through the agent's
grants.
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
        actor = self._ctx._actor
        verdict = authorize(self._ctx.agent.name, name, arguments, allow=self._ctx.agent.tools, known_tools=specs,
                            approve_patterns=actor._approve)
        if verdict.decision == "denied":
            self._ctx.emit("denied", verdict.reason, verdict.event_data())
            raise AccessDenied(agent=self._ctx.agent.name, resource=f"tool {name}", granted=self.names())
        invalid = validate_arguments(specs[name], arguments)
        if invalid:
            raise ToolError(tool=name, why=invalid, fix="call it with arguments that match its schema")
        self._ctx.usage["tool_calls"] += 1
        call = ToolCall(id=f"py-{self._ctx.usage['tool_calls']}", tool=specs[name], arguments=arguments,
                        authorization=verdict)
        if verdict.decision == "needs_approval":
            refusal = await actor.approval_refusal(call, self._ctx.task, self._ctx.attempt)
            if refusal is not None:
                raise ToolError(tool=name, why=refusal, fix="go on without it, or ask for it to be approved")
        return await self._runner.invoke(call)


class AgentMemory:
    """`ctx.memory`: search and post within the agent's memory grants."""

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx

    async def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        return await self._ctx._actor._memory_search({"query": query, "k": k}, self._ctx._token)

    async def post(self, text: str, topic: str | None = None) -> dict[str, Any]:
        return await self._ctx._actor._memory_post(self._ctx.task, {"text": text, "topic": topic}, self._ctx.attempt,
                                                   self._ctx._token)


class AgentContext:
    """The governed parts of the control plane for one task of a python agent."""

    def __init__(self, *, actor: AgentActor, task: TaskSpec, attempt: int, context: dict[str, Any],
                 runner: ToolRunner, token: str, observer: Any = None) -> None:
        self._observer = observer
        self._actor, self._token = actor, token
        self.task, self.attempt = task, attempt
        self.agent = actor.agent
        self.mission_id = actor.mission_id
        self.goal = actor.goal
        self.context = context
        """The outputs of the task's dependencies, by task id."""
        self.usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0, "model_calls": 0,
                                      "model_s": 0.0, "tool_calls": 0}
        self.tools = AgentTools(self, runner)
        self.memory = AgentMemory(self)

    async def chat(self, messages: list[dict[str, Any]], *, json_schema: dict[str, Any] | None = None,
                   max_tokens: int | None = None, **sampling: Any) -> Any:
        """A router call as this agent (its model, limits, budget and priority); returns the ChatResult.
        `sampling`: the router's sampling fields (`stop`, `top_p`, `seed`, `ignore_eos`…; `serving.SAMPLING_KEYS`),
        passed to the engine."""
        from serving import SAMPLING_KEYS

        unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
        if unknown:
            raise ToolError(tool="ctx.chat", why=f"{unknown[0]}={sampling[unknown[0]]!r} is not a sampling field "
                            "(the agent's model, identity and limits come from the mission)",
                            fix=f"pass only {', '.join(SAMPLING_KEYS)}")
        started = time.time()
        reply = await self._actor.chat(messages, token=self._token, json_schema=json_schema, max_tokens=max_tokens,
                                       timeout_s=self.task.timeout_s, observer=self._observer, sampling=sampling)
        self.usage["prompt_tokens"] += reply.usage.prompt_tokens
        self.usage["completion_tokens"] += reply.usage.completion_tokens
        self.usage["usd"] += reply.usage.usd
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
    def openai_api_key(self) -> str:
        """The credential of an outside client's calls: this task's capability token, sent as the bearer key, so
        the router counts them as this agent's (`openai.OpenAI(base_url=ctx.openai_base_url,
        api_key=ctx.openai_api_key)`). It expires with the task."""
        return self._token

    @property
    def openai_headers(self) -> dict[str, str]:
        """Headers naming this agent; the token (`openai_api_key`) is what the router believes, and these must
        agree with it."""
        return {"x-mission-id": self.mission_id, "x-agent-id": self.agent.name}

    @property
    def model(self) -> str:
        return self.agent.model

    def emit(self, status: str, message: str, data: dict[str, Any] | None = None) -> None:
        """A custom event in the mission's event stream (no content: say what happened, not the data)."""
        self._actor._emit([LoopEvent(status=status, agent=self.agent.name, task=self.task.id, message=message,
                                     data=dict(data or {}))])
