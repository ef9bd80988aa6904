import pytest
import yaml

from controlplane import MissionSpec, SpecError, load_mission
from controlplane._core.placement import ClusterCapacity, check_resources
from controlplane._pydantic_errors import yaml_path
from controlplane.config.mission import parse_mission
from tests.helpers import mission


def _with(path, value):
    data = mission()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


BAD = [
    # (data, where contains, why contains)
    (_with(("tasks", 1, "depends_on"), ["final"]), "tasks[1](review).depends_on", "cycle"),
    (_with(("tasks", 0, "agent"), "ghost"), "tasks[0](draft).agent", "known agents: writer, checker, checker2"),
    (_with(("tasks", 1, "role"), "judge"), "tasks[1](review).role", "known roles: copywriter, reviewer"),
    (_with(("tasks", 1, "depends_on"), ["nope"]), "tasks[1](review).depends_on[0]", "known tasks: draft, review"),
    (_with(("tasks", 0, "depends_on"), ["draft"]), "tasks[0](draft).depends_on[0]", "itself"),
    (_with(("tasks", 0, "fallback_agent"), "ghost"), "tasks[0](draft).fallback_agent", "known agents"),
    (_with(("tasks", 0, "retries"), -1), "tasks[0](draft).retries", "greater than or equal to 0"),
    (_with(("agents", 1, "resources"), {"num_gpus": -0.5}), "agents[1](checker).resources.num_gpus",
     "greater than or equal"),
    (_with(("agents", 0, "tools"), ["web.browse"]), "agents[0](writer).tools[0]", "memory.post"),
    (_with(("agents", 0, "colour"), "red"), "agents[0](writer).colour", "Extra inputs"),
    (_with(("agents", 2, "name"), "writer"), "agents[2].name", "used twice"),
    (_with(("tasks", 2, "id"), "draft"), "tasks[2].id", "used twice"),
    (_with(("tasks", 0, "role"), "copywriter"), "tasks[0](draft)", "exactly one of `agent` or `role`"),
    (mission(tasks=[]), "tasks", "needs tasks"),
    (mission(plan="auto"), "plan", "exclude each other"),
    (mission(policies={"conflicts": {"policy": "resolver"}}), "policies.conflicts.resolver_agent", "needs an agent"),
    (mission(policies={"conflicts": {"role_priority": ["boss"]}}), "role_priority[0]", "known roles"),
    (mission(policies={"on_failure": "panic"}), "policies.on_failure", "fail_mission"),
    ({k: v for k, v in mission().items() if k != "goal"}, "goal", "Field required"),
]


@pytest.mark.parametrize(("data", "where", "why"), BAD, ids=[b[1] for b in BAD])
def test_bad_specs_name_path_value_and_fix(data, where, why):
    with pytest.raises(SpecError) as info:
        parse_mission(data, source="m.yaml")
    err = info.value
    assert err.where.startswith("m.yaml: ") and where in err.where, err.where
    assert why in err.why, err.why
    assert err.fix and "Fix:" in str(err)
    assert err.also == []  # one mistake, one problem: a task that depends on itself is not also a cycle


def test_every_problem_of_a_spec_is_named_at_once_the_first_in_the_errors_fields():
    data = _with(("tasks", 0, "agent"), "ghost")
    data["tasks"][1]["depends_on"] = ["nope"]
    data["agents"][0]["tools"] = ["web.browse"]
    with pytest.raises(SpecError) as info:
        parse_mission(data, source="m.yaml")
    err = info.value
    assert (err.where, err.value) == ("m.yaml: tasks[0](draft).agent", "ghost")
    assert [problem.where for problem in err.also] == ["m.yaml: tasks[1](review).depends_on[0]",
                                                       "m.yaml: agents[0](writer).tools[0]"]
    lines = str(err).splitlines()
    assert len(lines) == 3 and lines[0].startswith("m.yaml: tasks[0](draft).agent: 'ghost' is invalid")
    assert lines[1].startswith("Also: m.yaml: tasks[1](review).depends_on[0]: 'nope' is invalid: no task")
    assert lines[2].startswith("Also: m.yaml: agents[0](writer).tools[0]: 'web.browse' is invalid")
    assert all("Fix: " in line for line in lines)


def test_an_unknown_fields_fix_names_the_field_likeliest_meant_and_the_fields_known_there():
    data = _with(("agents", 0, "num_gpus"), 0.5)  # belongs under resources
    data["tasks"][1]["depend_on"] = ["draft"]  # a typo
    data["budgets"] = {"max_tokns": 100}
    with pytest.raises(SpecError) as info:
        parse_mission(data, source="m.yaml")
    fixes = {problem.where: problem.fix for problem in (info.value, *info.value.also)}
    assert fixes["m.yaml: agents[0](writer).num_gpus"].startswith("did you mean `resources.num_gpus`? Else remove it")
    assert fixes["m.yaml: tasks[1](review).depend_on"].startswith("did you mean `depends_on`?")
    assert fixes["m.yaml: budgets.max_tokns"] == ("did you mean `max_tokens`? Else remove it; the fields here are "
                                                  "max_llm_calls, max_tokens, max_usd, max_wall_s")
    assert "description, expected_output, fallback_agent" in fixes["m.yaml: tasks[1](review).depend_on"]


def test_a_value_out_of_its_bounds_is_told_the_bound_and_a_wrong_choice_the_choices():
    data = _with(("tasks", 0, "timeout_s"), 0)
    data["tasks"][1]["retries"] = 100
    data["policies"] = {"on_failure": "panic"}
    with pytest.raises(SpecError) as info:
        parse_mission(data, source="m.yaml")
    fixes = {problem.where: problem.fix for problem in (info.value, *info.value.also)}
    assert fixes == {"m.yaml: tasks[0](draft).timeout_s": "use a number above 0",
                     "m.yaml: tasks[1](review).retries": "use 10 or less",
                     "m.yaml: policies.on_failure": "use 'fail_mission' or 'skip_dependents'"}


def test_every_field_of_the_wrong_form_is_named_at_once():
    data = _with(("tasks", 0, "retries"), "three")
    data["agents"][0]["colour"] = "red"
    with pytest.raises(SpecError) as info:
        parse_mission(data, source="m.yaml")
    wheres = [info.value.where, *(problem.where for problem in info.value.also)]
    assert sorted(wheres) == ["m.yaml: agents[0](writer).colour", "m.yaml: tasks[0](draft).retries"]
    assert str(info.value).count("Fix: ") == 2


@pytest.mark.parametrize(("field", "value", "fix"), [
    (("tasks", 1, "depends_on"), "draft", "write a YAML list"),
    (("agents", 0, "resources"), "gpu", "write a YAML mapping"),
    (("name",), 5, "write text"),
    (("tasks", 0, "retries"), "three", "write a whole number"),
])
def test_a_value_of_the_wrong_type_gets_a_fix_that_says_how_to_write_the_right_one(field, value, fix):
    with pytest.raises(SpecError) as info:
        parse_mission(_with(field, value), source="m.yaml")
    assert info.value.fix.startswith(fix), info.value.fix


def test_cycle_is_printed_as_the_cycle():
    data = _with(("tasks", 0, "depends_on"), ["final"])
    with pytest.raises(SpecError) as info:
        parse_mission(data)
    assert info.value.value == "draft -> final -> review -> draft"


def test_load_mission_names_the_file_and_resolves_serving(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mission(serving="scripted.yaml")))
    spec = load_mission(path)
    assert isinstance(spec, MissionSpec)
    assert spec.serving == str(tmp_path / "scripted.yaml")
    path.write_text(yaml.safe_dump(_with(("tasks", 0, "agent"), "ghost")))
    with pytest.raises(SpecError, match=r"m\.yaml: tasks\[0\]\(draft\)\.agent: 'ghost' is invalid"):
        load_mission(path)


def test_load_mission_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n  goal: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:\d+"):
        load_mission(path)
    with pytest.raises(SpecError, match="no such file"):
        load_mission(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="it is a directory. Fix: give the path of a mission YAML file"):
        load_mission(tmp_path)
    path.write_text("- just a list\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_mission(path)
    path.write_text("")
    with pytest.raises(SpecError, match="'<empty>' is invalid: a mission must be a YAML mapping"):
        load_mission(path)


def test_a_dict_given_to_load_mission_or_a_path_to_parse_mission_is_a_type_error_naming_the_other():
    with pytest.raises(TypeError, match=r"path of type dict is not a file's path. Fix: pass the path of a mission "
                                        r"YAML file, or pass a dict to parse_mission\(dict\)"):
        load_mission(mission())  # was: expected str, bytes or os.PathLike object, not dict
    with pytest.raises(TypeError, match=r"data of type str is not a mission's mapping. Fix: pass a dict, or read a "
                                        r"mission YAML file with load_mission\(path\)"):
        parse_mission("missions/demo.yaml")  # was a SpecError whose fix said to write a YAML mapping


def test_a_key_written_twice_in_a_mission_is_refused_naming_its_lines(tmp_path):
    """YAML loaders keep the last of two equal keys: the first `tasks:` list would be dropped without a word."""
    path = tmp_path / "twice.yaml"
    head = "name: m\ngoal: g\nagents:\n"
    path.write_text(head + "  - {name: a, role: r}\ntasks:\n  - {id: t1, agent: a, description: one}\n"
                    "tasks:\n  - {id: t2, agent: a, description: two}\n")
    with pytest.raises(SpecError, match=r"twice\.yaml:7: \"'tasks' \(first on line 5\)\" is invalid: the key is "
                       r"written twice.*Fix: merge the two"):
        load_mission(path)
    path.write_text(head + "  - {name: a, role: r, name: b}\ntasks: []\n")
    with pytest.raises(SpecError, match=r"twice\.yaml:4: \"'name' \(first on line 4\)\""):
        load_mission(path)
    path.write_text(head + "  - &agent {name: a, role: r}\n  - {<<: *agent, name: b, role: editor}\n"
                    "tasks: [{id: t, agent: b, description: d}]\n")
    # a merged key (`<<: *agent`) may be overridden
    assert [(a.name, a.role) for a in load_mission(path).agents] == [("a", "r"), ("b", "editor")]


def test_defaults_and_structured_output():
    spec = parse_mission(_with(("tasks", 0, "expected_output"), {"type": "object"}))
    assert spec.tasks[0].expected_output == {"type": "object"}
    assert spec.agents[0].max_concurrency == 1 and spec.agents[0].resources.num_gpus == 0
    assert spec.policies.on_failure == "fail_mission"


def test_gpus_the_cluster_cannot_place_name_the_cluster_gpus():
    spec = parse_mission(_with(("agents", 1, "resources"), {"num_gpus": 0.5}))
    with pytest.raises(SpecError) as info:
        check_resources(spec, ClusterCapacity(nodes=[{"CPU": 8}]), source="m.yaml")
    assert "agents[1](checker).resources.num_gpus" in info.value.where
    assert "the cluster has 0 GPUs" in info.value.why
    check_resources(spec, ClusterCapacity(nodes=[{"CPU": 8, "GPU": 1}]))
    many = parse_mission(mission(agents=[{"name": f"a{i}", "role": "r", "resources": {"num_gpus": 0.5}}
                                         for i in range(3)],
                                 tasks=[{"id": "t", "description": "d", "role": "r"}]))
    with pytest.raises(SpecError, match="1.5 GPUs together"):
        check_resources(many, ClusterCapacity(nodes=[{"CPU": 8, "GPU": 1}]))


def test_yaml_path_labels_list_items():
    data = mission()
    assert yaml_path(("agents", 1, "resources", "num_gpus"), data) == "agents[1](checker).resources.num_gpus"
    assert yaml_path((), data) == "<top level>"


@pytest.mark.parametrize("name", ["supervisor", "planner", "control-plane", "memory-judge"])
def test_a_reserved_agent_name_is_a_spec_error_naming_the_value_why_and_the_fix(name):
    data = _with(("agents", 1, "name"), name)
    data["tasks"][1] = {**data["tasks"][1], "role": None, "agent": name}
    with pytest.raises(SpecError) as info:
        parse_mission(data, source="m.yaml")
    error = info.value
    assert error.where == "m.yaml: agents[1].name" or error.where.startswith(f"m.yaml: agents[1]({name}).name")
    assert error.value == name and "reserved for the control plane" in error.why
    assert "rename the agent" in error.fix


def test_per_agent_and_usd_budgets():
    spec = parse_mission(mission(budgets={"max_tokens": 1000, "max_usd": 0.5},
                                 agents=[{"name": "writer", "role": "copywriter", "budget": {"max_usd": 0.1}},
                                         {"name": "checker", "role": "reviewer"},
                                         {"name": "checker2", "role": "reviewer"}]))
    assert (spec.budgets.max_tokens, spec.budgets.max_usd) == (1000, 0.5)
    assert spec.agent("writer").budget.max_usd == 0.1 and spec.agent("checker").budget is None
    with pytest.raises(SpecError, match=r"budget\.max_tokens"):
        parse_mission(_with(("agents", 0, "budget"), {"max_tokens": 0}))


def test_memory_min_score_is_a_cosine_or_none():
    assert parse_mission(_with(("agents", 0, "memory_min_score"), 0.3)).agents[0].memory_min_score == 0.3
    assert parse_mission(mission()).agents[0].memory_min_score is None
    with pytest.raises(SpecError, match=r"agents\[0\]\(writer\)\.memory_min_score: 1.5 is invalid") as error:
        parse_mission(_with(("agents", 0, "memory_min_score"), 1.5))
    assert error.value.value == 1.5
