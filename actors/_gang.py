"""Gang placement: a mission's agents are reserved together in one placement group, so it never half-starts.

Agents that ask for resources get one bundle each, with the spec's strategy (PACK, SPREAD, STRICT_SPREAD).
Agents that ask for nothing need no reservation and are spread over the nodes. While the group waits (for
the autoscaler, or for another mission to end) a message says what is missing; after `placement.timeout_s`
the group is removed and `PlacementTimeout` names what was missing.

The group is detached and named after the mission, like the agents: a supervisor that Ray restarts finds it
again, so the agents it re-attaches keep their bundles and those it recreates go back into them. The supervisor
removes it when the mission ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, get_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from controlplane._core.placement import agent_bundles, missing_for
from controlplane.config.mission import MissionSpec
from controlplane.errors import PlacementTimeout

logger = logging.getLogger(__name__)
FIRST_NOTE_AFTER_S = 1.0
WAIT_NOTE_EVERY_S = 10.0


@dataclass
class Gang:
    """The reservation of one mission's agents."""

    group: PlacementGroup | None
    """None when no agent asks for resources."""
    bundle_of: dict[str, int] = field(default_factory=dict)
    """Agent name -> its bundle index in the group."""

    def options_for(self, agent: str) -> dict[str, Any]:
        """Ray actor options that put the agent in its bundle (or spread it, when it reserves nothing)."""
        if self.group is None or agent not in self.bundle_of:
            return {"scheduling_strategy": "SPREAD"}
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=self.group, placement_group_bundle_index=self.bundle_of[agent])}

    def release(self) -> None:
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None


async def reserve_agents(spec: MissionSpec, mission_id: str, *, note: Callable[[str], None],
                         note_every_s: float = WAIT_NOTE_EVERY_S) -> Gang:
    """Reserve every agent's bundle at once; `note(message)` is called while it waits. Raises PlacementTimeout
    (and reserves nothing) when the cluster cannot place them within `spec.placement.timeout_s`."""
    bundles = agent_bundles(spec)
    if not bundles:
        return Gang(None)
    strategy, timeout_s = spec.placement.strategy, spec.placement.timeout_s
    group = _existing(f"{mission_id}:agents") or placement_group(
        list(bundles.values()), strategy=strategy, name=f"{mission_id}:agents", lifetime="detached")
    gang = Gang(group, {name: i for i, name in enumerate(bundles)})
    ready = asyncio.ensure_future(_await_ref(group.ready()))
    deadline, wait_s = time.monotonic() + timeout_s, FIRST_NOTE_AFTER_S
    try:
        while True:
            left_s = deadline - time.monotonic()
            done, _ = await asyncio.wait({ready}, timeout=max(0.0, min(wait_s, left_s)))
            wait_s = note_every_s
            if done:
                ready.result()
                return gang
            missing = missing_for(list(bundles.values()), _available_per_node(), strategy) or \
                "the resources look free now; Ray is still placing the group"
            if time.monotonic() >= deadline:
                raise PlacementTimeout(mission_id=mission_id, timeout_s=timeout_s, strategy=strategy,
                                       missing=missing)
            note(f"waiting for {len(bundles)} agent bundles ({strategy}): {missing}; "
                 f"{left_s:.0f} s left of placement.timeout_s={timeout_s:g}")
    except BaseException:
        ready.cancel()
        gang.release()
        raise


def _existing(name: str) -> PlacementGroup | None:
    """The mission's group when an earlier run of its supervisor reserved it (after a restart)."""
    try:
        return get_placement_group(name)
    except ValueError:
        return None


async def _await_ref(ref: Any) -> Any:
    return await ref


def _available_per_node() -> list[dict[str, float]]:
    try:
        return list(ray._private.state.available_resources_per_node().values())
    except Exception:  # a developer API: fall back to the cluster as one node
        return [dict(ray.available_resources())]
