"""Mission metrics through ray.util.metrics: tasks by state, task latency, tokens by agent."""

from __future__ import annotations

from collections.abc import Mapping

from ray.util import metrics

LATENCY_BOUNDARIES_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]


class MissionMetrics:
    """One mission's series, tagged with the mission id (and the agent where it applies)."""

    def __init__(self, mission_id: str) -> None:
        self.mission_id = mission_id
        self.tasks = metrics.Gauge("controlplane_mission_tasks", "Tasks of a mission by state.",
                                   tag_keys=("mission", "state"))
        self.latency = metrics.Histogram("controlplane_task_latency_s", "Wall time of one task attempt, seconds.",
                                         boundaries=LATENCY_BOUNDARIES_S, tag_keys=("mission", "agent", "outcome"))
        self.tokens = metrics.Counter("controlplane_agent_tokens", "Prompt + completion tokens by agent.",
                                      tag_keys=("mission", "agent"))
        self._tokens: dict[str, int] = {}

    def attempt_done(self, agent: str, *, latency_s: float, tokens: int, ok: bool) -> None:
        """Observe the attempt's latency now; its tokens are added at the next `publish` (each record into Ray's
        metrics costs about 0.25 ms of the supervisor's CPU, so per-agent sums go once per publish)."""
        self.latency.observe(latency_s, tags={"mission": self.mission_id, "agent": agent,
                                              "outcome": "ok" if ok else "error"})
        if tokens:
            self._tokens[agent] = self._tokens.get(agent, 0) + tokens

    def publish(self, counts: Mapping[str, int]) -> None:
        """Set the tasks-by-state gauges to `counts` and add the tokens counted since the last publish."""
        for state, n in counts.items():
            self.tasks.set(n, tags={"mission": self.mission_id, "state": state})
        for agent, tokens in self._tokens.items():
            self.tokens.inc(tokens, tags={"mission": self.mission_id, "agent": agent})
        self._tokens.clear()
