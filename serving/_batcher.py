"""The batching half of the router: calls to one local model that arrive together move to a
replica as one Serve call (`run_batch`), whose event stream is split back per call.

Like Nagle's algorithm: while earlier batches are still running, a new batch waits up to
`wait_s` to fill; when nothing is running, a call goes out at once (no added latency when idle).
Each batch holds calls of one affinity key, so each call is routed by its own key.

A caller that goes away (cancelled, timed out, disconnected) cancels its call alone: a call still
waiting leaves the queue; a sent one is cancelled on the replica that runs it (`cancel_calls`), which
aborts its engine request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from controlplane._core.batching import SentBatch, split_batches

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pending:
    call: dict[str, Any]
    key: str | None
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class Batcher:
    def __init__(self, handle: Any, *, max_size: int, wait_s: float) -> None:
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self._max_size = max_size
        self._wait_s = wait_s
        self._pending: list[_Pending] = []
        self._sent: dict[str, SentBatch] = {}
        self._ready = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sends = 0
        self.batches = 0
        """Serve calls made so far (each carries one batch)."""
        self.calls = 0
        """Router calls moved in those batches."""
        self.cancels = 0
        """Calls cancelled by their callers after they were sent."""

    async def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]:
        """The events of one call, once it has gone out in some batch; closing this early cancels the call."""
        pending = _Pending({**call, "id": uuid.uuid4().hex}, affinity_key)
        self._pending.append(pending)
        self._ready.set()
        if self._loop_task is None or self._loop_task.done():
            # A fresh context: Serve cancels the requests a caller's context made when that caller is
            # cancelled, and this loop sends every caller's batches.
            self._loop_task = self._spawn(self._loop(), context=contextvars.Context())
        finished = False
        try:
            while not finished:
                event = await pending.events.get()
                finished = bool(event.get("done"))
                yield event
        finally:
            if not finished:
                self._cancel(pending)

    def _spawn(self, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, **kwargs)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel(self, pending: _Pending) -> None:
        if pending in self._pending:
            self._pending.remove(pending)
            return
        call_id = pending.call["id"]
        batch = self._sent.get(call_id)
        if batch is None:  # its batch already ended
            return
        self.cancels += 1
        replica = batch.cancel(call_id)
        if replica is not None:
            self._tell(replica, [call_id])

    def _tell(self, replica: str, call_ids: list[str]) -> None:
        async def cancel() -> None:
            try:
                await self._handle.cancel_calls.remote(call_ids, replica_id=replica)
            except Exception as exc:  # the replica is gone, and its calls with it
                logger.warning("cancelling %d calls on replica %s failed: %r", len(call_ids), replica, exc)

        self._spawn(cancel(), context=contextvars.Context())

    async def _loop(self) -> None:
        while True:
            await self._ready.wait()
            if self._wait_s and self._sends and len(self._pending) < self._max_size:
                await asyncio.sleep(self._wait_s)  # busy: let a batch form; idle: send at once
            waiting, self._pending = self._pending, []
            self._ready.clear()
            for indexes in split_batches([p.key for p in waiting], self._max_size):
                batch = [waiting[i] for i in indexes]
                # Known as sent from here on, before the send task runs: a caller that goes meanwhile is
                # cancelled on the replica once the batch says where it runs.
                sent = SentBatch([p.call["id"] for p in batch])
                self._sent.update(dict.fromkeys(sent.call_ids, sent))
                self._spawn(self._send(batch, sent))

    async def _send(self, batch: list[_Pending], sent: SentBatch) -> None:
        self._sends += 1
        self.batches += 1
        self.calls += len(batch)
        finished: set[int] = set()
        error = {"status": 503, "message": "the replica ended its batch before this call finished"}
        try:
            stream = self._streaming.run_batch.remote([p.call for p in batch], affinity_key=batch[0].key)
            async for events in stream:
                for event in events:
                    if "i" not in event:  # the batch's first message: where it runs
                        cancelled = sent.located(event["replica"])
                        if cancelled:
                            self._tell(event["replica"], cancelled)
                        continue
                    index = event.pop("i")
                    if event.get("done"):
                        finished.add(index)
                    batch[index].events.put_nowait(event)
        except Exception as exc:  # the replica died or refused
            logger.warning("a batch of %d calls failed: %r", len(batch), exc)
            error = {"status": 503, "message": repr(exc)}
        finally:
            self._sends -= 1
            for call_id in sent.call_ids:
                self._sent.pop(call_id, None)
        for index, pending in enumerate(batch):
            if index not in finished:
                pending.events.put_nowait({"done": True, "error": error})
