"""Reading a backend stream under a deadline, merging ready deltas."""

import asyncio

import pytest

from serving._stream import first_event_or_a_silent_run, merge_ready, within


def test_merge_ready_joins_consecutive_deltas_only():
    items = [{"delta": "a"}, {"delta": "b"}, {"done": True}, {"delta": "c"}]
    assert merge_ready(items) == [{"delta": "ab", "chunks": 2}, {"done": True}, {"delta": "c"}]


async def burst_then_done():
    for text in ("a", "b", "c"):
        yield {"delta": text}
    yield {"done": True, "finish_reason": "stop"}


async def stalls():
    yield {"delta": "a"}
    await asyncio.sleep(10)
    yield {"done": True}


async def collect(events, timeout_s):
    return [event async for event in within(events, timeout_s)]


def test_ready_events_are_merged_and_the_stream_ends_at_done():
    events = asyncio.run(collect(burst_then_done(), 5.0))
    assert "".join(e.get("delta", "") for e in events) == "abc"
    assert events[-1] == {"done": True, "finish_reason": "stop"}


def test_a_stalled_stream_times_out():
    async def scenario():
        seen = []
        with pytest.raises(asyncio.TimeoutError):
            async for event in within(stalls(), 0.05):
                seen.append(event)
        return seen

    assert asyncio.run(scenario()) == [{"delta": "a"}]


def test_a_failing_stream_becomes_an_error_event():
    async def broken():
        yield {"delta": "a"}
        raise RuntimeError("replica died")

    events = asyncio.run(collect(broken(), 5.0))
    assert events[-1]["error"]["status"] == 500 and "replica died" in events[-1]["error"]["message"]


def test_interval_batches_text_after_the_first_delta():
    async def drip():
        for text in "abcdefghij":
            yield {"delta": text}
            await asyncio.sleep(0.01)
        yield {"done": True}

    fast = asyncio.run(collect(drip(), 5.0))
    slow = asyncio.run(collect_interval(drip(), 0.045))
    assert "".join(e.get("delta", "") for e in slow) == "abcdefghij"
    assert slow[0] == {"delta": "a"}  # the first token is not held back
    assert len(slow) < len(fast) - 3


async def collect_interval(events, interval_s):
    return [event async for event in within(events, 5.0, interval_s)]


def waited_s(first_after_s: float | None, dispatched_after_s: float | None, silent_s: float = 0.2
             ) -> tuple[float, bool]:
    """How long first_event_or_a_silent_run waited, and whether the first event was in when it returned."""
    async def scenario():
        loop = asyncio.get_running_loop()
        first, dispatched = loop.create_future(), asyncio.Event()
        if first_after_s is not None:
            loop.call_later(first_after_s, first.set_exception, RuntimeError("queue wait past the deadline"))
        if dispatched_after_s is not None:
            loop.call_later(dispatched_after_s, dispatched.set)
        start = loop.time()
        await first_event_or_a_silent_run(first, dispatched, silent_s)
        done = first.done()
        first.cancel()
        if done:
            first.exception()
        return loop.time() - start, done

    return asyncio.run(scenario())


def test_a_call_in_the_queue_keeps_its_status_until_its_first_event_however_long():
    elapsed, done = waited_s(first_after_s=0.6, dispatched_after_s=None)
    assert done and elapsed >= 0.55


def test_a_call_that_runs_without_a_first_event_commits_after_the_silent_time():
    elapsed, done = waited_s(first_after_s=None, dispatched_after_s=0.3)
    assert not done and 0.45 <= elapsed < 1.0


def test_a_first_event_within_the_silent_time_ends_the_wait_at_once():
    elapsed, done = waited_s(first_after_s=0.1, dispatched_after_s=0.0)
    assert done and elapsed < 0.19
