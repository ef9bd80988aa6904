"""The tool-calling loop on scripted transcripts, in both tool-call styles."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from controlplane._core.agent_loop import LAST_STEP_MESSAGE, AgentLoop
from controlplane._core.builtins import builtin_tools, check_delegation
from controlplane._core.events import EventLog
from controlplane._core.loop_types import Finished, LoopLimits, Repair, RunTools, Stopped, ToolCall, ToolResult
from controlplane._core.tools import ToolSpec, tool_from_function
from controlplane.builtin_tools import calculator, word_count
from controlplane.errors import AgentStopped

CALC = tool_from_function(calculator)
COUNT = tool_from_function(word_count)
SHELL = ToolSpec(name="shell.exec", description="Run a command.",
                 parameters={"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]})
FUNCTIONS = {"calculator": CALC, "word_count": COUNT}
MESSAGES = [{"role": "system", "content": "You are the analyst."}, {"role": "user", "content": "Price it."}]


def make_loop(*, style: str = "constrained", allow=("calculator", "word_count", "memory.*", "delegate"),
              limits: LoopLimits = LoopLimits(), expected_output=None, extra: dict[str, ToolSpec] | None = None,
              approve=()) -> AgentLoop:
    known = {"calculator": CALC.spec, "word_count": COUNT.spec, "shell.exec": SHELL,
             **builtin_tools(delegate_targets=["copywriter", "editor"]), **(extra or {})}
    return AgentLoop(agent="analyst", task="pricing", messages=MESSAGES, known_tools=known, allow=list(allow),
                     approve_patterns=list(approve), limits=limits, expected_output=expected_output,
                     tool_style=style)


def run_calls(calls: list[ToolCall]) -> list[ToolResult]:
    """Run the functions the way the actor does: concurrently, each result or error for the model."""
    async def one(call: ToolCall) -> ToolResult:
        try:
            return ToolResult.success(call, await FUNCTIONS[call.name].invoke(call.arguments), duration_s=0.5)
        except Exception as exc:
            return ToolResult.failure(call, exc, duration_s=0.5)

    async def all_of() -> list[ToolResult]:
        return list(await asyncio.gather(*(one(call) for call in calls)))

    return asyncio.run(all_of())


def play(loop: AgentLoop, replies: list[Any], runner: Callable[[list[ToolCall]], list[ToolResult]] = run_calls):
    """Feed scripted replies (constrained: a JSON-able object; native: (text, tool_calls)) until the loop ends."""
    decisions = []
    for reply in replies:
        loop.next_request()
        if loop.style == "native":
            text, calls = reply
            decision = loop.on_reply(text, calls)
        else:
            decision = loop.on_reply(reply if isinstance(reply, str) else json.dumps(reply))
        decisions.append(decision)
        if isinstance(decision, RunTools):
            loop.on_tool_results(runner(decision.calls))
        if isinstance(decision, Finished | Stopped):
            break
    return decisions


def native_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def test_constrained_tool_call_then_its_result_then_the_answer():
    loop = make_loop()
    request = loop.next_request()
    assert request.tools is None and "Tools:\n- calculator(expression: string)" in request.messages[0]["content"]
    decision = loop.on_reply(json.dumps({"tool": "calculator", "arguments": {"expression": "6 * 7"}}))
    assert isinstance(decision, RunTools) and [c.name for c in decision.calls] == ["calculator"]
    assert decision.calls[0].arguments == {"expression": "6 * 7"} and decision.events == []
    loop.on_tool_results(run_calls(decision.calls))
    assert loop.messages[-1] == {"role": "user", "content": "Result of calculator: 42"}
    assert loop.next_request().messages[-1]["content"] == "Result of calculator: 42"
    finished = loop.on_reply(json.dumps({"final": "The price is 42."}))
    assert isinstance(finished, Finished) and finished.output == "The price is 42."
    summary = loop.summary()
    assert (summary.steps, summary.tool_calls, summary.repairs, summary.stop_cause) == (2, 1, 0, None)
    record = summary.tool_records[0]
    assert (record.tool, record.status, record.duration_s, record.result_chars) == ("calculator", "ok", 0.5, 2)
    assert len(record.arguments_digest) == 64


def test_the_constrained_grammar_admits_only_offered_tools_with_valid_arguments():
    schema = make_loop(allow=["calculator"]).next_request().json_schema
    jsonschema.validate({"tool": "calculator", "arguments": {"expression": "1+1"}}, schema)
    jsonschema.validate({"final": "done"}, schema)
    for bad in ({"tool": "shell.exec", "arguments": {"cmd": "ls"}}, {"tool": "calculator", "arguments": {"x": 1}},
                {"tool": "calculator", "arguments": {"expression": 5}}, {"final": "a", "tool": "calculator"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_structured_schema_in_the_grammar_is_bounded_and_self_contained():
    class Item(BaseModel):
        name: str

    def stock(items: list[Item]) -> int:
        """Count stock."""
        return len(items)

    output = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["tags"]}
    loop = make_loop(allow=["stock"], extra={"stock": tool_from_function(stock).spec}, expected_output=output)
    schema = loop.next_request().json_schema
    jsonschema.validate({"tool": "stock", "arguments": {"items": [{"name": "mug"}]}}, schema)
    jsonschema.validate({"final": {"tags": ["a"]}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"final": {"tags": ["a"] * 11}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool": "stock", "arguments": {"items": [{"name": "m"}] * 11}}, schema)
    assert set(schema["$defs"]) == {"t0_Item"}


def test_native_parallel_calls_run_together_and_results_keep_the_call_order():
    loop = make_loop(style="native")
    request = loop.next_request()
    names = [tool["function"]["name"] for tool in request.tools]
    assert names == ["calculator", "delegate", "memory_post", "memory_search", "word_count"]
    assert request.json_schema is None
    decision = loop.on_reply("", [native_call("a", "calculator", {"expression": "2+2"}),
                                  native_call("b", "word_count", {"text": "one two three"})])
    assert isinstance(decision, RunTools) and [c.id for c in decision.calls] == ["a", "b"]
    loop.on_tool_results(list(reversed(run_calls(decision.calls))))
    assistant, first, second = loop.messages[-3:]
    assert assistant["tool_calls"][1]["function"] == {"name": "word_count", "arguments": '{"text": "one two three"}'}
    assert first == {"role": "tool", "tool_call_id": "a", "content": "4"}
    assert second["tool_call_id"] == "b" and json.loads(second["content"])["words"] == 3
    assert isinstance(loop.on_reply("Four, and three words.", None), Finished)
    assert loop.summary().tool_calls == 2


def test_native_calls_with_missing_or_repeated_ids_get_their_own():
    loop = make_loop(style="native")
    loop.next_request()
    decision = loop.on_reply("", [native_call("", "calculator", {"expression": "1"}),
                                  native_call("same", "calculator", {"expression": "2"}),
                                  native_call("same", "calculator", {"expression": "3"})])
    assert [call.id for call in decision.calls] == ["call_1_0", "same", "call_1_2"]
    loop.on_tool_results(run_calls(decision.calls))
    assert [m["tool_call_id"] for m in loop.messages[-3:]] == ["call_1_0", "same", "call_1_2"]
    assert [c["id"] for c in loop.messages[-4]["tool_calls"]] == ["call_1_0", "same", "call_1_2"]


def test_native_wire_names_map_back_to_the_mission_names():
    loop = make_loop(style="native")
    loop.next_request()
    decision = loop.on_reply("", [native_call("m", "memory_search", {"query": "pricing"})])
    assert decision.calls[0].name == "memory.search"


def test_a_denied_tool_gets_a_readable_error_and_an_event_with_the_digest():
    loop = make_loop(style="native")
    assert "shell.exec" not in loop.offered
    loop.next_request()
    decision = loop.on_reply("", [native_call("x", "shell.exec", {"cmd": "cat /etc/passwd"})])
    assert isinstance(decision, RunTools) and decision.calls == []
    [event] = decision.events
    fields = event.emit_fields()
    assert (fields["kind"], fields["status"]) == ("tool", "denied")
    assert (fields["agent"], fields["task"]) == ("analyst", "pricing")
    assert fields["data"]["tool"] == "shell.exec" and len(fields["data"]["arguments_digest"]) == 64
    assert "/etc/passwd" not in json.dumps(fields)
    log = EventLog("m-1")
    assert log.emit(1.0, **fields).data["decision"] == "denied"
    loop.on_tool_results([])
    tool_message = loop.messages[-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "x"
    assert tool_message["content"].startswith("Error: agent 'analyst' may not use tool 'shell.exec'")
    assert "its tools are: calculator, delegate" in tool_message["content"]
    assert loop.summary().tool_records[0].status == "denied"


def test_an_unknown_tool_is_denied_with_the_list_of_tools():
    loop = make_loop(style="native")
    loop.next_request()
    decision = loop.on_reply("", [native_call("x", "web_search", {"q": "news"})])
    loop.on_tool_results([])
    assert decision.events[0].status == "denied"
    assert "there is no tool named 'web_search'; your tools are: calculator" in loop.messages[-1]["content"]


def test_invalid_arguments_are_not_run_and_the_model_is_told_the_schema():
    loop = make_loop()
    ran: list[ToolCall] = []
    decisions = play(loop, [{"tool": "calculator", "arguments": {"expr": "1+1"}}, {"final": "gave up"}],
                     runner=lambda calls: ran.extend(calls) or [])
    assert ran == [] and decisions[0].events[0].status == "invalid_arguments"
    feedback = loop.messages[-2]["content"]
    assert feedback.startswith("Result of calculator: Error: Invalid arguments for tool 'calculator':")
    assert "'expression' is a required property" in feedback and "'expr' was unexpected" in feedback
    assert loop.summary().tool_records[0].status == "invalid_arguments"


def test_native_arguments_that_are_not_json_are_a_tool_error():
    loop = make_loop(style="native")
    loop.next_request()
    decision = loop.on_reply("", [native_call("c", "calculator", '{"expression": "1+')])
    loop.on_tool_results([])
    assert decision.calls == [] and "the arguments are not valid JSON" in loop.messages[-1]["content"]


def test_a_tool_that_raises_or_returns_non_json_is_reported_to_the_model_and_as_an_event():
    loop = make_loop()
    loop.next_request()
    decision = loop.on_reply(json.dumps({"tool": "calculator", "arguments": {"expression": "1/0"}}))
    events = loop.on_tool_results(run_calls(decision.calls))
    assert [e.status for e in events] == ["failed"] and events[0].data["tool"] == "calculator"
    assert "Result of calculator: Error: tool 'calculator' failed: it raised ValueError: '1/0' divides by zero" \
        in loop.messages[-1]["content"]
    loop.next_request()
    decision = loop.on_reply(json.dumps({"tool": "word_count", "arguments": {"text": "a"}}))
    loop.on_tool_results([ToolResult.success(decision.calls[0], object())])
    assert "returned a object that is not JSON-serialisable" in loop.messages[-1]["content"]


def test_results_are_clipped_to_the_tools_limit():
    big = ToolSpec(name="dump", description="", parameters={"type": "object", "properties": {}},
                   max_result_chars=100)
    loop = make_loop(allow=["dump"], extra={"dump": big})
    loop.next_request()
    decision = loop.on_reply(json.dumps({"tool": "dump", "arguments": {}}))
    loop.on_tool_results([ToolResult.success(decision.calls[0], "z" * 5000)])
    content = loop.messages[-1]["content"]
    assert len(content) <= len("Result of dump: ") + 100 and "clipped: 5000 characters" in content


def test_the_same_call_repeated_n_times_stops_the_task_as_a_loop():
    loop = make_loop(limits=LoopLimits(loop_repeat_limit=3))
    same = {"tool": "calculator", "arguments": {"expression": "1+1"}}
    other = {"tool": "calculator", "arguments": {"expression": "2+2"}}
    decisions = play(loop, [same, other, same, same, {"final": "never"}])
    assert [type(d).__name__ for d in decisions] == ["RunTools", "RunTools", "RunTools", "Stopped"]
    stopped = decisions[-1]
    assert stopped.cause == "loop" and "'calculator' was called 3 times with the same arguments" in stopped.reason
    assert loop.summary().stop_cause == "loop"
    error = AgentStopped(agent="analyst", task="pricing", cause=stopped.cause, why=stopped.reason, fix=stopped.fix)
    assert "Agent 'analyst' stopped task 'pricing' (loop)" in str(error) and "loop_repeat_limit" in str(error)
    with pytest.raises(RuntimeError, match="the loop is over"):
        loop.next_request()


def test_max_steps_stops_a_model_that_never_answers():
    loop = make_loop(limits=LoopLimits(max_steps=3))
    replies = [{"tool": "calculator", "arguments": {"expression": f"{n}+1"}} for n in range(10)]
    decisions = play(loop, replies)
    assert len(decisions) == 3 and isinstance(decisions[-1], Stopped) and decisions[-1].cause == "max_steps"
    assert "max_steps=3" in decisions[-1].reason and "raise the agent's max_steps" in decisions[-1].fix
    assert loop.summary().tool_calls == 2


def test_the_last_step_asks_for_the_answer_so_a_weak_model_ends_with_one():
    loop = make_loop(limits=LoopLimits(max_steps=2))
    assert "anyOf" in loop.next_request().json_schema
    loop.on_tool_results(run_calls(loop.on_reply(json.dumps({"tool": "calculator",
                                                             "arguments": {"expression": "1"}})).calls))
    last = loop.next_request()
    assert set(last.json_schema["properties"]) == {"final"} and last.messages[-1]["content"] == LAST_STEP_MESSAGE
    assert loop.next_request().messages == last.messages
    assert loop.on_reply(json.dumps({"final": "one"})).output == "one"
    native = make_loop(style="native", limits=LoopLimits(max_steps=1))
    assert native.next_request().tools is None
    keep_tools = make_loop(style="native", limits=LoopLimits(max_steps=1, final_on_last_step=False))
    assert keep_tools.next_request().tools


def test_max_tool_calls_counts_parallel_calls():
    loop = make_loop(style="native", limits=LoopLimits(max_tool_calls=3))
    first = [native_call(f"a{n}", "calculator", {"expression": f"{n}"}) for n in range(2)]
    second = [native_call(f"b{n}", "calculator", {"expression": f"1{n}"}) for n in range(2)]
    decisions = play(loop, [("", first), ("", second)])
    assert decisions[-1].cause == "max_tool_calls" and "max_tool_calls=3" in decisions[-1].reason


PRICE = {"type": "object", "properties": {"price": {"type": "number"}, "currency": {"enum": ["EUR", "USD"]}},
         "required": ["price", "currency"], "additionalProperties": False}


def test_an_invalid_structured_answer_gets_one_repair_turn_that_says_what_was_wrong():
    loop = make_loop(expected_output=PRICE)
    decisions = play(loop, [{"final": {"price": "ten", "currency": "EUR"}}])
    repair = decisions[0]
    assert isinstance(repair, Repair)
    assert "at $.price: 'ten' is not of type 'number'" in repair.message
    assert loop.messages[-1]["content"] == repair.message
    request = loop.next_request()
    assert set(request.json_schema["properties"]) == {"final"}
    jsonschema.validate({"final": {"price": 10, "currency": "EUR"}}, request.json_schema)
    finished = loop.on_reply(json.dumps({"final": {"price": 10, "currency": "EUR"}}))
    assert isinstance(finished, Finished) and finished.output == {"price": 10, "currency": "EUR"}
    assert loop.summary().repairs == 1


def test_a_second_invalid_answer_fails_the_task():
    loop = make_loop(expected_output=PRICE)
    decisions = play(loop, [{"final": {"price": 1}}, {"final": {"price": 1, "currency": "GBP"}}])
    assert isinstance(decisions[0], Repair) and "'currency' is a required property" in decisions[0].message
    assert isinstance(decisions[1], Stopped) and decisions[1].cause == "invalid_output"
    assert "'GBP' is not one of ['EUR', 'USD']" in decisions[1].reason


def test_native_structured_answer_is_parsed_validated_and_repaired_under_the_output_schema():
    loop = make_loop(style="native", expected_output=PRICE)
    loop.next_request()
    repair = loop.on_reply("The price is ten euros.", None)
    assert isinstance(repair, Repair) and "it is not JSON" in repair.message
    request = loop.next_request()
    assert request.tools is None and request.json_schema == PRICE
    finished = loop.on_reply('```json\n{"price": 10, "currency": "EUR"}\n```', None)
    assert isinstance(finished, Finished) and finished.output == {"price": 10, "currency": "EUR"}


def test_an_empty_text_answer_is_repaired():
    loop = make_loop()
    decisions = play(loop, [{"final": "  "}, {"final": "Done."}])
    assert isinstance(decisions[0], Repair) and "the answer is empty" in decisions[0].message
    assert decisions[1].output == "Done."


@pytest.mark.parametrize(("reply", "why"), [
    ('{"tool": "calculator", "argu', "Your reply is not valid JSON (Unterminated string"),
    ('{"answer": 1}', "neither a tool call nor a final answer"),
    ('["final"]', "neither a tool call nor a final answer"),
])
def test_constrained_replies_that_are_not_actions_get_one_repair(reply, why):
    loop = make_loop()
    decisions = play(loop, [reply, reply])
    assert isinstance(decisions[0], Repair) and why in decisions[0].message
    assert decisions[0].message.endswith('. Reply again with {"tool": "<name>", "arguments": {...}} or '
                                         '{"final": <answer>}.')
    assert isinstance(decisions[1], Stopped) and decisions[1].cause == "invalid_reply"


def test_a_tool_that_needs_approval_reaches_the_actor_marked_and_with_an_event():
    loop = make_loop(approve=["calculator"])
    loop.next_request()
    decision = loop.on_reply(json.dumps({"tool": "calculator", "arguments": {"expression": "1"}}))
    assert decision.calls[0].authorization.decision == "needs_approval"
    assert decision.events[0].status == "needs_approval"


def test_delegation_is_a_tool_call_bounded_by_depth_and_task_count():
    loop = make_loop()
    request = loop.next_request()
    assert '- delegate(to: "copywriter"|"editor", description: string)' in request.messages[0]["content"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool": "delegate", "arguments": {"to": "nobody", "description": "x"}},
                            request.json_schema)
    depth = 1

    def supervisor(calls: list[ToolCall]) -> list[ToolResult]:
        [call] = calls
        refused = check_delegation(depth=depth, max_depth=1, task_count=4, max_tasks=50)
        return [ToolResult.failure(call, refused) if refused else ToolResult.success(call, "child result")]

    decision = loop.on_reply(json.dumps({"tool": "delegate", "arguments": {"to": "copywriter",
                                                                            "description": "Fix the tagline."}}))
    loop.on_tool_results(supervisor(decision.calls))
    assert "Error: delegation refused: this task is at delegation depth 1" in loop.messages[-1]["content"]
    depth = 0
    loop.next_request()
    decision = loop.on_reply(json.dumps({"tool": "delegate", "arguments": {"to": "editor", "description": "Check."}}))
    loop.on_tool_results(supervisor(decision.calls))
    assert loop.messages[-1]["content"] == "Result of delegate: child result"


def test_check_delegation_bounds():
    assert check_delegation(depth=0, max_depth=2, task_count=5, max_tasks=50) is None
    assert "max_depth" in check_delegation(depth=2, max_depth=2, task_count=5, max_tasks=50)
    assert "already has 50 tasks" in check_delegation(depth=0, max_depth=2, task_count=50, max_tasks=50)
    assert check_delegation(depth=0, max_depth=0, task_count=0, max_tasks=50) is not None
    assert "delegate" not in builtin_tools()


def test_results_must_answer_exactly_the_calls_the_loop_asked_for():
    loop = make_loop(style="native")
    loop.next_request()
    decision = loop.on_reply("", [native_call("a", "calculator", {"expression": "1"})])
    with pytest.raises(RuntimeError, match="after RunTools call on_tool_results"):
        loop.next_request()
    with pytest.raises(ValueError, match=r"results for calls \[\], but the loop awaits \['a'\]"):
        loop.on_tool_results([])
    loop.on_tool_results(run_calls(decision.calls))


def test_an_agent_with_no_tools_gets_the_output_schema_directly():
    loop = make_loop(style="native", allow=[], expected_output=PRICE)
    request = loop.next_request()
    assert request.tools is None and request.json_schema == PRICE
    plain = make_loop(allow=[])  # constrained, but nothing to choose from: a plain answer, no action grammar
    request = plain.next_request()
    assert request.json_schema is None and request.tools is None
    assert "Tools:" not in request.messages[0]["content"]
    assert isinstance(plain.on_reply("The launch is in May."), Finished)


def test_the_summary_crosses_process_boundaries():
    import pickle

    loop = make_loop(style="native")
    play(loop, [("", [native_call("x", "shell.exec", {"cmd": "ls"})]), ("done", None)])
    summary = loop.summary()
    assert pickle.loads(pickle.dumps(summary)) == summary
    assert [r.decision for r in summary.step_records] == ["RunTools", "Finished"]
