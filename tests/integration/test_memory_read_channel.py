"""The memory actor's read channel on real Ray, FAISS and MiniLM: the same hits and the same refusals as its Ray
calls, a restart of the actor mid-stream, and the config that turns the channel off."""

import asyncio

import numpy as np
import pytest
import ray

from controlplane.errors import AccessDenied, IdentityError
from memory import MemoryConfig, MemoryReader, NewEntry, start_memory_actor
from tests.helpers import agent_token, supervisor_token

MISSION = "memory-read-channel"
OFF_MISSION = "memory-read-channel-off"
TEXTS = ["The product will cost 20 dollars per month", "We launch the product in May",
         "We need three more backend engineers"]


def started(tmp_path, mission, **config):
    actor = start_memory_actor(MemoryConfig(data_dir=str(tmp_path), **config), mission_id=mission)
    supervisor = supervisor_token(mission)
    ray.get(actor.grant.remote("alice", read=[], write=["alice"], token=supervisor))
    ray.get(actor.grant.remote("bob", read=[], write=["bob"], token=supervisor))
    entries = [NewEntry(mission_id=mission, agent_id="alice", namespace="alice", topic=topic, text=text)
               for text, topic in zip(TEXTS, ["pricing", "launch", "hiring"])]
    ray.get(actor.post.remote(entries, token=agent_token(mission, "alice")))
    return actor


def texts_of(hits):
    return [[hit.entry.text for hit in row] for row in hits]


def test_reads_over_the_channel_match_ray_calls_refuse_alike_and_survive_a_restart(ray_cluster, tmp_path):
    actor = started(tmp_path, MISSION)
    alice, supervisor = agent_token(MISSION, "alice"), supervisor_token(MISSION)
    query = dict(k=3, namespace="alice", token=alice, filters={"topic": "launch"})
    vectors = np.eye(1, 384, dtype=np.float32)
    by_ray = ray.get(actor.search.remote(["When is the release?", "price"], **{**query, "filters": None}))
    filtered_by_ray = ray.get(actor.search.remote("When is the release?", **query))
    vectors_by_ray = ray.get(actor.search_vectors.remote(vectors, k=3, namespace="alice", token=alice))
    before = ray.get(actor.stats.remote(token=supervisor))

    async def scenario():
        reader = MemoryReader(actor)
        assert texts_of(await reader.search(["When is the release?", "price"], **{**query, "filters": None})) \
            == texts_of(by_ray)
        assert reader.over_channel
        assert texts_of(await reader.search("When is the release?", **query)) == texts_of(filtered_by_ray) \
            == [[TEXTS[1]]]
        assert texts_of(await reader.search_vectors(vectors, k=3, namespace="alice", token=alice)) \
            == texts_of(vectors_by_ray)
        with pytest.raises(IdentityError, match="malformed"):
            await reader.search("plan", namespace="alice", token="not-a-token")
        with pytest.raises(AccessDenied):
            await reader.search("plan", namespace="alice", token=agent_token(MISSION, "bob"))
        with pytest.raises(IdentityError, match="malformed"):  # the endpoint's secret needs a token too
            await actor.read_endpoint.remote(token="not-a-token")
        stats = await actor.stats.remote(token=supervisor)
        assert stats["identity_refused"] == before.get("identity_refused", 0) + 2
        assert stats["channel_reads"] == 5  # every read above, the refused ones included, skipped Ray's calls
        ray.kill(actor, no_restart=False)
        while (await actor.stats.remote(token=supervisor))["pid"] == before["pid"]:
            await asyncio.sleep(0.1)
        assert not reader.over_channel  # the old process took its end of the connection with it
        assert texts_of(await reader.search("When is the release?", **query)) == [[TEXTS[1]]]
        assert reader.over_channel  # a new channel to the restarted actor
        reader.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        ray.kill(actor)


def test_with_the_channel_off_reads_go_through_ray_and_still_find_the_entries(ray_cluster, tmp_path):
    actor = started(tmp_path, OFF_MISSION, read_channel=False)
    alice = agent_token(OFF_MISSION, "alice")

    async def scenario():
        reader = MemoryReader(actor)
        hits = await reader.search("When is the release?", k=1, namespace="alice", token=alice)
        assert texts_of(hits) == [[TEXTS[1]]]
        assert not reader.over_channel

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert ray.get(actor.read_endpoint.remote(token=alice)) is None
        assert ray.get(actor.stats.remote(token=supervisor_token(OFF_MISSION)))["channel_reads"] == 0
    finally:
        ray.kill(actor)
