"""The async gate: slots by priority, waits with deadlines."""

import asyncio

import pytest

from controlplane import BackpressureError
from serving._gate import Gate


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
