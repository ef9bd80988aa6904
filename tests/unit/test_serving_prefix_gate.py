"""SamePrefixGate: a call whose affinity key has another call before its first token waits for that token (at most
wait_s); the first call of a key, other keys and calls without a key go at once."""

import asyncio

import pytest

from serving._prefix_gate import SamePrefixGate


async def _call(gate, key, log, name, *, first_token_after_s=0.0, fail=False):
    async with gate.turn(key) as first_token:
        log.append((name, "sent"))
        await asyncio.sleep(first_token_after_s)
        if fail:
            raise RuntimeError("engine error")
        first_token()
        log.append((name, "token"))


def test_a_second_call_of_a_prefix_waits_for_the_first_calls_first_token_and_other_keys_do_not():
    async def run():
        gate, log = SamePrefixGate(wait_s=5.0), []
        await asyncio.gather(_call(gate, "agent-a", log, "a1", first_token_after_s=0.05),
                             _call(gate, "agent-a", log, "a2"), _call(gate, "agent-b", log, "b1"),
                             _call(gate, None, log, "none"))
        return gate, log

    gate, log = asyncio.run(run())
    assert log.index(("a2", "sent")) > log.index(("a1", "token"))
    assert log.index(("b1", "sent")) < log.index(("a1", "token")) and log.index(("none", "sent")) < 3
    assert gate.waited == 1


def test_a_first_call_that_fails_before_its_token_lets_the_waiting_calls_go():
    async def run():
        gate, log = SamePrefixGate(wait_s=5.0), []
        results = await asyncio.gather(_call(gate, "k", log, "first", first_token_after_s=0.05, fail=True),
                                       _call(gate, "k", log, "second"), return_exceptions=True)
        return results, log

    results, log = asyncio.run(run())
    assert isinstance(results[0], RuntimeError) and log[-1] == ("second", "token")


@pytest.mark.parametrize("wait_s", [0.05, 0.0])
def test_the_wait_is_bounded_and_zero_turns_the_gate_off(wait_s):
    async def run():
        gate, log, loop = SamePrefixGate(wait_s=wait_s), [], asyncio.get_running_loop()
        start = loop.time()
        slow = asyncio.create_task(_call(gate, "k", log, "slow", first_token_after_s=1.0))
        await asyncio.sleep(0)
        await _call(gate, "k", log, "quick")
        took = loop.time() - start
        slow.cancel()
        return took

    took = asyncio.run(run())
    assert took < 0.5 and (took >= 0.045 if wait_s else took < 0.04)
