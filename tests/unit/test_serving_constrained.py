"""Constrained tool calls (no Ray): a request's tools become a guided-JSON action union, and the action reply
becomes OpenAI tool calls, streamed content, or raw text."""

import asyncio
import json

import jsonschema
import pytest

from controlplane.config import ServingConfig
from serving._constrained import ConstrainedBackend, ConstrainedReply, constrained_call, plain_messages
from serving._core import Call, RouterCore
from serving._tool_calls import ReplyAssembler

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now."}}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


def tool_call(**fields):
    return {"messages": ASK, "max_tokens": 200, "tools": [WEATHER, CLOCK], **fields}


def admits(schema, value) -> bool:
    return jsonschema.validators.validator_for(schema)(schema).is_valid(value)


def test_a_call_without_tools_goes_to_the_backend_as_it_is():
    call = {"messages": ASK, "max_tokens": 8, "json_schema": {"type": "object"}}
    assert constrained_call(call) == (call, False)


def test_tools_become_an_action_union_with_instructions_and_leave_the_body():
    body, is_action = constrained_call(tool_call(tool_choice="auto", parallel_tool_calls=True))
    schema = body["json_schema"]
    assert is_action and not {"tools", "tool_choice", "parallel_tool_calls"} & set(body)
    assert admits(schema, {"tool": "get_weather", "arguments": {"city": "Paris"}})
    assert admits(schema, {"tool": "get_time", "arguments": {}})
    assert admits(schema, {"final": "It is sunny."})
    assert not admits(schema, {"tool": "get_weather", "arguments": {}})  # city is required
    assert not admits(schema, {"tool": "send_mail", "arguments": {}})
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert "get_weather(city: string): The weather in a city." in system["content"]
    assert body["messages"][1:] == ASK[1:]


def test_free_strings_are_bounded_below_max_tokens():
    schema = constrained_call(tool_call(max_tokens=100))[0]["json_schema"]
    assert not admits(schema, {"final": "x" * 69}) and admits(schema, {"final": "x" * 68})


@pytest.mark.parametrize(("tool_choice", "callable_tools", "may_answer"), [
    ("auto", {"get_weather", "get_time"}, True),
    ("required", {"get_weather", "get_time"}, False),
    ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}, False),
])
def test_tool_choice_decides_what_the_grammar_admits(tool_choice, callable_tools, may_answer):
    schema = constrained_call(tool_call(tool_choice=tool_choice))[0]["json_schema"]
    assert {name for name in ("get_weather", "get_time")
            if admits(schema, {"tool": name, "arguments": {"city": "Paris"} if name == "get_weather" else {}})} \
        == callable_tools
    assert admits(schema, {"final": "done"}) == may_answer


def test_tool_choice_none_on_a_conversation_without_tool_history_asks_for_plain_text():
    body, is_action = constrained_call(tool_call(tool_choice="none"))
    assert not is_action and "json_schema" not in body and body["messages"] == ASK


def test_the_requests_json_schema_types_the_final_answer():
    answer = {"type": "object", "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]}
    schema = constrained_call(tool_call(json_schema=answer))[0]["json_schema"]
    assert admits(schema, {"final": {"celsius": 21}}) and not admits(schema, {"final": "warm"})


def test_tool_history_is_flattened_into_roles_every_template_knows():
    weather = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "a", "type": "function", "function": weather},
                   {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "a", "content": "sunny"},
               {"role": "tool", "tool_call_id": "b", "content": "noon"}]
    assert plain_messages(history)[2:] == [
        {"role": "assistant", "content": '{"tool": "get_weather", "arguments": {"city": "Paris"}}\n'
                                         '{"tool": "get_time", "arguments": {}}'},
        {"role": "user", "content": "Result of get_weather: sunny\nResult of get_time: noon"}]
    for no_tool_offered in ({}, {"tools": [WEATHER], "tool_choice": "none"}):
        body, is_action = constrained_call({"messages": history, "max_tokens": 50, **no_tool_offered})
        assert is_action and body["messages"][1:] == plain_messages(history)[1:]
        # the model was shown its calls as action JSON: it answers in it too, and may only answer
        assert admits(body["json_schema"], {"final": "Sunny at noon."})
        assert not admits(body["json_schema"], {"tool": "get_weather", "arguments": {"city": "Paris"}})
        assert 'When you have the answer: {"final"' in body["messages"][0]["content"]
        assert "get_weather(" not in body["messages"][0]["content"]


def feed_all(chunks, done=None):
    reply = ConstrainedReply(lambda: "call_1")
    events = [event for chunk in chunks for event in reply.feed(chunk)]
    return events + reply.finish(done or {"done": True, "finish_reason": "stop"})


def test_an_action_reply_becomes_one_openai_tool_call():
    events = feed_all(['{"tool": "get_', 'weather", "arguments": {"city": ', '"Paris"}}'])
    assert events == [
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"done": True, "finish_reason": "tool_calls"}]


def test_a_final_string_streams_as_it_decodes_escapes_split_across_chunks():
    text = 'Line one\nÉté "quoted" \U0001F600 done'
    raw = json.dumps({"final": text})  # ensure_ascii: \u00c9 and a surrogate pair \ud83d\ude00
    chunks = [raw[i:i + 3] for i in range(0, len(raw), 3)]
    events = feed_all(chunks)
    deltas = [event["delta"] for event in events if "delta" in event]
    assert "".join(deltas) == text
    assert len(deltas) > 5  # sent while it streamed, not at the end
    assert events[-1] == {"done": True, "finish_reason": "stop"}


def test_a_structured_final_becomes_json_content_and_anything_else_raw_text():
    assert feed_all(['{"final": {"celsius": 21}}'])[0] == {"delta": '{"celsius": 21}'}
    assert feed_all(["```json\n", '{"final": 3}\n```'])[0] == {"delta": "3"}
    assert feed_all(["I think it is sunny"])[0] == {"delta": "I think it is sunny"}
    cut = feed_all(['{"tool": "get_weather", "argu'], {"done": True, "finish_reason": "length"})
    assert cut == [{"delta": '{"tool": "get_weather", "argu'}, {"done": True, "finish_reason": "length"}]


def test_a_final_string_cut_by_max_tokens_keeps_what_was_said():
    events = feed_all(['{"final": "It is sun', 'ny and'], {"done": True, "finish_reason": "length"})
    assert "".join(e.get("delta", "") for e in events) == "It is sunny and"
    assert events[-1]["finish_reason"] == "length"


class ActionBackend:
    """A backend that answers with fixed text, and keeps the calls it got."""

    def __init__(self, text):
        self.text, self.calls = text, []

    async def stream(self, call, affinity_key):
        self.calls.append(call)
        yield {"delta": self.text}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 30, "completion_tokens": 12}


def test_the_router_turns_a_constrained_models_action_into_tool_calls():
    backend = ActionBackend('{"tool": "get_weather", "arguments": {"city": "Paris"}}')
    config = ServingConfig.model_validate({"models": {"m": {"kind": "scripted"}}})
    core = RouterCore(config, {"m": ConstrainedBackend(backend, new_call_id=lambda: "call_7")})

    async def run():
        reply = ReplyAssembler()
        async for event in core.stream(Call(model="m", body=tool_call(tool_choice="auto"))):
            reply.add(event)
        return reply

    reply = asyncio.run(run())
    assert "anyOf" in backend.calls[0]["json_schema"] and "tools" not in backend.calls[0]
    assert reply.final["finish_reason"] == "tool_calls" and reply.text == ""
    [call] = reply.tool_calls()
    assert (call.id, call.function.name, call.arguments()) == ("call_7", "get_weather", {"city": "Paris"})
    assert reply.final["completion_tokens"] == 12
