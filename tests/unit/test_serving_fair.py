"""Weighted fair queueing between missions: shares follow weights; a noisy mission cannot starve a quiet one."""

import asyncio
from collections import Counter

import pytest

from controlplane import BackpressureError, SpecError
from serving._fair import FairQueue
from serving._gate import Gate


def _serve(queue: FairQueue, n: int) -> Counter:
    return Counter(queue.pop()[0] for _ in range(n))


def test_saturated_shares_follow_the_weights():
    queue = FairQueue(capacity=10_000, scope="model:m")
    weights = {"m1": 1, "m2": 1, "m3": 2, "m4": 4}
    for flow, weight in weights.items():
        queue.set_weight(flow, weight)
    for i in range(1000):  # every mission keeps far more waiting than is served
        for flow in weights:
            queue.push((flow, i), "normal", flow=flow)
    served = _serve(queue, 800)
    assert {flow: served[flow] for flow in weights} == {"m1": 100, "m2": 100, "m3": 200, "m4": 400}


def test_a_quiet_mission_is_served_next_despite_a_noisy_backlog():
    queue = FairQueue(capacity=10_000, scope="model:m")
    for i in range(500):
        queue.push(("noisy", i), "normal", flow="noisy")
    _serve(queue, 100)
    queue.push(("quiet", 0), "normal", flow="quiet")
    assert [queue.pop()[0] for _ in range(2)].count("quiet") == 1  # at most one noisy call goes first


def test_an_idle_flow_banks_no_credit():
    queue = FairQueue(capacity=10_000, scope="model:m")
    for i in range(100):
        queue.push(("busy", i), "normal", flow="busy")
    _serve(queue, 50)  # "late" sent nothing meanwhile
    for i in range(50):
        queue.push(("late", i), "normal", flow="late")
    served = _serve(queue, 20)
    assert served["late"] == 10 and served["busy"] == 10  # an even split from now on, not a burst to catch up


def test_costs_weigh_big_calls_more():
    queue = FairQueue(capacity=100, scope="model:m")
    for i in range(20):
        queue.push(("big", i), "normal", flow="big", cost=300)
        queue.push(("small", i), "normal", flow="small", cost=100)
    served = _serve(queue, 8)
    assert served == {"small": 6, "big": 2}


def test_priority_still_comes_before_fairness_and_fifo_within_a_flow():
    queue = FairQueue(capacity=10, scope="model:m")
    queue.set_weight("heavy", 100)
    queue.push(("heavy", "b1"), "bulk", flow="heavy")
    queue.push(("m", "n1"), "normal", flow="m")
    queue.push(("m", "n2"), "normal", flow="m")
    queue.push(("x", "c1"), "control", flow="x")
    assert [queue.pop()[1] for _ in range(4)] == ["c1", "n1", "n2", "b1"]


def test_full_queue_and_bad_weight_are_refused():
    queue = FairQueue(capacity=1, scope="model:m")
    queue.push("a", "normal", flow="m")
    with pytest.raises(BackpressureError, match="max_queue=1"):
        queue.push("b", "normal", flow="m")
    with pytest.raises(SpecError, match="positive"):
        queue.set_weight("m", 0)


def test_gate_hands_slots_by_weight():
    async def scenario():
        gate = Gate(slots=1, max_queue=100, scope="model:m")
        gate.set_weight("heavy", 3)
        await gate.acquire("normal", 1.0)
        order = []

        async def waiter(flow):
            await gate.acquire("normal", 5.0, flow=flow)
            order.append(flow)
            gate.release()

        tasks = [asyncio.create_task(waiter(flow)) for flow in ["light"] * 4 + ["heavy"] * 12]
        await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(scenario())
    assert Counter(order[:8]) == {"heavy": 6, "light": 2}


def test_within_a_mission_less_slack_goes_first_and_the_shares_between_missions_stay():
    queue = FairQueue(capacity=100, scope="model:m")
    for i, slack in enumerate([5.0, None, 3.0, 0.0]):
        queue.push(("busy", i), "normal", flow="busy", slack_s=slack)
    queue.push(("other", 0), "normal", flow="other")
    order = [queue.pop() for _ in range(5)]
    assert [item for item in order if item[0] == "busy"] == [("busy", 3), ("busy", 2), ("busy", 0), ("busy", 1)]
    assert order.index(("other", 0)) == 1  # the other mission's turn comes when it would without slack


def test_a_removed_call_with_slack_leaves_no_trace():
    queue = FairQueue(capacity=100, scope="model:m")
    first, urgent = ("a", 0), ("a", 1)
    queue.push(first, "normal", flow="a")
    queue.push(urgent, "normal", flow="a", slack_s=0.0)
    assert queue.remove(urgent) and queue.pop() is first and len(queue) == 0
