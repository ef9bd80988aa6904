"""One namespace's vector index: exact (flat) below a size threshold, HNSW or IVF from it on.

Rows are positions in the FAISS index; entry ids map to rows. Deletes leave dead rows that searches
skip, and a rebuild drops them once they are many. Results are ordered by score, then by entry id,
so equal inputs give equal outputs.

Filtered searches run inside FAISS: the filter becomes a bitmap over the rows (memory/_filters.py) that
FAISS reads as it scans. On IVF, a filter that keeps a fraction f of the rows probes 1/sqrt(f) times as
many lists (a filtered top-k sits about as deep as an unfiltered top-k/f, and the bitmap skips the distance
of every row it leaves out, so the cost stays near an unfiltered search's); a query that still finds fewer
than k matches is searched again over every list.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np

from memory._filters import Columns, RowSelector
from memory._types import SearchFilters

FLAT = "flat"
HNSW = "hnsw"
IVF = "ivf"
IVF_MAX_LISTS = 1024
IVF_TRAIN_PER_LIST = 50
SERIAL_BELOW_QUERIES = 16
"""Searches of fewer queries run on one thread: splitting one query's scan across threads costs more in
synchronisation than it saves, badly on a busy machine (100k x 384 flat, 2 shared cores: 24 ms on 2
threads, 6 ms on 1)."""


class NamespaceIndex:
    """Inner-product index over unit vectors, keyed by int entry ids."""

    def __init__(self, dim: int, *, exact_below: int, hnsw_m: int = 32, hnsw_ef_search: int = 128,
                 large: str = HNSW, ivf_nprobe: int = 32) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.large = large
        self.ivf_nprobe = ivf_nprobe
        self.index: faiss.Index = faiss.IndexFlatIP(dim)
        self.kind = FLAT
        self.columns = Columns()
        self._ids = np.empty(0, dtype=np.int64)  # row -> entry id
        self._alive = np.empty(0, dtype=bool)
        self._row_of: dict[int, int] = {}
        self._dead: set[int] = set()

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, entry_id: int) -> bool:
        return entry_id in self._row_of

    def ids(self) -> Collection[int]:
        """The live entry ids."""
        return self._row_of.keys()

    def add(self, ids: np.ndarray, vectors: np.ndarray, attrs: Mapping[str, Sequence[Any]] | None = None) -> None:
        """Append vectors under new ids, with their filter attributes (memory/_filters.py: attrs_of); switches
        to the large index kind when the size reaches `exact_below`."""
        self.columns.append(attrs, len(ids))
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
                self._alive[row] = False
        if len(self._dead) > max(1_000, len(self._row_of)):
            self._rebuild()

    def search(self, queries: np.ndarray, k: int, allowed: Collection[int] | None = None, *,
               where: SearchFilters | None = None) -> list[list[tuple[float, int]]]:
        """Top-k (score, id) per query, best first, ties by id. `allowed` (entry ids) or `where` (a filter on
        the rows' attributes) restricts the results."""
        mask: np.ndarray | None
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=bool)
            mask[[self._row_of[i] for i in allowed if i in self._row_of]] = True
        else:
            mask = self.columns.mask(where) if where is not None else None
        if mask is not None:
            mask &= self._alive
        return self._search_rows(queries, k, mask)

    def _search_rows(self, queries: np.ndarray, k: int, mask: np.ndarray | None) -> list[list[tuple[float, int]]]:
        empty: list[list[tuple[float, int]]] = [[] for _ in range(len(queries))]
        count = len(self) if mask is None else int(np.count_nonzero(mask))
        if count == 0 or min(k, self.index.ntotal) == 0:
            return empty
        if count == len(self):  # every live row: only the dead ones are left out
            keep = RowSelector(self._alive) if self._dead else None
        elif mask is not None and self.kind == HNSW and count < self.exact_below:  # a selective filter strands HNSW
            return self._exact_on_rows(queries, k, np.flatnonzero(mask))
        elif mask is not None:
            keep = RowSelector(mask)
        selector = None if keep is None else keep.selector
        k_eff = min(k, self.index.ntotal)
        params = self._params(selector, k_eff, count / len(self))
        with _threads(1 if len(queries) < SERIAL_BELOW_QUERIES else None):
            scores, rows_found = self.index.search(queries, k_eff, params=params)
            short = (rows_found < 0).sum(axis=1) > max(0, k_eff - count)
            if params is not None and self.kind == IVF and short.any():  # too few matches found: probe every list
                params.nprobe = self.index.nlist
                scores[short], rows_found[short] = self.index.search(queries[short], k_eff, params=params)
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

    def restore(self, index: faiss.Index, state: dict[str, Any],
                attrs: Mapping[str, Sequence[Any]] | None = None) -> None:
        """Load a snapshot written from `index` and `state()`; `attrs` are the rows' filter attributes in row
        order (None: rows match only unfiltered searches)."""
        self.index = index
        self.kind = state["kind"]
        self._ids = np.array(state["ids"], dtype=np.int64)
        self._dead = set(state["dead"])
        self._alive = np.ones(len(self._ids), dtype=bool)
        self._alive[list(self._dead)] = False
        self._row_of = {int(i): row for row, i in enumerate(self._ids) if row not in self._dead}
        self.columns = Columns()
        self.columns.append(attrs, len(self._ids))
        if self.kind == HNSW:
            self.index.hnsw.efSearch = self.hnsw_ef_search

    def _append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        start = self.index.ntotal
        # HNSW insertion in parallel depends on thread timing; one thread keeps the graph reproducible.
        with _threads(1 if self.kind == HNSW else None):
            self.index.add(vectors)
        self._ids = np.concatenate([self._ids, ids.astype(np.int64)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._row_of.update({int(i): start + n for n, i in enumerate(ids)})

    def _rebuild(self, extra_ids: np.ndarray | None = None, extra_vectors: np.ndarray | None = None) -> None:
        live_rows = np.array(sorted(self._row_of.values()), dtype=np.int64)
        ids = self._ids[live_rows]
        vectors = self.vectors_of([int(i) for i in ids])
        kept = live_rows
        if extra_ids is not None:
            ids = np.concatenate([ids, extra_ids.astype(np.int64)])
            vectors = np.concatenate([vectors, extra_vectors])
            kept = np.concatenate([live_rows, np.arange(len(self._ids), len(self._ids) + len(extra_ids))])
        self.columns = self.columns.take(kept)
        self.kind = FLAT if len(ids) < self.exact_below else self.large
        self.index = self._new_index(vectors)
        self._ids = np.empty(0, dtype=np.int64)
        self._alive = np.empty(0, dtype=bool)
        self._row_of = {}
        self._dead = set()
        self._append(ids, vectors)

    def _new_index(self, vectors: np.ndarray) -> faiss.Index:
        if self.kind == FLAT:
            return faiss.IndexFlatIP(self.dim)
        if self.kind == HNSW:
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.hnsw_ef_search
            return index
        lists = int(min(IVF_MAX_LISTS, max(1.0, 2 * math.sqrt(len(vectors)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).permutation(len(vectors))[:lists * IVF_TRAIN_PER_LIST]]
        index.train(sample)
        index.make_direct_map()  # vectors_of and rebuilds read vectors back by row
        return index

    def _params(self, selector: Any, k: int, fraction: float) -> faiss.SearchParameters | None:
        if self.kind == HNSW:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.hnsw_ef_search, k))
        if self.kind == IVF:
            nprobe = min(self.index.nlist, math.ceil(self.ivf_nprobe / math.sqrt(max(fraction, 1e-12))))
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
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
