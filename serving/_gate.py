"""A concurrency gate in front of one backend: a fixed number of slots, and a bounded queue of waiters,
in priority order and weighted fair between missions (serving/_fair.py). Waiting has a deadline; nothing
waits forever."""

from __future__ import annotations

import asyncio

from controlplane.errors import BackpressureError
from serving._fair import FairQueue


class Gate:
    def __init__(self, *, slots: int, max_queue: int, scope: str) -> None:
        self.scope = scope
        self._free = slots
        self._waiting: FairQueue[asyncio.Future[None]] = FairQueue(capacity=max_queue, scope=scope)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def set_weight(self, flow: str, weight: float) -> None:
        """A mission's share of the slots while calls wait (default 1)."""
        self._waiting.set_weight(flow, weight)

    async def acquire(self, priority: str, timeout_s: float, *, flow: str = "", cost: float = 1.0,
                      slack_s: float | None = None) -> None:
        """Take a slot, waiting in priority order, fair between flows (missions) by `cost` (e.g. tokens), and
        within a flow by `slack_s` (least first); BackpressureError if full or past the deadline."""
        if self._free > 0 and not len(self._waiting):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.push(waiter, priority, flow=flow, cost=cost, slack_s=slack_s, retry_after_s=min(timeout_s, 1.0))
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except asyncio.TimeoutError:
            self._waiting.remove(waiter)
            raise BackpressureError(scope=self.scope, limit=f"queue wait of {timeout_s:g} s",
                                    retry_after_s=1.0) from None
        except asyncio.CancelledError:
            if not self._waiting.remove(waiter) and waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        """Hand the slot to the first live waiter, or free it."""
        while len(self._waiting):
            waiter = self._waiting.pop()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
