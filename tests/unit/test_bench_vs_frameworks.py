"""The pure helpers of benchmarks/bench_vs_frameworks.py: the DAGs it runs, the critical path its overheads are
measured against, and the CrewAI plan (which must obey CrewAI's own rules, or the crew refuses to start)."""

import importlib.util
import json
import os
import re
from pathlib import Path
from unittest import mock

import jsonschema
import pytest
import yaml

from controlplane import parse_mission

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("vs_dags", ROOT / "benchmarks" / "_vs_frameworks_dags.py")
dags = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dags)

DEMO = yaml.safe_load((ROOT / "missions" / "product_launch.yaml").read_text())


def depends(mission):
    return {t["id"]: t.get("depends_on", []) for t in mission["tasks"]}


def test_the_demo_dag_keeps_the_demos_tasks_dependencies_schemas_and_memory():
    bench = dags.demo_mission(DEMO)
    assert depends(bench) == depends(DEMO)
    assert [t.get("expected_output") for t in bench["tasks"]] == [t.get("expected_output") for t in DEMO["tasks"]]
    assert bench["memory"] == DEMO["memory"]
    spec = parse_mission(bench)
    assert all(a.tools == [] and a.max_steps == 2 for a in spec.agents)  # one call per task, a repair turn left
    assert not any("{" in a.instructions for a in spec.agents)


def test_the_demo_dag_without_memory_has_no_recall_and_no_judge():
    spec = parse_mission(dags.demo_mission(DEMO, memory=False))
    assert spec.memory.judge_model is None
    assert not any(a.fixed_memory for a in spec.agents)


def test_no_reply_the_output_schema_admits_is_cut_by_max_tokens():
    """A cut JSON reply fails a peer's structured-output call outright, so every task has room for the longest
    answer its schema admits (a token holds at least one character), and never less than the demo gave it."""
    bench = dags.demo_mission(DEMO)
    demo_tokens = {a["name"]: a["max_tokens"] for a in DEMO["agents"]}
    tokens = {a["name"]: a["max_tokens"] for a in bench["agents"]}
    for task in bench["tasks"]:
        schema = task["expected_output"]
        longest = dags.json_chars_bound(schema)
        assert longest <= tokens[task["agent"]] and demo_tokens[task["agent"]] <= tokens[task["agent"]]
        assert len(json.dumps(longest_instance(schema), separators=(",", ":"))) <= longest


def longest_instance(schema):
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    kind = schema.get("type")
    if kind == "object":
        return {name: longest_instance(sub) for name, sub in schema["properties"].items()}
    if kind == "array":
        return [longest_instance(schema["items"])] * schema["maxItems"]
    return {"integer": 10**19, "boolean": False}.get(kind, "x" * schema.get("maxLength", 80))


@pytest.mark.parametrize("text, expected", [
    ('You write a brief. First read them:\n{"tool": "read_file", "arguments": {"path": "x.md"}}', "You write a brief."),
    ('You size it. Compute it with the calculator:\n{"tool": "calculator"}', "You size it."),
    ("You write copy. Use the facts you are given.", "You write copy. Use the facts you are given."),
    ('Do this first:\n{"tool": "x"}', ""),
])
def test_strip_tool_directive(text, expected):
    assert dags.strip_tool_directive(text) == expected


def test_the_wide_dag_is_27_tasks_9_wide_in_3_layers():
    wide = dags.wide_mission()
    parse_mission(wide)
    deps = depends(wide)
    assert len(deps) == 27
    assert sum(1 for needs in deps.values() if not needs) == 9
    assert deps["t1-8"] == ["t0-0", "t0-8"]
    assert dags.critical_path_s(deps, dict.fromkeys(deps, 1.0)) == 3.0


def test_workload_carries_what_a_peer_needs():
    work = dags.workload(dags.demo_mission(DEMO))
    brief = work["tasks"][0]
    assert (brief["id"], brief["role"], brief["max_tokens"]) == ("brief", "planner", 379)
    assert brief["schema"]["required"] == ["product", "audience", "key_messages"]
    assert len({t["description"] for t in work["tasks"]}) == 9  # the CrewAI side finds a call's task by it


def test_critical_path_is_the_heaviest_chain_not_the_longest():
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": ["c", "d"]}
    assert dags.critical_path_s(deps, {"a": 1, "b": 1, "c": 1, "d": 5, "e": 1}) == 7
    assert dags.critical_path_s(deps, {"a": 1, "b": 2, "c": 2, "d": 1, "e": 1}) == 6
    assert dags.critical_path_s(deps, {"a": 1}) == 1  # a task without a measured call weighs nothing
    assert dags.critical_path_s({}, {}) == 0.0


def crewai_accepts(plan, deps):
    """CrewAI 1.15's crew validators: an async task takes no async task of its own stretch as context, and a
    crew ends with at most one async task; and every context task comes earlier."""
    order = [task for task, _ in plan]
    is_async = dict(plan)
    for i, (task, run_async) in enumerate(plan):
        assert all(order.index(dep) < i for dep in deps[task])
        if run_async:
            for j in range(i - 1, -1, -1):
                if not is_async[order[j]]:
                    break
                assert order[j] not in deps[task], f"{task} is async with async context {order[j]}"
    trailing = 0
    for _, run_async in reversed(plan):
        if not run_async:
            break
        trailing += 1
    assert trailing <= 1


def stretches(plan):
    """How many rounds CrewAI needs when every task takes the same time: a sync task waits for the open stretch,
    then runs alone."""
    rounds, open_stretch = 0, False
    for _, run_async in plan:
        if run_async:
            open_stretch = True
        else:
            rounds += 1 + open_stretch
            open_stretch = False
    return rounds + open_stretch


def test_the_crewai_plan_runs_the_demos_independent_tasks_together():
    deps = depends(DEMO)
    plan = dags.crewai_async_plan(list(deps), deps)
    crewai_accepts(plan, deps)
    assert [task for task, run_async in plan if run_async] == ["market", "competitors", "design", "seo", "legal"]
    assert stretches(plan) == 6 == dags.critical_path_s(deps, dict.fromkeys(deps, 1.0))


def test_the_crewai_plan_of_the_wide_dag_is_valid_and_far_from_sequential():
    deps = depends(dags.wide_mission())
    plan = dags.crewai_async_plan(list(deps), deps)
    crewai_accepts(plan, deps)
    assert stretches(plan) == 6  # 27 sequential; a sync task between each layer's stretches


def test_scripted_replies_answer_each_task_validly_and_briefly():
    works = [dags.workload(dags.demo_mission(DEMO)), dags.workload(dags.wide_mission())]
    rules = dags.scripted_replies(works)
    tasks = [task for work in works for task in work["tasks"]]
    assert len(rules) == len(tasks)
    for rule, task in zip(rules, tasks):
        assert re.search(rule["match"], f"Current Task: {task['description']}\n")
        if task["schema"]:
            jsonschema.validate(json.loads(rule["text"]), task["schema"])
        assert len(rule["text"].split()) < 40  # well under every max_tokens


def test_spread():
    assert dags.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_crewais_output_models_keep_every_constraint_of_the_demos_schemas():
    """CrewAI sends its output model's JSON schema to the model: a constraint lost there (an array item's maxLength)
    let SmolLM2 run one string to max_tokens, and the crew failed on the cut reply."""
    spec = importlib.util.spec_from_file_location("vs_crewai", ROOT / "benchmarks" / "_vs_frameworks_crewai.py")
    crewai_side = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):  # the runner turns OpenTelemetry off for its own process
        spec.loader.exec_module(crewai_side)
    for task in DEMO["tasks"]:
        schema = task.get("expected_output")
        if not isinstance(schema, dict):
            continue
        sent = crewai_side.model_from_schema(task["id"], schema).model_json_schema()
        for name, prop in schema["properties"].items():
            got = {k: v for k, v in sent["properties"][name].items() if k != "title"}
            if prop.get("type") == "array":
                assert got["items"].get("maxLength") == prop["items"].get("maxLength"), (task["id"], name)
                assert (got.get("minItems"), got.get("maxItems")) == (prop.get("minItems"), prop.get("maxItems"))
            for key in ("maxLength", "minimum", "maximum"):
                assert got.get(key) == prop.get(key), (task["id"], name, key)


def test_like_for_like_ratio_pairs_rounds_and_skips_those_whose_text_differs():
    def run(makespan, completion, ok=True):
        return {"ok": ok, "makespan_s": makespan, "prompt_tokens": 1573, "completion_tokens": completion}

    ours = [run(8.0, 489), run(16.0, 740), run(9.0, 488), run(7.0, 488, ok=False)]
    theirs = [run(7.5, 487), run(7.0, 488), run(8.0, 488), run(7.0, 488)]
    assert dags.like_for_like_ratio(ours, theirs) == (2, round(8.5 / 7.75, 3))
    assert dags.like_for_like_ratio([run(16.0, 740)], [run(7.0, 488)]) == (0, None)
    longer_prompt = {**run(8.0, 488), "prompt_tokens": 1653}
    assert dags.like_for_like_ratio([longer_prompt], [run(7.0, 488)]) == (0, None)
