"""The OpenAI tool-calling wire format, both ways (no Serve): requests with tools and tool messages, replies
and streamed chunks with tool_calls, read back by the official openai SDK's own types."""

import asyncio
import json

import pytest
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from controlplane import SpecError
from controlplane.config import ServingConfig
from serving import ChatMessage, ChatRequest
from serving._backends.base import OpenAIStreamReader
from serving._core import Call, RouterCore, estimate_prompt_tokens
from serving._http import ChatBody, parse_body, reply_json, sse_chunk, to_call
from serving._tool_calls import ReplyAssembler

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


def body(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": HISTORY, **fields}).encode()


def test_a_request_with_tools_and_tool_messages_reaches_the_call_as_sent():
    call = to_call(parse_body(body(tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False), ChatBody),
                   {}, 64)
    assert call.body["messages"] == HISTORY
    assert call.body["tools"][0]["function"]["name"] == "get_weather"
    assert (call.body["tool_choice"], call.body["parallel_tool_calls"]) == ("auto", False)
    for no_tools in ({}, {"tools": [], "tool_choice": "auto"}, {"tool_choice": "none", "parallel_tool_calls": True}):
        plain = to_call(parse_body(body(**no_tools), ChatBody), {}, 64)
        assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(plain.body)  # engines refuse them alone


@pytest.mark.parametrize(("fields", "where", "needle"), [
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "send_mail"}}}, "tool_choice",
     "not among the tools"),
    ({"tool_choice": "sometimes"}, "tool_choice", "sometimes"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0", "tool_call_id"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0", "needs content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content", "text parts only"),
])
def test_bad_tool_fields_are_400s_naming_the_field(fields, where, needle):
    with pytest.raises(SpecError, match=needle) as info:
        parse_body(body(**fields), ChatBody)
    assert info.value.where == where


def test_the_handle_api_takes_the_same_fields():
    request = ChatRequest(model="m", messages=[ChatMessage(**m) for m in HISTORY], tools=[WEATHER],
                          tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert request.tool_body()["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert [m.to_wire() for m in request.messages] == HISTORY
    with pytest.raises(ValidationError, match="not among the tools"):
        ChatRequest(model="m", messages=HISTORY[:1], tools=[WEATHER],
                    tool_choice={"type": "function", "function": {"name": "nope"}})
    text_parts = ChatMessage(role="user", content=[{"type": "text", "text": "a "}, {"type": "text", "text": "b"}])
    assert text_parts.content == "a b"


def test_tool_calls_and_tools_count_in_the_size_estimate():
    bare = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    assert estimate_prompt_tokens({**bare, "messages": HISTORY}) > estimate_prompt_tokens(
        {**bare, "messages": [{**m, "tool_calls": None} for m in HISTORY]})
    assert estimate_prompt_tokens({**bare, "tools": [WEATHER]}) >= estimate_prompt_tokens(bare) + 20


def test_tools_with_a_guided_choice_are_refused_before_any_work():
    core = RouterCore(ServingConfig.model_validate({"models": {"m": {"kind": "scripted"}}}), {})
    with pytest.raises(SpecError, match="either tools or a choice") as info:
        core.check(Call(model="m", body={"messages": HISTORY, "max_tokens": 8, "tools": [WEATHER],
                                         "choice": ["a", "b"]}))
    assert info.value.where == "tools"


FINAL = {"done": True, "finish_reason": "tool_calls", "model": "m", "prompt_tokens": 9, "completion_tokens": 4,
         "ttft_s": 0.1, "latency_s": 0.2, "queue_s": 0.0}
SPLIT = [{"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                          "function": {"name": "get_weather", "arguments": ""}}]},
         {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
         {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}]


def test_streamed_tool_call_deltas_assemble_into_calls():
    reply = ReplyAssembler()
    for event in [*SPLIT, FINAL]:
        reply.add(event)
    [call] = reply.tool_calls()
    assert (call.id, call.function.name, call.arguments()) == ("call_9", "get_weather", {"city": "Paris"})


def test_the_http_reply_is_an_openai_completion_with_tool_calls():
    reply = ReplyAssembler()
    for event in [*SPLIT, FINAL]:
        reply.add(event)
    parsed = ChatCompletion.model_validate(reply_json(Call(model="m", body={"messages": HISTORY}), reply))
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert choice.message.tool_calls[0].id == "call_9"


def test_streamed_chunks_accumulate_in_the_openai_sdk_into_the_same_call():
    call = Call(model="m", body={"messages": HISTORY})
    state = ChatCompletionStreamState()
    for event in [*SPLIT, FINAL]:
        line = sse_chunk(call, "chatcmpl-1", event, include_usage=True)
        chunk = ChatCompletionChunk.model_validate(json.loads(line.removeprefix("data: ")))
        state.handle_chunk(chunk)
    choice = state.get_final_completion().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert (choice.message.tool_calls[0].function.name, choice.message.tool_calls[0].function.arguments) == \
        ("get_weather", '{"city": "Paris"}')


def test_a_backends_sse_tool_call_deltas_become_events():
    reader = OpenAIStreamReader(completions=False)
    lines = [f"data: {json.dumps({'choices': [{'index': 0, 'delta': event}]})}" for event in
             ({"role": "assistant", "content": ""}, *({"tool_calls": e["tool_calls"]} for e in SPLIT))]
    lines.append(f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'tool_calls'}]})}")
    events = [event for line in lines for event in reader.read(line)]
    assert events == SPLIT
    assert reader.done()["finish_reason"] == "tool_calls"


def test_a_native_backends_tool_calls_pass_through_the_router_core():
    class NativeBackend:
        async def stream(self, call, affinity_key):
            assert call["tools"] == [WEATHER]  # a native model gets the tools as they are
            for event in SPLIT:
                yield event
            yield {"done": True, "finish_reason": "tool_calls", "prompt_tokens": 9, "completion_tokens": 4}

    config = ServingConfig.model_validate({"models": {"m": {"kind": "scripted", "tool_style": "native"}}})
    core = RouterCore(config, {"m": NativeBackend()})

    async def run():
        reply = ReplyAssembler()
        async for event in core.stream(Call(model="m", body={"messages": HISTORY, "max_tokens": 8,
                                                             "tools": [WEATHER]})):
            reply.add(event)
        return reply

    reply = asyncio.run(run())
    assert reply.tool_calls()[0].arguments() == {"city": "Paris"} and reply.final["ttft_s"] <= reply.final["latency_s"]
