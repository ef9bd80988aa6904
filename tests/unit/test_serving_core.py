"""The router's control path on fake backends (no Ray): checks, fallback, deadlines, accounting."""

import asyncio
import pickle

import pytest

from controlplane import BackpressureError, BudgetExceeded, ReplicaUnavailable, SpecError
from controlplane.config import ServingConfig
from serving import Identity
from serving._core import Call, RouterCore
from tests.helpers.inprocess_book import InProcessBook


class FakeBackend:
    def __init__(self, *, text="hi there", fail_status=None, delay_s=0.0):
        self.text, self.fail_status, self.delay_s, self.calls = text, fail_status, delay_s, 0

    async def stream(self, call, affinity_key):
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status:
            yield {"done": True, "error": {"status": self.fail_status, "message": "backend says no"}}
            return
        yield {"delta": self.text}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 2}


def config(**router):
    return ServingConfig.model_validate({"router": router, "models": {
        "main": {"kind": "scripted", "fallback": "spare", "breaker": {"failure_threshold": 2, "open_s": 5},
                 "max_context_tokens": 100},
        "spare": {"kind": "scripted"}}})


def call(model="main", max_tokens=10, content="hello", **kwargs):
    return Call(model=model, body={"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens},
                **kwargs)


async def run(core, the_call):
    return [event async for event in core.stream(the_call)]


def test_reply_and_accounting():
    core = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()})
    events = asyncio.run(run(core, call(identity=Identity(mission_id="m", agent_id="a"))))
    assert events[0] == {"delta": "hi there"}
    assert events[-1]["model"] == "main" and events[-1]["completion_tokens"] == 2
    assert core.ledger.snapshot("m")[0]["prompt_tokens"] == 7
    assert core.used_tokens("m") == 9


@pytest.mark.parametrize(("the_call", "where", "status_text"), [
    (call(model="nope"), "model", "no such model"),
    (call(max_tokens=100), "max_tokens", "context limit of 100"),
    (call(content="x" * 400), "messages", "context limit of 100"),
])
def test_bad_calls_are_refused_before_any_work(the_call, where, status_text):
    backend = FakeBackend()
    core = RouterCore(config(), {"main": backend, "spare": FakeBackend()})
    with pytest.raises(SpecError, match=status_text) as info:
        asyncio.run(run(core, the_call))
    assert info.value.where == where and backend.calls == 0
    assert core.ledger.snapshot() == []


def test_failures_go_to_the_fallback_then_open_the_breaker():
    now = [0.0]
    main, spare = FakeBackend(fail_status=503), FakeBackend(text="from spare")
    core = RouterCore(config(), {"main": main, "spare": spare}, clock=lambda: now[0])
    for _ in range(2):  # each failed call is answered by the fallback
        assert asyncio.run(run(core, call()))[-1]["model"] == "spare"
    assert core.breaker_state("main") == "open"
    events = asyncio.run(run(core, call()))
    assert events[-1]["model"] == "spare" and main.calls == 2  # open: main is not even tried
    now[0] = 5.0  # half-open: the next call probes main, which has recovered
    main.fail_status = None
    assert asyncio.run(run(core, call()))[-1]["model"] == "main"
    assert core.breaker_state("main") == "closed"


def test_client_errors_do_not_open_the_breaker():
    core = RouterCore(config(), {"main": FakeBackend(fail_status=400), "spare": FakeBackend()})
    for _ in range(3):
        with pytest.raises(SpecError, match="backend says no"):
            asyncio.run(run(core, call()))
    assert core.breaker_state("main") == "closed"


def test_the_routers_own_timeout_is_a_backend_failure():
    core = RouterCore(config(request_timeout_s=0.05), {"main": FakeBackend(), "spare": FakeBackend(delay_s=1.0)})
    with pytest.raises(ReplicaUnavailable, match="timeout_s=0.05"):
        asyncio.run(run(core, call(model="spare")))
    assert core.ledger.snapshot()[0]["errors"] == 1


def test_no_fallback_and_breaker_open_fails_fast():
    core = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend(fail_status=500)})
    for _ in range(5):
        with pytest.raises(ReplicaUnavailable, match="backend says no"):
            asyncio.run(run(core, call(model="spare")))
    with pytest.raises(ReplicaUnavailable, match="circuit breaker of 'spare' is open"):
        asyncio.run(run(core, call(model="spare")))


def test_mission_budget_hard_cap():
    core = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()})
    asyncio.run(core.set_budget("m", max_tokens=60))
    ident = Identity(mission_id="m")
    asyncio.run(run(core, call(identity=ident)))  # worst case 5 + 8 + 32 + 10 = 55, used 9
    with pytest.raises(BudgetExceeded):
        asyncio.run(run(core, call(identity=ident, max_tokens=20)))  # 9 + 45 + 20 > 60


def test_a_hard_cap_is_refused_with_several_router_replicas_and_no_book_to_share_it():
    core = RouterCore(config(replicas=3), {"main": FakeBackend(), "spare": FakeBackend()})
    with pytest.raises(SpecError, match="router.replicas: 3 .*bind only the one router replica"):
        asyncio.run(core.set_budget("m", "a", max_usd=1.0))
    asyncio.run(core.set_budget("m", max_tokens=None))  # uncapped is the same on every replica


def test_agent_rpm_limit():
    core = RouterCore(config(agent={"rpm": 1}), {"main": FakeBackend(), "spare": FakeBackend()})
    asyncio.run(run(core, call()))
    with pytest.raises(BackpressureError, match="rpm=1"):
        asyncio.run(run(core, call()))


def test_breaker_state_of_an_unknown_model_is_a_spec_error():
    core = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()})
    with pytest.raises(SpecError, match="no such model"):
        core.breaker_state("nope")


def test_a_backend_429_is_backpressure_with_its_retry_after():
    class Limited(FakeBackend):
        async def stream(self, call, affinity_key):
            yield {"done": True, "error": {"status": 429, "message": "slow down", "retry_after_s": 7.0}}

    core = RouterCore(config(), {"main": Limited(), "spare": FakeBackend()})
    with pytest.raises(BackpressureError) as info:
        asyncio.run(run(core, call()))
    assert info.value.retry_after_s == 7.0
    assert core.breaker_state("main") == "closed"


def test_an_api_keys_rpm_is_one_more_admission_scope_across_its_agents():
    from serving._keys import KeyScope

    now = [0.0]
    core = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()}, clock=lambda: now[0])
    key = KeyScope(id="k1", name="ci", kind="team", scope_id="team", rpm=2, created_at_s=0.0)
    for agent in ("a", "b"):  # two agents of the key: the key's limit is shared
        asyncio.run(run(core, call(identity=Identity(mission_id="team", agent_id=agent), key=key)))
    with pytest.raises(BackpressureError, match="key:k1 is over its rpm=2"):
        asyncio.run(run(core, call(identity=Identity(mission_id="team", agent_id="c"), key=key)))
    asyncio.run(run(core, call(identity=Identity(mission_id="team", agent_id="c"))))  # the same agent, no key
    now[0] = 30.0  # a minute's rpm refills evenly: one more call after 30 s
    asyncio.run(run(core, call(identity=Identity(mission_id="team", agent_id="c"), key=key)))


def test_a_missions_waiting_calls_run_least_slack_first():
    class Recording(FakeBackend):
        def __init__(self):
            super().__init__(delay_s=0.01)
            self.order = []

        async def stream(self, call, affinity_key):
            self.order.append(call["messages"][0]["content"])
            async for event in super().stream(call, affinity_key):
                yield event

    backend = Recording()
    core = RouterCore(config(max_in_flight_per_model=1), {"main": backend, "spare": FakeBackend()})
    mission = Identity(mission_id="m1", agent_id="a")

    async def scenario():
        first = asyncio.ensure_future(run(core, call(content="first", identity=mission)))
        await asyncio.sleep(0)  # it holds the one slot; the others queue
        rest = [asyncio.ensure_future(run(core, call(content=name, identity=mission, slack_s=slack)))
                for name, slack in [("spare", 4.0), ("fifo", None), ("critical", 0.0)]]
        await asyncio.gather(first, *rest)

    asyncio.run(scenario())
    assert backend.order == ["first", "critical", "spare", "fifo"]


def test_on_dispatch_is_called_when_a_call_leaves_the_queue_for_its_backend():
    """The HTTP API commits a stream's status no earlier than this (serving._stream.first_event_or_a_silent_run)."""
    narrow = ServingConfig.model_validate({"models": {"main": {"kind": "scripted", "limits": {"max_in_flight": 1}}}})
    backend = FakeBackend(delay_s=0.2)
    core = RouterCore(narrow, {"main": backend})
    dispatched = []

    async def scenario():
        loop = asyncio.get_running_loop()
        start = loop.time()

        def on_dispatch(name):
            return lambda: dispatched.append((name, backend.calls, loop.time() - start))

        await asyncio.gather(run(core, call(on_dispatch=on_dispatch("first"))),
                             run(core, call(on_dispatch=on_dispatch("queued"))))

    asyncio.run(scenario())
    assert [(name, calls) for name, calls, _ in dispatched] == [("first", 0), ("queued", 1)]  # before its backend call
    assert dispatched[0][2] < 0.1 and dispatched[1][2] >= 0.19  # the queued one left when the first one ended


class PickledStore(dict):
    """A book's store that keeps only bytes, as the GCS does."""

    def save(self, key, record_of):
        self[key] = pickle.dumps(record_of())

    def load_all(self):
        return {key: pickle.loads(value) for key, value in self.items()}


def test_a_replica_started_after_one_died_carries_on_its_missions_caps_and_usage_from_the_book():
    book = InProcessBook()
    dead = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()}, book=book)
    asyncio.run(dead.set_budget("m", max_tokens=70))
    ident = Identity(mission_id="m", agent_id="a")
    asyncio.run(run(dead, call(identity=ident)))  # used 9

    started = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()}, book=book)
    asyncio.run(run(started, call(identity=ident, max_tokens=10)))  # worst case 9 + 55 <= 70: used 18
    assert started.used_tokens("m") == 18 and book.ledger.spend("m").tokens == 18
    [row] = asyncio.run(started.usage("m"))  # the result's usage counts the calls before the restart too
    assert (row["calls"], row["prompt_tokens"] + row["completion_tokens"]) == (2, 18)
    with pytest.raises(BudgetExceeded, match=r"\(18 used of 70\)"):
        asyncio.run(run(started, call(identity=ident, max_tokens=8)))  # 18 + 53 > 70; a fresh ledger allows it


def test_uncapped_missions_never_write_to_the_book():
    book = InProcessBook()
    core = RouterCore(config(), {"main": FakeBackend(), "spare": FakeBackend()}, book=book)
    for _ in range(3):
        asyncio.run(run(core, call(identity=Identity(mission_id="free"))))
    assert book.charges == 0 and book.ledger.export("free") == []


def replicas_sharing(book, count=2, **router):
    return [RouterCore(config(replicas=count, **router), {"main": FakeBackend(), "spare": FakeBackend()}, book=book)
            for _ in range(count)]


class AwaitCountingBook(InProcessBook):
    """Counts the book's methods a replica awaits."""

    def __init__(self):
        super().__init__()
        self.awaited = []

    async def load(self, mission_id):
        self.awaited.append("load")
        return await super().load(mission_id)

    async def reserve(self, mission_id, agent_id, **size):
        self.awaited.append("reserve")
        return await super().reserve(mission_id, agent_id, **size)


def test_with_several_replicas_uncapped_calls_wait_for_the_book_once_per_mission_and_capped_ones_each_time():
    book = AwaitCountingBook()
    [core, _] = replicas_sharing(book)
    for _ in range(3):
        asyncio.run(run(core, call(identity=Identity(mission_id="free"))))
    assert book.awaited == ["load"]  # the mission's caps, read once; usage rows go without waiting
    asyncio.run(core.set_budget("capped", max_tokens=1000))
    for _ in range(2):
        asyncio.run(run(core, call(identity=Identity(mission_id="capped"))))
    assert book.awaited == ["load", "load", "reserve", "reserve"]


def test_with_several_router_replicas_one_missions_cap_binds_them_all_through_the_book():
    book = InProcessBook()
    armed, other = replicas_sharing(book)
    asyncio.run(armed.set_budget("m", max_tokens=100))
    ident = Identity(mission_id="m", agent_id="a")
    asyncio.run(run(other, call(identity=ident)))  # worst case 55 <= 100; used 9
    asyncio.run(run(armed, call(identity=ident)))  # 9 + 55 <= 100; used 18
    with pytest.raises(BudgetExceeded, match=r"\(18 used of 100\)"):
        asyncio.run(run(other, call(identity=ident, max_tokens=40)))  # 18 + 85 > 100; its own 9 + 85 would fit
    assert book.ledger.spend("m").tokens == 18 and book.ledger.spend("m").reserved_tokens == 0


def test_with_several_router_replicas_calls_in_flight_on_any_replica_hold_their_worst_case_in_the_book():
    async def scenario():
        book = InProcessBook()
        first, second = replicas_sharing(book)
        for core in (first, second):
            core._backends["main"] = FakeBackend(delay_s=0.05)
        await first.set_budget("m", max_tokens=100)
        ident = Identity(mission_id="m", agent_id="a")
        slow = asyncio.ensure_future(run(first, call(identity=ident)))  # holds 55 while it runs
        await asyncio.sleep(0.01)
        with pytest.raises(BackpressureError, match="55 held by calls in flight"):
            await run(second, call(identity=ident))
        await slow
        await run(second, call(identity=ident))  # fits once the first has settled at 9

    asyncio.run(scenario())


def test_a_reservation_its_replica_never_settles_is_charged_its_worst_case_once_its_lease_runs_out():
    from serving._bookkeeper import BookKeeper
    from serving._ledger import ModelPrice, Spend

    keeper = BookKeeper()
    keeper.set_budget("m", None, max_tokens=100, max_usd=None)
    size = {"price": ModelPrice(), "lease_s": 10.0}
    lost = keeper.reserve("m", "a", prompt_tokens=20, max_tokens=30, now_s=0.0, **size)  # its replica dies
    with pytest.raises(BackpressureError, match="50 held by calls in flight"):
        keeper.reserve("m", "a", prompt_tokens=20, max_tokens=40, now_s=9.0, **size)
    with pytest.raises(BudgetExceeded, match=r"\(50 used of 100\)"):  # the lease ran out: charged 50
        keeper.reserve("m", "a", prompt_tokens=20, max_tokens=40, now_s=10.5, **size)
    assert keeper.budgets.spend("m") == Spend(tokens=50, usd=0.0, reserved_tokens=0, reserved_usd=0.0)
    keeper.settle(lost, prompt_tokens=5, completion_tokens=5)  # too late: it stays charged its worst case
    assert keeper.budgets.spend("m").tokens == 50


def test_with_several_router_replicas_caps_cannot_change_once_a_replica_has_served_the_mission():
    book = InProcessBook()
    armed, other = replicas_sharing(book)
    asyncio.run(armed.set_budget("m", max_tokens=100))
    asyncio.run(run(other, call(identity=Identity(mission_id="m"))))  # other read the caps before this call
    with pytest.raises(SpecError, match="already made model calls.*arm a mission's caps before its first"):
        asyncio.run(armed.set_budget("m", max_tokens=500))
    asyncio.run(armed.set_budget("m", max_tokens=100))  # the same caps again: a resumed mission re-arms them


def test_with_several_router_replicas_usage_is_every_replicas_whichever_replica_is_asked():
    book = InProcessBook()
    cores = replicas_sharing(book, 3)
    for core in cores:
        asyncio.run(run(core, call(identity=Identity(mission_id="m", agent_id="a"))))
    for core in cores:
        [row] = asyncio.run(core.usage("m"))
        assert (row["calls"], row["prompt_tokens"], row["completion_tokens"]) == (3, 21, 6)
    assert [row["calls"] for row in cores[0].ledger.snapshot("m")] == [1]  # each replica's own is one call


def test_a_reservation_whose_replica_is_gone_is_charged_at_once_when_it_holds_back_a_call():
    from serving._bookkeeper import BookKeeper
    from serving._ledger import ModelPrice

    alive = {"r1": True, "r2": True}
    keeper = BookKeeper(holder_alive=alive.__getitem__)
    keeper.set_budget("m", None, max_tokens=100, max_usd=None)
    size = {"price": ModelPrice(), "lease_s": 1000.0, "now_s": 0.0}
    keeper.reserve("m", "a", prompt_tokens=20, max_tokens=30, holder="r1", **size)
    with pytest.raises(BackpressureError, match="50 held by calls in flight"):  # r1 may yet settle for less
        keeper.reserve("m", "a", prompt_tokens=20, max_tokens=40, holder="r2", **size)
    alive["r1"] = False
    with pytest.raises(BudgetExceeded, match=r"\(50 used of 100\)"):  # long before the lease runs out
        keeper.reserve("m", "a", prompt_tokens=20, max_tokens=40, holder="r2", **size)
    keeper.reserve("m", "a", prompt_tokens=20, max_tokens=30, holder="r2", **size)  # what is left still serves


def test_with_several_router_replicas_the_routers_default_mission_cap_binds_them_all_through_the_book():
    book = InProcessBook()
    first, second = replicas_sharing(book, mission={"token_budget": 100})  # no set_budget: the config's default
    ident = Identity(mission_id="m", agent_id="a")
    asyncio.run(run(second, call(identity=ident)))  # worst case 55 <= 100; used 9
    asyncio.run(run(first, call(identity=ident)))  # 9 + 55 <= 100; used 18
    with pytest.raises(BudgetExceeded, match=r"\(18 used of 100\)"):
        asyncio.run(run(second, call(identity=ident, max_tokens=40)))  # its own 9 + 85 would fit


def test_with_several_router_replicas_a_budget_book_that_restarts_carries_on_its_caps_calls_in_flight_and_usage():
    async def scenario():
        book = InProcessBook(PickledStore())
        first, second = replicas_sharing(book)
        first._backends["main"] = FakeBackend(delay_s=0.05)
        await first.set_budget("m", max_tokens=100)
        ident = Identity(mission_id="m", agent_id="a")
        await run(second, call(identity=ident))  # used 9
        slow = asyncio.ensure_future(run(first, call(identity=ident)))  # holds 55 while it runs
        await asyncio.sleep(0.01)
        book.restart()
        with pytest.raises(BackpressureError, match="55 held by calls in flight"):  # an empty book would allow it
            await run(second, call(identity=ident))
        await slow  # settles in the new book the reservation the old one granted: used 18
        with pytest.raises(BudgetExceeded, match=r"\(18 used of 100\)"):
            await run(second, call(identity=ident, max_tokens=40))
        [row] = await second.usage("m")
        assert (row["calls"], row["prompt_tokens"] + row["completion_tokens"]) == (2, 18)
        with pytest.raises(SpecError, match="already made model calls"):  # the caps stay fixed
            await first.set_budget("m", max_tokens=500)

    asyncio.run(scenario())


def test_a_restarted_books_reservations_never_reuse_an_id_and_it_keeps_the_default_caps():
    from serving._bookkeeper import BookKeeper
    from serving._ledger import ModelPrice

    store = PickledStore()
    keeper = BookKeeper(store=store)
    keeper.set_default_caps(100, None)
    size = {"price": ModelPrice(), "lease_s": 10.0, "now_s": 0.0}
    held = keeper.reserve("m", "a", prompt_tokens=10, max_tokens=10, **size)
    settled = keeper.reserve("m", "a", prompt_tokens=10, max_tokens=10, **size)
    keeper.settle(settled, prompt_tokens=5, completion_tokens=5)

    restarted = BookKeeper(store=store)
    later = restarted.reserve("m", "a", prompt_tokens=10, max_tokens=10, **size)
    assert later.id > settled.id > held.id
    restarted.settle(settled, prompt_tokens=1, completion_tokens=1)  # a duplicate settle closes nothing
    assert restarted.budgets.spend("m").reserved_tokens == 40 and restarted.budgets.spend("m").tokens == 10
    with pytest.raises(BudgetExceeded, match="max_tokens"):  # a new mission gets the saved default cap
        restarted.reserve("new", "a", prompt_tokens=60, max_tokens=50, **size)


def test_a_message_a_restarted_book_gets_again_is_applied_once():
    from serving._accounting import UsageTotals
    from serving._bookkeeper import BookKeeper
    from serving._ledger import ModelPrice

    store = PickledStore()
    keeper = BookKeeper(store=store)
    keeper.set_budget("m", None, max_tokens=100, max_usd=None)
    size = {"price": ModelPrice(), "lease_s": 10.0, "now_s": 0.0}
    held = keeper.reserve("m", "a", prompt_tokens=20, max_tokens=30, request=("replica", 1), **size)
    totals = UsageTotals(calls=1, prompt_tokens=20, completion_tokens=10)
    keeper.record("m", "a", "main", totals, settles=held, message=("replica", 2))

    restarted = BookKeeper(store=store)  # the book died before answering: Ray sends the record again
    restarted.record("m", "a", "main", totals, settles=held, message=("replica", 2))
    assert restarted.budgets.spend("m").tokens == 30
    assert [row["calls"] for row in restarted.usage.snapshot("m")] == [1]
    granted = restarted.reserve("m", "a", prompt_tokens=20, max_tokens=30, request=("replica", 3), **size)
    assert restarted.reserve("m", "a", prompt_tokens=20, max_tokens=30, request=("replica", 3), **size) == granted
    assert restarted.budgets.spend("m").reserved_tokens == 50  # held once


class SaveCountingStore(PickledStore):
    def __init__(self):
        super().__init__()
        self.saves = []

    def save(self, key, record_of):
        self.saves.append(key)
        super().save(key, record_of)


def test_a_batch_of_reservations_is_granted_in_order_up_to_the_cap_refused_in_place_and_saved_once_per_mission():
    from serving._bookkeeper import BookKeeper, ReserveRequest
    from serving._ledger import ModelPrice, Reservation

    store = SaveCountingStore()
    keeper = BookKeeper(store=store)
    keeper.set_budget("m", None, max_tokens=100, max_usd=None)
    store.saves.clear()

    def asks(mission, number):
        return ReserveRequest(mission, "a", 20, 20, ModelPrice(), 10.0, "replica", ("replica", number))

    answers = keeper.reserve_many([asks("m", 1), asks("m", 2), asks("m", 3), asks("n", 4), asks("m", 1)], now_s=0.0)
    first, second, refused, other, again = answers
    assert all(isinstance(answer, Reservation) for answer in (first, second, other))
    assert isinstance(refused, BackpressureError) and "80 held by calls in flight" in str(refused)  # 120 > 100
    assert again == first  # a request sent again gets what it was granted
    assert sorted(store.saves) == ["mission:m", "mission:n"]  # once each, after the batch
    assert BookKeeper(store=store).budgets.spend("m").reserved_tokens == 80


def test_the_book_makes_a_missions_record_once_for_all_the_changes_saved_while_it_writes():
    import threading

    from serving._budget_book import GcsBookStore

    writing, go_on, written, made = threading.Event(), threading.Event(), [], []

    def put(key, value):
        writing.set()
        go_on.wait(5)
        written.append((key, pickle.loads(value)))

    def record_of(change):
        return lambda: made.append(change) or change

    store = GcsBookStore("book", put=put)
    store.save("mission:m", record_of(0))
    assert writing.wait(5)  # the writer writes the first change's record...
    for change in range(1, 11):  # ...while ten more are saved
        store.save("mission:m", record_of(change))
    go_on.set()
    store.wait_saved()
    assert made == [0, 10] and written == [("book/mission:m", 0), ("book/mission:m", 10)]


def test_a_replicas_messages_are_applied_in_order_and_once_when_a_restarted_book_gets_them_again():
    from serving._accounting import UsageTotals
    from serving._bookkeeper import BookKeeper
    from serving._ledger import ModelPrice

    store = PickledStore()
    keeper = BookKeeper(store=store)
    keeper.set_budget("m", None, max_tokens=100, max_usd=None)
    held = keeper.reserve("m", "a", prompt_tokens=20, max_tokens=30, price=ModelPrice(), lease_s=10.0, now_s=0.0)
    totals = UsageTotals(calls=1, prompt_tokens=20, completion_tokens=10)
    batch = [("record", ("m", "a", "main", totals), {"settles": held, "message": ("replica", 2)}),
             ("charge", ("m", "b", "main", totals), {"message": ("replica", 3)})]
    keeper.apply(batch)
    restarted = BookKeeper(store=store)  # the book died before answering: Ray sends the batch again
    restarted.apply(batch)
    assert restarted.budgets.spend("m").tokens == 60 and restarted.budgets.spend("m").reserved_tokens == 0
    assert sorted((row["agent_id"], row["calls"]) for row in restarted.usage.snapshot("m")) == [("a", 1), ("b", 1)]


def test_a_book_that_finds_a_record_it_cannot_read_starts_and_carries_on_the_others(caplog):
    """An upgrade: a record another version saved, with a field this one lacks, must not stop the book (Ray would
    restart it forever, and every capped call would be refused)."""
    from serving._accounting import UsageTotals
    from serving._bookkeeper import MISSION_KEY, BookKeeper, MissionRecord

    store = PickledStore()
    keeper = BookKeeper(store=store)
    for mission in ("old", "kept"):
        keeper.set_budget(mission, None, max_tokens=100, max_usd=None)
        keeper.record(mission, "a", "main", UsageTotals(calls=1, prompt_tokens=6, completion_tokens=4))
    older = object.__new__(MissionRecord)
    for field in ("accounts", "open", "usage", "loaded", "last_reservation_id"):  # no `applied` yet
        object.__setattr__(older, field, getattr(pickle.loads(store[MISSION_KEY + "old"]), field))
    store[MISSION_KEY + "old"] = pickle.dumps(older)

    restarted = BookKeeper(store=store)
    assert [row["calls"] for row in restarted.usage.snapshot("kept")] == [1]
    assert restarted.usage.snapshot("old") == []
    assert "could not read mission 'old'" in caplog.text and "applied" in caplog.text


def test_the_gcs_store_skips_a_record_it_cannot_unpickle(monkeypatch, caplog):
    from serving import _budget_book
    from serving._bookkeeper import DefaultCaps

    saved = {b"app:budgets/defaults": pickle.dumps(DefaultCaps(100, None)),
             b"app:budgets/mission:m": b"\x80\x04cgone_module\nGoneRecord\n."}
    monkeypatch.setattr(_budget_book, "_internal_kv_list", lambda prefix, namespace: list(saved))
    monkeypatch.setattr(_budget_book, "_internal_kv_get", lambda key, namespace: saved[key])
    store = object.__new__(_budget_book.GcsBookStore)  # no writer thread: only reading is tested
    store._prefix = "app:budgets/"
    assert store.load_all() == {"defaults": DefaultCaps(100, None)}
    assert "could not read its record 'app:budgets/mission:m'" in caplog.text
