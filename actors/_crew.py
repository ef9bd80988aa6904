"""The actors of a mission beside its supervisor: the MCP host, the memory actor and the agents. They start
together and stop together.

They start at once: the MCP host starts its servers, and the memory actor loads its embedding model, while the
agents start (an agent learns the MCP tools when it answers, so it waits for the servers). The mission may
dispatch once every one is ready (`placed`). A `plan: auto` mission's planner call runs meanwhile (see the
supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from actors._agent_pool import AgentPool, kill_actors
from actors._mcp import McpHostActor
from actors._memory import memory_needed, start_memory
from actors._together import at_once
from controlplane._core.events import EventLog
from controlplane._tracing import TracingConfig
from controlplane.config.mission import MissionSpec

logger = logging.getLogger(__name__)
MCP_STOP_TIMEOUT_S = 15.0


class Crew:
    """A mission's MCP host, memory actor and agent pool; `memory` and `mcp` are None when it has none."""

    def __init__(self, spec: MissionSpec, mission_id: str, namespace: str, log: EventLog, agents: AgentPool, *,
                 memory_dir: str | None, secret_files: dict[str, str] | None) -> None:
        self.spec, self.mission_id, self.namespace, self.log = spec, mission_id, namespace, log
        self.agents, self.memory_dir, self.secret_files = agents, memory_dir, secret_files
        self.memory: Any = None
        self.mcp: Any = None

    async def start(self, *, router: Any, router_url: str | None, supervisor: Any, tracing: TracingConfig | None,
                    control_token: str) -> None:
        """Start every actor and wait until each answers; then emit `placed`."""
        if self.spec.mcp_servers:
            self.mcp = McpHostActor.options(  # type: ignore[attr-defined]
                name=f"{self.mission_id}:mcp", namespace=self.namespace, lifetime="detached", get_if_exists=True,
                max_restarts=-1,
            ).remote(list(self.spec.mcp_servers))
        if memory_needed(self.spec):
            self.memory = start_memory(self.spec, self.mission_id, self.memory_dir, self.secret_files,
                                       app_name=getattr(router, "app_name", None))
        await at_once(self.agents.start(router=router, memory=self.memory, mcp=self.mcp, router_url=router_url,
                                        supervisor=supervisor, tracing=tracing),
                      self._start_mcp(), self._open_memory(control_token))
        self.agents.announce_placed()

    async def _start_mcp(self) -> None:
        if self.mcp is None:
            return
        tools = await self.mcp.start.remote()
        self.log.emit(time.time(), "mission", "tools", message=f"{len(tools)} MCP tools from "
                      f"{len(self.spec.mcp_servers)} servers", data={"mcp_tools": sorted(tools)})

    async def _open_memory(self, token: str) -> None:
        """The agents' grants, and the supervisor's conflicts subscription, on the memory actor (if any)."""
        if self.memory is None:
            return
        await asyncio.gather(*(self.memory.grant.remote(a.name, a.memory.read, a.memory.write, token=token)
                               for a in self.spec.agents))
        await self.memory.subscribe.remote(self.mission_id, ["conflicts"], token=token, namespace=self.namespace)

    async def stop(self) -> None:
        """Kill the agents at once (a sync in-process tool's thread dies with its process); the MCP servers stop
        next, then the memory and MCP actors go and the agents' reservation is released."""
        self.agents.stop()
        if self.mcp is not None:  # its servers are child processes: stop them before the actor goes
            try:
                await asyncio.wait_for(self.mcp.stop.remote(), MCP_STOP_TIMEOUT_S)
            except Exception:
                logger.exception("mission %s: MCP servers did not stop cleanly", self.mission_id)
        kill_actors([h for h in (self.memory, self.mcp) if h is not None], self.mission_id)
        self.agents.release_reservation()
