"""A parsed JSON value's kind, in JSON's words (an error about a list says "array")."""

from typing import Any

_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
          type(None): "null"}


def json_kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)
