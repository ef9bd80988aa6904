"""Hard budgets: reserve the worst case, settle the truth; exact under parallel calls, in tokens and dollars."""

import asyncio
import random
import threading

import pytest

from controlplane.errors import BackpressureError, BudgetExceeded
from serving._ledger import BudgetLedger, ModelPrice, cost_usd

FREE = ModelPrice()
PRICE = ModelPrice(input_usd_per_1m=0.15, output_usd_per_1m=0.60)


def test_cost_is_exact_per_million_tokens():
    assert cost_usd(PRICE, 1000, 500) == 0.00045
    assert cost_usd(PRICE, 10**6, 10**6) == 0.75
    assert cost_usd(FREE, 10**9, 10**9) == 0.0


def test_reserve_then_settle_gives_back_the_rest():
    ledger = BudgetLedger()
    ledger.set_budget("m", None, max_tokens=100, max_usd=None)
    reservation = ledger.reserve("m", "a", prompt_tokens=10, max_tokens=40, price=FREE)
    assert ledger.spend("m").reserved_tokens == 50 and ledger.spend("m", "a").reserved_tokens == 50
    charge = ledger.settle(reservation, prompt_tokens=8, completion_tokens=5)
    assert (charge.prompt_tokens, charge.completion_tokens, charge.overrun_tokens) == (8, 5, 0)
    assert (ledger.spend("m").tokens, ledger.spend("m").reserved_tokens) == (13, 0)
    assert ledger.spend("m", "a").tokens == 13


def test_a_call_that_might_fit_later_is_backpressure_one_that_never_fits_is_budget_exceeded():
    ledger = BudgetLedger(mission_max_tokens=100)
    first = ledger.reserve("m", "a", prompt_tokens=10, max_tokens=50, price=FREE)
    with pytest.raises(BackpressureError, match="60 held by calls in flight") as info:
        ledger.reserve("m", "b", prompt_tokens=10, max_tokens=40, price=FREE)
    assert info.value.retryable
    assert ledger.spend("m", "b").reserved_tokens == 0  # a refusal holds nothing
    ledger.settle(first, prompt_tokens=10, completion_tokens=10)
    second = ledger.reserve("m", "b", prompt_tokens=10, max_tokens=40, price=FREE)  # 20 used + 50 <= 100
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("m", "c", prompt_tokens=10, max_tokens=80, price=FREE)  # 20 + 90 > 100, however long
    assert (info.value.scope, info.value.budget, info.value.limit, info.value.used) == ("mission 'm'", "max_tokens",
                                                                                        100, 20)
    assert not info.value.retryable
    ledger.release(second, prompt_tokens=0, completion_tokens=0)
    assert ledger.spend("m") == ledger.spend("m").__class__(tokens=20, usd=0.0, reserved_tokens=0, reserved_usd=0.0)


def test_an_agent_cap_refuses_while_the_mission_has_room_and_holds_nothing_anywhere():
    ledger = BudgetLedger()
    ledger.set_budget("m", "a", max_tokens=30, max_usd=None)
    ledger.reserve("m", "b", prompt_tokens=10, max_tokens=90, price=FREE)  # other agents are not capped
    with pytest.raises(BudgetExceeded, match="agent 'a' of mission 'm' reached its max_tokens"):
        ledger.reserve("m", "a", prompt_tokens=10, max_tokens=21, price=FREE)
    assert ledger.spend("m").reserved_tokens == 100
    ledger.reserve("m", "a", prompt_tokens=10, max_tokens=20, price=FREE)


def test_usd_caps_on_mission_and_agent():
    ledger = BudgetLedger()
    ledger.set_budget("m", None, max_tokens=None, max_usd=0.001)
    ledger.set_budget("m", "cheap", max_tokens=None, max_usd=0.0001)
    with pytest.raises(BudgetExceeded, match="max_usd") as info:
        ledger.reserve("m", "cheap", prompt_tokens=100, max_tokens=200, price=PRICE)  # 0.000135 > 0.0001
    assert info.value.limit == 0.0001
    reservation = ledger.reserve("m", "rich", prompt_tokens=1000, max_tokens=1000, price=PRICE)  # 0.00075
    assert ledger.spend("m").reserved_usd == 0.00075
    with pytest.raises(BackpressureError, match="max_usd"):
        ledger.reserve("m", "rich", prompt_tokens=1000, max_tokens=1000, price=PRICE)
    charge = ledger.settle(reservation, prompt_tokens=1000, completion_tokens=100)
    assert charge.usd == 0.00021 and ledger.spend("m", "rich").usd == 0.00021


def test_failed_calls_are_charged_what_the_backend_processed_and_no_more_than_reserved():
    ledger = BudgetLedger()
    reservation = ledger.reserve("m", "a", prompt_tokens=50, max_tokens=20, price=PRICE)
    charge = ledger.release(reservation, prompt_tokens=500, completion_tokens=7)  # claims beyond the reservation
    assert (charge.prompt_tokens, charge.completion_tokens) == (50, 7)
    assert charge.usd == cost_usd(PRICE, 50, 7) and ledger.spend("m").tokens == 57


def test_a_reservation_closes_once():
    ledger = BudgetLedger()
    reservation = ledger.reserve("m", "a", prompt_tokens=1, max_tokens=1, price=FREE)
    ledger.settle(reservation, prompt_tokens=1, completion_tokens=1)
    with pytest.raises(ValueError, match="already settled or released"):
        ledger.release(reservation, prompt_tokens=0, completion_tokens=0)
    assert ledger.spend("m").tokens == 2


def test_a_wrong_worst_case_is_counted_as_overrun():
    ledger = BudgetLedger()
    reservation = ledger.reserve("m", "a", prompt_tokens=5, max_tokens=5, price=FREE)
    assert ledger.settle(reservation, prompt_tokens=12, completion_tokens=5).overrun_tokens == 7
    assert ledger.overrun_tokens == 7


def test_twenty_parallel_threads_never_overshoot_a_tight_cap():
    cap_tokens, cap_usd, workers = 5_000, 0.002, 20
    ledger = BudgetLedger()
    ledger.set_budget("m", None, max_tokens=cap_tokens, max_usd=cap_usd)
    start, seen = threading.Barrier(workers), []

    def worker(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        while True:
            try:
                reservation = ledger.reserve("m", f"a{n % 4}", prompt_tokens=20, max_tokens=80, price=PRICE)
            except BackpressureError:
                continue
            except BudgetExceeded:
                return
            spend = ledger.spend("m")
            seen.append((spend.tokens + spend.reserved_tokens, spend.usd + spend.reserved_usd))
            ledger.settle(reservation, prompt_tokens=rng.randint(1, 20), completion_tokens=rng.randint(1, 80))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spend = ledger.spend("m")
    assert max(tokens for tokens, _ in seen) <= cap_tokens and max(usd for _, usd in seen) <= cap_usd + 1e-15
    assert spend.tokens <= cap_tokens and spend.usd <= cap_usd and spend.reserved_tokens == 0
    assert len(seen) > workers  # the cap was really contended
    assert spend.tokens > cap_tokens - 100 or spend.usd > cap_usd - cost_usd(PRICE, 20, 80)  # and used up


def test_twenty_parallel_router_calls_never_overshoot_mission_or_agent_caps():
    from controlplane.config import ServingConfig
    from serving import Identity
    from serving._core import Call, RouterCore

    class SlowBackend:
        async def stream(self, call, affinity_key):
            for _ in range(3):
                await asyncio.sleep(0)
            yield {"delta": "some words"}
            yield {"done": True, "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 2}

    config = ServingConfig.model_validate({"router": {"agent": {"max_in_flight": 64}}, "models": {
        "main": {"kind": "scripted", "price": {"input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0}}}})
    core = RouterCore(config, {"main": SlowBackend()})
    asyncio.run(core.set_budget("m", max_tokens=3000, max_usd=None))
    asyncio.run(core.set_budget("m", "a0", max_tokens=100, max_usd=None))

    async def task(n: int) -> int:
        calls = 0
        the_call = Call(model="main", body={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10},
                        identity=Identity(mission_id="m", agent_id=f"a{n % 4}"))
        while True:
            try:
                async for _ in core.stream(the_call):
                    pass
                calls += 1
            except BackpressureError:
                await asyncio.sleep(0)
            except BudgetExceeded:
                return calls

    async def main() -> list[int]:
        return await asyncio.gather(*(task(n) for n in range(20)))

    calls = asyncio.run(main())
    mission, a0 = core.caps.ledger.spend("m"), core.caps.ledger.spend("m", "a0")
    assert mission.tokens == 5 * sum(calls) and mission.tokens <= 3000 and a0.tokens <= 100
    # Each call reserves 5 + 8 + 32 + 10 = 55 and uses 5: a0 stops once 5 * n + 55 > 100, the mission likewise.
    assert (a0.tokens, mission.tokens) == (50, 2950)
    assert mission.usd == pytest.approx(sum(calls) * (3 * 1.0 + 2 * 2.0) / 1e6)
    assert core.caps.ledger.overrun_tokens == 0


class _Backend:
    """Streams `deltas` chunks of `text`, then finishes, fails with `fail_status`, or hangs (`hang`)."""

    def __init__(self, *, deltas=2, fail_status=None, hang=False, text="word "):
        self.deltas, self.fail_status, self.hang, self.text = deltas, fail_status, hang, text

    async def stream(self, call, affinity_key):
        for _ in range(self.deltas):
            yield {"delta": self.text}
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_status:
            yield {"done": True, "error": {"status": self.fail_status, "message": "backend says no"}}
            return
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": self.deltas}


def _core(backend, **router):
    from controlplane.config import ServingConfig
    from serving._core import RouterCore

    config = ServingConfig.model_validate({"router": router, "models": {
        "main": {"kind": "scripted", "price": {"input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0}}}})
    return RouterCore(config, {"main": backend})


def _call(**fields):
    from serving import Identity
    from serving._core import Call

    return Call(model="main", body={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10},
                identity=Identity(mission_id="m", agent_id="a"), **fields)


async def _drain(core, the_call, stop_after=None):
    events = core.stream(the_call)
    async for event in events:
        if stop_after is not None and "delta" in event:
            stop_after -= 1
            if stop_after == 0:
                await events.aclose()  # the caller goes away (cancel)
                return None
        if event.get("done"):
            return event


def test_a_finished_call_carries_its_cost_and_is_charged_its_usage():
    core = _core(_Backend(deltas=2))
    final = asyncio.run(_drain(core, _call()))
    assert final["usd"] == (3 * 1.0 + 2 * 2.0) / 1e6
    assert core.caps.ledger.spend("m").tokens == 5 and core.ledger.snapshot("m")[0]["usd"] == final["usd"]


def test_a_failed_call_is_charged_its_prompt_and_what_it_generated():
    core = _core(_Backend(deltas=1, fail_status=503))
    with pytest.raises(Exception, match="backend says no"):
        asyncio.run(_drain(core, _call()))
    spend = core.caps.ledger.spend("m", "a")
    assert (spend.tokens, spend.reserved_tokens) == (5 + 1, 0)  # prompt estimate 5, one delta
    assert core.ledger.snapshot("m")[0]["errors"] == 1 and core.ledger.snapshot("m")[0]["prompt_tokens"] == 5


def test_a_timed_out_call_is_charged():
    core = _core(_Backend(deltas=3, hang=True))
    with pytest.raises(Exception, match="timeout_s=0.05"):
        asyncio.run(_drain(core, _call(timeout_s=0.05)))
    assert core.caps.ledger.spend("m").tokens == 5 + 3


def test_a_timed_out_call_is_charged_every_chunk_of_the_deltas_the_router_merged():
    core = _core(_Backend(deltas=8, hang=True, text="a"))  # ready together, the 8 one-character chunks go as one
    with pytest.raises(Exception, match="timeout_s=0.05"):
        asyncio.run(_drain(core, _call(timeout_s=0.05)))
    assert core.caps.ledger.spend("m").tokens == 5 + 8


def test_a_cancelled_call_is_charged_what_it_generated_before_the_caller_went():
    core = _core(_Backend(deltas=2, hang=True))
    assert asyncio.run(_drain(core, _call(), stop_after=1)) is None
    spend = core.caps.ledger.spend("m")
    assert (spend.tokens, spend.reserved_tokens) == (5 + 2, 0)  # "word word " = 10 characters, about 2 tokens


def test_a_call_refused_before_dispatch_is_charged_nothing():
    core = _core(_Backend(), agent={"rpm": 1})
    asyncio.run(_drain(core, _call()))
    with pytest.raises(BackpressureError, match="rpm=1"):
        asyncio.run(_drain(core, _call()))
    spend = core.caps.ledger.spend("m")
    assert (spend.tokens, spend.reserved_tokens) == (5, 0)


def test_a_ledger_restored_from_an_export_carries_on_the_caps_and_the_usage():
    first = BudgetLedger()
    first.set_budget("m", None, max_tokens=100, max_usd=0.01)
    first.set_budget("m", "a", max_tokens=40, max_usd=None)
    first.settle(first.reserve("m", "a", prompt_tokens=10, max_tokens=20, price=PRICE), prompt_tokens=10,
                 completion_tokens=20)
    first.reserve("m", "a", prompt_tokens=5, max_tokens=5, price=FREE)  # in flight: dies with its ledger
    first.settle(first.reserve("other", "a", prompt_tokens=1, max_tokens=1, price=FREE), prompt_tokens=1,
                 completion_tokens=1)

    later = BudgetLedger(mission_max_tokens=1000)
    later.restore("m", first.export("m"))
    assert (later.spend("m").tokens, later.spend("m", "a").tokens, later.spend("m").reserved_tokens) == (30, 30, 0)
    assert later.spend("m").usd == first.spend("m").usd
    with pytest.raises(BudgetExceeded, match="agent 'a'"):
        later.reserve("m", "a", prompt_tokens=5, max_tokens=6, price=FREE)  # 30 + 11 > 40
    assert later.spend("other").tokens == 0


def test_a_cap_the_export_leaves_unset_keeps_the_restoring_ledgers_default():
    book = BudgetLedger()
    book.charge("m", "a", tokens=70, usd=0.0)
    later = BudgetLedger(mission_max_tokens=100)
    later.restore("m", book.export("m"))
    assert not book.capped("m", "a") and later.capped("m", "a")
    with pytest.raises(BudgetExceeded, match="mission 'm'"):
        later.reserve("m", "b", prompt_tokens=10, max_tokens=21, price=FREE)  # 70 + 31 > 100
