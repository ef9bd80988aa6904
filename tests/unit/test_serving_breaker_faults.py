"""The breaker blames a backend only for the backend's own faults: not for a caller's deadline, a cancel,
or a caller that stops reading; and a half-open probe that ends without a verdict frees its slot."""

import asyncio

import pytest

from controlplane.config import ServingConfig
from controlplane.errors import DeadlineExceeded, ReplicaUnavailable
from serving._core import Call, RouterCore


class Backend:
    """Fails with a 503 while `down`; otherwise answers after `delay_s`."""

    def __init__(self):
        self.down, self.delay_s, self.calls = False, 0.0, 0

    async def stream(self, call, affinity_key):
        self.calls += 1
        if self.down:
            yield {"done": True, "error": {"status": 503, "message": "backend down"}}
            return
        await asyncio.sleep(self.delay_s)
        yield {"delta": "ok"}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1}


def make(request_timeout_s=30.0, fallback=True):
    models = {"main": {"kind": "scripted", "breaker": {"failure_threshold": 2, "open_s": 5}},
              "spare": {"kind": "scripted"}}
    if fallback:
        models["main"]["fallback"] = "spare"
    config = ServingConfig.model_validate({"router": {"request_timeout_s": request_timeout_s}, "models": models})
    now = [0.0]
    main, spare = Backend(), Backend()
    return RouterCore(config, {"main": main, "spare": spare}, clock=lambda: now[0]), main, now


def call(timeout_s=None):
    return Call(model="main", body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                timeout_s=timeout_s)


async def collect(core, the_call):
    return [event async for event in core.stream(the_call)]


def open_then_half_open(core, main, now):
    main.down = True
    for _ in range(2):
        asyncio.run(collect(core, call()))  # answered by the fallback; main's failures open its breaker
    assert core.breaker_state("main") == "open"
    now[0] = 5.0
    main.down = False
    assert core.breaker_state("main") == "half_open"


def test_a_callers_own_short_timeout_is_not_a_backend_failure():
    core, main, _ = make(fallback=False)
    main.delay_s = 1.0
    for _ in range(3):
        with pytest.raises(DeadlineExceeded, match="timeout_s=0.02"):
            asyncio.run(collect(core, call(timeout_s=0.02)))
    assert core.breaker_state("main") == "closed"


def test_the_routers_own_timeout_still_counts_as_a_backend_failure():
    core, main, _ = make(request_timeout_s=0.02, fallback=False)
    main.delay_s = 1.0
    for _ in range(2):
        with pytest.raises(ReplicaUnavailable, match="timeout_s=0.02"):
            asyncio.run(collect(core, call()))
    assert core.breaker_state("main") == "open"


def test_a_cancelled_half_open_probe_frees_its_slot():
    core, main, now = make()
    open_then_half_open(core, main, now)
    main.delay_s = 10.0

    async def cancel_the_probe():
        probe = asyncio.ensure_future(collect(core, call()))
        await asyncio.sleep(0.05)
        assert main.calls == 3  # the probe reached main
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe

    asyncio.run(cancel_the_probe())
    main.delay_s = 0.0
    assert core.breaker_state("main") == "half_open"
    assert asyncio.run(collect(core, call()))[-1]["model"] == "main"  # a new probe is let through
    assert core.breaker_state("main") == "closed"


def test_a_probe_whose_caller_stops_reading_frees_its_slot():
    core, main, now = make()
    open_then_half_open(core, main, now)

    async def read_one_then_stop():
        stream = core.stream(call())
        assert (await anext(stream)) == {"delta": "ok"}
        await stream.aclose()

    asyncio.run(read_one_then_stop())
    assert asyncio.run(collect(core, call()))[-1]["model"] == "main"


def test_a_probe_past_its_callers_deadline_frees_its_slot_without_reopening():
    core, main, now = make()
    open_then_half_open(core, main, now)
    main.delay_s = 1.0
    with pytest.raises(DeadlineExceeded):
        asyncio.run(collect(core, call(timeout_s=0.02)))
    assert core.breaker_state("main") == "half_open"
    main.delay_s = 0.0
    assert asyncio.run(collect(core, call()))[-1]["model"] == "main"
