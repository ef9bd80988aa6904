"""Tool calls for models without a tool parser (`tool_style: constrained`): the router makes them itself.

A request with `tools` goes to the backend as a plain guided-JSON call:
- the conversation is flattened: an assistant turn's tool calls become the JSON the model would have written,
  `{"tool": name, "arguments": {...}}`, and tool results become one user message, a `Result of <tool>: <result>`
  line per call (the same form as the agent loop's constrained style);
- the system prompt tells the model the tools and the reply format (`actions.constrained_instructions`);
- `json_schema` becomes the union of `actions.action_schema`: one branch per offered tool, plus `{"final": ...}`
  (typed by the request's own json_schema, if any), so the grammar admits only a valid call or an answer.

tool_choice: `none` offers no tools (plain text, or only the `final` branch once the conversation has tool
history), `required` drops the `final` branch, a named function offers only that tool. The reply maps back:
`{"tool", "arguments"}` to one OpenAI tool call (finish_reason `tool_calls`), `{"final": text}` to content,
streamed as it is decoded; anything else (a cut or unconstrained reply) to its raw text. A constrained model
makes at most one tool call per reply.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

from controlplane._core.actions import (
    MAX_STRING_CHARS,
    BadReply,
    action_schema,
    constrained_instructions,
    final_value_schema,
    parse_constrained,
    strip_fence,
)
from controlplane._core.tools import ToolSpec
from serving._tool_calls import TOOL_KEYS

TOOL_RESULT_PREFIX = "Result of "
MUST_CALL = "You must call a tool now."
STRING_HEADROOM_TOKENS = 32
"""A token holds at least one character, so strings bounded to max_tokens - this close before the cut."""
_FINAL_STRING = re.compile(r'\s*\{\s*"final"\s*:\s*"')
_MODE_CHARS = 64
"""A reply that has not opened a `{"final": "` string within this many characters is read whole at the end."""


class _Backend(Protocol):
    def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]: ...


def offered_tools(tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> list[ToolSpec]:
    """The request's tools the model may call under `tool_choice` (none: no tools)."""
    if tool_choice == "none":
        return []
    named = tool_choice["function"]["name"] if isinstance(tool_choice, Mapping) else None
    return [ToolSpec(name=f["name"], description=f.get("description", ""),
                     parameters=f.get("parameters") or {"type": "object", "properties": {}})
            for f in (tool["function"] for tool in tools) if named in (None, f["name"])]


def union_schema(tools: Sequence[ToolSpec], final: Mapping[str, Any] | None, *, max_tokens: int) -> dict[str, Any]:
    """The action union over `tools`; `final` None: no final branch (the model must call a tool)."""
    max_chars = max(8, min(MAX_STRING_CHARS, max_tokens - STRING_HEADROOM_TOKENS))
    schema = action_schema(tools, final if final is not None else {"type": "string"}, max_string_chars=max_chars)
    if final is not None:
        return schema
    branches = [branch for branch in schema["anyOf"] if "final" not in branch["properties"]]
    defs = {"$defs": schema["$defs"]} if "$defs" in schema else {}
    return (branches[0] if len(branches) == 1 else {"anyOf": branches}) | defs


def tool_names(messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Tool call id -> the tool's name, from the assistant messages' tool calls."""
    return {call["id"]: call["function"]["name"] for message in messages for call in message.get("tool_calls") or ()}


def result_line(message: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """A tool message as one `Result of <tool>: <result>` line."""
    name = names.get(message.get("tool_call_id") or "", message.get("name") or "the tool")
    return f"{TOOL_RESULT_PREFIX}{name}: {message.get('content') or ''}"


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation in roles every chat template knows: tool calls as action JSON, results as user text."""
    names = tool_names(messages)
    plain: list[dict[str, Any]] = []
    results: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            results.append(result_line(message, names))
            continue
        if results:
            plain.append({"role": "user", "content": "\n".join(results)})
            results = []
        text = message.get("content") or ""
        calls = message.get("tool_calls") or ()
        lines = [text] if text else []
        lines += [json.dumps({"tool": call["function"]["name"], "arguments": _arguments(call)}) for call in calls]
        plain.append({"role": message["role"], "content": "\n".join(lines)})
    if results:
        plain.append({"role": "user", "content": "\n".join(results)})
    return plain


def _arguments(call: Mapping[str, Any]) -> Any:
    raw = call["function"].get("arguments") or "{}"
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}".strip()}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def constrained_call(call: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The backend call for a constrained model, and whether its reply is an action to map back.

    A call without tools or tool messages is returned as it is. A conversation with tool history but no tool to
    offer (none given, or `tool_choice: none`) must be answered as `{"final": ...}`: shown its earlier calls as
    action JSON, a small model answering in free text writes another call as text."""
    messages = call.get("messages")
    has_history = messages is not None and any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    if not call.get("tools") and not has_history:
        return call, False
    body = {key: value for key, value in call.items() if key not in TOOL_KEYS}
    body["messages"] = plain_messages(messages or [])
    tool_choice = call.get("tool_choice") or "auto"
    tools = offered_tools(call.get("tools") or [], tool_choice)
    if not tools and not has_history:
        return body, False
    answer_allowed = tool_choice in ("auto", "none")
    instructions = constrained_instructions(tools, structured=call.get("json_schema") is not None)
    if not answer_allowed:
        instructions = f"{instructions}\n{MUST_CALL}"
    body["messages"] = _with_system(body["messages"], instructions)
    final = final_value_schema(call.get("json_schema")) if answer_allowed else None
    body["json_schema"] = union_schema(tools, final, max_tokens=call["max_tokens"])
    return body, True


class ConstrainedReply:
    """Reads an action reply as it streams and turns it into OpenAI-shaped events.

    A `{"final": "..."}` string is decoded and sent as content while it streams; any other reply is read whole
    when the backend's final event comes."""

    def __init__(self, new_call_id: Callable[[], str]) -> None:
        self._new_call_id = new_call_id
        self._raw = ""
        self._string_at: int | None = None
        """Where the final answer's string body starts in the raw text, once it has opened."""
        self._read = 0
        """How far into the string body the content has been sent (always at an escape boundary)."""
        self._closed = False

    def feed(self, text: str) -> list[dict[str, Any]]:
        self._raw += text
        if self._string_at is None and len(self._raw) - len(text) < _MODE_CHARS:
            opened = _FINAL_STRING.match(self._raw)
            self._string_at = opened.end() if opened else None
        if self._string_at is None or self._closed:
            return []
        try:
            decoded, self._read, self._closed = _string_prefix(self._raw[self._string_at:], self._read)
        except ValueError:  # not JSON after all (no grammar held the model): keep what was sent, stop there
            self._closed = True
            return []
        return [{"delta": decoded}] if decoded else []

    def finish(self, done: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events that end the reply: a tool call or the rest of the content, then the final event."""
        if self._string_at is not None:
            return [dict(done)]
        parsed = parse_constrained(strip_fence(self._raw), step=0)
        if isinstance(parsed, list):
            call = parsed[0]
            arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            delta = {"index": 0, "id": self._new_call_id(), "type": "function",
                     "function": {"name": call.name, "arguments": arguments}}
            return [{"tool_calls": [delta]}, {**done, "finish_reason": "tool_calls"}]
        if isinstance(parsed, BadReply):
            content = self._raw
        else:
            value = parsed.value
            content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return ([{"delta": content}] if content else []) + [dict(done)]


def _string_prefix(body: str, start: int) -> tuple[str, int, bool]:
    """Decode a JSON string body (after its opening quote) from `start` up to its closing quote, or up to the
    last complete escape if it has not closed yet: (text, where decoding stopped, whether it closed)."""
    i, safe, n = start, start, len(body)
    while i < n:
        char = body[i]
        if char == '"':
            return json.loads(f'"{body[start:i]}"', strict=False), i, True
        if char != "\\":
            i += 1
        elif i + 1 >= n:
            break
        elif body[i + 1] != "u":
            i += 2
        elif i + 6 > n:
            break
        elif 0xD800 <= int(body[i + 2:i + 6], 16) < 0xDC00:  # a high surrogate: wait for its low half
            if i + 12 > n:
                break
            i += 12
        else:
            i += 6
        safe = i
    return json.loads(f'"{body[start:safe]}"', strict=False), safe, False


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ConstrainedBackend:
    """A constrained-style model's backend: tool requests become guided-JSON calls, and the replies tool calls."""

    def __init__(self, backend: _Backend, *, new_call_id: Callable[[], str] = _new_call_id) -> None:
        self._backend = backend
        self._new_call_id = new_call_id

    def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]:
        """A call without tools streams straight from the backend (no added hop per event)."""
        body, is_action = constrained_call(call)
        events = self._backend.stream(body, affinity_key)
        return self._mapped(events) if is_action else events

    async def _mapped(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        reply = ConstrainedReply(self._new_call_id)
        async for event in events:
            if "error" in event:
                yield event
                return
            for out in reply.finish(event) if event.get("done") else reply.feed(event.get("delta", "")):
                yield out
            if event.get("done"):
                return
