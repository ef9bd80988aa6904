"""Filtered search runs inside FAISS (a bitmap over row attributes), on flat, HNSW and IVF indexes, exactly as a
brute-force scan of the matching entries would rank them; after a snapshot restore too; never by a Python scan."""

from types import SimpleNamespace

import numpy as np
import pytest

from controlplane.config.memory import MemoryConfig
from memory._filters import Columns, attrs_of
from memory._index import FLAT, HNSW, IVF, NamespaceIndex
from memory._store import MemoryStore
from memory._types import NewEntry, SearchFilters

DIM = 16


def unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(n, missions=4):
    return [SimpleNamespace(mission_id=f"m{i % missions}", agent_id=f"a{i % 3}", topic="t", task_id="",
                            created_at_s=float(i)) for i in range(n)]


def brute(vectors, ids, queries, k):
    scores = queries @ vectors.T
    return [[int(ids[j]) for j in sorted(range(len(ids)), key=lambda j: (-row[j], ids[j]))[:k]] for row in scores]


@pytest.mark.parametrize("large", [HNSW, IVF])
@pytest.mark.parametrize("exact_below", [10_000, 500])
def test_a_mission_filter_ranks_like_brute_force_over_that_missions_entries(large, exact_below):
    n, vectors, queries = 2000, unit(2000), unit(5, seed=1)
    index = NamespaceIndex(DIM, exact_below=exact_below, large=large, ivf_nprobe=64)
    index.add(np.arange(n), vectors, attrs_of(rows(n)))
    assert index.kind == (FLAT if exact_below > n else large)
    got = [[i for _, i in hits] for hits in index.search(queries, 5, where=SearchFilters(mission_id="m2"))]
    keep = np.arange(2, n, 4)
    assert got == brute(vectors[keep], keep, queries, 5)


def test_ivf_probes_more_lists_the_more_selective_the_filter():
    n, vectors = 4000, unit(4000)
    index = NamespaceIndex(DIM, exact_below=100, large=IVF, ivf_nprobe=4)
    index.add(np.arange(n), vectors, attrs_of(rows(n, missions=8)))
    assert index.index.nlist == 126 and index._params(None, 10, 1.0).nprobe == 4
    assert index._params(None, 10, 1 / 16).nprobe == 16 and index._params(None, 10, 1e-6).nprobe == 126


def test_ivf_searches_every_list_when_the_probed_ones_hold_too_few_matches():
    n, vectors = 4000, unit(4000)
    index = NamespaceIndex(DIM, exact_below=100, large=IVF, ivf_nprobe=1)
    few = rows(n)
    for row in few[:3000]:
        row.mission_id = "big"  # m0..m3 keep 1000 rows between them; "rare" gets 12
    for row in few[3000:3012]:
        row.mission_id = "rare"
    index.add(np.arange(n), vectors, attrs_of(few))
    hits = index.search(unit(3, seed=7), 12, where=SearchFilters(mission_id="rare"))
    assert [sorted(i for _, i in row) for row in hits] == [list(range(3000, 3012))] * 3


def test_filters_combine_and_deleted_rows_stay_out():
    n, vectors = 300, unit(300)
    index = NamespaceIndex(DIM, exact_below=10_000)
    index.add(np.arange(n), vectors, attrs_of(rows(n)))
    index.remove([0, 12])
    where = SearchFilters(mission_id="m0", exclude_agent_id="a1", since_s=0.0, until_s=100.0)
    found = {i for _, i in index.search(vectors[:1], 300, where=where)[0]}
    assert found == {i for i in range(100) if i % 4 == 0 and i % 3 != 1} - {0, 12}
    assert index.search(vectors[:1], 5, where=SearchFilters(mission_id="nobody")) == [[]]


def test_rows_added_without_attributes_match_only_unfiltered_searches():
    columns = Columns()
    columns.append(None, 3)
    assert not columns.mask(SearchFilters(mission_id="m1")).any()
    assert columns.mask(SearchFilters()) is None


def _entry(i):
    return NewEntry(mission_id=f"m{i % 2}", agent_id="alice", namespace="research", topic="t", text=f"e{i}")


def test_store_filters_inside_faiss_after_a_snapshot_restore_and_never_scans_in_python(tmp_path, monkeypatch):
    config = MemoryConfig(data_dir=str(tmp_path / "mem"), snapshot_every_writes=2, exact_below=8, large_index="ivf")
    store = MemoryStore(config, dim=DIM)
    store.grant("alice", read=["research"], write=["research"])
    vectors = unit(40, seed=3)
    for i in range(0, 40, 10):
        store.post([_entry(j) for j in range(i, i + 10)], vectors[i:i + 10], as_agent="alice", now_s=1.0)
    store.close()
    store = MemoryStore(config, dim=DIM)  # from the last snapshot (and the log tail)
    monkeypatch.setattr(SearchFilters, "matches", lambda *_: pytest.fail("a Python scan of the entries"))
    hits = store.search(vectors[3], k=40, namespace="research", as_agent="alice",
                        filters=SearchFilters(mission_id="m1"), now_s=2.0)[0]
    assert store.stats()["namespaces"]["research"]["index"] == "ivf"
    assert hits[0].entry.text == "e3" and {h.entry.mission_id for h in hits} == {"m1"} and len(hits) == 20
    store.close()


def test_excluded_tasks_stay_out_inside_faiss_and_in_matches():
    n, vectors = 60, unit(60)
    entries = [SimpleNamespace(mission_id="m0", agent_id="a0", topic="t", task_id=f"t{i % 3}", created_at_s=0.0)
               for i in range(n)]
    index = NamespaceIndex(DIM, exact_below=10_000)
    index.add(np.arange(n), vectors, attrs_of(entries))
    where = SearchFilters(mission_id="m0", exclude_task_ids=["t0", "t2", "never-posted"])
    found = {i for _, i in index.search(vectors[:1], n, where=where)[0]}
    assert found == {i for i in range(n) if i % 3 == 1}
    assert [where.matches(e) for e in entries[:3]] == [False, True, False]
