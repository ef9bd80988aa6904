"""Checks of caller input. Each failure is a SpecError naming the field, the value, why and the fix."""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Collection
from typing import TypeGuard, TypeVar

import numpy as np

from controlplane.config.memory import MemoryConfig
from controlplane.errors import SpecError
from memory._types import CONFLICT_TOPIC, NewEntry

UNIT_NORM_TOLERANCE = 1e-3
T = TypeVar("T")


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def check_entries(entries: list[NewEntry], config: MemoryConfig, known: Collection[str]) -> None:
    """Reject a post before anything is embedded or written."""
    if len(entries) > config.max_batch:
        raise SpecError(where="memory.post: entries", value=len(entries),
                        why=f"a post holds at most max_batch={config.max_batch} entries",
                        fix="split the post, or raise MemoryConfig.max_batch")
    for n, entry in enumerate(entries):
        where = f"memory.post: entries[{n}]"
        if not entry.text.strip():
            raise SpecError(where=f"{where}.text", value=entry.text, why="the text is empty",
                            fix="post a non-empty text")
        if len(entry.text) > config.max_text_chars:
            raise SpecError(where=f"{where}.text", value=_short(entry.text),
                            why=f"it has {len(entry.text)} characters, over max_text_chars={config.max_text_chars}",
                            fix="split the text into several entries, or raise MemoryConfig.max_text_chars")
        check_namespace(entry.namespace, known, where=f"{where}.namespace")
        if entry.topic == CONFLICT_TOPIC:
            raise SpecError(where=f"{where}.topic", value=entry.topic,
                            why="the topic 'conflicts' is reserved for conflict events", fix="use another topic")
        try:
            json.dumps(entry.metadata)
        except (TypeError, ValueError) as exc:
            raise SpecError(where=f"{where}.metadata", value=_short(repr(entry.metadata)),
                            why=f"it is not JSON-serialisable ({exc})",
                            fix="use only str, int, float, bool, None, lists and dicts") from None


def check_names(value: object, *, where: str, example: str, empty_ok: bool = True) -> list[str]:
    """A list of non-empty strings. A bare string is refused: taken as a list, it would be its characters."""
    if not _is_list_of(value, _is_name) or not (value or empty_ok):
        raise SpecError(where=where, value=value, why=f"it must be a {'' if empty_ok else 'non-empty '}list of "
                        "non-empty strings", fix=f"pass e.g. {example}")
    return list(value)


def check_ids(value: object, *, where: str) -> list[int]:
    """A list of entry ids. A bare id is refused, so that a call never acts on less than the caller meant."""
    if not _is_list_of(value, _is_id):
        raise SpecError(where=where, value=value, why="it must be a list of entry ids (integers)",
                        fix="pass e.g. [receipt.id for receipt in receipts]")
    return [int(i) for i in value]


def _is_list_of(value: object, item_ok: Callable[[object], TypeGuard[T]]) -> TypeGuard[Collection[T]]:
    return isinstance(value, list | tuple | set | frozenset) and all(item_ok(item) for item in value)


def _is_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def check_id(value: object, *, where: str) -> int:
    if not _is_id(value):
        raise SpecError(where=where, value=value, why="an entry id is an integer",
                        fix="pass the id of a Receipt or an Entry")
    return int(value)


def _is_id(value: object) -> TypeGuard[numbers.Integral]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_limit(limit: object) -> None:
    if not _is_id(limit) or limit < 1:
        raise SpecError(where="memory.list: limit", value=limit, why="limit is how many entries to return, "
                        "an integer from 1", fix="pass e.g. 100")


def check_namespace(namespace: str, known: Collection[str], *, where: str) -> None:
    if namespace not in known:
        raise SpecError(where=where, value=namespace, why=f"unknown namespace; known: {sorted(known) or 'none'}",
                        fix="grant it to an agent with MemoryActor.grant, or list it in MemoryConfig.namespaces")


def check_k(k: int, config: MemoryConfig) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= config.max_k:
        raise SpecError(where="memory.search: k", value=k, why=f"k must be an integer from 1 to max_k={config.max_k}",
                        fix="ask for fewer results, or raise MemoryConfig.max_k")


def check_min_score(min_score: float | None) -> None:
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, int | float)
                                  or not -1.0 <= min_score <= 1.0):
        raise SpecError(where="memory.search: min_score", value=min_score,
                        why="min_score is a cosine similarity, a number from -1 to 1",
                        fix="pass e.g. 0.3 to leave out weakly related entries, or None for the top k whatever "
                            "their score")


def check_vectors(vectors: object, dim: int, *, where: str, rows: int | None = None, max_rows: int) -> np.ndarray:
    """A (n, dim) float32 array of finite unit vectors; a single vector becomes one row."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise SpecError(where=where, value=type(vectors).__name__, why="it is not a numeric array",
                        fix=f"pass a float32 numpy array of shape (n, {dim})") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise SpecError(where=where, value=f"shape {array.shape}",
                        why=f"the index holds {dim}-dimensional vectors", fix=f"pass an array of shape (n, {dim})")
    if rows is not None and array.shape[0] != rows:
        raise SpecError(where=where, value=f"{array.shape[0]} vectors", why=f"there are {rows} entries",
                        fix="pass one vector per entry")
    if not 1 <= array.shape[0] <= max_rows:
        raise SpecError(where=where, value=f"{array.shape[0]} vectors",
                        why=f"from 1 to max_batch={max_rows} are allowed",
                        fix="split the call, or raise MemoryConfig.max_batch")
    if not np.isfinite(array).all():
        raise SpecError(where=where, value="non-finite values", why="vectors must be finite", fix="drop NaN/inf rows")
    norms = np.linalg.norm(array, axis=1)
    if np.abs(norms - 1.0).max() > UNIT_NORM_TOLERANCE:
        raise SpecError(where=where, value=f"norms {float(norms.min()):.4f}..{float(norms.max()):.4f}",
                        why="scores are cosines, so vectors must have unit length",
                        fix="normalise: v / np.linalg.norm(v, axis=1, keepdims=True)")
    return np.ascontiguousarray(array)
