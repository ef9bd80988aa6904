"""Every OpenAI request field is passed to the engine, read by the router, or refused with a 400 naming it."""

import json
import re
from pathlib import Path

import pytest

from controlplane import SpecError
from serving import ChatMessage, ChatRequest
from serving._backends.remote import _body
from serving._fields import LEFT_TO_TOOLS, ONLY_DEFAULT, ROUTER_FIELDS, SAMPLING_KEYS
from serving._http import ChatBody, CompletionBody, error_from_exception, parse_body, to_call

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving-fields.md"
SAMPLING = {"stop": ["\n\n"], "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "repetition_penalty": 1.1, "logit_bias": {"42": -100.0}, "ignore_eos": True,
            "min_tokens": 4}


def chat(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_sampling_fields_reach_the_call_and_the_remote_body():
    call = to_call(parse_body(chat(**SAMPLING), ChatBody), {}, 8)
    assert {key: call.body[key] for key in SAMPLING} == SAMPLING
    from controlplane.config import OpenAIModelSpec

    spec = OpenAIModelSpec(base_url="http://x/v1", remote_model="r")
    _, remote = _body(spec, call.body)
    assert {key: remote[key] for key in SAMPLING} == SAMPLING


def test_unset_sampling_fields_stay_out_of_the_call():
    call = to_call(parse_body(chat(), ChatBody), {}, 8)
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
        to_call(parse_body(chat(**fields), ChatBody), {}, 8)
    response = error_from_exception(info.value)
    error = json.loads(response.body)["error"]
    assert response.status_code == 400 and error["param"] == param and needle in error["message"]
    assert "Fix:" in error["message"]


def test_defaults_of_refused_fields_and_tool_fields_are_accepted():
    parse_body(chat(n=1, logprobs=False, echo=False, store=False, metadata={}, service_tier="auto",
                    tools=[], tool_choice="auto", parallel_tool_calls=True), ChatBody)
    parse_body(json.dumps({"model": "m", "prompt": "p", "best_of": 1, "suffix": None}).encode(), CompletionBody)


def test_json_object_and_user():
    call = to_call(parse_body(chat(response_format={"type": "json_object"}, user="u1"), ChatBody), {}, 8)
    assert call.body["json_schema"] == {"type": "object"} and call.identity.agent_id == "u1"


def test_the_docs_table_names_every_field_and_only_those():
    documented = set(re.findall(r"`([a-z_]+)`", DOC.read_text()))
    fields = set(SAMPLING_KEYS) | set(ROUTER_FIELDS) | set(ONLY_DEFAULT) | set(LEFT_TO_TOOLS)
    assert fields <= documented, sorted(fields - documented)
