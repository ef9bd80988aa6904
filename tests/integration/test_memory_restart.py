"""Durability: kill the memory actor mid-stream of writes; every acknowledged write survives the restart."""

import ray
from ray.exceptions import RayActorError

from memory import MemoryConfig, NewEntry, start_memory_actor
from tests.helpers import agent_token, new_inbox, supervisor_token, wait_for

MISSION = "memory-restart"


def entry(i):
    return NewEntry(mission_id=MISSION, agent_id="alice", namespace="alice", topic="stream",
                    text=f"finding number {i} about the stream")


def post_until_acknowledged(actor, i, alice):
    """A post that failed because the actor died is retried (it was never acknowledged)."""
    def attempt():
        try:
            return ray.get(actor.post.remote([entry(i)], token=alice))[0]
        except RayActorError:
            return None
    return wait_for(attempt, timeout_s=120, what=f"post {i} after the restart")


def test_no_acknowledged_write_is_lost_when_the_actor_is_killed_mid_stream(ray_cluster, tmp_path):
    # Snapshots every 7 writes: recovery uses a snapshot plus a log tail.
    config = MemoryConfig(data_dir=str(tmp_path / "memory"), snapshot_every_writes=7)
    actor = start_memory_actor(config, mission_id=MISSION)
    alice, supervisor = agent_token(MISSION, "alice"), supervisor_token(MISSION)
    try:
        ray.get(actor.grant.remote("alice", read=[], write=["alice"], token=supervisor))
        inbox, inbox_name = new_inbox()
        ray.get(actor.subscribe.remote(inbox_name, ["stream"], token=supervisor))
        first_pid = ray.get(actor.stats.remote(token=supervisor))["pid"]
        acknowledged: dict[int, int] = {}
        for round_start in (0, 30):
            refs = {i: actor.post.remote([entry(i)], token=alice) for i in range(round_start, round_start + 30)}
            for i in range(round_start, round_start + 10):
                acknowledged[i] = ray.get(refs[i])[0].id
            ray.kill(actor, no_restart=False)  # dies while the round's other 20 posts are in flight
            for i in range(round_start + 10, round_start + 30):
                try:
                    acknowledged[i] = ray.get(refs[i])[0].id
                except RayActorError:
                    pass
            for i in refs.keys() - acknowledged.keys():
                acknowledged[i] = post_until_acknowledged(actor, i, alice).id
        stats = ray.get(actor.stats.remote(token=supervisor))
        assert stats["pid"] != first_pid
        stored = {e.id: e.text for e in ray.get(actor.list.remote(namespace="alice", token=supervisor, limit=1000))}
        for i, entry_id in acknowledged.items():
            assert stored.get(entry_id) == entry(i).text, f"acknowledged post {i} (id {entry_id}) was lost"
        # The index was rebuilt too, not only the entries: each finding is its own nearest neighbour.
        # (A post that died unacknowledged may have been stored before its retry: a duplicate, same text.)
        hits = ray.get(actor.search.remote([entry(i).text for i in (3, 42)], k=1, namespace="alice", token=alice))
        assert [h[0].entry.text for h in hits] == [entry(3).text, entry(42).text]
        assert all(h[0].score > 0.999 for h in hits)
        # The subscription survived the restarts: the actor found its subscriber again by name.
        ray.get(actor.post.remote([entry(999)], token=alice))
        wait_for(lambda: any(e.entry.text == entry(999).text for e in ray.get(inbox.received.remote())),
                 what="an event from the restarted actor")
    finally:
        ray.kill(actor)
