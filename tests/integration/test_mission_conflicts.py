"""Conflict policies on real Ray with the real memory actor (FAISS + MiniLM).

The first test runs the whole path: two agents post contradicting findings, the memory judge (a scripted
model behind the real router) says so, the supervisor settles it, and the decision is applied in memory and
in the dependent task's context. The policy tests hand the supervisor a conflict event exactly as the memory
actor sends it, built from the agents' real posts.
"""

from __future__ import annotations

import pytest
import ray

from actors import MISSION_NAMESPACE, follow, start_mission
from controlplane import parse_mission
from controlplane._logfile import read_log
from memory import Conflict
from tests.helpers import agent, supervisor_token, task, wait_for

TOOLS = {"tools": ["memory.post", "memory.search"]}
VIEWS = {"a": "Launch in May", "b": "Launch in October", "c": "Launch in May as well", "d": "Launch in late May"}
ROLES = {"a": "market researcher", "b": "legal reviewer", "c": "copywriter", "d": "seo specialist"}


def keeper_chain(after: tuple[str, ...] = ()) -> list[dict]:
    """Slow tasks that keep the mission (and its memory actor) alive while the test looks inside."""
    return [task("k0", "keeper", deps=after)] + [task(f"k{i}", "keeper", deps=(f"k{i - 1}",)) for i in range(1, 25)]


def mission(policy: dict) -> dict:
    return {"name": "conflicts", "goal": "Agree on a date", "policies": {"conflicts": policy},
            "agents": [agent(n, role=ROLES[n], fixed_memory=True, **TOOLS) for n in VIEWS]
            + [agent("keeper", model="scripted-slow")],
            "tasks": [task(f"t{n}", n, VIEWS[n], topic="launch-date") for n in VIEWS]
            + keeper_chain(after=tuple(f"t{n}" for n in VIEWS))}


def test_a_detected_conflict_is_settled_and_applied_before_the_dependent_starts(router, tmp_path):
    mission_id = "conflicts-applied"
    finder = {"model": "scripted-findings", "fixed_memory": True}
    spec = {"name": "applied", "goal": "Agree on a launch month",
            "policies": {"conflicts": {"policy": "priority", "role_priority": ["legal reviewer"]}},
            "memory": {"judge_model": "scripted-findings", "conflict_similarity": 0.5},
            "agents": [agent("a", role="market researcher", **finder), agent("b", role="legal reviewer", **finder),
                       agent("plan", kind="python", entrypoint="tests.helpers.agent_code:context_echo"),
                       agent("keeper", model="scripted-slow")],
            "tasks": [task("ta", "a", "Research the launch month.", topic="launch"),
                      task("tb", "b", "Check the launch month.", deps=("ta",), topic="launch"),
                      task("tc", "plan", "Write the plan.", deps=("ta", "tb"))] + keeper_chain(after=("tc",))}
    handle = start_mission(parse_mission(spec), router=router, mission_id=mission_id,
                           memory_dir=str(tmp_path / "memory"))
    try:  # ta, tb and tc are the only tasks that can succeed before the keepers
        wait_for(lambda: _succeeded(handle, 3), timeout_s=300, what="the findings and the plan")
        memory = ray.get_actor(f"{mission_id}:memory", namespace=MISSION_NAMESPACE)
        token = supervisor_token(mission_id)
        [decision] = ray.get(handle.result.remote())["conflicts"]
        overruled = ray.get(memory.get.remote(decision["applied"]["superseded"][0], token=token))
        hits = ray.get(memory.search.remote("When is the launch?", k=5, namespace="shared", token=token))[0]
        result = follow(handle, timeout_s=300)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    assert result["conflicts"] == [decision]
    assert decision["winner"] == "b" and decision["text"] == "The launch is planned for October."
    assert overruled.agent_id == "a" and overruled.superseded_by == decision["applied"]["stands"]
    assert [h.entry.agent_id for h in hits] == ["b"], "the overruled finding is still found by search"
    plan = next(t for t in result["tasks"] if t["id"] == "tc")
    assert plan["output"] == {"ta": "The launch is planned for October.", "tb": "The launch is planned for October."}


def _succeeded(handle, count: int) -> bool:
    summary = ray.get(handle.summary.remote())
    assert not summary["done"], f"the mission ended early: {summary}"
    return summary["tasks"].get("succeeded", 0) >= count


@pytest.mark.parametrize("policy", [
    {"policy": "majority", "role_priority": ["legal reviewer"]},
    {"policy": "resolver", "resolver_agent": "c"},
], ids=["majority", "resolver"])
def test_supervisor_settles_a_reported_conflict_and_records_why(router, policy, tmp_path):
    mission_id = f"conflicts-{policy['policy']}"
    handle = start_mission(parse_mission(mission(policy)), router=router, mission_id=mission_id,
                           memory_dir=str(tmp_path / "memory"), run_dir=str(tmp_path / "run"))
    try:  # the keepers wait for the findings, so the first four to succeed are the findings
        wait_for(lambda: _succeeded(handle, 4), timeout_s=300, what="the four findings")
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
        records = read_log(str(tmp_path / "run"))
        resolver_calls = [r.data for r in records if r.kind == "model.call" and r.data["task"].startswith("resolve-")]
        assert [(c["agent"], c["outcome"]) for c in resolver_calls] == [("c", "ok")]  # in the audit log too
        charged = [r.data["calls"] for r in records if r.kind == "budget.charge" and r.data["agent"] == "c"]
        assert charged == [1, 1]  # its own task's call, then the resolver's, against max_llm_calls
    kinds = [(e["kind"], e["status"]) for e in result["events"] if e["kind"] == "conflict"]
    assert kinds == [("conflict", "detected"), ("conflict", "resolved")]
