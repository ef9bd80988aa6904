import pytest

from memory._contradictions import judge_prompt, parse_verdict, select_candidates
from memory._types import Entry


def entry(id, agent="alice", topic="launch", mission="m1", text="t"):
    return Entry(id=id, version=id, created_at_s=0.0, mission_id=mission, agent_id=agent, namespace="ns",
                 topic=topic, text=text)


def test_prefilter_keeps_other_agents_same_topic_above_threshold_best_first():
    new = entry(10, agent="alice")
    scored = [
        (0.95, entry(1, agent="bob")),
        (0.99, entry(2, agent="alice")),          # same agent
        (0.97, entry(3, agent="carol", topic="x")),  # other topic
        (0.96, entry(4, agent="dave", mission="m2")),  # other mission
        (0.79, entry(5, agent="bob")),           # below threshold
        (0.80, entry(6, agent="erin")),          # exactly at threshold
        (0.95, entry(0, agent="fay")),           # tie with 1: lower id first
    ]
    kept = select_candidates(new, scored, threshold=0.8, limit=5)
    assert [e.id for _, e in kept] == [0, 1, 6]


def test_prefilter_limit():
    new = entry(10)
    scored = [(0.9 + i / 100, entry(i, agent="bob")) for i in range(5)]
    assert [e.id for _, e in select_candidates(new, scored, threshold=0.5, limit=2)] == [4, 3]
    assert select_candidates(new, scored, threshold=0.5, limit=0) == []


@pytest.mark.parametrize("text, verdict",
                         [("contradict", "contradict"), (" Agree\n", "agree"), ("'unrelated'", "unrelated")])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_an_off_choice_reply_is_an_error_not_a_verdict():
    with pytest.raises(ValueError, match="not one of"):
        parse_verdict("maybe")


def test_judge_prompt_names_both_agents_and_texts():
    prompt = judge_prompt(entry(2, agent="bob", text="launch in May"), entry(1, agent="amy", text="launch in Oct"))
    assert "amy" in prompt and "bob" in prompt and "launch in May" in prompt and "launch in Oct" in prompt
