"""The router's batching decisions, without Serve: which waiting calls travel together, which replica to tell
when a call of a batch is cancelled, and the group sending of requests and messages to one actor. Pure logic."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")
logger = logging.getLogger(__name__)


def split_batches(keys: Sequence[Hashable | None], max_size: int) -> list[list[int]]:
    """Indexes of waiting calls grouped into batches: one key per batch (each batch is routed by its key),
    at most `max_size` calls each, first come first served. Calls without a key (None) form their own batches."""
    groups: dict[Hashable | None, list[list[int]]] = {}
    for index, key in enumerate(keys):
        batches = groups.setdefault(key, [[]])
        if len(batches[-1]) >= max_size:
            batches.append([])
        batches[-1].append(index)
    return sorted((batch for batches in groups.values() for batch in batches), key=lambda batch: batch[0])


class SentBatch:
    """A batch sent to some replica. Cancelling one call must reach the replica that runs it, which is only
    known once the replica's first message arrives; cancels before that wait here."""

    def __init__(self, call_ids: Sequence[str]) -> None:
        self.call_ids = tuple(call_ids)
        self.replica: str | None = None
        """The replica that runs the batch, once known."""
        self._waiting: list[str] = []

    def cancel(self, call_id: str) -> str | None:
        """Cancel one call: the replica to tell now, or None while it is not known (`located` returns the call then)."""
        if call_id not in self.call_ids:
            raise ValueError(f"call {call_id!r} is not in this batch")
        if self.replica is None:
            self._waiting.append(call_id)
        return self.replica

    def located(self, replica: str) -> list[str]:
        """The batch runs on `replica`: the calls cancelled meanwhile, to tell it now."""
        self.replica = replica
        waiting, self._waiting = self._waiting, []
        return waiting


class GroupSender(Generic[Item, Answer]):
    """Sends its callers' requests to one receiver a batch at a time, as a group commit does: a request made while
    no batch is on its way goes at once, alone; the requests made meanwhile go together, as the next batch, once
    it is answered. `send` answers a batch with one answer per request, in order; when it raises, every request
    of the batch raises that. A caller cancelled before its request goes is left out of the batch; the answer to
    one cancelled after goes to `unclaimed`, so that what it holds can be let go."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[list[Answer]]], *,
                 unclaimed: Callable[[Answer], None] = lambda answer: None) -> None:
        self._send = send
        self._unclaimed = unclaimed
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches sent so far."""

    async def ask(self, item: Item) -> Answer:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._sender is None or self._sender.done():
            # A fresh context: the sender answers every caller, not the one that happened to start it.
            self._sender = asyncio.get_running_loop().create_task(self._send_all(), context=contextvars.Context())
        try:
            return await answer
        except asyncio.CancelledError:  # cancelled after its answer came, before it could take it
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                self._unclaimed(answer.result())
            raise

    async def _send_all(self) -> None:
        while self._waiting:
            batch = [(item, answer) for item, answer in self._waiting if not answer.done()]
            self._waiting = []
            if not batch:
                continue
            self.batches += 1
            try:
                answers = await self._send([item for item, _ in batch])
            except Exception as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), value in zip(batch, answers, strict=True):
                if answer.done():  # its caller stopped waiting after it went
                    self._unclaimed(value)
                else:
                    answer.set_result(value)


class Outbox(Generic[Item]):
    """Messages no one waits for, sent to one receiver in order, a batch at a time: a message posted while no
    batch is on its way goes at once; those posted meanwhile go together once it is handled. `send` hands a batch
    to the receiver before it returns, and returns what to await for its handling. Before a message that must
    not overtake them, `flush` hands over what waits at once."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[object]]) -> None:
        self._send = send
        self._waiting: list[Item] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches sent so far."""

    def post(self, item: Item) -> None:
        self._waiting.append(item)
        if self._sender is None or self._sender.done():
            handled = self._hand_over()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to wait for it in: each message goes at once
                return
            self._sender = loop.create_task(self._send_all(handled), context=contextvars.Context())

    def flush(self) -> None:
        if self._waiting:
            self._hand_over()

    def _hand_over(self) -> Awaitable[object]:
        batch, self._waiting = self._waiting, []
        self.batches += 1
        return self._send(batch)

    async def _send_all(self, handled: Awaitable[object]) -> None:
        while True:
            try:
                await handled
            except Exception as exc:
                logger.warning("a batch of messages was not handled (%s)", exc)
            if not self._waiting:
                return
            handled = self._hand_over()
