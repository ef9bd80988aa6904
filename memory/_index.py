"""One namespace's vector index: exact (flat) below a size threshold, HNSW from it on.

Rows are positions in the FAISS index; entry ids map to rows. Deletes leave dead rows that searches
skip, and a rebuild drops them once they are many. Results are ordered by score, then by entry id,
so equal inputs give equal outputs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np

FLAT = "flat"
HNSW = "hnsw"
SERIAL_BELOW_QUERIES = 16
"""Searches of fewer queries run on one thread: splitting one query's scan across threads costs more in
synchronisation than it saves, badly on a busy machine (100k x 384 flat, 2 shared cores: 24 ms on 2
threads, 6 ms on 1)."""


class NamespaceIndex:
    """Inner-product index over unit vectors, keyed by int entry ids."""

    def __init__(self, dim: int, *, exact_below: int, hnsw_m: int = 32, hnsw_ef_search: int = 128) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.index: faiss.Index = faiss.IndexFlatIP(dim)
        self.kind = FLAT
        self._ids = np.empty(0, dtype=np.int64)  # row -> entry id
        self._row_of: dict[int, int] = {}
        self._dead: set[int] = set()

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, entry_id: int) -> bool:
        return entry_id in self._row_of

    def ids(self) -> Collection[int]:
        """The live entry ids."""
        return self._row_of.keys()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append vectors under new ids; switches to HNSW when the size reaches `exact_below`."""
        if self.kind == FLAT and len(self) + len(ids) >= self.exact_below:
            self._rebuild(extra_ids=ids, extra_vectors=vectors)
            return
        self._append(ids, vectors)

    def remove(self, ids: Collection[int]) -> None:
        """Forget these ids; rebuilds without dead rows once they are half the index."""
        for entry_id in ids:
            row = self._row_of.pop(entry_id, None)
            if row is not None:
                self._dead.add(row)
        if len(self._dead) > max(1_000, len(self._row_of)):
            self._rebuild()

    def search(self, queries: np.ndarray, k: int, allowed: Collection[int] | None = None) -> list[list[tuple[float, int]]]:
        """Top-k (score, id) per query, best first, ties by id. `allowed` restricts to those ids."""
        if allowed is not None:
            rows = np.fromiter((self._row_of[i] for i in allowed if i in self._row_of), dtype=np.int64)
            if len(rows) == 0:
                return [[] for _ in range(len(queries))]
            if self.kind == HNSW and len(rows) < self.exact_below:
                return self._exact_on_rows(queries, k, rows)
            selector: Any = faiss.IDSelectorBatch(rows)
        elif self._dead:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64)))
        else:
            selector = None
        k_eff = min(k, self.index.ntotal)
        if k_eff == 0:
            return [[] for _ in range(len(queries))]
        with _threads(1 if len(queries) < SERIAL_BELOW_QUERIES else None):
            scores, rows_found = self.index.search(queries, k_eff, params=self._params(selector, k_eff))
        return [self._ordered(s, r, k) for s, r in zip(scores, rows_found)]

    def vectors_of(self, ids: list[int]) -> np.ndarray:
        """The stored vectors of live ids, in the given order."""
        rows = np.array([self._row_of[i] for i in ids], dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self.index.reconstruct_batch(rows)

    def state(self) -> dict[str, Any]:
        """Row bookkeeping for a snapshot (the FAISS index itself is written separately)."""
        return {"kind": self.kind, "ids": self._ids.tolist(), "dead": sorted(self._dead)}

    def restore(self, index: faiss.Index, state: dict[str, Any]) -> None:
        """Load a snapshot written from `index` and `state()`."""
        self.index = index
        self.kind = state["kind"]
        self._ids = np.array(state["ids"], dtype=np.int64)
        self._dead = set(state["dead"])
        self._row_of = {int(i): row for row, i in enumerate(self._ids) if row not in self._dead}
        if self.kind == HNSW:
            self.index.hnsw.efSearch = self.hnsw_ef_search

    def _append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        start = self.index.ntotal
        # HNSW insertion in parallel depends on thread timing; one thread keeps the graph reproducible.
        with _threads(1 if self.kind == HNSW else None):
            self.index.add(vectors)
        self._ids = np.concatenate([self._ids, ids.astype(np.int64)])
        self._row_of.update({int(i): start + n for n, i in enumerate(ids)})

    def _rebuild(self, extra_ids: np.ndarray | None = None, extra_vectors: np.ndarray | None = None) -> None:
        live_ids = sorted(self._row_of, key=self._row_of.__getitem__)
        ids = np.array(live_ids, dtype=np.int64)
        vectors = self.vectors_of(live_ids)
        if extra_ids is not None:
            ids = np.concatenate([ids, extra_ids.astype(np.int64)])
            vectors = np.concatenate([vectors, extra_vectors])
        self.kind = FLAT if len(ids) < self.exact_below else HNSW
        if self.kind == FLAT:
            self.index = faiss.IndexFlatIP(self.dim)
        else:
            self.index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = self.hnsw_ef_search
        self._ids = np.empty(0, dtype=np.int64)
        self._row_of = {}
        self._dead = set()
        self._append(ids, vectors)

    def _params(self, selector: Any, k: int) -> faiss.SearchParameters | None:
        if self.kind == HNSW:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.hnsw_ef_search, k))
        return None if selector is None else faiss.SearchParameters(sel=selector)

    def _exact_on_rows(self, queries: np.ndarray, k: int, rows: np.ndarray) -> list[list[tuple[float, int]]]:
        scores = queries @ self.index.reconstruct_batch(rows).T
        return [self._ordered(s, rows, k) for s in scores]

    def _ordered(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[float, int]]:
        pairs = [(float(s), int(self._ids[r])) for s, r in zip(scores, rows) if r >= 0 and r not in self._dead]
        pairs.sort(key=lambda pair: (-pair[0], pair[1]))
        return pairs[:k]


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run FAISS on `n` OpenMP threads inside the block (None: leave the setting alone)."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
