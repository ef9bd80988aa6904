import asyncio

import pytest

from actors._together import both


def test_both_returns_both_results_in_order():
    async def value(v, delay_s):
        await asyncio.sleep(delay_s)
        return v

    assert asyncio.run(both(value("plan", 0.02), value("agents", 0.0))) == ("plan", "agents")


def test_a_failure_cancels_the_other_step_and_is_raised_as_is():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def fails():
        raise PermissionError("the plan was denied")

    async def scenario():
        with pytest.raises(PermissionError, match="denied"):
            await both(fails(), slow())
        await asyncio.sleep(0)  # the cancelled step runs its handler

    asyncio.run(scenario())
    assert cancelled == [True]
