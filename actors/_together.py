"""Running steps of an actor's start at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def at_once(*steps: Awaitable[Any]) -> list[Any]:
    """Every step's result, in order; when one fails, the others are cancelled and its failure raised (as is,
    not grouped)."""
    futures = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*futures)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
