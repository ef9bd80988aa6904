"""A data_dir reused across runs may log subscribers whose actors are gone (an earlier cluster), or subscribers
an older version logged as pickled handles: both are dropped, never unpickled, and the actor starts."""

import ray

from memory import MemoryConfig, NewEntry, start_memory_actor
from memory._store import MemoryStore
from tests.helpers import agent_token, supervisor_token

MISSION = "memory-stale-subscription"


def test_gone_and_pickled_subscribers_are_dropped_and_the_actor_starts(ray_cluster, tmp_path):
    config = MemoryConfig(data_dir=str(tmp_path / "memory"))
    earlier_run = MemoryStore(config, dim=384)
    earlier_run.subscribe("gone/inbox", ["launch"], "supervisor", actor="inbox-of-a-gone-cluster", namespace="gone")
    earlier_run._commit({"op": "subscribe", "key": "0badc0de", "topics": ["launch"], "as_agent": "supervisor",
                         "blob": "bm90IGEgbGl2ZSBoYW5kbGU="})  # the old format: a pickled handle
    earlier_run.close()

    actor = start_memory_actor(config, mission_id=MISSION)
    try:
        ray.get(actor.grant.remote("alice", read=["alice"], write=["alice"], token=supervisor_token(MISSION)))
        alice = agent_token(MISSION, "alice")
        receipt = ray.get(actor.post.remote(
            [NewEntry(mission_id=MISSION, agent_id="alice", namespace="alice", topic="launch", text="launch in May")],
            token=alice))[0]
        assert ray.get(actor.get.remote(receipt.id, token=alice)).text == "launch in May"
    finally:
        ray.kill(actor)

    reopened = MemoryStore(config, dim=384)
    assert reopened.subscriptions == {}, "the dead subscriptions must be dropped durably, not only in memory"
    reopened.close()
