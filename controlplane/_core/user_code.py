"""The user code a mission names, loaded as its agents will load it, so that a bad import path is refused before
any actor starts: its tools' functions and its python agents' entrypoints."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from controlplane._core.entrypoints import load_python_agent
from controlplane._core.tools import tool_from_decl
from controlplane.config.mission import MissionSpec
from controlplane.errors import SpecError


def check_user_code(spec: MissionSpec) -> None:
    """SpecError naming every tool function and python-agent entrypoint of `spec` that does not load."""
    problems = user_code_problems(spec)
    if problems:
        raise SpecError.of(problems)


def user_code_problems(spec: MissionSpec, *, source: str = "") -> list[SpecError]:
    """A SpecError for each tool function and python-agent entrypoint of `spec` that does not load (`source` leads
    each place, e.g. `launch.yaml: `). The current directory is importable, as it is on Ray's workers."""
    problems: list[SpecError] = []
    with _current_directory_importable():
        for index, decl in enumerate(spec.tools):
            with _collect(problems):
                tool_from_decl(decl, where=f"{source}tools[{index}]({decl.name})")
        for index, agent in enumerate(spec.agents):
            if agent.entrypoint is not None:
                with _collect(problems):
                    load_python_agent(agent.entrypoint, where=f"{source}agents[{index}]({agent.name}).entrypoint")
    return problems


@contextlib.contextmanager
def _collect(problems: list[SpecError]) -> Iterator[None]:
    try:
        yield
    except SpecError as exc:
        problems.append(exc)


@contextlib.contextmanager
def _current_directory_importable() -> Iterator[None]:
    here = os.path.abspath(os.curdir)
    added = here not in sys.path
    if added:
        sys.path.append(here)
    try:
        yield
    finally:
        if added:
            sys.path.remove(here)
