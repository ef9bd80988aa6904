"""A data_dir reused across runs may log a subscriber whose actor lived in a cluster that is gone."""

import base64

import ray

from memory import MemoryConfig, NewEntry, start_memory_actor
from memory._store import MemoryStore


def test_a_subscriber_from_a_gone_cluster_is_dropped_and_the_actor_starts(ray_cluster, tmp_path):
    config = MemoryConfig(data_dir=str(tmp_path / "memory"))
    earlier_run = MemoryStore(config, dim=384)
    earlier_run.subscribe("0badc0de", ["launch"], "supervisor", base64.b64encode(b"not a live handle").decode())
    earlier_run.close()

    actor = start_memory_actor(config, mission_id="memory-stale-subscription")
    try:
        ray.get(actor.grant.remote("alice", read=["alice"], write=["alice"]))
        receipt = ray.get(actor.post.remote(
            [NewEntry(mission_id="m", agent_id="alice", namespace="alice", topic="launch", text="launch in May")],
            as_agent="alice"))[0]
        assert ray.get(actor.get.remote(receipt.id, as_agent="alice")).text == "launch in May"
    finally:
        ray.kill(actor)

    reopened = MemoryStore(config, dim=384)
    assert reopened.subscriptions == {}, "the dead subscription must be dropped durably, not only in memory"
    reopened.close()
