"""What a pydantic validation error says, read for a SpecError: the YAML path of its place, and the fix the
error itself implies (a bound, the allowed values, the fields known where an unknown one was written)."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin


def read_error(error: Mapping[str, Any], *, data: Any = None,
               model: Any = None) -> tuple[str, str | None, str | None]:
    """One error of `ValidationError.errors()`: its YAML path (list items named by their `name` or `id` in
    `data`; with `model`, the pydantic model validated, without the tags of a union's members), what to show
    in place of its input (None: the input may be quoted) and its own fix (None: it implies none)."""
    loc = tuple(part for part in error["loc"] if part not in _UNION_MEMBER_TAGS)
    loc, holders = _walk(model, loc) if model is not None else (loc, [])
    return yaml_path(loc, data), _UNQUOTED.get(error["type"]), _fix_of(error, loc, holders)


_UNQUOTED = {"missing": "<missing>", "extra_forbidden": "<not shown>"}
"""What a problem shows in place of the input: a missing field has none, and an unknown field's value is not
quoted, as nothing says what it holds (a credential written as `api_key: ...`, say)."""
_UNION_MEMBER_TAGS = frozenset({"str", "dict[str,any]", "none"})
"""The parts of a pydantic error's location that name the member of a union that was tried, not a field."""
_FIXES_FROM_CONTEXT = {
    "greater_than": "use a number above {gt}",
    "greater_than_equal": "use {ge} or more",
    "less_than": "use a number below {lt}",
    "less_than_equal": "use {le} or less",
    "string_too_short": "write {min_length} or more characters",
    "string_too_long": "shorten it to {max_length} or fewer characters",
    "too_short": "give {min_length} or more",
    "too_long": "give {max_length} or fewer",
    "literal_error": "use {expected}",
    "union_tag_invalid": "set {discriminator} to one of {expected_tags}",
}


def _fix_of(error: Mapping[str, Any], loc: Sequence[Any], holders: Sequence[Any]) -> str | None:
    """The fix the error itself says: the bound or the values it allows, or the fields known where an unknown one is."""
    if error["type"] in _FIXES_FROM_CONTEXT and error.get("ctx"):
        return _FIXES_FROM_CONTEXT[error["type"]].format(**{name: f"{bound:g}" if isinstance(bound, float) else bound
                                                      for name, bound in error["ctx"].items()})
    if error["type"] == "extra_forbidden" and holders and loc and isinstance(loc[-1], str):
        return _unknown_field_fix(loc[-1], holders)
    return None


def _unknown_field_fix(name: str, holders: Sequence[Any]) -> str:
    known = sorted({field for holder in holders for field in holder.model_fields})
    one_down = sorted({f"{field}.{name}" for holder in holders for field, info in holder.model_fields.items()
                       if any(name in inner.model_fields for inner in _models_in(info.annotation))})
    meant = one_down or difflib.get_close_matches(name, known, n=1)
    return (f"{f'did you mean `{meant[0]}`? Else ' if meant else ''}remove it; "
            f"the fields here are {', '.join(known)}")


def _walk(model: Any, loc: Sequence[Any]) -> tuple[tuple[Any, ...], list[Any]]:
    """`loc` without the tags of a discriminated union's members, and the models whose field its last part is,
    or would be if it is unknown; `loc` unchanged and no models where it leaves `model`'s fields."""
    kinds: list[Any] = [model]
    path: list[Any] = []
    for index, part in enumerate(loc):
        options = [option for kind in kinds for option in _options(kind)]
        models = [option for option in options if _is_model(option)]
        if index == len(loc) - 1:
            return (*path, part), models
        if fields := [m.model_fields[part] for m in models if isinstance(part, str) and part in m.model_fields]:
            kinds = [field.annotation for field in fields]
        elif tagged := [m for m in models if _is_tag_of(m, part)]:
            kinds = tagged
            continue
        else:
            kinds = [get_args(option)[-1] for option in options if get_origin(option) in _CONTAINERS
                     and get_args(option)]
            if not kinds:
                return tuple(loc), []
        path.append(part)
    return tuple(path), []


_CONTAINERS = (list, tuple, set, frozenset, dict, Sequence, Mapping)


def _options(kind: Any) -> list[Any]:
    """The types a value of `kind` may take: its unions and `Annotated` unwrapped."""
    origin = get_origin(kind)
    if origin is Annotated:
        return _options(get_args(kind)[0])
    if origin in (Union, types.UnionType):
        return [option for arg in get_args(kind) for option in _options(arg)]
    return [kind]


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and hasattr(kind, "model_fields")


def _models_in(kind: Any) -> list[Any]:
    return [option for option in _options(kind) if _is_model(option)]


def _is_tag_of(model: Any, part: Any) -> bool:
    """Whether a location's part is this member's tag in a discriminated union (a `Literal` field's value)."""
    return any(get_origin(info.annotation) is Literal and part in get_args(info.annotation)
               for info in model.model_fields.values())


def yaml_path(loc: Sequence[Any], data: Any = None) -> str:
    """('agents', 2, 'resources') -> 'agents[2].resources'; list items get their name when they have one."""
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            label = (node.get("name") or node.get("id")) if isinstance(node, dict) else None
            if label:
                out += f"({label})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "<top level>"
