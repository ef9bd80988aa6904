"""Running two steps of an actor's start at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    """Both results; when either fails, the other is cancelled and the failure raised (as is, not grouped)."""
    steps = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        first_result, second_result = await asyncio.gather(*steps)
    except BaseException:
        for step in steps:
            step.cancel()
        raise
    return first_result, second_result
