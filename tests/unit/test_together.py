import asyncio

import pytest

from actors._together import at_once


def test_every_result_comes_back_in_the_order_of_the_steps():
    async def value(v, delay_s):
        await asyncio.sleep(delay_s)
        return v

    steps = (value("plan", 0.02), value("agents", 0.0), value("mcp", 0.01))
    assert asyncio.run(at_once(*steps)) == ["plan", "agents", "mcp"]


def test_a_failure_cancels_the_other_steps_and_is_raised_as_is():
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
            await at_once(slow(), fails(), slow())
        await asyncio.sleep(0)  # the cancelled steps run their handlers

    asyncio.run(scenario())
    assert cancelled == [True, True]
