import json

from controlplane import AgentSpec
from controlplane._core.dag import Dag
from controlplane._core.planner import plan_schema, planner_messages, repair_plan

AGENTS = [AgentSpec(name="res", role="researcher"), AgentSpec(name="wri", role="writer"),
          AgentSpec(name="edi", role="editor")]


def test_schema_bounds_every_array_and_enumerates_names():
    schema = plan_schema(["res", "wri"], 4)
    tasks = schema["properties"]["tasks"]
    item = tasks["items"]["properties"]
    assert tasks["maxItems"] == 4 and item["depends_on"]["maxItems"] == 3
    assert item["agent"]["enum"] == ["res", "wri"] and item["id"]["enum"] == ["t1", "t2", "t3", "t4"]
    assert item["depends_on"]["items"]["enum"] == ["t1", "t2", "t3", "t4"]
    msgs = planner_messages("Ship it", AGENTS, 4)
    assert "res: researcher" in msgs[1]["content"] and "Ship it" in msgs[1]["content"]


def test_repair_removes_self_loops_forward_deps_and_unknown_agents():
    raw = json.dumps({"tasks": [
        {"id": "t1", "agent": "res", "description": "Research", "depends_on": ["t1", "t2"]},
        {"id": "t2", "agent": "ghost", "description": "Haunt", "depends_on": []},
        {"id": "t3", "agent": "wri", "description": "Write", "depends_on": ["t1", "t1", "t2"]},
        {"id": "t3", "agent": "edi", "description": "Edit", "depends_on": ["t3"]},
    ]})
    plan = repair_plan(raw, AGENTS, "Ship it", 6)
    assert not plan.fallback
    assert [(t.id, t.agent, t.depends_on) for t in plan.tasks] == [
        ("t1", "res", []), ("t3", "wri", ["t1"]), ("t4x", "edi", ["t3"])]
    assert any("self-dependency" in r for r in plan.repairs)
    assert any("unknown agent 'ghost'" in r for r in plan.repairs)
    assert Dag({t.id: t.depends_on for t in plan.tasks}).find_cycle() is None


def test_unusable_answer_falls_back_to_one_task_per_agent_with_fan_in():
    plan = repair_plan('{"tasks": [1, 2', AGENTS, "Ship it", 6)
    assert plan.fallback and "unusable" in plan.repairs[0]
    assert [t.agent for t in plan.tasks] == ["res", "wri", "edi"]
    assert plan.tasks[-1].depends_on == ["t1", "t2"]
    assert repair_plan({"tasks": []}, AGENTS, "g", 3).fallback


def test_too_many_tasks_are_cut_to_max_tasks():
    raw = {"tasks": [{"id": f"t{i}", "agent": "res", "description": "x", "depends_on": []} for i in range(1, 6)]}
    plan = repair_plan(raw, AGENTS, "g", 2)
    assert len(plan.tasks) == 2 and any("beyond max_tasks=2" in r for r in plan.repairs)
