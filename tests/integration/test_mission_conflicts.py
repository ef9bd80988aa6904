"""Conflict policies on real Ray with the real memory actor (FAISS + MiniLM).

Detection (the judge) belongs to memory and is tested there; here the supervisor receives a conflict
event exactly as the memory actor sends it, built from the agents' real posts, and must settle it.
"""

from __future__ import annotations

import pytest
import ray

from actors import MISSION_NAMESPACE, follow, start_mission
from controlplane import parse_mission
from memory import Conflict
from tests.helpers import agent, supervisor_token, task, wait_for

TOOLS = {"tools": ["memory.post", "memory.search"]}
VIEWS = {"a": "Launch in May", "b": "Launch in October", "c": "Launch in May as well", "d": "Launch in late May"}
ROLES = {"a": "market researcher", "b": "legal reviewer", "c": "copywriter", "d": "seo specialist"}


def mission(policy: dict) -> dict:
    keeper = [task("k0", "keeper")] + [task(f"k{i}", "keeper", deps=(f"k{i - 1}",)) for i in range(1, 25)]
    return {"name": "conflicts", "goal": "Agree on a date", "policies": {"conflicts": policy},
            "agents": [agent(n, role=ROLES[n], **TOOLS) for n in VIEWS] + [agent("keeper", model="scripted-slow")],
            "tasks": [task(f"t{n}", n, VIEWS[n], topic="launch-date") for n in VIEWS] + keeper}


def _findings_posted(handle) -> bool:
    summary = ray.get(handle.summary.remote())
    assert not summary["done"], f"the mission ended early: {summary}"
    return summary["tasks"].get("succeeded", 0) >= 4


@pytest.mark.parametrize("policy", [
    {"policy": "majority", "role_priority": ["legal reviewer"]},
    {"policy": "resolver", "resolver_agent": "c"},
], ids=["majority", "resolver"])
def test_supervisor_settles_a_reported_conflict_and_records_why(router, policy, tmp_path):
    mission_id = f"conflicts-{policy['policy']}"
    handle = start_mission(parse_mission(mission(policy)), router=router, mission_id=mission_id,
                           memory_dir=str(tmp_path / "memory"))
    try:
        wait_for(lambda: _findings_posted(handle), timeout_s=300, what="the four findings")
        memory = ray.get_actor(f"{mission_id}:memory", namespace=MISSION_NAMESPACE)
        entries = ray.get(memory.list.remote(namespace="shared", token=supervisor_token(mission_id),
                                             filters={"topic": "launch-date"}))
        posted = {e.agent_id: e for e in entries}
        assert sorted(posted) == ["a", "b", "c", "d"]
        conflict = Conflict(topic="launch-date", new=posted["b"], existing=posted["a"], similarity=0.9,
                            verdict="contradict")
        ray.get(handle.on_memory_event.remote(conflict))
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    [decision] = result["conflicts"]
    assert decision["topic"] == "launch-date" and decision["agents"] == ["a", "b"]
    if policy["policy"] == "majority":
        assert decision["winner"] == "a" and decision["text"] == posted["a"].text
        assert decision["reason"] == "3 agents ['a', 'c', 'd'] against 1 ['b']"
    else:
        assert decision["winner"] is None and "Two agents disagree" in decision["text"]
        assert "resolver agent 'c'" in decision["reason"]
    kinds = [(e["kind"], e["status"]) for e in result["events"] if e["kind"] == "conflict"]
    assert kinds == [("conflict", "detected"), ("conflict", "resolved")]
