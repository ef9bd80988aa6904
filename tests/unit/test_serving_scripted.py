import asyncio
import json

import pytest

from serving._backends.scripted import EngineSteps, ScriptedEngine, count_tokens, last_turn, truncate
from serving._constrained import ConstrainedBackend
from serving._tool_calls import ReplyAssembler

ENGINE = ScriptedEngine([{"match": "(?i)capital", "text": "Paris"}, {"match": "json", "text": '{"ok": true}'}])
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
TOOL_SCRIPT = ScriptedEngine([
    {"match": "(?i)weather", "turn": "user", "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    {"match": "get_weather: (\\w+)", "turn": "tool", "text": "It is sunny in Paris."},
    {"match": "(?i)weather", "text": "I cannot look that up."},
])


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "s"}, {"role": "user", "content": text}]


def test_first_matching_rule_on_the_last_user_message():
    assert ENGINE.reply(user("The CAPITAL of France?")).text == "Paris"


def test_no_match_is_deterministic_from_the_prompt():
    assert ENGINE.reply(user("hello there")) == ENGINE.reply(user("hello there"))
    assert ENGINE.reply(user("hello there")).text == "scripted reply to: hello there"


def test_choice_answers_a_matching_choice_else_the_first():
    assert ENGINE.reply(user("capital?"), choice=["Rome", "Paris"]).text == "Paris"
    assert ENGINE.reply(user("other"), choice=["agree", "disagree"]).text == "agree"


def test_json_schema_answers_the_matching_json():
    assert json.loads(ENGINE.reply(user("json"), json_schema={"type": "object"}).text) == {"ok": True}
    assert ENGINE.reply(user("nothing matches"), json_schema={"type": "object"}).text == "{}"


def test_truncate_counts_words():
    assert truncate("a b c d", 2) == ("a b", "length")
    assert truncate("a b", 2) == ("a b", "stop")
    assert count_tokens("a b  c") == 3


def test_truncate_stops_before_the_first_stop_string():
    assert truncate("scripted reply to: hello", 10, stop=[" to", "xyz"]) == ("scripted reply", "stop")
    assert truncate("one two. three", 10, stop=".") == ("one two", "stop")


def test_a_rule_of_any_turn_reads_tool_results_too():
    engine = ScriptedEngine([{"match": "Result of calc: 4$", "text": "four"}])
    assert engine.reply([*user("2+2?"), {"role": "user", "content": "Result of calc: 4"}]).text == "four"


def test_the_last_turn_is_the_tool_results_in_either_style():
    native = [*user("weather?"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    assert last_turn(native) == ("tool", "Result of get_weather: sunny")
    constrained = [*user("weather?"), {"role": "assistant", "content": '{"tool": "get_weather"}'},
                   {"role": "user", "content": "Result of get_weather: sunny"}]
    assert last_turn(constrained) == ("tool", "Result of get_weather: sunny")
    assert last_turn(user("weather?")) == ("user", "weather?")


def test_a_tool_rule_answers_natively_when_the_request_offers_the_tool():
    answer = TOOL_SCRIPT.reply(user("Weather in Paris?"), tools=[WEATHER])
    assert answer.text == "" and answer.tool_call == {
        "id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert TOOL_SCRIPT.reply(user("Weather in Paris?"), tools=[WEATHER], tool_choice="none").text == \
        "I cannot look that up."  # the tool rule does not apply; the next matching rule does
    assert TOOL_SCRIPT.reply(user("Weather in Paris?")).text == "I cannot look that up."  # no tools offered


def test_a_tool_rule_answers_with_action_json_under_an_action_schema():
    union = {"anyOf": [
        {"type": "object", "properties": {"tool": {"enum": ["get_weather"]}, "arguments": WEATHER["function"]
                                          ["parameters"]}, "required": ["tool", "arguments"]},
        {"type": "object", "properties": {"final": {"type": "string"}}, "required": ["final"]}]}
    answer = TOOL_SCRIPT.reply(user("Weather?"), json_schema=union)
    assert json.loads(answer.text) == {"tool": "get_weather", "arguments": {"city": "Paris"}}
    after = [*user("Weather?"), {"role": "user", "content": "Result of get_weather: sunny"}]
    assert json.loads(TOOL_SCRIPT.reply(after, json_schema=union).text) == {"final": "It is sunny in Paris."}


class ScriptedBackend:
    """The scripted engine as a backend, without a replica."""

    def __init__(self, engine):
        self.engine = engine

    async def stream(self, call, affinity_key):
        answer = self.engine.reply(call["messages"], json_schema=call.get("json_schema"), tools=call.get("tools"))
        yield {"delta": answer.text}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1}


def test_a_multi_turn_tool_transcript_plays_through_the_constrained_mapping():
    backend = ConstrainedBackend(ScriptedBackend(TOOL_SCRIPT), new_call_id=lambda: "call_1")

    async def turn(messages):
        reply = ReplyAssembler()
        async for event in backend.stream({"messages": messages, "max_tokens": 64, "tools": [WEATHER]}, None):
            reply.add(event)
        return reply

    messages = user("What is the weather in Paris?")
    first = asyncio.run(turn(messages))
    assert first.final["finish_reason"] == "tool_calls"
    [call] = first.tool_calls()
    assert (call.function.name, call.arguments()) == ("get_weather", {"city": "Paris"})
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
    second = asyncio.run(turn(messages))
    assert (second.text, second.tool_calls(), second.final["finish_reason"]) == ("It is sunny in Paris.", [], "stop")


def test_an_unscripted_json_reply_is_the_smallest_valid_instance_and_ends_an_agents_turn():
    import jsonschema

    from controlplane._core.actions import action_schema, final_value_schema
    from controlplane._core.builtins import MEMORY_SEARCH_TOOL

    schema = action_schema([MEMORY_SEARCH_TOOL], final_value_schema(None), max_string_chars=40)
    answer = ScriptedEngine([]).reply([{"role": "user", "content": "Plan the launch"}], json_schema=schema)
    reply = json.loads(answer.text)
    jsonschema.validate(reply, schema)
    assert set(reply) == {"final"} and reply["final"].startswith("scripted reply to: Plan")
    price = {"type": "object", "required": ["amount", "tags"],
             "properties": {"amount": {"type": "number"}, "tags": {"type": "array", "minItems": 1,
                                                                   "items": {"type": "string", "maxLength": 3}}}}
    assert json.loads(ScriptedEngine([]).reply([{"role": "user", "content": "x"}], json_schema=price).text) == {
        "amount": 0, "tags": ["scr"]}


def test_engine_steps_give_every_waiting_call_its_token_at_the_same_step_and_survive_a_cancelled_one():
    async def run():
        steps, loop = EngineSteps(0.05), asyncio.get_running_loop()
        start = loop.time()

        async def tokens(n: int) -> list[float]:
            times = []
            for _ in range(n):
                await steps.next()
                times.append(loop.time() - start)
            return times

        leaver = asyncio.create_task(tokens(10))
        first, second = asyncio.create_task(tokens(3)), asyncio.create_task(tokens(3))
        await asyncio.sleep(0.01)
        leaver.cancel()  # a call that goes must not cancel the step the others wait for
        return await first, await second

    first, second = asyncio.run(run())
    assert first == pytest.approx(second, abs=0.01)  # the same steps, woken one after the other
    assert [t >= 0.05 * (n + 1) - 0.005 for n, t in enumerate(first)] == [True] * 3
    assert first[2] < 0.5
