import faiss
import numpy as np
import pytest

from memory._index import FLAT, HNSW, NamespaceIndex


def unit(n, dim=16, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute(vectors, ids, queries, k):
    scores = queries @ vectors.T
    out = []
    for row in scores:
        order = sorted(range(len(ids)), key=lambda j: (-row[j], ids[j]))[:k]
        out.append([int(ids[j]) for j in order])
    return out


def test_flat_below_threshold_is_exact_against_brute_force():
    vectors, queries = unit(500), unit(7, seed=1)
    ids = np.arange(100, 600)
    index = NamespaceIndex(16, exact_below=1000)
    index.add(ids, vectors)
    assert index.kind == FLAT
    got = [[i for _, i in hits] for hits in index.search(queries, 10)]
    assert got == brute(vectors, ids, queries, 10)


def test_switches_to_hnsw_at_threshold_and_keeps_every_entry():
    vectors = unit(300)
    index = NamespaceIndex(16, exact_below=200)
    index.add(np.arange(150), vectors[:150])
    assert index.kind == FLAT
    index.add(np.arange(150, 300), vectors[150:])
    assert index.kind == HNSW and isinstance(index.index, faiss.IndexHNSWFlat) and len(index) == 300
    # Each stored vector finds itself first.
    top = index.search(vectors[::30], 1)
    assert [hits[0][1] for hits in top] == list(range(0, 300, 30))


def test_equal_scores_are_ordered_by_id():
    vector = unit(1)
    index = NamespaceIndex(16, exact_below=100)
    index.add(np.array([9, 3, 7]), np.repeat(vector, 3, axis=0))
    assert [i for _, i in index.search(vector, 3)[0]] == [3, 7, 9]


def test_search_results_are_deterministic_across_builds():
    vectors, queries = unit(400), unit(5, seed=2)
    results = []
    for _ in range(2):
        index = NamespaceIndex(16, exact_below=100)
        index.add(np.arange(400), vectors)
        results.append(index.search(queries, 10))
    assert results[0] == results[1]


def test_removed_ids_never_come_back():
    vectors = unit(50)
    index = NamespaceIndex(16, exact_below=100)
    index.add(np.arange(50), vectors)
    index.remove([0, 1, 2])
    hits = index.search(vectors[:3], 50)
    assert all(i not in {0, 1, 2} for row in hits for _, i in row)
    assert len(hits[0]) == 47 and len(index) == 47


def test_many_removals_rebuild_without_dead_rows():
    vectors = unit(3000)
    index = NamespaceIndex(16, exact_below=10_000)
    index.add(np.arange(3000), vectors)
    index.remove(range(2000))
    assert index.index.ntotal == 1000 and len(index) == 1000
    assert [i for _, i in index.search(vectors[2500:2501], 1)[0]] == [2500]


@pytest.mark.parametrize("exact_below", [10_000, 100])
def test_allowed_restricts_results_exactly(exact_below):
    vectors, queries = unit(1000), unit(3, seed=3)
    index = NamespaceIndex(16, exact_below=exact_below)
    index.add(np.arange(1000), vectors)
    allowed = list(range(0, 1000, 7))
    got = [[i for _, i in hits] for hits in index.search(queries, 5, allowed)]
    assert got == brute(vectors[allowed], np.array(allowed), queries, 5)


def test_k_larger_than_the_index_returns_what_there_is():
    index = NamespaceIndex(16, exact_below=100)
    index.add(np.arange(4), unit(4))
    assert len(index.search(unit(1, seed=5), 10)[0]) == 4


def test_state_round_trip_through_faiss_serialisation():
    vectors = unit(300)
    index = NamespaceIndex(16, exact_below=200)
    index.add(np.arange(300), vectors)
    index.remove([5])
    copy = NamespaceIndex(16, exact_below=200)
    copy.restore(faiss.deserialize_index(faiss.serialize_index(index.index)), index.state())
    queries = unit(4, seed=9)
    assert copy.search(queries, 10) == index.search(queries, 10) and 5 not in copy
