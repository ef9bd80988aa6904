"""A mission's agents as the scheduler sees them: which agents serve a target, how many tasks each runs, and which
one takes the next task. Pure logic.

A target is an agent's name or `role:<role>`. Of the agents that serve it, the next task goes to a free one (below
its `max_concurrency`, not held) with the fewest running tasks, ties to the one assigned least recently.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.config.mission import AgentSpec


class AgentSlots:
    def __init__(self, agents: Sequence[AgentSpec]) -> None:
        self.agents = {a.name: a for a in agents}
        self._roles = {a.role: [b.name for b in agents if b.role == a.role] for a in agents}
        self.running: dict[str, int] = {a.name: 0 for a in agents}
        """Tasks each agent runs now."""
        self._last_assigned = {a.name: -1 for a in agents}
        self._assign_count = 0
        self._held: set[str] = set()

    def serves(self, target: str) -> list[str]:
        """The agents that may take a task of this target."""
        if target.startswith("role:"):
            return self._roles.get(target[5:], [])
        return [target] if target in self.agents else []

    def free_agent(self, target: str) -> str | None:
        """The agent that takes the target's next task now, or None while none is free."""
        free = [n for n in self.serves(target)
                if self.running[n] < self.agents[n].max_concurrency and n not in self._held]
        return min(free, key=lambda n: (self.running[n], self._last_assigned[n])) if free else None

    def start(self, agent: str) -> None:
        """The agent was assigned a task."""
        self.running[agent] += 1
        self._last_assigned[agent] = self._assign_count
        self._assign_count += 1

    def resume(self, agent: str) -> None:
        """The agent runs a task again that it was running before the supervisor restarted."""
        self.running[agent] += 1

    def done(self, agent: str) -> None:
        """One of the agent's tasks ended."""
        self.running[agent] -= 1

    def hold(self, agent: str) -> None:
        """No new task for the agent until `release`."""
        self._held.add(agent)

    def release(self, agent: str) -> None:
        self._held.discard(agent)

    def in_flight(self) -> int:
        return sum(self.running.values())
