"""The OpenAI-compatible HTTP surface: request parsing, identity, replies and error bodies."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, get_args

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ConfigDict, Field, ValidationError
from starlette.routing import BaseRoute

from controlplane._core.json_kind import json_kind
from controlplane._pydantic_errors import read_error
from controlplane.errors import (
    AccessDenied,
    BackpressureError,
    BudgetExceeded,
    ControlPlaneError,
    IdentityError,
    ReplicaUnavailable,
    ScopeDenied,
    SpecError,
)
from serving._core import Call
from serving._fields import SamplingFields, check_extra
from serving._keys import KeyScope
from serving._tool_calls import ReplyAssembler
from serving._types import ChatMessage, Identity, Priority, ToolFields


class _Body(SamplingFields):
    """An OpenAI request body. Fields outside the model are checked by `serving._fields.check_extra`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | None = None
    guided_choice: list[str] | None = None
    mission_id: str | None = Field(None, description="Narrows like x-mission-id; never widens the credential.")
    agent_id: str | None = Field(None, description="Narrows like x-agent-id; never widens the credential.")
    user: str | None = Field(None, description="The end user: asked for as the agent id, like agent_id, when "
                             "neither x-agent-id nor agent_id is given.")
    priority: Priority | None = Field(None, description="Asked for like x-priority; at most the credential's.")
    timeout_s: float | None = Field(None, gt=0)


class ChatBody(_Body, ToolFields):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(_Body):
    prompt: str


def error_response(status: int, message: str, *, type_: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def endpoints_of(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of each API route of an app, as a client writes them."""
    return [(verb, route.path_format) for route in routes if isinstance(route, APIRoute)
            for verb in sorted(route.methods)]


def model_json(name: str, kind: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "owned_by": kind}


def not_served(method: str, path: str, root_path: str, endpoints: list[tuple[str, str]]) -> JSONResponse:
    """The 404 or 405 of a request no route takes, saying what the router serves and the fix of the common
    misses: a base URL without /v1, the Responses API, the wrong method."""
    route = path[len(root_path):] if root_path and path.startswith(root_path) else path
    served = ", ".join(f"{verb} {root_path}{where}" for verb, where in endpoints)
    methods = [verb for verb, where in endpoints if where == route.rstrip("/")]
    if methods:
        return error_response(405, f"{method} {path} is not served: use {methods[0]} {path}",
                              type_="invalid_request_error", headers={"Allow": methods[0]})
    if any(where == f"/v1{route}" for _, where in endpoints):
        fix = f"end the client's base URL in /v1 (e.g. http://HOST:PORT{root_path}/v1)"
    elif route.startswith("/v1/responses"):
        fix = ("call the Chat Completions API; in the OpenAI Agents SDK, `set_default_openai_api(\"chat_completions\")`"
               " or an `OpenAIChatCompletionsModel`")
    else:
        fix = "call one of those"
    return error_response(404, f"{method} {path} is not served: the router serves {served}. Fix: {fix}",
                          type_="not_found_error")


def error_from_exception(exc: Exception) -> JSONResponse:
    if isinstance(exc, (ScopeDenied, AccessDenied)):
        return error_response(403, str(exc), type_="permission_error")
    if isinstance(exc, IdentityError):
        return error_response(401, str(exc), type_="authentication_error", headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, BackpressureError):
        return error_response(429, str(exc), type_="rate_limit_error",
                              headers={"Retry-After": str(max(1, round(exc.retry_after_s + 0.5)))})
    if isinstance(exc, BudgetExceeded):
        return error_response(429, str(exc), type_="budget_exceeded")
    if isinstance(exc, SpecError):
        if exc.where == "model":
            return error_response(404, str(exc), type_="not_found_error", param="model")
        return error_response(400, str(exc), type_="invalid_request_error", param=exc.where)
    if isinstance(exc, ReplicaUnavailable):
        return error_response(503, str(exc), type_="service_unavailable")
    if isinstance(exc, ControlPlaneError):
        return error_response(500, str(exc), type_="server_error")
    raise exc


def parse_body(raw: bytes, cls: type[_Body]) -> _Body:
    needs = "model and messages" if issubclass(cls, ChatBody) else "model and prompt"
    if not raw.strip():
        raise SpecError(where="body", value="<empty>", why="the request has no body",
                        fix=f"send a JSON object with {needs}")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(where="body", value=raw[:80].decode(errors="replace"), why=f"not JSON ({exc.msg})",
                        fix=f"send a JSON object with {needs}") from None
    if not isinstance(data, dict):
        raise SpecError(where="body", value=raw[:80].decode(errors="replace"),
                        why=f"it is a JSON {json_kind(data)}, not an object",
                        fix=f"send a JSON object with {needs}")
    try:
        body = cls.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        _, unquoted, own_fix = read_error(error)
        raise SpecError(where=".".join(str(part) for part in error["loc"]), value=unquoted or error.get("input"),
                        why=error["msg"].removeprefix("Value error, "),
                        fix=own_fix or _FIXES.get(error["type"], "see https://platform.openai.com/docs/api-reference/chat")
                        ) from None
    check_extra(body.model_extra or {})
    return body


_FIXES = {"missing": "add the field"}


def _constraints(body: _Body) -> dict[str, Any]:
    structured = body.structured_outputs or {}
    unknown = sorted(set(structured) - {"json", "choice"})
    if unknown:
        raise SpecError(where=f"structured_outputs.{unknown[0]}", value=structured[unknown[0]],
                        why="the router passes json and choice constraints only", fix="use json or choice")
    schema = structured.get("json") or body.guided_json
    response_format = body.response_format or {}
    kind = response_format.get("type", "text")
    if kind == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema")
    elif kind == "json_object":
        schema = {"type": "object"}
    elif kind != "text":
        raise SpecError(where="response_format.type", value=kind, why="it is not text, json_object or json_schema",
                        fix="use one of those")
    return {"json_schema": schema, "choice": structured.get("choice") or body.guided_choice}


def credentials(headers: Any, body: _Body | None = None) -> dict[str, str | None]:
    """What the auth layer reads: the bearer, and the narrowing asks from headers (or, failing those, the body;
    `user` asks for the agent id when neither x-agent-id nor agent_id does)."""
    priority = headers.get("x-priority")
    if priority is not None and priority not in get_args(Priority):
        raise SpecError(where="x-priority header", value=priority, why=f"it is not one of {get_args(Priority)}",
                        fix="send normal or bulk, or leave the header out")
    return {"authorization": headers.get("authorization"),
            "x-mission-id": headers.get("x-mission-id") or (body.mission_id if body else None),
            "x-agent-id": headers.get("x-agent-id") or (body.agent_id or body.user if body else None),
            "x-priority": headers.get("x-priority") or (body.priority if body else None)}


def to_call(body: _Body, identity: Identity, default_max_tokens: int, key: KeyScope | None = None,
            on_dispatch: Callable[[], None] | None = None) -> Call:
    """The router call of a request, under the identity its credentials gave (and its API key's limits)."""
    payload: dict[str, Any] = {"max_tokens": body.max_tokens or body.max_completion_tokens or default_max_tokens,
                               "temperature": body.temperature, **_constraints(body), **body.sampling()}
    if isinstance(body, ChatBody):
        payload["messages"] = [m.to_wire() for m in body.messages]
        payload.update(body.tool_body())
    elif isinstance(body, CompletionBody):
        payload["prompt"] = body.prompt
    return Call(model=body.model, body=payload, identity=identity, timeout_s=body.timeout_s, key=key,
                on_dispatch=on_dispatch)


def _usage(final: dict[str, Any]) -> dict[str, Any]:
    return {"prompt_tokens": final["prompt_tokens"], "completion_tokens": final["completion_tokens"],
            "total_tokens": final["prompt_tokens"] + final["completion_tokens"],
            "ttft_s": final["ttft_s"], "latency_s": final["latency_s"], "queue_s": final["queue_s"]}


def _message(reply: ReplyAssembler) -> dict[str, Any]:
    """The assistant message; with tool calls and no text its content is null, as OpenAI's is."""
    calls = reply.tool_calls()
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or (None if calls else "")}
    if calls:
        message["tool_calls"] = [call.model_dump() for call in calls]
    return message


def reply_json(call: Call, reply: ReplyAssembler) -> dict[str, Any]:
    chat = "messages" in call.body
    final = reply.final
    choice: dict[str, Any] = {"index": 0, "finish_reason": final["finish_reason"]}
    if chat:
        choice["message"] = _message(reply)
    else:
        choice["text"] = reply.text
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": final["model"], "choices": [choice], "usage": _usage(final)}


def sse_chunk(call: Call, request_id: str, event: dict[str, Any], include_usage: bool) -> str:
    chat = "messages" in call.body
    chunk: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
                             "created": int(time.time()), "model": event.get("model", call.model)}
    if event.get("done"):
        choice: dict[str, Any] = {"index": 0, "finish_reason": event["finish_reason"]}
        choice["delta" if chat else "text"] = {} if chat else ""
        chunk["choices"] = [choice]
        if include_usage:
            chunk["usage"] = _usage(event)
    elif "tool_calls" in event:
        chunk["choices"] = [{"index": 0, "finish_reason": None,
                             "delta": {"role": "assistant", "tool_calls": event["tool_calls"]}}]
    else:
        choice = {"index": 0, "finish_reason": None}
        choice.update({"delta": {"role": "assistant", "content": event["delta"]}} if chat else {"text": event["delta"]})
        chunk["choices"] = [choice]
    return f"data: {json.dumps(chunk)}\n\n"


def sse_error(exc: Exception) -> str:
    response = error_from_exception(exc)
    return f"data: {bytes(response.body).decode()}\n\n"
