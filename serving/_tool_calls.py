"""Tool calls on the router's wire, whatever the backend: the call dict's tool fields, the text a message
weighs, and the assembly of a reply's events into text and `ToolCall`s.

Backends stream `{"delta": text}` and `{"tool_calls": [delta, ...]}` events. A tool-call delta is OpenAI's
streaming shape: `{"index", "id"?, "type"?, "function": {"name"?, "arguments"?}}`; the pieces of one call
share its index, its name and arguments arrive in pieces and are concatenated (as the openai SDK does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.errors import SpecError
from serving._types import FunctionCall, ToolCall

TOOL_KEYS = ("tools", "tool_choice", "parallel_tool_calls")
"""The call dict's tool fields, as OpenAI names them."""


def tool_fields(call: Mapping[str, Any]) -> dict[str, Any]:
    """The tool fields a call carries (for a backend's request)."""
    return {key: call[key] for key in TOOL_KEYS if key in call}


def message_text(message: Mapping[str, Any]) -> str:
    """What a message puts in the prompt, for size estimates: its content and its tool calls."""
    calls = message.get("tool_calls") or ()
    return (message.get("content") or "") + "".join(
        call["function"]["name"] + call["function"].get("arguments", "") for call in calls)


def tools_text(body: Mapping[str, Any]) -> str:
    """The tool definitions as the prompt will carry them (roughly), for size estimates."""
    return json.dumps(body["tools"]) if body.get("tools") else ""


def check_tool_request(body: Mapping[str, Any]) -> None:
    """Refuse what cannot be served: a guided `choice` leaves no room for a tool call."""
    if body.get("tools") and body.get("choice"):
        raise SpecError(where="tools", value=[tool["function"]["name"] for tool in body["tools"]],
                        why="a guided `choice` constrains the reply to fixed strings, so no tool call can be made",
                        fix="send either tools or a choice constraint, not both")


class ReplyAssembler:
    """Collects one call's events: the text, the tool calls (deltas merged by index), and the final event."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self._final: dict[str, Any] | None = None

    def add(self, event: Mapping[str, Any]) -> None:
        if event.get("done"):
            self._final = dict(event)
        if event.get("delta"):
            self._parts.append(event["delta"])
        for delta in event.get("tool_calls") or ():
            self._merge(delta)

    def _merge(self, delta: Mapping[str, Any]) -> None:
        call = self._calls.setdefault(delta.get("index", len(self._calls)), {"id": "", "name": "", "arguments": ""})
        call["id"] = call["id"] or delta.get("id") or ""
        function = delta.get("function") or {}
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""

    @property
    def final(self) -> dict[str, Any]:
        """The final event: finish_reason, usage, timings."""
        if self._final is None:
            raise RuntimeError("the reply has no final event yet")
        return self._final

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def tool_calls(self) -> list[ToolCall]:
        """The calls in index order; a call whose backend gave no id gets `call_<index>`."""
        return [ToolCall(id=call["id"] or f"call_{index}",
                         function=FunctionCall(name=call["name"], arguments=call["arguments"] or "{}"))
                for index, call in sorted(self._calls.items())]
