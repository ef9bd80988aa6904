"""What tests share besides fixtures: polling, ports, mission builders, capability tokens, a memory subscriber.

Submodules: `synthetic_run` (a mission on a simulated clock) and `otlp_receiver` (a test OTLP/HTTP server).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks._ports import free_port, free_ports  # noqa: F401  re-exported: the tests' and the benchmarks' helpers
from benchmarks._ray_start import actor_alive  # noqa: F401  re-exported likewise

MCP_TOKEN_ENV = "CONTROLPLANE_TEST_MCP_TOKEN"
"""The variable that holds the session's MCP credential (the `mcp_token` fixture) in Ray's processes."""


def actor_pid(actor: Any) -> int | None:
    """A Ray actor's process id; None while it is dead or restarting."""
    import ray

    try:
        return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def wait_for(condition: Callable[[], object], *, timeout_s: float = 60.0, interval_s: float = 0.1,
             what: str = "condition") -> Any:
    """Poll until `condition()` is truthy and return its value; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def processes_running(script: str | Path) -> list[Any]:
    """The processes on this machine whose command line names `script` (a path)."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if str(script) in " ".join(p.info["cmdline"] or [])]


def actor_processes(title: str) -> list[Any]:
    """The processes of Ray actors titled `title` (`ray::ServeReplica:<app>:<deployment>`): Ray titles an actor's
    process `title` while it idles and `title.<method>` while a call runs."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[0].split(".", 1)[0] == title]


def listening_pids(port: int) -> set[int]:
    """The pids of the processes listening on TCP `port` on this machine."""
    import psutil

    return {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            and c.pid}


def mission(**changes: Any) -> dict[str, Any]:
    """A small valid mission as a dict, for tests to copy and break."""
    data = {
        "name": "launch",
        "goal": "Launch a product",
        "agents": [
            {"name": "writer", "role": "copywriter", "tools": ["memory.search", "memory.post"]},
            {"name": "checker", "role": "reviewer"},
            {"name": "checker2", "role": "reviewer"},
        ],
        "tasks": [
            {"id": "draft", "description": "Write a draft", "agent": "writer"},
            {"id": "review", "description": "Review the draft", "role": "reviewer", "depends_on": ["draft"]},
            {"id": "final", "description": "Finalise", "agent": "writer", "depends_on": ["review"]},
        ],
    }
    data = copy.deepcopy(data)
    data.update(changes)
    return data


def agent(name: str, role: str = "worker", model: str = "scripted", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "model": model, **extra}


def task(tid: str, who: str, description: str = "", deps: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {"id": tid, "agent": who, "description": description or f"Do {tid}", "depends_on": list(deps), **extra}


def run_mission(router: Any, data: dict[str, Any], *, timeout_s: float = 120.0, **kwargs: Any) -> dict[str, Any]:
    """Start the mission on the shared router and follow it to the end; returns the result with events."""
    import ray

    from actors import follow, start_mission
    from controlplane import parse_mission

    spec = parse_mission({"name": "itest", "goal": "Test the runtime", **data})
    handle = start_mission(spec, router=router, **kwargs)
    try:
        return follow(handle, timeout_s=timeout_s)
    finally:
        ray.kill(handle)


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in result["tasks"]}


TOKEN_TTL_S = 3600.0


def agent_token(mission_id: str, agent_id: str, *, ttl_s: float = TOKEN_TTL_S, **grants: Any) -> str:
    """An agent's capability token, minted with the session's root secret (as its supervisor would)."""
    from serving import mission_tokens

    return mission_tokens(mission_id).agent(agent_id, now_s=time.time(), ttl_s=ttl_s, **grants)


def supervisor_token(mission_id: str, *, agent_id: str = "supervisor", ttl_s: float = TOKEN_TTL_S) -> str:
    """The mission supervisor's token (control priority; may grant memory and set budgets)."""
    from serving import mission_tokens

    return mission_tokens(mission_id).control(agent_id, now_s=time.time(), ttl_s=ttl_s)


_INBOX: Any = None


def new_inbox(name: str | None = None) -> tuple[Any, str]:
    """A named memory subscriber actor that keeps what the memory actor pushes to it (`.received.remote()`);
    returns (handle, name). Memory subscribes actors by name."""
    import uuid

    global _INBOX
    if _INBOX is None:
        import ray

        @ray.remote(num_cpus=0)
        class Inbox:
            def __init__(self) -> None:
                self.events: list[Any] = []

            def on_memory_event(self, event: Any) -> None:
                self.events.append(event)

            def received(self) -> list[Any]:
                return self.events

        _INBOX = Inbox
    name = name or f"inbox-{uuid.uuid4().hex[:8]}"
    return _INBOX.options(name=name).remote(), name
