"""Every OpenAI request field is passed to the engine, read by the router, or refused with a 400 naming it."""

import json
import re
from pathlib import Path

import pytest

from controlplane import SpecError
from serving import ChatMessage, ChatRequest
from serving._backends.remote import _body
from serving._fields import ONLY_DEFAULT, ROUTER_FIELDS, SAMPLING_KEYS
from serving._http import ChatBody, CompletionBody, credentials, error_from_exception, parse_body, to_call
from serving._types import Identity

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving-fields.md"
SAMPLING = {"stop": ["\n\n"], "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "repetition_penalty": 1.1, "logit_bias": {"42": -100.0}, "ignore_eos": True,
            "min_tokens": 4}
WHO = Identity(mission_id="m1", agent_id="writer")
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def chat(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_sampling_fields_reach_the_call_and_the_remote_body():
    call = to_call(parse_body(chat(**SAMPLING), ChatBody), WHO, 8)
    assert {key: call.body[key] for key in SAMPLING} == SAMPLING
    from controlplane.config import OpenAIModelSpec

    spec = OpenAIModelSpec(base_url="http://x/v1", remote_model="r")
    _, remote = _body(spec, call.body)
    assert {key: remote[key] for key in SAMPLING} == SAMPLING


def test_unset_sampling_fields_stay_out_of_the_call():
    call = to_call(parse_body(chat(), ChatBody), WHO, 8)
    assert not set(SAMPLING_KEYS) & set(call.body)


def test_the_handle_api_takes_the_same_sampling_fields():
    request = ChatRequest(model="m", messages=[ChatMessage(role="user", content="x")], ignore_eos=True, seed=3)
    assert request.sampling() == {"ignore_eos": True, "seed": 3}


@pytest.mark.parametrize(("fields", "param", "needle"), [
    ({"n": 2}, "n", "one choice"),
    ({"logprobs": True}, "logprobs", "log-probabilities"),
    ({"top_logprobs": 3}, "top_logprobs", "log-probabilities"),
    ({"echo": True}, "echo", "echoed"),
    ({"frobnicate": 1}, "frobnicate", "docs/serving-fields.md"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "json_schema"),
    ({"structured_outputs": {"regex": "a+"}}, "structured_outputs.regex", "json and choice"),
    ({"top_p": 0}, "top_p", "greater than 0"),
])
def test_unsupported_values_get_a_400_naming_the_field_and_the_fix(fields, param, needle):
    with pytest.raises(SpecError) as info:
        to_call(parse_body(chat(**fields), ChatBody), WHO, 8)
    response = error_from_exception(info.value)
    error = json.loads(response.body)["error"]
    assert response.status_code == 400 and error["param"] == param and needle in error["message"]
    assert "Fix:" in error["message"]


def test_defaults_of_refused_fields_are_accepted():
    parse_body(chat(n=1, logprobs=False, echo=False, store=False, metadata={}, service_tier="auto"), ChatBody)
    parse_body(json.dumps({"model": "m", "prompt": "p", "best_of": 1, "suffix": None}).encode(), CompletionBody)


def test_tool_fields_reach_the_call_and_the_remote_body():
    call = to_call(parse_body(chat(tools=WEATHER, tool_choice="required", parallel_tool_calls=False, seed=3),
                              ChatBody), WHO, 8)
    assert call.body["tools"][0]["function"]["name"] == "get_weather" and call.body["tool_choice"] == "required"
    from controlplane.config import OpenAIModelSpec

    _, remote = _body(OpenAIModelSpec(base_url="http://x/v1", remote_model="r"), call.body)
    assert remote["tools"] == call.body["tools"] and remote["parallel_tool_calls"] is False and remote["seed"] == 3


@pytest.mark.parametrize(("fields", "where", "fix"), [
    ({"temperature": 5}, "temperature", "use 2 or less"),
    ({"max_tokens": -1}, "max_tokens", "use 1 or more"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role",
     "use 'system', 'user', 'assistant' or 'tool'"),
])
def test_a_value_out_of_its_bounds_or_choices_gets_a_400_that_names_them(fields, where, fix):
    with pytest.raises(SpecError) as info:
        parse_body(chat(**fields), ChatBody)
    assert (info.value.where, info.value.fix) == (where, fix)


def test_tool_fields_on_a_completion_get_a_400():
    raw = json.dumps({"model": "m", "prompt": "p", "tools": WEATHER}).encode()
    with pytest.raises(SpecError, match="chat/completions") as info:
        parse_body(raw, CompletionBody)
    assert info.value.where == "tools"


def test_json_object_and_user():
    parsed = parse_body(chat(response_format={"type": "json_object"}, user="u1"), ChatBody)
    assert to_call(parsed, WHO, 8).body["json_schema"] == {"type": "object"}
    assert credentials({}, parsed)["x-agent-id"] == "u1"  # asked for like x-agent-id: the credential decides
    assert credentials({"x-agent-id": "h"}, parse_body(chat(agent_id="a", user="u1"), ChatBody))["x-agent-id"] == "h"


def test_the_docs_table_names_every_field_and_only_those():
    documented = set(re.findall(r"`([a-z_]+)`", DOC.read_text()))
    fields = set(SAMPLING_KEYS) | set(ROUTER_FIELDS) | set(ONLY_DEFAULT)
    assert fields <= documented, sorted(fields - documented)
