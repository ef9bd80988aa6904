"""An offline toolset for missions and the demo; none of these tools reaches the network.

Declare them by import path in a mission:

    tools:
      - {name: calculator, function: "controlplane.builtin_tools:calculator"}
      - {name: read_file, function: "controlplane.builtin_tools:read_file"}

`read_file` and `list_files` see only the mission's workspace: the directory named by the environment
variable `CONTROLPLANE_WORKSPACE`. The agent actor sets it from the mission's `workspace:` (and passes it in
`runtime_env` to tools that run as Ray tasks); a path that leaves the directory is refused.
"""

from __future__ import annotations

import ast
import math
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

WORKSPACE_ENV = "CONTROLPLANE_WORKSPACE"
MAX_EXPRESSION_CHARS = 100
# Only arithmetic characters, bounded: under guided decoding a small model cannot write "120 EUR" or ramble.
# (xgrammar 0.2.8 fails to compile bounded repetitions above about 128.)
EXPRESSION_PATTERN = rf"^[0-9+\-*/%()., a-z]{{1,{MAX_EXPRESSION_CHARS}}}$"
MAX_EXPONENT = 100
MAX_MAGNITUDE = 10**300
MAX_FILE_BYTES = 1_000_000
MAX_LISTED_FILES = 200

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt}


def calculator(expression: Annotated[str, Field(pattern=EXPRESSION_PATTERN)]) -> int | float:
    """Evaluate arithmetic: numbers, + - * / // % **, parentheses, abs, round, min, max, sqrt.

    Args:
        expression: The arithmetic to evaluate, e.g. "(120 - 20) * 0.15".
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression has {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"{expression!r} is not an arithmetic expression ({exc.msg})") from None
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise ValueError(f"{expression!r} divides by zero") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{expression!r} has no finite value")
    return value


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents above {MAX_EXPONENT} are refused")
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and not node.keywords:
        return _bounded(_FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args)))
    allowed = "numbers, + - * / // % **, parentheses, " + ", ".join(_FUNCTIONS)
    raise ValueError(f"{ast.unparse(node)!r} is not allowed; use only {allowed}")


def _bounded(value: Any) -> int | float:
    if isinstance(value, complex):
        raise ValueError("the result is a complex number")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError("the number is too large")
    return value


def word_count(text: str) -> dict[str, int]:
    """Count the words, characters and lines of a text.

    Args:
        text: The text to count.
    """
    return {"words": len(text.split()), "characters": len(text), "lines": len(text.splitlines())}


def read_file(path: str) -> str:
    """Read a text file of the mission's workspace.

    Args:
        path: The file's path relative to the workspace, as list_files shows it.
    """
    target = _inside_workspace(path)
    if not target.is_file():
        raise FileNotFoundError(f"there is no file {path!r} in the workspace; list_files shows what is there")
    size = target.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path!r} has {size} bytes; read_file reads files up to {MAX_FILE_BYTES} bytes")
    return target.read_text(encoding="utf-8", errors="replace")


def list_files(pattern: str = "**/*") -> list[str]:
    """List the files of the mission's workspace that match a glob pattern (at most 200).

    Args:
        pattern: A glob relative to the workspace, e.g. "*.md" or "**/*" for all files.
    """
    root = _workspace()
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise PermissionError(f"pattern {pattern!r} leaves the workspace; give a relative glob such as '*.md'")
    files = sorted(str(p.relative_to(root).as_posix()) for p in root.glob(pattern)
                   if p.is_file() and p.resolve().is_relative_to(root))
    return files[:MAX_LISTED_FILES]


def _workspace() -> Path:
    root = os.environ.get(WORKSPACE_ENV)
    if not root:
        raise RuntimeError(f"no workspace: {WORKSPACE_ENV} is not set. Fix: set `workspace:` in the mission spec, "
                           f"or export {WORKSPACE_ENV}=DIR for a tool run outside a mission")
    path = Path(root).resolve()
    if not path.is_dir():
        raise RuntimeError(f"the workspace {root!r} ({WORKSPACE_ENV}) is not a directory. Fix: create it, or point "
                           "the mission's `workspace:` at an existing directory")
    return path


def _inside_workspace(relative: str) -> Path:
    root = _workspace()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise PermissionError(f"{relative!r} is outside the workspace; give a path relative to it, as list_files "
                              "shows")
    return target
