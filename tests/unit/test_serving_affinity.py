"""Prefix-affinity replica choice with the power-of-two fallback."""

import random
from collections import Counter

from serving._affinity import choose, preferred, prefix_key

REPLICAS = ["r1", "r2", "r3", "r4"]


def msgs(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_same_long_prefix_same_key_different_prefix_different_key():
    role = "You are the market researcher. " * 30  # longer than the prefix window
    assert prefix_key(msgs(role, "task A")) == prefix_key(msgs(role, "task B"))
    assert prefix_key(msgs("You are the writer.", "x")) != prefix_key(msgs("You are the critic.", "x"))


def test_same_prefix_goes_to_the_same_replica_when_not_busy():
    rng = random.Random(0)
    key = prefix_key(msgs("You are the planner.", "plan"))
    picks = {choose(key, REPLICAS, {}, busy_at=4, rng=rng) for _ in range(50)}
    assert picks == {preferred(key, REPLICAS)}


def test_keys_spread_over_replicas():
    keys = [prefix_key(msgs(f"role {i}", "x")) for i in range(200)]
    spread = Counter(preferred(key, REPLICAS) for key in keys)
    assert set(spread) == set(REPLICAS) and min(spread.values()) > 20


def test_preference_survives_an_unrelated_replica_leaving():
    keys = [prefix_key(msgs(f"role {i}", "x")) for i in range(100)]
    before = {key: preferred(key, REPLICAS) for key in keys}
    after = {key: preferred(key, REPLICAS[:-1]) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert all(before[key] == "r4" for key in moved)


def test_busy_preferred_replica_falls_back_to_the_less_loaded_of_two():
    key = prefix_key(msgs("You are the planner.", "plan"))
    first = preferred(key, REPLICAS)
    loads = {replica: 5 for replica in REPLICAS}
    loads[first] = 9
    idle = next(r for r in REPLICAS if r != first)
    loads[idle] = 0
    picks = Counter(choose(key, REPLICAS, loads, busy_at=8, rng=random.Random(seed)) for seed in range(200))
    assert first not in picks or picks[first] < picks[idle]
    assert picks[idle] > 50  # picked whenever it is one of the two candidates


def test_no_key_is_plain_power_of_two():
    loads = {"r1": 10, "r2": 0}
    assert all(choose(None, ["r1", "r2"], loads, busy_at=1, rng=random.Random(s)) == "r2" for s in range(20))


def test_the_key_is_the_stable_prefix_not_the_task_text():
    planner = "You are the planner."
    assert prefix_key(msgs(planner, "task A")) == prefix_key(msgs(planner, "task B " * 300))
    assert prefix_key(msgs(planner, "x")) != prefix_key(msgs(planner + " Be brief.", "x"))
    tools = [{"type": "function", "function": {"name": "search"}}]
    assert prefix_key(msgs(planner, "x"), tools=tools) != prefix_key(msgs(planner, "x"))


def test_without_a_system_prompt_the_agent_is_the_key():
    first = [{"role": "user", "content": "task A"}]
    later = [*first, {"role": "assistant", "content": "done"}, {"role": "user", "content": "task B"}]
    assert prefix_key(first, agent="m/a1") == prefix_key(later, agent="m/a1") != prefix_key(first, agent="m/a2")


def test_each_call_of_a_burst_goes_out_under_its_own_key():
    import asyncio

    from serving._batcher import Batcher
    from tests.unit.test_serving_cancel import FakeReplica

    async def burst():
        replica = FakeReplica()
        batcher = Batcher(replica, max_size=8, wait_s=0.01)
        streams = [batcher.stream({"text": key, "sleep_s": 0}, key) for key in ("a", "b", "a", "b", "a")]
        await asyncio.gather(*[collect(s) for s in streams])
        return replica.batches

    async def collect(stream):
        return [event async for event in stream]

    batches = asyncio.run(burst())
    assert sorted(text for texts, _ in batches for text in texts) == ["a", "a", "a", "b", "b"]
    assert all(set(texts) == {key} for texts, key in batches)  # a batch is routed by the key of each of its calls
