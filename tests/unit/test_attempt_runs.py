"""An agent's attempts by key: the supervisor stops one by its key, whether its call runs yet or not."""

import asyncio

import pytest

from actors._attempt_runs import AttemptRuns


async def _started(runs: AttemptRuns, key: str) -> asyncio.Task:
    async def run() -> None:
        this = asyncio.current_task()
        assert this is not None
        runs.begin(key, this)
        try:
            await asyncio.sleep(60)
        finally:
            runs.end(key, this)

    task = asyncio.create_task(run())
    await asyncio.sleep(0)
    return task


def test_a_cancelled_attempt_stops_whether_its_call_had_begun_or_not():
    async def scenario() -> None:
        runs = AttemptRuns()
        running = await _started(runs, "m/t/1")
        runs.cancel(["m/t/1", "m/u/1"])  # u's call has not reached the agent yet
        with pytest.raises(asyncio.CancelledError):
            await running
        with pytest.raises(asyncio.CancelledError):
            runs.begin("m/u/1", running)
        runs.begin("m/u/2", running)  # the retry is another attempt

    asyncio.run(scenario())


def test_dropped_attempts_may_run_again_under_the_same_keys():
    async def scenario() -> None:
        runs = AttemptRuns()
        running = await _started(runs, "m/t/1")
        runs.cancel(["m/u/1"])
        assert list(runs.drop(["m/t/1", "m/u/1"])) == ["m/t/1"]
        with pytest.raises(asyncio.CancelledError):
            await running
        again = await _started(runs, "m/t/1")
        runs.begin("m/u/1", again)  # the restarted supervisor's dispatch of u runs
        assert list(runs.drop(["m/t/1"])) == ["m/t/1"]
        with pytest.raises(asyncio.CancelledError):
            await again

    asyncio.run(scenario())


def test_an_attempt_that_ended_is_not_cancelled_and_leaves_no_run_behind():
    async def scenario() -> None:
        runs = AttemptRuns()
        running = await _started(runs, "m/t/1")
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert runs.drop(["m/t/1"]) == {}

    asyncio.run(scenario())
