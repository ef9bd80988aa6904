"""Three router cores sharing rpm, tpm and max_in_flight limits through the lease client: together they admit each
limit (a model's, an agent's, a mission's, an API key's), not 3x; a limiter that does not answer refuses calls with
backpressure."""

import asyncio

import pytest
from ray.exceptions import RayActorError

from controlplane import BackpressureError
from controlplane.config import ServingConfig
from serving._core import Call, RouterCore
from serving._keys import KeyScope
from serving._leases import LeaseBook, Quota, SlotBook, take_slots_and_leases
from serving._limiter import SharedLimits
from serving._types import Identity
from tests.helpers.inprocess_book import InProcessBook


class FakeBackend:
    def __init__(self, prompt_tokens=3):
        self.prompt_tokens = prompt_tokens

    async def stream(self, call, affinity_key):
        yield {"delta": "ok"}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": self.prompt_tokens, "completion_tokens": 1}


class _Remote:
    """An actor method in this process: it runs when called, as Ray starts a call at once, and its result is
    awaited or left alone (a call sent without waiting)."""

    def __init__(self, fn):
        self._fn = fn

    def remote(self, *args):
        return _Done(self._fn(*args))


class _Done:
    def __init__(self, value):
        self.value = value

    def __await__(self):
        yield from ()
        return self.value


class InProcessLimiter:
    """The LimiterActor's methods on a LeaseBook, awaitable like actor calls, on a fixed clock."""

    def __init__(self, now_s=0.0):
        self.now_s = now_s
        self.book = LeaseBook()
        self.asked = []
        """The (slots, lease requests) of each `take`."""
        self.take = _Remote(self._take)
        self.give_back = _Remote(self._give_back)
        self.charge = _Remote(lambda scope, units: self.book.charge(scope, units, now_s))
        self.alive = {"r0", "r1", "r2"}
        self.restart_slots()

    def _take(self, slots, holder, slot, requests, expired):
        self.asked.append((slots, requests))
        self._give_back(expired)
        return take_slots_and_leases(self.slots, self.book, slots, holder, slot, requests, self.now_s)

    def _give_back(self, units):
        for scope, unit in units.items():
            self.book.give_back(scope, unit, self.now_s)

    def restart_slots(self):
        """A restarted limiter's slots: it knows none of the calls in flight."""
        self.slots = SlotBook(holder_alive=lambda holder: holder in self.alive)
        self.give_slots = _Remote(self.slots.give_back)


def three_cores(serving: dict, backend: FakeBackend | None = None, book: InProcessBook | None = None,
                ) -> tuple[list[RouterCore], InProcessLimiter]:
    config = ServingConfig.model_validate(serving)
    limiter = InProcessLimiter()
    cores = [RouterCore(config, {"m": backend or FakeBackend()}, clock=lambda: 0.0, book=book,
                        shared=SharedLimits(limiter, holder=f"r{i}", ttl_s=60.0, clock=lambda: 0.0)) for i in range(3)]
    return cores, limiter


async def admitted(core: RouterCore, *, agent: str = "a1", mission: str = "m1", key: KeyScope | None = None,
                   content: str = "hi") -> int:
    call = Call(model="m", body={"messages": [{"role": "user", "content": content}], "max_tokens": 4},
                identity=Identity(mission_id=mission, agent_id=agent), key=key)
    try:
        async for _ in core.stream(call):
            pass
    except BackpressureError:
        return 0
    return 1


def test_three_cores_admit_the_shared_rpm_once_not_three_times():
    cores, limiter = three_cores({"models": {"m": {"kind": "scripted", "limits": {"rpm": 120}}}})

    async def scenario():
        return sum([await admitted(cores[i % 3]) for i in range(400)])

    assert asyncio.run(scenario()) == 120  # each core's own bucket would allow 120: 360 without sharing
    assert limiter.book.level("model:m:rpm", 0.0) == 0


def test_three_cores_admit_each_agents_rpm_once_and_the_agents_do_not_share_it():
    cores, limiter = three_cores({"router": {"agent": {"rpm": 30}}, "models": {"m": {"kind": "scripted"}}})

    async def scenario():
        return {agent: sum([await admitted(cores[i % 3], agent=agent) for i in range(100)])
                for agent in ("a1", "a2")}

    assert asyncio.run(scenario()) == {"a1": 30, "a2": 30}  # 90 each with a bucket per replica
    assert limiter.book.level("agent:m1/a1:rpm", 0.0) == 0


def test_a_call_under_small_rpm_limits_of_its_agent_mission_and_model_asks_the_limiter_once():
    """Limits of 100 or less lease one unit at a time, so every call asks: for its three scopes at once."""
    cores, limiter = three_cores({"router": {"agent": {"rpm": 40}, "mission": {"rpm": 50}},
                                  "models": {"m": {"kind": "scripted", "limits": {"rpm": 60}}}})

    async def scenario():
        return sum([await admitted(cores[i % 3]) for i in range(30)])

    assert asyncio.run(scenario()) == 30
    assert len(limiter.asked) == 30  # 90 with a round trip per scope
    assert {scope: limiter.book.level(scope, 0.0) for scope in limiter.book.scopes()} == {
        "agent:m1/a1:rpm": 10, "mission:m1:rpm": 20, "model:m:rpm": 30}


def test_a_call_refused_by_one_shared_limit_keeps_no_unit_of_the_others():
    """Agent a1's calls past its rpm are refused after the model's unit was leased with the agent's: they must
    not spend the model's rpm, which the other agents then get whole."""
    cores, limiter = three_cores({"router": {"agent": {"rpm": 2}},
                                  "models": {"m": {"kind": "scripted", "limits": {"rpm": 10}}}})

    async def scenario():
        first = [await admitted(cores[0], agent="a1") for _ in range(12)]
        others = [await admitted(cores[0], agent=f"a{n}") for n in range(2, 7) for _ in range(3)]
        return sum(first), sum(others)

    assert asyncio.run(scenario()) == (2, 8)  # the model's 10, split 2 + 8
    assert limiter.book.level("model:m:rpm", 0.0) == 0


def test_three_cores_admit_a_missions_tpm_once_and_a_refusal_names_the_shared_limit():
    estimate = 360 // 4 + 4 + 4  # characters / 4, 4 per message, max_tokens
    cores, _ = three_cores({"router": {"mission": {"tpm": 1000}}, "models": {"m": {"kind": "scripted"}}},
                           FakeBackend(prompt_tokens=estimate - 1))  # each call uses what it reserved

    async def scenario():
        return sum([await admitted(cores[i % 3], agent=f"a{i}", content="x" * 360) for i in range(30)])

    calls = asyncio.run(scenario())
    assert calls == 1000 // estimate  # 30 with a bucket per replica
    with pytest.raises(BackpressureError, match="mission:m1 is over its shared tpm=1000 limit"):
        asyncio.run(_stream_all(cores[0], Call(model="m", body={"messages": [{"role": "user", "content": "x" * 360}],
                                                                "max_tokens": 4},
                                               identity=Identity(mission_id="m1", agent_id="a9"))))


async def _stream_all(core: RouterCore, call: Call) -> None:
    async for _ in core.stream(call):
        pass


class HeldBackend(FakeBackend):
    """Answers once `go` is set, so that calls stay in flight."""

    def __init__(self):
        super().__init__()
        self.go = asyncio.Event()

    async def stream(self, call, affinity_key):
        await self.go.wait()
        async for event in super().stream(call, affinity_key):
            yield event


def test_three_cores_run_an_agents_max_in_flight_once_between_them_and_a_call_that_ends_frees_its_slot():
    backend = HeldBackend()
    cores, limiter = three_cores({"router": {"agent": {"max_in_flight": 2}}, "models": {"m": {"kind": "scripted"}}},
                                 backend)
    slot = "agent:m1/a1:in_flight"

    async def scenario():
        calls = [asyncio.create_task(admitted(cores[i % 3])) for i in range(6)]
        await asyncio.sleep(0.01)
        held = limiter.slots.in_flight(slot)
        backend.go.set()
        first = await asyncio.gather(*calls)
        again = await asyncio.gather(*(admitted(cores[i]) for i in (1, 2)))
        return held, first, again

    held, first, again = asyncio.run(scenario())
    assert held == 2 and sum(first) == 2  # each core's own count would let 2 run on each: 6
    assert again == [1, 1] and limiter.slots.in_flight(slot) == 0


def test_a_slot_whose_replica_died_is_freed_once_the_scope_is_full_and_the_replica_not_seen_for_a_while():
    alive, asked, scope = {"r0", "r1"}, [], "agent:m1/a1:in_flight"

    def holder_alive(holder):
        asked.append(holder)
        return holder in alive

    book = SlotBook(holder_alive=holder_alive, alive_for_s=2.0)
    assert book.take([(scope, 2)], "r0", "r0/1", 0.0) is None and book.take([(scope, 2)], "r0", "r0/2", 0.0) is None
    alive.discard("r0")  # r0 died with both calls in flight
    assert book.take([(scope, 2)], "r1", "r1/1", 1.0) == scope  # r0 asked for a slot 1 s ago: it is not asked about
    assert book.take([(scope, 2)], "r1", "r1/2", 2.5) is None and asked == ["r0"]
    book.give_back([scope], "r0/1")  # a late word from the dead replica changes nothing
    book.give_back([scope], "r1/1")  # nor does a slot that was refused
    assert book.in_flight(scope) == 1
    book.give_back([scope], "r1/2")
    assert book.in_flight(scope) == 0


def test_calls_refused_one_after_another_ask_whether_a_replica_runs_once_every_few_seconds():
    asked, scope = [], "agent:m1/a1:in_flight"
    book = SlotBook(holder_alive=lambda holder: asked.append(holder) or True, alive_for_s=2.0)
    assert book.take([(scope, 1)], "r0", "r0/1", 0.0) is None
    refusals = [book.take([(scope, 1)], "r1", f"r1/{n}", n / 10) for n in range(41)]  # 0 s to 4 s, every 0.1 s
    assert refusals == [scope] * 41
    assert asked == ["r0", "r0"]  # at 2 s (r0's own request at 0 s counts) and at 4 s: not 41 times


def test_a_call_takes_its_agents_and_missions_slots_all_or_none():
    agent, mission = "agent:m1/a1:in_flight", "mission:m1:in_flight"
    book = SlotBook(holder_alive=lambda holder: True)
    assert book.take([(agent, 2), (mission, 1)], "r0", "r0/1", 0.0) is None
    assert book.take([(agent, 2), (mission, 1)], "r1", "r1/1", 0.0) == mission
    assert book.in_flight(agent) == 1  # the refused call holds none of its agent's slots either
    book.give_back([agent, mission], "r0/1")
    assert book.in_flight(agent) == book.in_flight(mission) == 0


def test_a_call_that_stops_waiting_for_its_slots_hands_them_back():
    """The limiter may still take the slots of a caller that timed out or was cancelled; the replica sends their
    return after the request, and Ray runs one caller's calls to an actor in the order they were sent."""
    sent = []
    slots = [("agent:m1/a1:in_flight", 2), ("mission:m1:in_flight", 4)]

    class NeverAnswers:
        def remote(self, slots, holder, slot, requests, expired):
            sent.append(("take", slot))
            return asyncio.Event().wait()

    class Records:
        def remote(self, scopes, slot):
            sent.append(("give", slot, len(scopes)))

    limiter = UnreachableLimiter(None)
    limiter.take, limiter.give_slots = NeverAnswers(), Records()
    shared = SharedLimits(limiter, holder="r0", answer_timeout_s=0.05)

    async def cancelled():
        asking = asyncio.create_task(shared.take(slots, []))
        await asyncio.sleep(0.01)
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking

    with pytest.raises(BackpressureError, match="the router's limiter"):
        asyncio.run(shared.take(slots, []))
    asyncio.run(cancelled())
    assert sent == [("take", "r0/0"), ("give", "r0/0", 2), ("take", "r0/1"), ("give", "r0/1", 2)]


def test_a_restarted_limiter_starts_with_every_slot_free_and_the_old_slots_given_back_change_nothing():
    backend = HeldBackend()
    cores, limiter = three_cores({"router": {"agent": {"max_in_flight": 2}}, "models": {"m": {"kind": "scripted"}}},
                                 backend)
    slot = "agent:m1/a1:in_flight"

    async def scenario():
        before = [asyncio.create_task(admitted(cores[i])) for i in (0, 1)]
        await asyncio.sleep(0.01)
        limiter.restart_slots()
        after = [asyncio.create_task(admitted(cores[2])) for _ in range(3)]
        await asyncio.sleep(0.01)
        held = limiter.slots.in_flight(slot)
        backend.go.set()
        return held, await asyncio.gather(*before), await asyncio.gather(*after)

    held, before, after = asyncio.run(scenario())
    assert held == 2 and before == [1, 1]
    assert after == [1, 1, 0]  # the calls still running are not counted: one overshoot, to 4 in flight at most
    assert limiter.slots.in_flight(slot) == 0  # the two old calls' slots, handed to the new limiter, freed nothing


class GatedBook(InProcessBook):
    """A book whose reservations are answered only once `gate` is set."""

    def __init__(self):
        super().__init__()
        self.gate = asyncio.Event()
        self.made = 0

    async def reserve(self, mission_id, agent_id, **size):
        await self.gate.wait()
        self.made += 1
        return await super().reserve(mission_id, agent_id, **size)


def gated_core() -> tuple[RouterCore, InProcessLimiter, GatedBook]:
    book = GatedBook()
    [core, *_], limiter = three_cores({"router": {"replicas": 3, "agent": {"max_in_flight": 2}},
                                       "models": {"m": {"kind": "scripted"}}}, book=book)
    return core, limiter, book


def test_a_capped_calls_reservation_and_its_slots_are_asked_for_at_once():
    core, limiter, book = gated_core()
    take = limiter.take

    def asked(*args):  # a router that waits for its reservation before it asks for slots never gets an answer
        book.gate.set()
        return take.remote(*args)

    limiter.take = type("Asked", (), {"remote": staticmethod(asked)})()

    async def scenario():
        await core.set_budget("m1", max_tokens=1000)
        return await asyncio.wait_for(admitted(core), 2.0)

    assert asyncio.run(scenario()) == 1
    assert book.ledger.spend("m1").tokens > 0


def test_a_calls_slots_and_its_leases_come_from_the_limiter_in_one_round_trip():
    """Limits of 100 or less lease one unit at a time, so every call asks for its rpm units with its slots."""
    [core, *_], limiter = three_cores({"router": {"agent": {"max_in_flight": 2, "rpm": 30}, "mission": {"rpm": 40}},
                                       "models": {"m": {"kind": "scripted"}}})

    async def scenario():
        return [await admitted(core) for _ in range(3)]

    assert asyncio.run(scenario()) == [1, 1, 1]
    assert [(slots, [scope for scope, *_ in requests]) for slots, requests in limiter.asked] == [
        ([("agent:m1/a1:in_flight", 2)], ["agent:m1/a1:rpm", "mission:m1:rpm"])] * 3
    assert limiter.slots.in_flight("agent:m1/a1:in_flight") == 0


def test_a_call_refused_its_lease_hands_back_the_slots_it_took_at_the_same_time():
    [core, *_], limiter = three_cores({"router": {"agent": {"max_in_flight": 2, "rpm": 1}},
                                       "models": {"m": {"kind": "scripted"}}})

    async def scenario():
        return [await admitted(core) for _ in range(3)]

    assert asyncio.run(scenario()) == [1, 0, 0]
    assert limiter.slots.in_flight("agent:m1/a1:in_flight") == 0


def test_a_call_refused_its_slots_while_its_reservation_waits_never_makes_it():
    core, limiter, book = gated_core()

    async def scenario():
        await core.set_budget("m1", max_tokens=1000)
        for n in (1, 2):  # another replica's calls hold the agent's two slots
            limiter.slots.take([("agent:m1/a1:in_flight", 2)], "r1", f"r1/{n}", 0.0)
        refused = await admitted(core)
        book.gate.set()
        await asyncio.sleep(0.01)
        return refused

    assert asyncio.run(scenario()) == 0
    assert book.made == 0  # the book never held it, not even for a moment


def test_a_call_cancelled_while_its_reservation_is_on_its_way_drops_it_when_it_comes_and_hands_its_slots_back():
    core, limiter, book = gated_core()

    async def scenario():
        await core.set_budget("m1", max_tokens=1000)
        calling = asyncio.create_task(admitted(core))
        await asyncio.sleep(0.01)
        in_flight = limiter.slots.in_flight("agent:m1/a1:in_flight")
        calling.cancel()
        await asyncio.sleep(0.01)
        book.gate.set()
        await asyncio.sleep(0.01)
        return in_flight

    assert asyncio.run(scenario()) == 1
    assert limiter.slots.in_flight("agent:m1/a1:in_flight") == 0
    assert book.ledger.spend("m1").reserved_tokens == 0 and book.ledger.spend("m1").tokens == 0


def capped_cores(max_tokens: int) -> tuple[list[RouterCore], InProcessLimiter, InProcessBook, HeldBackend]:
    """Three replicas deciding hard caps through one book, an agent's max_in_flight of 2, mission m1 capped."""
    backend, book = HeldBackend(), InProcessBook()
    cores, limiter = three_cores({"router": {"replicas": 3, "agent": {"max_in_flight": 2}},
                                  "models": {"m": {"kind": "scripted"}}}, backend, book)
    asyncio.run(cores[0].set_budget("m1", max_tokens=max_tokens))
    return cores, limiter, book, backend


def test_a_call_refused_its_slots_drops_the_reservation_it_asked_for_at_the_same_time():
    [core, *_], _, book, backend = capped_cores(max_tokens=1000)

    async def scenario():
        running = [asyncio.create_task(admitted(core)) for _ in range(2)]
        await asyncio.sleep(0.01)
        reserved = book.ledger.spend("m1").reserved_tokens
        refused = await admitted(core)
        await asyncio.sleep(0.01)
        after = book.ledger.spend("m1").reserved_tokens
        backend.go.set()
        await asyncio.gather(*running)
        return reserved, refused, after

    reserved, refused, after = asyncio.run(scenario())
    assert reserved == 2 * 46 and refused == 0  # 46: the worst case of one call
    assert after == reserved  # the refused call's reservation came, and was dropped
    assert book.ledger.spend("m1").reserved_tokens == 0


def test_a_call_refused_by_its_budget_hands_back_the_slots_it_took_at_the_same_time():
    [core, other, _], limiter, _, backend = capped_cores(max_tokens=100)  # two calls' worst case, not three

    async def scenario():
        running = [asyncio.create_task(admitted(core)) for _ in range(2)]
        await asyncio.sleep(0.01)
        limiter.restart_slots()  # room for slots again, while the two calls still hold their reservations
        with pytest.raises(BackpressureError, match="max_tokens=100 .92 held by calls in flight"):
            await _stream_all(other, Call(model="m", body={"messages": [{"role": "user", "content": "hi"}],
                                                           "max_tokens": 4},
                                          identity=Identity(mission_id="m1", agent_id="a1")))
        in_flight = limiter.slots.in_flight("agent:m1/a1:in_flight")
        backend.go.set()
        await asyncio.gather(*running)
        return in_flight

    assert asyncio.run(scenario()) == 0


def test_three_cores_admit_an_api_keys_rpm_once():
    cores, _ = three_cores({"models": {"m": {"kind": "scripted"}}})
    key = KeyScope(id="k1", name="ci", kind="mission", scope_id="m1", rpm=12, created_at_s=0.0)

    async def scenario():
        return sum([await admitted(cores[i % 3], agent=f"a{i}", key=key) for i in range(60)])

    assert asyncio.run(scenario()) == 12


def test_the_limiter_forgets_buckets_that_are_full_again_and_keeps_those_in_use():
    book = LeaseBook(forget_every_s=60.0)
    quota = Quota.per_minute(60)
    book.grant("agent:m1/a1:rpm", 1, 0.0, at_least=1, quota=quota)
    book.grant("agent:m1/a2:rpm", 1, 0.0, at_least=1, quota=quota)
    book.charge("agent:m1/a2:rpm", 120, 0.0)  # a2 overran by two minutes; a1 made one request
    book.grant("agent:m1/a3:rpm", 1, 30.0, at_least=1, quota=quota)  # too soon to forget
    assert sorted(book.scopes()) == ["agent:m1/a1:rpm", "agent:m1/a2:rpm", "agent:m1/a3:rpm"]
    book.grant("agent:m1/a3:rpm", 1, 61.0, at_least=1, quota=quota)
    assert sorted(book.scopes()) == ["agent:m1/a2:rpm", "agent:m1/a3:rpm"]  # a1 refilled: as good as new


class _Unanswered:
    def __init__(self, error):
        self._error = error

    async def remote(self, *_):
        if self._error is None:
            await asyncio.Event().wait()
        raise self._error


class UnreachableLimiter:
    """A limiter that is restarting (Ray raises) or never answers."""

    def __init__(self, error):
        self.take = _Unanswered(error)
        self.give_slots = _Remote(lambda scopes, slot: None)


@pytest.mark.parametrize("error", [None, RayActorError()], ids=["silent", "restarting"])
def test_a_call_whose_limiter_does_not_answer_is_refused_with_backpressure_not_an_actor_error(error):
    config = ServingConfig.model_validate({"router": {"agent": {"rpm": 60}}, "models": {"m": {"kind": "scripted"}}})
    core = RouterCore(config, {"m": FakeBackend()}, shared=SharedLimits(UnreachableLimiter(error), holder="r0",
                                                                        answer_timeout_s=0.05))
    with pytest.raises(BackpressureError, match="the router's limiter is over its 0.05 s answer limit"):
        asyncio.run(_stream_all(core, Call(model="m", body={"messages": [{"role": "user", "content": "hi"}],
                                                            "max_tokens": 4})))


def test_a_replica_forgets_the_scopes_whose_leases_expired():
    now = [0.0]
    shared = SharedLimits(InProcessLimiter(), holder="r0", ttl_s=1.0, clock=lambda: now[0])
    quota = Quota.per_minute(6000)

    async def scenario():
        for n in range(100):  # a hundred agents of ended missions
            await shared.take([], [(f"agent:m{n}/a:rpm", 1, quota)])
        now[0] = 2.0
        await shared.take([], [("agent:m-live/a:rpm", 1, quota)])

    asyncio.run(scenario())
    assert shared._holder.scopes() == {"agent:m-live/a:rpm"}
    assert set(shared._locks) == {"agent:m-live/a:rpm"}
