"""Reading a backend stream under a deadline, merging ready deltas."""

import asyncio

import pytest

from serving._stream import merge_ready, within


def test_merge_ready_joins_consecutive_deltas_only():
    items = [{"delta": "a"}, {"delta": "b"}, {"done": True}, {"delta": "c"}]
    assert merge_ready(items) == [{"delta": "ab"}, {"done": True}, {"delta": "c"}]


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
