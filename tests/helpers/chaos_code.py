"""Code the chaos missions name by import path (`tests.helpers.chaos_code:...`): a python agent that posts findings
to memory, and side-effecting tools that leave one line per execution in the mission's workspace."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

EFFECTS_FILE = "effects.log"
SLOW_CONFIRM_S = 6.0


def _workspace() -> Path:
    return Path(os.environ["CONTROLPLANE_WORKSPACE"])


def _append(name: str, line: str) -> None:
    with (_workspace() / name).open("a") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


async def poster(task: Any, ctx: Any) -> dict[str, Any]:
    """Post `<task> finding <n>` for n below the number that ends the description, one post at a time, as an
    agent does (each post carries its idempotency key). Each acknowledged post is appended, with the time, to
    `acks-<task>-<attempt>.txt` in the workspace as soon as its receipt is back."""
    count = int(task.description.rsplit(maxsplit=1)[-1])
    for n in range(count):
        text = f"{task.id} finding {n}"
        receipt = await ctx.memory.post(text, topic="chaos")
        if receipt["posted"]:
            _append(f"acks-{task.id}-{ctx.attempt}.txt", f"{time.time():.6f} {text}")
    return {"posted": count}


def record_effect(note: str) -> str:
    """Record that something happened outside the mission (one line in effects.log)."""
    _append(EFFECTS_FILE, note)
    return "recorded"


def record_effect_slowly(note: str) -> str:
    """Record that something happened, then wait for a slow confirmation before returning."""
    _append(EFFECTS_FILE, note)
    time.sleep(SLOW_CONFIRM_S)
    return "recorded"
