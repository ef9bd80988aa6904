"""One cold prefix, prefilled once. vLLM caches a prefix's KV blocks once they are computed, so calls that share a
prefix (one affinity key: an agent's system prompt and tools) and reach a replica together each compute it, side by
side. Here a call whose key has another call still before its first token waits for that token, at most `wait_s`,
and then finds the prefix in the cache. The first call of a key, and every call of a key with none in prefill, goes
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

PREFIX_WAIT_ENV = "CONTROLPLANE_SAME_PREFIX_WAIT_S"
"""The replica's `same_prefix_wait_s` (serving config), in its environment."""


class SamePrefixGate:
    def __init__(self, wait_s: float) -> None:
        self._wait_s = wait_s
        self._prefilling: dict[str, asyncio.Event] = {}
        self.waited = 0
        """Calls that waited for another call of their key."""

    @contextlib.asynccontextmanager
    async def turn(self, key: str | None) -> AsyncIterator[Callable[[], None]]:
        """Around one call: yields `first_token`, to call once its first token (or any event) has come."""
        if key is None or not self._wait_s:
            yield _nothing
            return
        prefilling = self._prefilling.get(key)
        if prefilling is not None:
            self.waited += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(prefilling.wait(), self._wait_s)
            yield _nothing
            return
        prefilled = self._prefilling[key] = asyncio.Event()

        def first_token() -> None:
            prefilled.set()
            if self._prefilling.get(key) is prefilled:
                del self._prefilling[key]

        try:
            yield first_token
        finally:
            first_token()  # a call that ends (or fails) before its first token lets the others go


def _nothing() -> None:
    pass
