"""Search filters as numpy columns beside an index's rows, so a filtered search selects rows inside FAISS.

Each row keeps a small integer code per categorical field (mission, agent, topic, task) and its creation
time. A filter becomes one boolean mask over the rows (a few vectorised comparisons, no Python loop over
entries), which FAISS reads as an `IDSelectorBitmap` while it searches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import faiss
import numpy as np

from memory._types import SearchFilters

CATEGORIES = ("mission_id", "agent_id", "topic", "task_id")
UNKNOWN = -1
"""Code of a row added without attributes: it matches no filter on that field."""


class Columns:
    """Filter attributes of an index's rows, in row order."""

    def __init__(self) -> None:
        self._codes: dict[str, dict[str, int]] = {name: {} for name in CATEGORIES}
        self._columns = {name: np.empty(0, dtype=np.int32) for name in CATEGORIES}
        self.created_at_s = np.empty(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.created_at_s)

    def append(self, attrs: Mapping[str, Sequence[Any]] | None, rows: int) -> None:
        """Add `rows` rows; `attrs` maps each of CATEGORIES and `created_at_s` to one value per row (None: no
        attributes, the rows match only unfiltered searches)."""
        for name in CATEGORIES:
            if attrs is None:
                codes = np.full(rows, UNKNOWN, dtype=np.int32)
            else:
                table = self._codes[name]
                codes = np.fromiter((table.setdefault(v, len(table)) for v in attrs[name]), dtype=np.int32,
                                    count=rows)
            self._columns[name] = np.concatenate([self._columns[name], codes])
        created = np.full(rows, np.nan) if attrs is None else np.asarray(attrs["created_at_s"], dtype=np.float64)
        self.created_at_s = np.concatenate([self.created_at_s, created])

    def take(self, rows: np.ndarray) -> Columns:
        """These rows, in this order (a rebuild keeps the live rows)."""
        out = Columns()
        out._codes = self._codes
        out._columns = {name: column[rows] for name, column in self._columns.items()}
        out.created_at_s = self.created_at_s[rows]
        return out

    def mask(self, filters: SearchFilters) -> np.ndarray | None:
        """Rows that pass every set filter; None when the filter sets nothing."""
        parts = []
        for name in CATEGORIES:
            wanted = getattr(filters, name)
            if wanted is not None:
                parts.append(self._columns[name] == self._codes[name].get(wanted, -2))
        if filters.exclude_agent_id is not None:
            parts.append(self._columns["agent_id"] != self._codes["agent_id"].get(filters.exclude_agent_id, -2))
        if filters.exclude_task_ids:
            codes = [self._codes["task_id"][t] for t in filters.exclude_task_ids if t in self._codes["task_id"]]
            parts.append(~np.isin(self._columns["task_id"], codes))
        if filters.since_s is not None:
            parts.append(self.created_at_s >= filters.since_s)
        if filters.until_s is not None:
            parts.append(self.created_at_s < filters.until_s)
        if not parts:
            return None
        out = parts[0]
        for part in parts[1:]:
            out &= part
        return out


def attrs_of(entries: Sequence[Any]) -> dict[str, list[Any]]:
    """The column values of entries (anything with the SearchFilters fields and created_at_s)."""
    return {name: [getattr(e, name) for e in entries] for name in (*CATEGORIES, "created_at_s")}


class RowSelector:
    """A FAISS selector over the rows of a boolean mask; holds the bitmap FAISS reads while it searches."""

    def __init__(self, mask: np.ndarray) -> None:
        self.bitmap = np.packbits(mask, bitorder="little")
        self.selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bitmap))
