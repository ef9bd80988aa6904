"""The bounded priority queue and the async gate built on it."""

import asyncio

import pytest

from controlplane import BackpressureError
from serving._gate import Gate
from serving._pqueue import BoundedPriorityQueue


def test_priority_order_then_fifo():
    queue = BoundedPriorityQueue(capacity=10, scope="model:m")
    for item, priority in [("b1", "bulk"), ("n1", "normal"), ("c1", "control"), ("n2", "normal"), ("c2", "control")]:
        queue.push(item, priority)
    assert [queue.pop() for _ in range(5)] == ["c1", "c2", "n1", "n2", "b1"]


def test_full_queue_refuses_with_backpressure():
    queue = BoundedPriorityQueue(capacity=2, scope="model:m")
    queue.push("a", "normal")
    queue.push("b", "normal")
    with pytest.raises(BackpressureError, match="max_queue=2"):
        queue.push("c", "control")
    assert len(queue) == 2


def test_remove_a_waiter():
    queue = BoundedPriorityQueue(capacity=3, scope="s")
    a, b = object(), object()
    queue.push(a, "normal")
    queue.push(b, "bulk")
    assert queue.remove(a) and not queue.remove(a)
    assert queue.pop() is b


def test_gate_hands_slots_to_control_before_bulk():
    async def scenario():
        gate = Gate(slots=1, max_queue=10, scope="model:m")
        await gate.acquire("normal", 1.0)
        order = []

        async def waiter(name, priority):
            await gate.acquire(priority, 5.0)
            order.append(name)
            gate.release()

        tasks = [asyncio.create_task(waiter("bulk", "bulk")), asyncio.create_task(waiter("control", "control"))]
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["control", "bulk"]


def test_gate_wait_has_a_deadline_and_leaves_no_waiter():
    async def scenario():
        gate = Gate(slots=1, max_queue=10, scope="model:m")
        await gate.acquire("normal", 1.0)
        with pytest.raises(BackpressureError, match="queue wait"):
            await gate.acquire("normal", 0.01)
        assert gate.queued == 0
        gate.release()
        await gate.acquire("normal", 0.01)  # the slot was not lost

    asyncio.run(scenario())
