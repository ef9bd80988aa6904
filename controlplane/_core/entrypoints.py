"""User code named by import path (`package.module:name`): tools and `kind: python` agents.

Each problem is a `SpecError` that names where the path was given, the path, why and the fix, so a mission
with a bad path fails before any actor starts.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.errors import SpecError

PythonAgentRun = Callable[[Any, Any], Awaitable[Any]]


def import_object(path: str, *, where: str) -> Any:
    """The object at `package.module:attribute` (the attribute may be dotted: `module:Class.method`)."""
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise SpecError(where=where, value=path, why="an import path has the form `package.module:name`",
                        fix="write the module, a colon, then the name, e.g. `controlplane.builtin_tools:calculator`")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is the user's to fix
        raise SpecError(where=where, value=path, why=f"module {module_name!r} does not import "
                        f"({type(exc).__name__}: {exc})", fix="check the module name, and that its package is "
                        "installed on every node (a job's runtime_env can install it) or inside the mission's "
                        "working directory") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            names = _defined_names(found)
            meant = difflib.get_close_matches(part, names, n=1)
            raise SpecError(where=where, value=path, why=f"{module_name!r} has no attribute {attribute!r}",
                            fix=(f"did you mean {meant[0]!r}? Else use" if meant else "use") +
                                f" a name it defines: {', '.join(names[:12]) or 'none'}")
        found = getattr(found, part)
    return found


def _defined_names(holder: Any) -> list[str]:
    """The public names a module defines itself (not those it imports), or a class's public attributes."""
    names = sorted(name for name in dir(holder) if not name.startswith("_"))
    if inspect.ismodule(holder):
        names = [name for name in names if getattr(getattr(holder, name), "__module__", None) == holder.__name__]
    return names


def load_python_agent(path: str, *, where: str) -> Any:
    """The object a `kind: python` agent names, checked without running it.

    It must be an `async def run(task, ctx)` function, or a class (built with no arguments) or an object that
    has an `async def run(self, task, ctx)` method.
    """
    found = import_object(path, where=where)
    run = found if inspect.isfunction(found) else getattr(found, "run", None)
    fix = ("give it `async def run(self, task, ctx)`, or point the entrypoint at an `async def run(task, ctx)` "
           "function")
    if run is None or not callable(run):
        what = f"class {found.__name__}" if inspect.isclass(found) else f"the {type(found).__name__} it names"
        raise SpecError(where=where, value=path, why=f"{what} has no `run`", fix=fix)
    if not inspect.iscoroutinefunction(run):
        raise SpecError(where=where, value=path, why="its `run` is not an `async def`", fix=fix)
    if inspect.isclass(found) and _required_parameters(found):
        raise SpecError(where=where, value=path, why=f"class {found.__name__} needs constructor arguments "
                        f"{_required_parameters(found)}", fix="give every __init__ parameter a default")
    return found


def build_python_agent(path: str, *, where: str) -> PythonAgentRun:
    """The `run(task, ctx)` coroutine function of the python agent at `path`, its class built without arguments.
    A class that raises as it is built is a SpecError with that exception, which Ray would report only as the
    death of the actor."""
    found = load_python_agent(path, where=where)
    if inspect.isfunction(found):
        return found
    if not inspect.isclass(found):
        return found.run
    try:
        agent: Any = found()
    except Exception as exc:
        raise SpecError(where=where, value=path, why=f"building class {found.__name__} raised {type(exc).__name__}: "
                        f"{exc}", fix="make it build without arguments in the cluster's workers; they have the "
                        "job's runtime_env, not the driver's shell environment") from exc
    return agent.run


def _required_parameters(cls: type) -> list[str]:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
