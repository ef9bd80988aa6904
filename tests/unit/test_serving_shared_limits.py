"""Three router cores sharing one model's rpm through the lease client: together they admit the limit, not 3x."""

import asyncio

from controlplane import BackpressureError
from controlplane.config import ServingConfig
from serving._core import Call, RouterCore
from serving._leases import LeaseBook, shared_quotas
from serving._limiter import SharedLimits


class FakeBackend:
    async def stream(self, call, affinity_key):
        yield {"delta": "ok"}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 1}


class _Remote:
    def __init__(self, fn):
        self._fn = fn

    def remote(self, *args):
        async def call():
            return self._fn(*args)
        return call()


class InProcessLimiter:
    """The LimiterActor's methods on a LeaseBook, awaitable like actor calls, on a fixed clock."""

    def __init__(self, config, now_s=0.0):
        self.book = LeaseBook()
        for scope, quota in shared_quotas(config.models).items():
            self.book.set_quota(scope, quota, now_s)
        self.grant = _Remote(lambda scope, want, at_least: self.book.grant(scope, want, now_s, at_least=at_least))
        self.give_back = _Remote(lambda units: [self.book.give_back(s, u, now_s) for s, u in units.items()])
        self.charge = _Remote(lambda scope, units: self.book.charge(scope, units, now_s))


def test_three_cores_admit_the_shared_rpm_once_not_three_times():
    config = ServingConfig.model_validate({"models": {"m": {"kind": "scripted", "limits": {"rpm": 120}}}})
    limiter = InProcessLimiter(config)
    cores = [RouterCore(config, {"m": FakeBackend()}, clock=lambda: 0.0,
                        shared=SharedLimits(limiter, ttl_s=60.0, clock=lambda: 0.0)) for _ in range(3)]

    async def one(core):
        call = Call(model="m", body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        try:
            async for _ in core.stream(call):
                pass
        except BackpressureError:
            return 0
        return 1

    async def scenario():
        return sum([await one(cores[i % 3]) for i in range(400)])

    assert asyncio.run(scenario()) == 120  # each core's own bucket would allow 120: 360 without sharing
    assert limiter.book.level("model:m:rpm", 0.0) == 0
