"""Reading a backend's event stream under a deadline, merging the text deltas that are ready together, and
waiting for a call's first event before an HTTP stream commits to its status.

One pump task and one timer per call (not one task per event), and fewer, larger events downstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

_TIMEOUT = object()


def merge_ready(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive `delta` events become one, whose `chunks` counts the backend's chunks it holds; other events
    keep their place."""
    merged: list[dict[str, Any]] = []
    for item in items:
        if "delta" in item and merged and "delta" in merged[-1]:
            merged[-1] = {"delta": merged[-1]["delta"] + item["delta"],
                          "chunks": merged[-1].get("chunks", 1) + item.get("chunks", 1)}
        else:
            merged.append(item)
    return merged


async def within(events: AsyncIterator[dict[str, Any]], timeout_s: float,
                 interval_s: float = 0.0) -> AsyncIterator[dict[str, Any]]:
    """The events, merged where ready together; asyncio.TimeoutError once `timeout_s` has passed.

    With `interval_s`, text after the first delta is sent at most once per interval (fewer, larger
    messages for many fast streams); the first delta always goes at once.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except Exception as exc:  # surfaced as the call's error event
            queue.put_nowait({"done": True, "error": {"status": 500, "message": repr(exc)}})

    task = loop.create_task(pump())
    timer = loop.call_later(max(0.0, timeout_s), queue.put_nowait, _TIMEOUT)
    next_send_s = 0.0
    try:
        while True:
            items = [await queue.get()]
            wait_s = next_send_s - loop.time()
            if wait_s > 0 and items[0] is not _TIMEOUT and not items[0].get("done"):
                await asyncio.sleep(wait_s)
            while not queue.empty():
                items.append(queue.get_nowait())
            finished = any(i is not _TIMEOUT and i.get("done") for i in items)
            if items[0] is _TIMEOUT or (_TIMEOUT in items and not finished):
                raise asyncio.TimeoutError
            for event in merge_ready([i for i in items if i is not _TIMEOUT]):
                yield event
                if event.get("done"):
                    return
            if interval_s:
                next_send_s = loop.time() + interval_s
    finally:
        timer.cancel()
        task.cancel()


async def first_event_or_a_silent_run(first: asyncio.Future[Any], dispatched: asyncio.Event, silent_s: float) -> None:
    """Return once `first` (a call's first event) is done, or the call has run on its backend (`dispatched`) for
    `silent_s` without it. A call that waits in the queue has no time limit here: its own deadline ends it."""
    running = asyncio.ensure_future(dispatched.wait())
    try:
        await asyncio.wait([first, running], return_when=asyncio.FIRST_COMPLETED)
    finally:
        running.cancel()
    if not first.done():
        await asyncio.wait([first], timeout=silent_s)
