"""The OpenAI-compatible request parsing and error bodies (no Serve)."""

import json

import pytest

from controlplane import BackpressureError, ReplicaUnavailable, SpecError
from controlplane.errors import AccessDenied, IdentityError, ScopeDenied
from serving._http import (
    ChatBody,
    CompletionBody,
    credentials,
    endpoints_of,
    error_from_exception,
    not_served,
    parse_body,
    to_call,
)
from serving._router import app
from serving._types import Identity

WHO = Identity(mission_id="m1", agent_id="writer")


def body(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_narrowing_asks_come_from_headers_then_body_fields_and_the_call_takes_the_credentials_identity():
    parsed = parse_body(body(mission_id="body-m", agent_id="body-a", priority="bulk"), ChatBody)
    asks = credentials({"authorization": "Bearer cp-x", "x-mission-id": "hdr-m"}, parsed)
    assert asks == {"authorization": "Bearer cp-x", "x-mission-id": "hdr-m", "x-agent-id": "body-a",
                    "x-priority": "bulk"}
    call = to_call(parsed, WHO, 256)
    assert call.identity == WHO and call.body["max_tokens"] == 256 and call.key is None


@pytest.mark.parametrize(("raw", "field"), [
    (b"{not json", "body"),
    (json.dumps({"model": "m"}).encode(), "messages"),
    (body(max_tokens=-1), "max_tokens"),
    (body(max_tokens=10**9), "max_tokens"),
    (body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
    (body(n=3), "n"),
])
def test_malformed_bodies_name_the_field(raw, field):
    with pytest.raises(SpecError) as info:
        parse_body(raw, ChatBody)
    assert info.value.where == field
    response = error_from_exception(info.value)
    assert response.status_code == 400
    assert json.loads(response.body)["error"]["param"] == field


def test_guided_decoding_fields_are_passed_through():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert to_call(parse_body(body(response_format=rf), ChatBody), WHO, 8).body["json_schema"] == schema
    call = to_call(parse_body(body(structured_outputs={"choice": ["yes", "no"]}), ChatBody), WHO, 8)
    assert call.body["choice"] == ["yes", "no"]


def test_completion_body_keeps_the_prompt():
    call = to_call(parse_body(json.dumps({"model": "m", "prompt": "Once"}).encode(), CompletionBody), WHO, 8)
    assert call.body["prompt"] == "Once" and "messages" not in call.body


def test_error_statuses():
    limited = error_from_exception(BackpressureError(scope="agent:m/a", limit="rpm=2", retry_after_s=12.3))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "13"
    unknown = error_from_exception(SpecError(where="model", value="x", why="no such model", fix="f"))
    assert unknown.status_code == 404
    assert error_from_exception(ReplicaUnavailable(model="m", why="down")).status_code == 503


def test_a_missing_or_bad_credential_is_401_with_a_bearer_challenge_and_a_scope_breach_is_403():
    refused = error_from_exception(IdentityError(why="no key", fix="send one"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert json.loads(refused.body)["error"]["type"] == "authentication_error"
    for error in (ScopeDenied(why="x-agent-id outside", fix="f"), AccessDenied(agent="a", resource="r", granted=[])):
        denied = error_from_exception(error)
        assert denied.status_code == 403 and json.loads(denied.body)["error"]["type"] == "permission_error"


def test_bad_priority_header_names_the_header():
    with pytest.raises(SpecError, match="x-priority header") as info:
        credentials({"x-priority": "urgent"}, parse_body(body(), ChatBody))
    assert info.value.value == "urgent"


@pytest.mark.parametrize(("method", "path", "root", "status", "needle"), [
    ("POST", "/chat/completions", "", 404, "Fix: end the client's base URL in /v1 (e.g. http://HOST:PORT/v1)"),
    ("POST", "/other/chat/completions", "/other", 404, "in /v1 (e.g. http://HOST:PORT/other/v1)"),
    ("POST", "/v1/responses", "", 404, 'set_default_openai_api("chat_completions")'),
    ("POST", "/v1/embeddings", "", 404, "serves GET /v1/models, GET /v1/models/{model}, POST /v1/chat/completions, "
                                        "POST /v1/completions. Fix: call one of those"),
    ("GET", "/other/v1/chat/completions", "/other", 405, "use POST /other/v1/chat/completions"),
])
def test_a_request_no_route_takes_gets_an_openai_error_saying_what_is_served_and_the_fix(method, path, root, status,
                                                                                         needle):
    response = not_served(method, path, root, endpoints_of(app.routes))
    error = json.loads(response.body)["error"]
    assert response.status_code == status and error["code"] == status and needle in error["message"]
    assert response.headers.get("allow") == ("POST" if status == 405 else None)


@pytest.mark.parametrize(("raw", "value", "why", "fix"), [
    (b"", "<empty>", "the request has no body", "send a JSON object with model and messages"),
    (b"[1, 2]", "[1, 2]", "it is a JSON array, not an object", "send a JSON object with model and messages"),
    (b"null", "null", "it is a JSON null, not an object", "send a JSON object with model and messages"),
    (json.dumps({"model": "m"}).encode(), "<missing>", "Field required", "add the field"),
])
def test_a_body_that_is_empty_not_an_object_or_lacks_a_field_is_told_so_and_the_fix(raw, value, why, fix):
    with pytest.raises(SpecError) as info:
        parse_body(raw, ChatBody)
    assert (info.value.value, info.value.why, info.value.fix) == (value, why, fix)
