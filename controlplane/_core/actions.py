"""The two ways a model expresses tool calls, as data: what to send and how to read the reply.

- native: OpenAI `tools` in the request and `tool_calls` in the reply (vLLM's tool parser, or a remote API);
- constrained: guided JSON over a union schema, `{"tool": <name>, "arguments": {...}}` or `{"final": <answer>}`,
  which any model can follow. Every array and free string is bounded and every tool name is an enum: under
  guided decoding (xgrammar enforces maxItems, maxLength, pattern, enum, anyOf and $defs) a 135M model then
  closes its JSON instead of running on until max_tokens cuts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane._core.tools import ToolSpec

MAX_ARRAY_ITEMS = 10
MAX_STRING_CHARS = 1000
_STRING_SHAPES = ("maxLength", "enum", "const", "pattern", "format")
_DEF_KEYS = ("$defs", "definitions")
_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.DOTALL)
_WIRE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, kw_only=True)
class RawCall:
    """A tool call as the model wrote it, before the door and the schema check."""

    id: str
    """The call id (the model's, or `call_<step>_<n>`)."""
    name: str
    """The tool's mission name (wire names already mapped back)."""
    arguments: Any
    """The parsed arguments; the raw text when they were not JSON."""
    error: str | None = None
    """Why the arguments could not be read, if they could not."""


@dataclass(frozen=True, kw_only=True)
class FinalAnswer:
    """The model says it is done."""

    value: Any
    """Its answer: text (native) or the JSON value of `final` (constrained)."""


@dataclass(frozen=True, kw_only=True)
class BadReply:
    """A constrained reply that is neither a tool call nor a final answer."""

    why: str
    """What was wrong, in words the model can act on."""


def wire_names(names: Sequence[str]) -> dict[str, str]:
    """Mission tool name -> a name the OpenAI API accepts (`^[A-Za-z0-9_-]{1,64}$`), unique among `names`."""
    wire: dict[str, str] = {}
    for name in names:
        base = _WIRE_UNSAFE.sub("_", name)[:60]
        candidate, n = base, 2
        while candidate in wire.values():
            candidate, n = f"{base}_{n}", n + 1
        wire[name] = candidate
    return wire


def final_value_schema(expected_output: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The schema of a final answer: the expected_output schema, or a string."""
    return dict(expected_output) if isinstance(expected_output, Mapping) else {"type": "string"}


def action_schema(tools: Sequence[ToolSpec], final: Mapping[str, Any], *,
                  max_string_chars: int = MAX_STRING_CHARS) -> dict[str, Any]:
    """The union a constrained reply must match: one branch per tool (its arguments checked by the grammar),
    and `{"final": ...}`. Tools' `$defs` are hoisted to the root, renamed so they cannot collide."""
    defs: dict[str, Any] = {}
    branches = [_object({"tool": {"type": "string", "enum": [tool.name]},
                         "arguments": _hoist(_closed(tool.parameters), f"t{i}_", defs)})
                for i, tool in enumerate(tools)]
    branches.append(_object({"final": _hoist(dict(final), "final_", defs)}))
    schema = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return bound_schema(schema | ({"$defs": defs} if defs else {}), max_string_chars=max_string_chars)


def final_only_schema(final: Mapping[str, Any], *, max_string_chars: int = MAX_STRING_CHARS) -> dict[str, Any]:
    """The schema of a reply that must be the final answer (the repair turn)."""
    defs: dict[str, Any] = {}
    schema = _object({"final": _hoist(dict(final), "final_", defs)})
    return bound_schema(schema | ({"$defs": defs} if defs else {}), max_string_chars=max_string_chars)


def bound_schema(schema: Any, *, max_items: int = MAX_ARRAY_ITEMS, max_string_chars: int = MAX_STRING_CHARS) -> Any:
    """A copy of `schema` in which every array gets a `maxItems` and every free string a `maxLength`."""
    if isinstance(schema, list):
        return [bound_schema(item, max_items=max_items, max_string_chars=max_string_chars) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bound_schema(value, max_items=max_items, max_string_chars=max_string_chars)
               for key, value in schema.items()}
    if bounded.get("type") == "array" and "maxItems" not in bounded:
        bounded["maxItems"] = max_items
    if bounded.get("type") == "string" and not any(key in bounded for key in _STRING_SHAPES):
        bounded["maxLength"] = max_string_chars
    return bounded


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _closed(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Tool arguments admit no extra keys unless the tool says otherwise (fewer grammar states)."""
    return {"additionalProperties": False} | dict(parameters)


def _hoist(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    found = {f"#/{key}/{name}": (f"{prefix}{name}", definition)
             for key in _DEF_KEYS for name, definition in schema.get(key, {}).items()}
    renames = {ref: f"#/$defs/{new_name}" for ref, (new_name, _) in found.items()}
    for new_name, definition in found.values():
        defs[new_name] = _rewrite_refs(definition, renames)
    return _rewrite_refs({key: value for key, value in schema.items() if key not in _DEF_KEYS}, renames)


def _rewrite_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: (renames.get(value, value) if key == "$ref" else _rewrite_refs(value, renames))
            for key, value in node.items()}


def constrained_instructions(tools: Sequence[ToolSpec], *, structured: bool) -> str:
    """What the system prompt says in constrained mode, where the model sees no `tools` field."""
    answer = "<your answer as JSON matching the required output>" if structured else '"<your answer>"'
    lines = ["Reply with one JSON object and nothing else.",
             f'When you have the answer: {{"final": {answer}}}']
    if tools:
        lines[1:1] = ['To use a tool: {"tool": "<tool name>", "arguments": {<its arguments>}}']
        lines.append("Tools:")
        lines += [f"- {tool.name}({_signature(tool.parameters)}): {tool.description}" for tool in tools]
    return "\n".join(lines)


def _signature(parameters: Mapping[str, Any]) -> str:
    required = set(parameters.get("required", []))
    return ", ".join(f"{name}{'' if name in required else '?'}: {_type_hint(schema)}"
                     for name, schema in parameters.get("properties", {}).items())


def _type_hint(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type")
    return "|".join(kind) if isinstance(kind, list) else kind or "value"


def parse_constrained(text: str, *, step: int) -> list[RawCall] | FinalAnswer | BadReply:
    """Read a constrained reply: one tool call, the final answer, or what is wrong with it."""
    try:
        reply = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadReply(why=f"your reply is not valid JSON ({exc})")
    if isinstance(reply, dict) and "final" in reply and "tool" not in reply:
        return FinalAnswer(value=reply["final"])
    if isinstance(reply, dict) and isinstance(reply.get("tool"), str) and set(reply) <= {"tool", "arguments"}:
        return [RawCall(id=f"call_{step}_0", name=reply["tool"], arguments=reply.get("arguments", {}))]
    return BadReply(why="your reply has neither a tool call nor a final answer")


def parse_native(tool_calls: Sequence[Any], *, names_by_wire: Mapping[str, str], step: int) -> list[RawCall]:
    """Read OpenAI `tool_calls` (dicts, or objects with `model_dump`); arguments arrive as JSON text.

    A missing or repeated id becomes `call_<step>_<n>`, so every result answers exactly one call."""
    calls: list[RawCall] = []
    for n, call in enumerate(tool_calls):
        call = call.model_dump() if hasattr(call, "model_dump") else call
        function = call.get("function") or {}
        wire = function.get("name") or ""
        raw = function.get("arguments")
        arguments, error = (raw, None) if not isinstance(raw, str) else _json_arguments(raw)
        call_id = call.get("id")
        if not call_id or any(seen.id == call_id for seen in calls):
            call_id = f"call_{step}_{n}"
        calls.append(RawCall(id=call_id, name=names_by_wire.get(wire, wire),
                             arguments={} if arguments is None else arguments, error=error))
    return calls


def _json_arguments(raw: str) -> tuple[Any, str | None]:
    try:
        return json.loads(raw or "{}"), None
    except json.JSONDecodeError as exc:
        return raw, f"the arguments are not valid JSON ({exc})"


def native_assistant_message(text: str, calls: Sequence[RawCall], wire: Mapping[str, str]) -> dict[str, Any]:
    """The assistant turn to append after a native reply, tool calls in OpenAI's shape."""
    message: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {
                "name": wire.get(call.name, call.name),
                "arguments": call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)}}
            for call in calls]
    return message


def strip_fence(text: str) -> str:
    """A JSON answer without the ``` fence some models put around it."""
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped
