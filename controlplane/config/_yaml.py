"""Reading a user's YAML file: a syntax error, or a key written twice in one mapping (which YAML loaders resolve
by keeping the last, dropping the first without a word), is a SpecError naming the file and the line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from controlplane.errors import SpecError

MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.MarkedYAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *anchor` keys may be overridden: that is what merging is for
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in first_lines:
                raise DuplicateKeyError(problem=f"{key!r} (first on line {first_lines[key]})",
                                        problem_mark=key_node.start_mark)
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def as_file_path(path: object, *, fix: str) -> Path:
    """`path` as a Path; a TypeError with `fix` when it is not a path (a dict, say, where a file's path belongs)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path of type {type(path).__name__} is not a file's path. Fix: {fix}")
    return Path(path)


def read_yaml(path: Path, *, expected: str) -> Any:
    """The file's YAML, read strictly: SpecError `<path>:<line>` for bad syntax or a duplicate key, and SpecError
    naming `expected` (what the path should be, e.g. "a mission YAML file") when there is no file there."""
    if not path.is_file():
        why = "it is a directory" if path.is_dir() else "no such file"
        raise SpecError(where=str(path), value=str(path), why=why, fix=f"give the path of {expected}")
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        if isinstance(exc, DuplicateKeyError):
            raise SpecError(where=where, value=exc.problem, why="the key is written twice in one mapping; YAML "
                            "keeps only the last, so the first would be dropped without a word",
                            fix="merge the two into one (for example, one `tasks:` list)") from None
        raise SpecError(where=where, value=str(getattr(exc, "problem", exc)), why="the file is not valid YAML",
                        fix="fix the YAML syntax at that line") from None
