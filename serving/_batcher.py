"""The batching half of the router: calls to one local model that arrive together move to a
replica as one Serve call (`run_batch`), whose event stream is split back per call.

Like Nagle's algorithm: while earlier batches are still running, a new batch waits up to
`wait_s` to fill; when nothing is running, a call goes out at once (no added latency when idle)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

logger = logging.getLogger(__name__)

_Pending = tuple[dict[str, Any], str | None, "asyncio.Queue[dict[str, Any]]"]


class Batcher:
    def __init__(self, handle: Any, *, max_size: int, wait_s: float) -> None:
        self._handle = handle.options(stream=True)
        self._max_size = max_size
        self._wait_s = wait_s
        self._pending: list[_Pending] = []
        self._ready = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Serve calls made so far (each carries one batch)."""
        self.calls = 0
        """Router calls moved in those batches."""

    async def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]:
        """The events of one call, once it has gone out in some batch."""
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending.append((call, affinity_key, events))
        self._ready.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._loop())
        while True:
            event = await events.get()
            yield event
            if event.get("done"):
                return

    async def _loop(self) -> None:
        while True:
            await self._ready.wait()
            if self._wait_s and self._sends and len(self._pending) < self._max_size:
                await asyncio.sleep(self._wait_s)  # busy: let a batch form; idle: send at once
            batch, self._pending = self._pending[:self._max_size], self._pending[self._max_size:]
            if not self._pending:
                self._ready.clear()
            if batch:
                task = asyncio.create_task(self._send(batch))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        keys = Counter(key for _, key, _ in batch if key is not None)
        affinity_key = keys.most_common(1)[0][0] if keys else None
        queues = [events for _, _, events in batch]
        self.batches += 1
        self.calls += len(batch)
        finished: set[int] = set()
        try:
            async for events in self._handle.run_batch.remote([call for call, _, _ in batch],
                                                              affinity_key=affinity_key):
                for event in events:
                    index = event.pop("i")
                    if event.get("done"):
                        finished.add(index)
                    queues[index].put_nowait(event)
        except Exception as exc:  # the replica died or refused: fail the calls still open
            logger.warning("a batch of %d calls failed: %r", len(batch), exc)
            for index, events in enumerate(queues):
                if index not in finished:
                    events.put_nowait({"done": True, "error": {"status": 503, "message": repr(exc)}})
