"""Running one agent's tool calls: built-ins, Python functions (in the agent's process, or as a Ray task with
their own resources), and MCP tools on the mission's MCP host. Every call arrives here already authorized by
the agent loop's door (`controlplane._core.tools.authorize`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import ray

from controlplane._core.loop_types import ToolCall, ToolResult
from controlplane._core.tools import FunctionTool, ToolSpec
from controlplane._ray_errors import cause_of
from controlplane.errors import ToolCallInDoubt, ToolError

Builtin = Callable[[dict[str, Any]], Awaitable[Any]]


class ToolRunner:
    """Runs authorized calls and turns every outcome into a `ToolResult` the model can read."""

    def __init__(self, *, functions: Mapping[str, FunctionTool], builtins: Mapping[str, tuple[ToolSpec, Builtin]],
                 mcp: Any = None, mcp_specs: Mapping[str, ToolSpec] | None = None,
                 workspace: str | None = None) -> None:
        """`mcp` is the mission's MCP host actor (its tools are `mcp_specs`); `workspace` is handed to Ray tasks."""
        self._functions, self._builtins = dict(functions), dict(builtins)
        self._mcp, self._mcp_specs = mcp, dict(mcp_specs or {})
        self._workspace = workspace
        self._remote: dict[str, Any] = {}

    def specs(self) -> dict[str, ToolSpec]:
        """Every tool this agent could be offered, by name (its allow-list picks from them)."""
        return ({name: f.spec for name, f in self._functions.items()} | self._mcp_specs
                | {name: spec for name, (spec, _) in self._builtins.items()})

    async def run(self, call: ToolCall) -> ToolResult:
        started = time.perf_counter()
        try:
            value = await self.invoke(call)
        except (asyncio.CancelledError, ToolCallInDoubt):
            raise
        except Exception as exc:
            return ToolResult.failure(call, exc, duration_s=time.perf_counter() - started)
        return ToolResult.success(call, value, duration_s=time.perf_counter() - started)

    async def invoke(self, call: ToolCall) -> Any:
        """The tool's value; raises what the tool raised (ToolError for timeouts and failures)."""
        name = call.tool.name
        if name in self._builtins:
            return await self._builtins[name][1](call.arguments)
        if name in self._functions:
            tool = self._functions[name]
            return await (tool.invoke(call.arguments) if tool.spec.in_process else self._as_ray_task(tool, call))
        if name in self._mcp_specs:
            return await self._mcp_call(name, call.arguments)
        raise ToolError(tool=name, why="no runner knows it", fix="declare it under `tools:` or `mcp_servers:`")

    async def _mcp_call(self, name: str, arguments: dict[str, Any]) -> Any:
        """A call on the MCP host; cancelling the wait cancels the call there too (its session call is cancelled)."""
        ref = self._mcp.call.remote(name, arguments)
        try:
            return await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise

    async def _as_ray_task(self, tool: FunctionTool, call: ToolCall) -> Any:
        """A tool with resources runs where Ray finds them (a GPU tool on a GPU node); a timeout cancels it."""
        spec = tool.spec
        if spec.name not in self._remote:
            env = {"CONTROLPLANE_WORKSPACE": self._workspace} if self._workspace else {}
            self._remote[spec.name] = ray.remote(tool.fn).options(
                num_cpus=spec.num_cpus or 0, num_gpus=spec.num_gpus or 0, name=f"tool:{spec.name}",
                runtime_env={"env_vars": env} if env else None)
        ref = self._remote[spec.name].remote(**tool.bind(call.arguments))
        try:
            return await asyncio.wait_for(ref, spec.timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            ray.cancel(ref, force=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ToolError(tool=spec.name, why=f"its Ray task did not finish within timeout_s={spec.timeout_s:g}",
                            fix="raise the tool's timeout_s, or give it more resources") from None
        except ray.exceptions.RayTaskError as exc:
            cause = cause_of(exc)
            raise ToolError(tool=spec.name, why=f"it raised {type(cause).__name__}: {cause}",
                            fix="see the cause; the model was told and may call it differently") from None
