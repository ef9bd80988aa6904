"""The constrained-action schema under xgrammar, vLLM's guided-decoding engine: it compiles, and it enforces
the tool enum, the arguments and the bounds that keep a small model from running on."""

import json

import pytest

from controlplane._core.agent_loop import AgentLoop
from controlplane._core.builtins import builtin_tools
from controlplane._core.tools import load_tool

xgr = pytest.importorskip("xgrammar")

VOCAB = [chr(i) for i in range(32, 127)] + ["\n", "</s>"]
OFFLINE = ("calculator", "read_file", "list_files", "word_count")
PLAN = {"type": "object", "additionalProperties": False, "required": ["headline", "channels"], "properties": {
    "headline": {"type": "string"},
    "channels": {"type": "array", "items": {"$ref": "#/$defs/Channel"}},
}, "$defs": {"Channel": {"type": "object", "properties": {"name": {"enum": ["email", "social", "press"]}},
                         "required": ["name"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def compiler():
    return xgr.GrammarCompiler(xgr.TokenizerInfo(VOCAB, stop_token_ids=[len(VOCAB) - 1]))


def demo_loop(**kwargs) -> AgentLoop:
    known = {name: load_tool(f"controlplane.builtin_tools:{name}", where="t").spec for name in OFFLINE}
    known |= builtin_tools(delegate_targets=["copywriter", "editor"])
    return AgentLoop(agent="analyst", task="t", messages=[{"role": "user", "content": "go"}], known_tools=known,
                     allow=["*"], **kwargs)


def accepts(compiled, value) -> bool:
    matcher = xgr.GrammarMatcher(compiled)
    return matcher.accept_string(json.dumps(value)) and matcher.is_completed()


def test_the_demo_action_schema_compiles_and_is_enforced(compiler):
    compiled = compiler.compile_json_schema(json.dumps(demo_loop(expected_output=PLAN).next_request().json_schema))
    assert accepts(compiled, {"tool": "calculator", "arguments": {"expression": "(120 - 20) * 0.15"}})
    assert accepts(compiled, {"tool": "delegate", "arguments": {"to": "editor", "description": "Check it."}})
    assert accepts(compiled, {"final": {"headline": "Go", "channels": [{"name": "email"}]}})
    assert not accepts(compiled, {"tool": "shell", "arguments": {}})
    assert not accepts(compiled, {"tool": "calculator", "arguments": {"expression": "120 EUR"}})
    assert not accepts(compiled, {"tool": "delegate", "arguments": {"to": "nobody", "description": "x"}})
    assert not accepts(compiled, {"final": {"headline": "Go", "channels": [{"name": "email"}] * 11}})


def test_free_strings_are_bounded_so_the_json_closes_before_max_tokens(compiler):
    compiled = compiler.compile_json_schema(json.dumps(demo_loop(max_string_chars=40).next_request().json_schema))
    assert accepts(compiled, {"final": "x" * 40})
    assert not accepts(compiled, {"final": "x" * 41})
    assert not accepts(compiled, {"tool": "word_count", "arguments": {"text": "x" * 41}})
