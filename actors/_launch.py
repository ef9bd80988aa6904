"""Starting, finding and following missions from a driver (the CLI, a test, a notebook)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import ray

from actors._cluster import head_options, read_capacity
from actors._names import MISSION_NAMESPACE
from actors._supervisor import SupervisorActor
from controlplane.errors import MissionNotFound
from controlplane.config.mission import MissionSpec
from controlplane._core.placement import check_resources

def new_mission_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def start_mission(spec: MissionSpec, *, router: Any, mission_id: str | None = None,
                  memory_dir: str | None = None) -> Any:
    """Check the spec against what the cluster has or its autoscaler may add, then create the detached
    SupervisorActor (on the head, when it declares the head resource) named after the mission id and start it;
    returns its handle."""
    check_resources(spec, read_capacity())
    mission_id = mission_id or new_mission_id(spec.name)
    handle = SupervisorActor.options(name=mission_id, namespace=MISSION_NAMESPACE, lifetime="detached",
                                     **head_options("supervisor")).remote(
        spec, mission_id=mission_id, router=router, namespace=MISSION_NAMESPACE, memory_dir=memory_dir)
    ray.get(handle.start.remote())
    return handle


def running_missions() -> list[str]:
    """Ids of the supervisors alive in this cluster."""
    actors = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in actors if a["namespace"] == MISSION_NAMESPACE and ":" not in a["name"])


def find_supervisor(mission_id: str, *, recorded: list[str] = ()) -> Any:
    """The live supervisor of `mission_id`; MissionNotFound listing the known ones otherwise."""
    try:
        return ray.get_actor(mission_id, namespace=MISSION_NAMESPACE)
    except ValueError:
        raise MissionNotFound(mission_id=mission_id, known=running_missions() + list(recorded)) from None


def follow(handle: Any, on_events: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None, *,
           poll_s: float = 0.25, timeout_s: float | None = None) -> dict[str, Any]:
    """Stream events to `on_events(new_events, summary)` until the mission ends; return its result."""
    cursor, deadline = 0, None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        done = ray.get(handle.wait.remote(poll_s))
        events = ray.get(handle.events_since.remote(cursor))
        cursor += len(events)
        if on_events is not None:
            on_events(events, ray.get(handle.summary.remote()))
        if done:
            return ray.get(handle.result.remote()) | {"events": ray.get(handle.events_since.remote(0))}
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"mission did not end within {timeout_s} s")
