"""Tools: what a tool is, its schema from a Python function, and the one door every tool call passes through.

`authorize()` is the only place that decides whether a call may run; approvals and the audit log hang on it.
How a call runs (in process, as a Ray task, on an MCP server) is the runner's business, not this module's.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, ValidationError, create_model

from controlplane._core.entrypoints import import_object
from controlplane._core.json_kind import json_kind
from controlplane.config._tools import TOOL_NAME_PATTERN, Approval, ToolDecl
from controlplane.errors import SpecError, ToolError

Decision = Literal["allowed", "denied", "needs_approval"]
MAX_SCHEMA_ERRORS = 3
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?)\s*:\s*$")
_ARG_DOC = re.compile(r"^\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """What the model, the loop and `authorize()` know of a tool."""

    name: str
    """Unique in a mission; MCP tools are `<server>.<tool>`."""
    description: str
    """Told to the model."""
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    timeout_s: float = 30.0
    """Wall time allowed per call."""
    num_cpus: float | None = None
    """CPUs of the Ray task that runs a call; None (and num_gpus None): the agent's process runs it."""
    num_gpus: float | None = None
    """GPUs of the Ray task that runs a call."""
    approval: Approval = "never"
    """`required`: each call waits for an approval."""
    side_effects: bool = False
    """The tool changes something outside the mission."""
    idempotent: bool = True
    """Calling it twice with the same arguments does no more than once."""
    max_result_chars: int = 4000
    """Results are clipped to this many characters before the model sees them."""

    @property
    def in_process(self) -> bool:
        return self.num_cpus is None and self.num_gpus is None

    def openai_tool(self, wire_name: str | None = None) -> dict[str, Any]:
        """The OpenAI `tools` entry; `wire_name` replaces a name the OpenAI API would refuse (`memory.search`)."""
        return {"type": "function", "function": {"name": wire_name or self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True, kw_only=True)
class FunctionTool:
    """A Python function with its spec; `bind` turns JSON arguments into the function's keyword arguments."""

    spec: ToolSpec
    """The tool as the model sees it."""
    fn: Callable[..., Any]
    """The user's function, sync or async."""
    arguments_model: type[BaseModel]
    """Converts JSON arguments to Python values by the type hints (a dict to a pydantic model, ...)."""

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        try:
            parsed = self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(tool=self.spec.name, why=f"its arguments do not fit its signature: {exc}",
                            fix="call it with arguments that match its schema") from None
        return {field.alias or name: getattr(parsed, name) for name, field in self.arguments_model.model_fields.items()}

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the function in this process: async directly, sync in a worker thread; bounded by timeout_s.

        A sync function that overruns keeps its thread until it returns; only the wait is cut short.
        """
        kwargs = self.bind(arguments)
        if inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(type(self.fn).__call__):
            pending = self.fn(**kwargs)
        else:
            pending = asyncio.to_thread(self.fn, **kwargs)
        try:
            return await asyncio.wait_for(pending, self.spec.timeout_s)
        except TimeoutError:
            raise ToolError(tool=self.spec.name, why=f"it did not finish within timeout_s={self.spec.timeout_s:g}",
                            fix="raise the tool's timeout_s in the mission spec, or make the tool faster") from None
        except Exception as exc:
            raise ToolError(tool=self.spec.name, why=f"it raised {type(exc).__name__}: {exc}",
                            fix="see the cause; the model was told and may call it differently") from exc


def tool_from_function(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                       where: str = "", **options: Any) -> FunctionTool:
    """A tool from a sync or async function: schema from its type hints, description from its docstring.

    `options` are the other ToolSpec fields (timeout_s, num_cpus, approval, ...). Parameters documented in a
    Google-style `Args:` section get those lines as their descriptions. `where` (the YAML path) leads errors.
    """
    tool = name if name else str(getattr(fn, "__name__", ""))
    if not re.match(TOOL_NAME_PATTERN, tool):
        raise SpecError(where=_at(where, f"tool {tool!r}"), value=tool, why="a tool name is 1-64 letters, digits, "
                        "'_', '.' or '-', starting with a letter or digit", fix="pass `name=` with such a name")
    summary, parameter_docs = _parse_docstring(inspect.getdoc(fn) or "")
    model = _arguments_model(fn, where, tool, parameter_docs)
    spec = ToolSpec(name=tool, description=description if description is not None else summary,
                    parameters=_strip_titles(model.model_json_schema()), **options)
    return FunctionTool(spec=spec, fn=fn, arguments_model=model)


def load_tool(import_path: str, *, where: str, name: str | None = None, **options: Any) -> FunctionTool:
    """`tool_from_function` of the function at `package.module:function`; SpecError (at `where`) if it is none."""
    found = import_object(import_path, where=where)
    if not callable(found):
        raise SpecError(where=where, value=import_path, why=f"it is a {type(found).__name__}, not a function",
                        fix="point at a function defined with `def` or `async def`")
    return tool_from_function(found, name=name, where=where, **options)


def tool_from_decl(decl: ToolDecl, *, where: str) -> FunctionTool:
    """The tool a mission's `tools:` entry declares."""
    resources = decl.resources
    return load_tool(decl.function, where=f"{where}.function", name=decl.name, description=decl.description,
                     timeout_s=decl.timeout_s, num_cpus=None if resources is None else resources.num_cpus,
                     num_gpus=None if resources is None else resources.num_gpus, approval=decl.approval,
                     side_effects=decl.side_effects, idempotent=decl.idempotent,
                     max_result_chars=decl.max_result_chars)


def _at(where: str, detail: str) -> str:
    return f"{where} ({detail})" if where else detail


def _arguments_model(fn: Callable[..., Any], where: str, tool: str, docs: Mapping[str, str]) -> type[BaseModel]:
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise SpecError(where=_at(where, f"tool {tool!r}"), value=getattr(fn, "__qualname__", repr(fn)),
                        why=f"its signature cannot be read ({exc})",
                        fix="define it with `def` and annotations whose names are imported at module level") from None
    fields: dict[str, Any] = {}
    for index, parameter in enumerate(signature.parameters.values()):
        _check_parameter(parameter, hints, _at(where, f"tool {tool!r} parameter {parameter.name!r}"))
        default = ... if parameter.default is parameter.empty else parameter.default
        # Positional field names avoid clashes with BaseModel's own attributes (`json`, `schema`, `model_*`).
        fields[f"arg{index}"] = (hints[parameter.name], Field(default, alias=parameter.name,
                                                              description=docs.get(parameter.name)))
    return create_model(f"{tool}_arguments", __config__=ConfigDict(extra="forbid"), **fields)


def _check_parameter(parameter: inspect.Parameter, hints: Mapping[str, Any], where: str) -> None:
    if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
        raise SpecError(where=where, value=str(parameter), why="*args, **kwargs and positional-only parameters "
                        "cannot become named JSON arguments", fix="declare each argument as a named parameter")
    if parameter.name not in hints:
        raise SpecError(where=where, value=parameter.name, why="it has no type annotation, so the model cannot "
                        "be told what to pass", fix=f"annotate it, e.g. `{parameter.name}: str`")
    try:
        TypeAdapter(hints[parameter.name]).json_schema()
    except PydanticUserError as exc:
        raise SpecError(where=where, value=_type_name(hints[parameter.name]), why="its type has no JSON schema "
                        f"({exc.message.splitlines()[0]})", fix="use JSON types (str, int, float, bool, list, "
                        "dict, Literal) or a pydantic model") from None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's text before its first section, and the descriptions of an `Args:` section."""
    summary: list[str] = []
    docs: dict[str, str] = {}
    section = None
    for line in doc.splitlines():
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1)
        elif section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters") and (item := _ARG_DOC.match(line)):
            docs[item.group(1)] = item.group(2).strip()
    return " ".join(" ".join(summary).split()), docs


def _strip_titles(node: Any) -> Any:
    """Drop pydantic's `title` keys: they cost prompt tokens and grammar states and tell the model nothing."""
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    named = ("properties", "$defs", "patternProperties")
    return {key: ({k: _strip_titles(v) for k, v in value.items()} if key in named else _strip_titles(value))
            for key, value in node.items() if key != "title"}


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces (the basis of argument digests)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def arguments_digest(arguments: Any) -> str:
    """sha256 of the canonical JSON of a call's arguments: names a call in events without showing its content."""
    return hashlib.sha256(canonical_json(arguments).encode()).hexdigest()


_VALIDATORS: dict[int, tuple[Mapping[str, Any], jsonschema.protocols.Validator]] = {}
MAX_CACHED_VALIDATORS = 1024


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """One validator per schema object; the cache holds the schema, so its id cannot be reused meanwhile."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    if len(_VALIDATORS) >= MAX_CACHED_VALIDATORS:
        _VALIDATORS.clear()
    validator = jsonschema.validators.validator_for(schema)(schema)
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def schema_errors(schema: Mapping[str, Any], instance: Any) -> str | None:
    """What is wrong with `instance` under `schema`, in words a model can act on; None when it is valid."""
    validator = _validator(schema)
    if validator.is_valid(instance):
        return None
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
    described = [f"at {_json_path(error.absolute_path)}: {error.message}" for error in errors[:MAX_SCHEMA_ERRORS]]
    more = len(errors) - len(described)
    return "; ".join(described) + (f"; and {more} more" if more > 0 else "")


def _json_path(path: Sequence[Any]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def validate_arguments(tool: ToolSpec, arguments: Any) -> str | None:
    """A tool error for the model when `arguments` do not match the tool's schema; None when they do."""
    if isinstance(arguments, Mapping):
        why = schema_errors(tool.parameters, dict(arguments))
    else:
        why = f"arguments must be a JSON object, not a JSON {json_kind(arguments)}"
    if why is None:
        return None
    return (f"Invalid arguments for tool {tool.name!r}: {why}. "
            f"Call it again with arguments that match this schema: {canonical_json(tool.parameters)}")


def allowed(patterns: Sequence[str], tool_name: str) -> bool:
    """Whether a tool name matches one of the allow-list's names or globs (`files.*`)."""
    return any(fnmatch.fnmatchcase(tool_name, pattern) for pattern in patterns)


@dataclass(frozen=True, kw_only=True)
class Authorization:
    """The door's answer for one call."""

    decision: Decision
    """allowed, denied, or needs_approval (the call may run once a human approves it)."""
    agent: str
    """The calling agent."""
    tool: str
    """The tool it asked for."""
    arguments_digest: str
    """sha256 of the canonical JSON arguments."""
    reason: str = ""
    """Why it was denied or needs approval, in words the model can read."""

    def event_data(self) -> dict[str, Any]:
        """What an event or audit record holds: no arguments, only their digest."""
        data = {"tool": self.tool, "decision": self.decision, "arguments_digest": self.arguments_digest}
        return data | ({"reason": self.reason} if self.reason else {})


def authorize(agent: str, tool_name: str, arguments: Any, *, allow: Sequence[str],
              known_tools: Mapping[str, ToolSpec], approve_patterns: Sequence[str] = ()) -> Authorization:
    """The one door every tool call passes through: unknown or not allowed -> denied; approval -> needs_approval."""
    digest = arguments_digest(arguments)

    def answer(decision: Decision, reason: str = "") -> Authorization:
        return Authorization(decision=decision, agent=agent, tool=tool_name, arguments_digest=digest, reason=reason)

    def usable() -> str:
        return ", ".join(sorted(name for name in known_tools if allowed(allow, name))) or "none"

    if tool_name not in known_tools:
        return answer("denied", f"there is no tool named {tool_name!r}; your tools are: {usable()}")
    if not allowed(allow, tool_name):
        return answer("denied", f"agent {agent!r} may not use tool {tool_name!r} (not in its tools allow-list); "
                                f"its tools are: {usable()}")
    if known_tools[tool_name].approval == "required" or allowed(approve_patterns, tool_name):
        return answer("needs_approval", f"tool {tool_name!r} needs a human approval before it runs")
    return answer("allowed")


def result_to_text(value: Any, *, tool: str) -> str:
    """A tool's return value as the text the model reads: a str as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ToolError(tool=tool, why=f"it returned a {type(value).__name__} that is not JSON-serialisable ({exc})",
                        fix="return a str, number, bool, None, a list or dict of those, a pydantic model or a "
                            "dataclass") from None


def clip_result(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, saying how much was cut."""
    if len(text) <= max_chars:
        return text
    marker = f"\n[clipped: {len(text)} characters, first {max_chars} shown]"
    return text[: max(0, max_chars - len(marker))] + marker
