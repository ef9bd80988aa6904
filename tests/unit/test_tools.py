import asyncio
import pickle
import sys
import textwrap
from dataclasses import dataclass
from typing import Literal

import pytest
from pydantic import BaseModel

from controlplane._core.entrypoints import build_python_agent, load_python_agent
from controlplane._core.tools import (
    ToolSpec,
    allowed,
    arguments_digest,
    authorize,
    clip_result,
    load_tool,
    result_to_text,
    tool_from_decl,
    tool_from_function,
    validate_arguments,
)
from controlplane.config._tools import ToolDecl, ToolResources
from controlplane.errors import SpecError, ToolError


class Address(BaseModel):
    city: str
    zip_code: str | None = None


def ship(item: str, quantity: int, to: Address, mode: Literal["air", "sea"] = "sea") -> dict:
    """Ship an item to an address.

    Args:
        item: What to ship.
        quantity (int): How many.
    """
    return {"item": item, "quantity": quantity, "city": to.city, "mode": mode}


async def fetch(url: str) -> str:
    """Fetch a page."""
    await asyncio.sleep(0)
    return url.upper()


def test_schema_comes_from_type_hints_and_description_from_the_docstring():
    tool = tool_from_function(ship, timeout_s=5)
    spec = tool.spec
    assert spec.name == "ship" and spec.description == "Ship an item to an address." and spec.timeout_s == 5
    props = spec.parameters["properties"]
    assert props["item"] == {"type": "string", "description": "What to ship."}
    assert props["quantity"] == {"type": "integer", "description": "How many."}
    assert props["mode"] == {"enum": ["air", "sea"], "type": "string", "default": "sea"}
    assert spec.parameters["required"] == ["item", "quantity", "to"]
    assert spec.parameters["additionalProperties"] is False
    assert "title" not in str(spec.parameters.keys()) and "title" not in spec.parameters["$defs"]["Address"]
    assert spec.in_process and spec.openai_tool()["function"]["name"] == "ship"


def test_bound_arguments_become_python_values_and_the_call_runs_sync_or_async():
    tool = tool_from_function(ship)
    kwargs = tool.bind({"item": "mug", "quantity": 2, "to": {"city": "Oslo"}})
    assert isinstance(kwargs["to"], Address) and kwargs["mode"] == "sea"
    assert asyncio.run(tool.invoke({"item": "mug", "quantity": 2, "to": {"city": "Oslo"}}))["city"] == "Oslo"
    assert asyncio.run(tool_from_function(fetch).invoke({"url": "a"})) == "A"


def test_a_parameter_named_like_a_pydantic_attribute_still_works():
    def lookup(json: str, schema: int = 1) -> str:
        """Look up."""
        return f"{json}:{schema}"

    tool = tool_from_function(lookup)
    assert set(tool.spec.parameters["properties"]) == {"json", "schema"}
    assert asyncio.run(tool.invoke({"json": "x"})) == "x:1"


def test_a_tool_that_raises_or_overruns_becomes_a_tool_error_naming_it():
    def explode(x: int) -> int:
        """Fail."""
        raise KeyError("missing")

    with pytest.raises(ToolError, match=r"Tool 'explode' failed: it raised KeyError: 'missing'\. Fix: "):
        asyncio.run(tool_from_function(explode).invoke({"x": 1}))

    async def hang() -> None:
        """Never returns."""
        await asyncio.Event().wait()

    with pytest.raises(ToolError, match=r"'hang' failed: it did not finish within timeout_s=0.01.*raise the tool"):
        asyncio.run(tool_from_function(hang, timeout_s=0.01).invoke({}))


@pytest.mark.parametrize(("fn", "parameter", "why"), [
    (lambda x: x, "x", "no type annotation"),
    (lambda *items: items, "items", "*args, **kwargs"),
])
def test_a_signature_that_cannot_become_a_schema_is_a_spec_error_naming_tool_and_parameter(fn, parameter, why):
    with pytest.raises(SpecError) as caught:
        tool_from_function(fn, name="bad")
    message = str(caught.value)
    assert f"tool 'bad' parameter '{parameter}'" in message and why in message and "Fix: " in message


def test_an_unsupported_parameter_type_names_the_type_and_the_fix():
    class Opaque:
        pass

    def use(handle: Opaque) -> None:
        """Use it."""

    expected = r"tool 'use' parameter 'handle'.*'Opaque'.*no JSON schema.*Fix: use JSON types"
    with pytest.raises(SpecError, match=expected):
        tool_from_function(use)


def test_a_bad_tool_name_is_refused():
    with pytest.raises(SpecError, match="a tool name is"):
        tool_from_function(ship, name="has space")


def test_a_declared_tool_with_a_bad_signature_names_the_yaml_path_tool_and_parameter(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "tools_untyped_mod", "def lookup(key):\n    return key\n")
    with pytest.raises(SpecError) as caught:
        load_tool("tools_untyped_mod:lookup", where="m.yaml: tools[1](lookup).function")
    assert str(caught.value).startswith("m.yaml: tools[1](lookup).function (tool 'lookup' parameter 'key'): 'key' "
                                        "is invalid: it has no type annotation")


def test_load_tool_by_import_path():
    tool = load_tool("controlplane.builtin_tools:calculator", where="tools[0]", name="calc", max_result_chars=100)
    assert tool.spec.name == "calc" and tool.spec.max_result_chars == 100


@pytest.mark.parametrize(("path", "why"), [
    ("controlplane.builtin_tools.calculator", "has the form `package.module:name`"),
    ("no_such_package_xyz.tools:calc", "module 'no_such_package_xyz.tools' does not import (ModuleNotFoundError"),
    ("controlplane.builtin_tools:nothing_here", "has no attribute 'nothing_here'"),
    ("controlplane.builtin_tools:WORKSPACE_ENV", "it is a str, not a function"),
])
def test_bad_import_paths_say_where_what_why_and_fix(path, why):
    with pytest.raises(SpecError) as caught:
        load_tool(path, where="m.yaml: tools[2](calc).function")
    message = str(caught.value)
    assert message.startswith(f"m.yaml: tools[2](calc).function: {path!r} is invalid") and why in message
    assert "Fix: " in message


def test_a_module_that_raises_on_import_is_reported_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "broken_tools_mod.py").write_text("raise RuntimeError('config missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match=r"does not import \(RuntimeError: config missing\)"):
        load_tool("broken_tools_mod:f", where="tools[0]")


def test_a_tool_declaration_becomes_a_tool_with_its_limits_and_resources():
    decl = ToolDecl(name="calc", function="controlplane.builtin_tools:calculator", timeout_s=3,
                    resources=ToolResources(num_cpus=0.5, num_gpus=0.25), max_result_chars=500)
    spec = tool_from_decl(decl, where="tools[0](calc)").spec
    assert (spec.name, spec.timeout_s, spec.num_cpus, spec.num_gpus, spec.max_result_chars) == (
        "calc", 3, 0.5, 0.25, 500)
    assert not spec.in_process
    assert tool_from_decl(decl.model_copy(update={"resources": None}), where="t").spec.in_process


def test_validate_arguments_explains_each_problem_and_shows_the_schema():
    spec = tool_from_function(ship).spec
    assert validate_arguments(spec, {"item": "mug", "quantity": 1, "to": {"city": "Oslo"}}) is None
    error = validate_arguments(spec, {"item": 3, "to": {"city": "Oslo"}, "extra": 1})
    assert error.startswith("Invalid arguments for tool 'ship': ")
    assert "'quantity' is a required property" in error and "at $.item: 3 is not of type 'string'" in error
    assert "'extra' was unexpected" in error and '"required":["item","quantity","to"]' in error
    assert "must be a JSON object, not a JSON array" in validate_arguments(spec, [1])


def test_allow_list_globs():
    assert allowed(["files.*"], "files.read") and not allowed(["files.*"], "filesystem.read")
    assert allowed(["calculator", "memory.*"], "memory.search") and not allowed([], "calculator")


def _known() -> dict[str, ToolSpec]:
    params = {"type": "object", "properties": {}}
    return {"calculator": ToolSpec(name="calculator", description="", parameters=params),
            "shell.exec": ToolSpec(name="shell.exec", description="", parameters=params),
            "mail.send": ToolSpec(name="mail.send", description="", parameters=params, approval="required")}


def test_authorize_is_the_one_door():
    known = _known()
    ok = authorize("writer", "calculator", {"expression": "1+1"}, allow=["calculator", "mail.*"], known_tools=known)
    assert ok.decision == "allowed" and ok.reason == ""
    denied = authorize("writer", "shell.exec", {"cmd": "rm -rf /"}, allow=["calculator"], known_tools=known)
    assert denied.decision == "denied"
    assert "agent 'writer' may not use tool 'shell.exec'" in denied.reason
    assert "its tools are: calculator" in denied.reason
    unknown = authorize("writer", "nope", {}, allow=["*"], known_tools=known)
    assert unknown.decision == "denied" and "no tool named 'nope'" in unknown.reason
    approval = authorize("writer", "mail.send", {}, allow=["mail.*"], known_tools=known)
    assert approval.decision == "needs_approval"
    by_pattern = authorize("writer", "calculator", {}, allow=["*"], known_tools=known, approve_patterns=["calc*"])
    assert by_pattern.decision == "needs_approval"


def test_the_door_records_a_digest_never_the_arguments():
    denied = authorize("writer", "shell.exec", {"cmd": "secret-token"}, allow=[], known_tools=_known())
    data = denied.event_data()
    assert data["arguments_digest"] == arguments_digest({"cmd": "secret-token"}) and len(data["arguments_digest"]) == 64
    assert "secret-token" not in str(data)
    assert arguments_digest({"a": 1, "b": [1, 2]}) == arguments_digest({"b": [1, 2], "a": 1})
    assert arguments_digest({"a": 1}) != arguments_digest({"a": 2})
    assert pickle.loads(pickle.dumps(denied)) == denied


def test_results_become_json_text_and_non_json_results_name_the_type_and_fix():
    @dataclass
    class Point:
        x: int

    assert result_to_text("plain", tool="t") == "plain"
    assert result_to_text({"n": 1, "é": [1.5]}, tool="t") == '{"n": 1, "é": [1.5]}'
    assert result_to_text(Point(x=1), tool="t") == '{"x": 1}' and result_to_text(Address(city="A"), tool="t")
    with pytest.raises(ToolError) as caught:
        result_to_text({1, 2}, tool="lister")
    message = str(caught.value)
    assert "Tool 'lister' failed: it returned a set that is not JSON-serialisable" in message
    assert "Fix: return a str, number" in message
    with pytest.raises(ToolError, match="float"):
        result_to_text(float("nan"), tool="t")


def test_clip_result_keeps_the_limit_and_says_so():
    assert clip_result("short", 10) == "short"
    clipped = clip_result("x" * 10_000, 200)
    assert len(clipped) <= 200 and clipped.startswith("xxx") and "clipped: 10000 characters" in clipped


def _write_module(tmp_path, monkeypatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


def test_python_agent_entrypoints(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "agents_ok_mod", """
        class Writer:
            async def run(self, task, ctx):
                return f"wrote {task}"

        async def run(task, ctx):
            return f"ran {task}"
        """)
    writer = build_python_agent("agents_ok_mod:Writer", where="agents[0].entrypoint")
    assert asyncio.run(writer("t", None)) == "wrote t"
    function = build_python_agent("agents_ok_mod:run", where="agents[0].entrypoint")
    assert asyncio.run(function("t", None)) == "ran t"


def test_a_python_agent_class_that_raises_as_it_is_built_is_a_spec_error_with_its_cause(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "agents_boom_mod", """
        import os

        class Agent:
            def __init__(self):
                self.key = os.environ["AGENTS_BOOM_MOD_KEY"]

            async def run(self, task, ctx):
                return self.key
        """)
    monkeypatch.delenv("AGENTS_BOOM_MOD_KEY", raising=False)
    load_python_agent("agents_boom_mod:Agent", where="agents[0](a).entrypoint")  # the check before a start builds none
    with pytest.raises(SpecError) as caught:
        build_python_agent("agents_boom_mod:Agent", where="agents[0](a).entrypoint")
    assert (caught.value.where, caught.value.value) == ("agents[0](a).entrypoint", "agents_boom_mod:Agent")
    assert caught.value.why == "building class Agent raised KeyError: 'AGENTS_BOOM_MOD_KEY'"
    assert "runtime_env" in caught.value.fix


@pytest.mark.parametrize(("body", "why"), [
    ("class Agent:\n    pass\n", "has no `run`"),
    ("class Agent:\n    def run(self, task, ctx):\n        return 1\n", "is not an `async def`"),
    ("class Agent:\n    def __init__(self, key):\n        pass\n    async def run(self, task, ctx):\n        pass\n",
     "needs constructor arguments ['key']"),
])
def test_a_python_agent_without_an_async_run_is_a_spec_error(tmp_path, monkeypatch, body, why):
    name = f"agents_bad_mod_{abs(hash(body))}"
    _write_module(tmp_path, monkeypatch, name, body)
    with pytest.raises(SpecError) as caught:
        load_python_agent(f"{name}:Agent", where="agents[1](coder).entrypoint")
    assert why in str(caught.value) and "agents[1](coder).entrypoint" in str(caught.value)
    assert "Fix: " in str(caught.value)


def test_new_errors_survive_pickling_between_processes():
    from controlplane.errors import AgentStopped

    for error in (ToolError(tool="calc", why="it raised ValueError: x", fix="check it"),
                  AgentStopped(agent="a", task="t", cause="loop", why="same call 3 times", fix="raise it")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.fields == error.fields
        assert not copy.retryable


def test_the_pure_tool_modules_do_not_import_ray():
    import subprocess

    modules = ["controlplane._core.agent_loop", "controlplane._core.builtins", "controlplane.builtin_tools",
               "controlplane.config._tools"]
    code = f"import sys, {', '.join(modules)}; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
