"""Slow tools for the kill-switch tests: each writes `started-*` when it begins and `finished-*` (holding the
time) when it ends, in the mission's workspace, so a test can see whether a side effect happened after a cancel."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path


def _mark(kind: str, tool: str) -> None:
    folder = Path(os.environ["CONTROLPLANE_WORKSPACE"])
    (folder / f"{kind}-{tool}-{uuid.uuid4().hex[:8]}").write_text(repr(time.time()))


def slow_remote(seconds: float) -> str:
    """Sleep, then leave a mark (runs as a Ray task)."""
    _mark("started", "slow_remote")
    time.sleep(seconds)
    _mark("finished", "slow_remote")
    return "slept"


def slow_local(seconds: float) -> str:
    """Sleep in a thread of the agent's process, then leave a mark."""
    _mark("started", "slow_local")
    time.sleep(seconds)
    _mark("finished", "slow_local")
    return "slept"


async def slow_async(seconds: float) -> str:
    """Sleep on the agent's event loop, then leave a mark."""
    _mark("started", "slow_async")
    await asyncio.sleep(seconds)
    _mark("finished", "slow_async")
    return "slept"


def finished_after(folder: Path, t_s: float) -> list[float]:
    """Finish times of the tool calls that ended after `t_s`."""
    times = [float(p.read_text()) for p in folder.glob("finished-*")]
    return sorted(t for t in times if t > t_s)
