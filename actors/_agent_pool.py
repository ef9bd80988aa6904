"""A mission's agent actors: reserved together (actors._gang), started at once, re-attached after a supervisor
restart, and replaced when one dies.

Each agent is a detached, named actor (`<mission_id>:<agent>`), so it outlives a supervisor that dies. Ray
restarts it when it dies (when its node dies, in its bundle re-placed on another node); the attempt it was
running fails (no task retries at the actor) and the scheduler retries it. The pool keeps such an agent out of
the scheduler's choice until it answers again, and records where it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError

from actors._agent import AgentActor, delegate_targets
from actors._gang import Gang, reserve_agents
from controlplane._core.events import EventLog
from controlplane._tracing import TracingConfig
from controlplane.config.mission import AgentSpec, MissionSpec

logger = logging.getLogger(__name__)
AGENT_START_TIMEOUT_S = 300.0
AGENT_RESTART_POLL_S = 0.2
CONTROL_CALLS = 4
"""Calls an agent answers beyond its `max_concurrency` tasks (the scheduler bounds those): `ready`,
`cancel_attempts`, `drop_attempts`, memory events and trace flushes do not wait for its running tasks to end."""


class AgentPool:
    """The agents' actor handles by name, and where each runs (`placement`, as its `ready` reported it)."""

    def __init__(self, spec: MissionSpec, mission_id: str, namespace: str, log: EventLog, *,
                 hold: Callable[[str], None], release: Callable[[str], None]) -> None:
        """`hold(agent)` and `release(agent)` take a dying agent out of the scheduler's choice and give it back."""
        self.spec, self.mission_id, self.namespace, self.log = spec, mission_id, namespace, log
        self._hold, self._release = hold, release
        self.handles: dict[str, Any] = {}
        self.placement: dict[str, dict[str, Any]] = {}
        self.gang: Gang | None = None
        self._restarting: set[str] = set()
        self._shared: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        return self.handles[name]

    def __contains__(self, name: object) -> bool:
        return name in self.handles

    async def start(self, *, router: Any, memory: Any, mcp: Any, supervisor: Any, router_url: str | None,
                    tracing: TracingConfig | None) -> None:
        """Reserve every agent's bundle, start (or re-attach) every agent, and wait until all answer."""
        self._shared = {"router": router, "memory": memory, "mcp": mcp, "supervisor": supervisor,
                        "router_url": router_url, "tracing": tracing}
        self.gang = await reserve_agents(self.spec, self.mission_id, note=self._placement_note)
        for a in self.spec.agents:
            self.handles[a.name] = self._actor(a)
        placed = await asyncio.wait_for(asyncio.gather(*(self._ready(name) for name in self.handles)),
                                        AGENT_START_TIMEOUT_S)
        self.placement = {p["agent"]: p for p in placed}

    def announce_placed(self) -> None:
        """The `placed` event: every agent answers, and the mission may dispatch."""
        self.log.emit(time.time(), "mission", "placed", message=f"{len(self.placement)} agents ready",
                      data={"gpu_ids": {name: p["gpu_ids"] for name, p in self.placement.items()}})

    def replace(self, name: str) -> None:
        """After an agent's actor died: Ray restarts it, or, when it died for good (killed without restart), a
        new one starts under its name. It gets no task until it is ready again (a task sent to a restarting
        actor fails at once and would use up a retry); then where it runs is recorded."""
        try:
            ray.get_actor(f"{self.mission_id}:{name}", namespace=self.namespace)
        except ValueError:
            logger.warning("mission %s: agent %s is gone; starting a new actor for it", self.mission_id, name)
            self.handles[name] = self._actor(self.spec.agent(name))
        if name not in self._restarting:
            self._restarting.add(name)
            self._hold(name)
            asyncio.ensure_future(self._replaced(name))

    def stop(self) -> None:
        """Kill every agent at once (a sync in-process tool's thread dies with its process), those that a dead
        supervisor started and this one has not re-attached yet included."""
        kill_actors([*self.handles.values(), *self._unattached()], self.mission_id)

    def _unattached(self) -> list[Any]:
        found = []
        for a in self.spec.agents:
            if a.name not in self.handles:
                with contextlib.suppress(ValueError):  # none runs under that name
                    found.append(ray.get_actor(f"{self.mission_id}:{a.name}", namespace=self.namespace))
        return found

    def release_reservation(self) -> None:
        if self.gang is not None:
            self.gang.release()

    def _actor(self, a: AgentSpec) -> Any:
        """The live actor of that name (re-attached after a supervisor restart), else a new one in the agent's
        bundle of the mission's placement group."""
        placement = self.gang.options_for(a.name) if self.gang is not None else {}
        spec = self.spec
        return AgentActor.options(  # type: ignore[attr-defined]
            name=f"{self.mission_id}:{a.name}", namespace=self.namespace, num_cpus=a.resources.num_cpus,
            num_gpus=a.resources.num_gpus, max_concurrency=a.max_concurrency + CONTROL_CALLS, lifetime="detached",
            get_if_exists=True, max_restarts=-1, max_task_retries=0, **placement,
        ).remote(mission_id=self.mission_id, goal=spec.goal, agent=a, tools=list(spec.tools),
                 workspace=spec.workspace, delegate_targets=delegate_targets(spec, a),
                 log_content=spec.policies.log_content, approve=list(spec.policies.approve),
                 settle_conflicts=spec.policies.conflicts.settle_before_dependents, **self._shared)

    def _placement_note(self, message: str) -> None:
        logger.info("mission %s: %s", self.mission_id, message)
        self.log.emit(time.time(), "mission", "waiting", message=message)

    async def _ready(self, agent: str) -> dict[str, Any]:
        """Where the agent runs, once its actor answers: an actor Ray is restarting is waited for."""
        deadline_s = time.time() + AGENT_START_TIMEOUT_S
        while True:
            try:
                return await self.handles[agent].ready.remote()
            except ActorUnavailableError:
                if time.time() > deadline_s:
                    raise
                await asyncio.sleep(AGENT_RESTART_POLL_S)

    async def _replaced(self, agent: str) -> None:
        """Record where an agent that died (alone, or with its node) runs again, once Ray has restarted it; then
        it takes tasks again (also when it did not come back: its tasks then fail and follow their policy)."""
        try:
            placed = await self._ready(agent)
        except Exception as exc:
            self.log.emit(time.time(), "agent", "lost", agent=agent, message=f"not recreated: {exc}")
        else:
            self.placement[agent] = placed
            self.log.emit(time.time(), "agent", "replaced", agent=agent, message=f"now on node {placed['node_id']}",
                          data=placed)
        finally:
            self._restarting.discard(agent)
            self._release(agent)


def kill_actors(handles: Iterable[Any], mission_id: str) -> None:
    for handle in handles:
        try:
            ray.kill(handle)
        except Exception:
            logger.exception("mission %s: could not kill an actor", mission_id)
