"""Slow tools for the kill-switch tests and benchmark. Each call is a stream of side effects: it writes
`started-*` when it begins, rewrites its `tick-*` file with the time every TICK_S while it runs, and writes
`finished-*` when it ends, all in the mission's workspace; so a test sees the last side effect after a cancel."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

TICK_S = 0.1


class _Marks:
    def __init__(self, tool: str) -> None:
        self.folder, self.call = Path(os.environ["CONTROLPLANE_WORKSPACE"]), f"{tool}-{uuid.uuid4().hex[:8]}"
        self.write("started")

    def write(self, kind: str) -> None:
        (self.folder / f"{kind}-{self.call}").write_text(repr(time.time()))


def slow_remote(seconds: float) -> str:
    """Tick for `seconds` (runs as a Ray task)."""
    marks, end = _Marks("slow_remote"), time.time() + seconds
    while time.time() < end:
        marks.write("tick")
        time.sleep(TICK_S)
    marks.write("finished")
    return "slept"


def slow_local(seconds: float) -> str:
    """Tick for `seconds` in a thread of the agent's process."""
    marks, end = _Marks("slow_local"), time.time() + seconds
    while time.time() < end:
        marks.write("tick")
        time.sleep(TICK_S)
    marks.write("finished")
    return "slept"


async def slow_async(seconds: float) -> str:
    """Tick for `seconds` on the agent's event loop."""
    marks, end = _Marks("slow_async"), time.time() + seconds
    while time.time() < end:
        marks.write("tick")
        await asyncio.sleep(TICK_S)
    marks.write("finished")
    return "slept"


def started(folder: Path) -> int:
    return len(list(folder.glob("started-*")))


def last_side_effect_s(folder: Path) -> float:
    """The time of the last side effect any call made (its last tick or its end); 0.0 when none."""
    times = [float(p.read_text() or 0) for p in (*folder.glob("tick-*"), *folder.glob("finished-*"))]
    return max(times, default=0.0)
