"""Helpers for mission tests: build a spec from a dict, run it on the shared router, read results."""

from __future__ import annotations

from typing import Any

from actors import follow, start_mission
from controlplane import parse_mission


def agent(name: str, role: str = "worker", model: str = "scripted", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "model": model, **extra}


def task(tid: str, who: str, description: str = "", deps: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"id": tid, "agent": who, "description": description or f"Do {tid}", "depends_on": list(deps), **extra}


def run(router, data: dict[str, Any], *, timeout_s: float = 120.0, **kwargs: Any) -> dict[str, Any]:
    """Start the mission on the shared router and follow it to the end; returns the result with events."""
    spec = parse_mission({"name": "itest", "goal": "Test the runtime", **data})
    handle = start_mission(spec, router=router, **kwargs)
    try:
        return follow(handle, timeout_s=timeout_s)
    finally:
        import ray

        ray.kill(handle)


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in result["tasks"]}
