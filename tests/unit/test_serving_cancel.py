"""Cancelling one call of a batch: the batching decisions, the replica's call runner, and the batcher
against a fake replica handle (no Ray); and the group sender and outbox, which batch a replica's requests and
messages to one actor."""

import asyncio
from typing import Any

import pytest

from controlplane._core.batching import GroupSender, Outbox, SentBatch, split_batches
from serving._backends.base import CallRunner
from serving._batcher import Batcher


def test_split_batches_one_key_per_batch_in_arrival_order():
    assert split_batches(["a", "b", "a", None, "b", "a"], max_size=2) == [[0, 2], [1, 4], [3], [5]]


def test_a_cancel_before_the_replica_is_known_is_told_once_it_is():
    batch = SentBatch(["c1", "c2", "c3"])
    assert batch.cancel("c2") is None
    assert batch.located("r1") == ["c2"]
    assert batch.cancel("c3") == "r1"
    assert batch.located("r1") == []
    with pytest.raises(ValueError):
        batch.cancel("c9")


class GatedReceiver:
    """Answers each batch with its requests times ten, once `open` is set; records the batches it got."""

    def __init__(self):
        self.batches, self.open = [], asyncio.Event()

    async def send(self, items):
        self.batches.append(items)
        await self.open.wait()
        if "bad" in items:
            raise RuntimeError("the receiver failed")
        return [item * 10 for item in items]


async def first_on_its_way():
    """A group sender whose first request, 1, is on its way to a receiver that answers once it is opened."""
    receiver = GatedReceiver()
    sender = GroupSender(receiver.send)
    first = asyncio.ensure_future(sender.ask(1))
    await asyncio.sleep(0.01)
    return receiver, sender, first


def test_requests_made_while_a_batch_is_on_its_way_go_together_as_the_next_one():
    async def scenario():
        receiver, sender, first = await first_on_its_way()
        later = [asyncio.ensure_future(sender.ask(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0.01)
        assert receiver.batches == [[1]]  # the first went alone, at once; the others wait for its answer
        receiver.open.set()
        assert await first == 10 and await asyncio.gather(*later) == [20, 30, 40]
        assert receiver.batches == [[1], [2, 3, 4]] and sender.batches == 2

    asyncio.run(scenario())


def test_a_request_whose_caller_stopped_waiting_before_it_went_is_left_out_of_the_batch():
    async def scenario():
        receiver, sender, first = await first_on_its_way()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sender.ask(2), 0.01)
        third = asyncio.ensure_future(sender.ask(3))
        receiver.open.set()
        assert (await first, await third) == (10, 30)
        assert receiver.batches == [[1], [3]]

    asyncio.run(scenario())


def test_the_answer_to_a_request_whose_caller_stopped_waiting_after_it_went_goes_to_unclaimed():
    async def scenario():
        receiver, unclaimed = GatedReceiver(), []
        sender = GroupSender(receiver.send, unclaimed=unclaimed.append)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sender.ask(1), 0.01)  # it went at once, alone
        second = asyncio.ensure_future(sender.ask(2))
        receiver.open.set()
        assert await second == 20
        return unclaimed

    assert asyncio.run(scenario()) == [10]


def test_a_batch_that_fails_fails_each_of_its_requests_and_the_next_batch_still_goes():
    async def scenario():
        receiver, sender, first = await first_on_its_way()
        failing = [asyncio.ensure_future(sender.ask(item)) for item in ("bad", 2)]
        await asyncio.sleep(0.01)
        receiver.open.set()
        assert await first == 10
        for request in failing:
            with pytest.raises(RuntimeError, match="the receiver failed"):
                await request
        assert await sender.ask(5) == 50 and receiver.batches == [[1], ["bad", 2], [5]]

    asyncio.run(scenario())


class HandingReceiver:
    """Takes each batch when it is handed over, and handles it when the test says."""

    def __init__(self):
        self.batches, self.handled = [], []

    def send(self, items):
        self.batches.append(items)
        self.handled.append(asyncio.get_running_loop().create_future())
        return self.handled[-1]


def test_messages_posted_while_a_batch_is_on_its_way_go_together_in_order_once_it_is_handled():
    async def scenario():
        receiver = HandingReceiver()
        outbox = Outbox(receiver.send)
        outbox.post(1)
        assert receiver.batches == [[1]]  # at once
        outbox.post(2)
        outbox.post(3)
        await asyncio.sleep(0.01)
        assert receiver.batches == [[1]]
        receiver.handled[0].set_exception(RuntimeError("lost"))  # logged; the next batch still goes
        await asyncio.sleep(0.01)
        assert receiver.batches == [[1], [2, 3]]
        receiver.handled[1].set_result(None)
        await asyncio.sleep(0.01)
        outbox.post(4)
        assert receiver.batches == [[1], [2, 3], [4]] and outbox.batches == 3

    asyncio.run(scenario())


def test_a_flush_hands_over_the_waiting_messages_at_once_so_that_a_later_message_cannot_overtake_them():
    async def scenario():
        receiver = HandingReceiver()
        outbox = Outbox(receiver.send)
        for message in (1, 2, 3):
            outbox.post(message)
        outbox.flush()
        assert receiver.batches == [[1], [2, 3]]
        outbox.flush()  # nothing waits: nothing is sent
        for handled in receiver.handled:
            handled.set_result(None)
        await asyncio.sleep(0.01)
        assert receiver.batches == [[1], [2, 3]]

    asyncio.run(scenario())


def test_messages_posted_outside_an_event_loop_go_at_once():
    batches = []
    outbox = Outbox(lambda items: batches.append(items))
    outbox.post(1)
    outbox.post(2)
    assert batches == [[1], [2]]


async def slow_call(call: dict[str, Any]):
    yield {"delta": call["text"]}
    await asyncio.sleep(call["sleep_s"])
    yield {"done": True}


def test_call_runner_cancels_one_call_and_its_batch_mates_finish():
    async def scenario():
        runner = CallRunner()
        calls = [{"id": "keep", "text": "a", "sleep_s": 0.05}, {"id": "drop", "text": "b", "sleep_s": 30}]
        seen, cancelled = [], None
        async for events in runner.fan_in(calls, slow_call, replica="r1"):
            seen.extend(events)
            if cancelled is None and len(runner) == 2 and any(e.get("delta") == "b" for e in seen):
                cancelled = runner.cancel(["drop", "unknown"])
        return seen, cancelled, len(runner)

    seen, cancelled, left = asyncio.run(scenario())
    assert seen[0] == {"replica": "r1"} and cancelled == 1 and left == 0
    assert {"i": 0, "done": True} in seen and not any(e.get("i") == 1 and e.get("done") for e in seen)


class FakeReplica:
    """A replica handle: `run_batch` streams like CallRunner does, `cancel_calls` cancels there."""

    def __init__(self) -> None:
        self.runner = CallRunner()
        self.batches: list[tuple[list[str], str | None]] = []
        self.cancel_calls = self
        self.run_batch = self

    def options(self, **_: Any) -> "FakeReplica":
        return self

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        if "replica_id" in kwargs:
            return self._cancel(*args)
        calls, key = args[0], kwargs.get("affinity_key")
        self.batches.append(([c["text"] for c in calls], key))
        return self.runner.fan_in(calls, slow_call, replica="r1")

    async def _cancel(self, call_ids: list[str]) -> int:
        return self.runner.cancel(call_ids)


async def first_then_close(batcher: Batcher, text: str, key: str) -> list[dict]:
    events = batcher.stream({"text": text, "sleep_s": 30}, key)
    first = await anext(events)
    await events.aclose()
    return [first]


def test_closing_one_callers_stream_cancels_only_its_call_on_the_replica():
    async def scenario():
        replica = FakeReplica()
        batcher = Batcher(replica, max_size=8, wait_s=0.01)
        keep = batcher.stream({"text": "k", "sleep_s": 0.2}, "agent")
        keep_task = asyncio.create_task(anext(keep))
        dropped = await first_then_close(batcher, "d", "agent")
        for _ in range(20):
            await asyncio.sleep(0.01)
            if len(replica.runner) == 1:
                break
        running_after_cancel = len(replica.runner)
        kept = [await keep_task] + [event async for event in keep]
        return dropped, running_after_cancel, kept, batcher.cancels, replica.batches

    dropped, running_after_cancel, kept, cancels, batches = asyncio.run(scenario())
    assert dropped == [{"delta": "d"}] and cancels == 1
    assert running_after_cancel == 1  # the other call of the same batch runs on
    assert kept[-1] == {"done": True} and [e.get("delta") for e in kept[:-1]] == ["k"]
    assert all(key == "agent" for _, key in batches)


def test_a_call_cancelled_while_waiting_never_leaves():
    async def scenario():
        replica = FakeReplica()
        batcher = Batcher(replica, max_size=8, wait_s=0.05)
        busy = batcher.stream({"text": "a", "sleep_s": 0.3}, None)
        await anext(busy)  # a batch runs, so the next call waits to fill one
        waiting = asyncio.create_task(anext(batcher.stream({"text": "b", "sleep_s": 0}, None)))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0.1)
        return replica.batches

    batches = asyncio.run(scenario())
    assert len(batches) == 1


def test_a_caller_that_goes_after_its_batch_formed_but_before_it_was_sent_is_cancelled_on_the_replica():
    class SlowToSend(Batcher):
        async def _send(self, *args: Any) -> None:
            await asyncio.sleep(0.05)  # a busy event loop: the send task starts late
            await super()._send(*args)

    async def scenario():
        replica = FakeReplica()
        batcher = SlowToSend(replica, max_size=8, wait_s=0.0)
        caller = asyncio.create_task(anext(batcher.stream({"text": "a", "sleep_s": 30}, None)))
        await asyncio.sleep(0.01)  # the batch has formed; its Serve call has not started
        caller.cancel()
        for _ in range(30):
            await asyncio.sleep(0.01)
            if replica.batches and len(replica.runner) == 0:
                break
        return replica.batches, len(replica.runner), batcher.cancels

    batches, running, cancels = asyncio.run(scenario())
    assert len(batches) == 1 and cancels == 1
    assert running == 0  # its 30 s generation does not outlive the caller
