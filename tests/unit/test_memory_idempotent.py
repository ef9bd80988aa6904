"""Idempotent posts: a retried post with the same key is stored once and answered with the original receipt,
also after a restart (from the log alone, or from a snapshot), and after the entry was deleted."""

import numpy as np
import pytest

from controlplane.config.memory import MemoryConfig
from memory._store import MemoryStore
from memory._types import NewEntry

DIM = 8


def unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def new(text="a finding", key=None):
    return NewEntry(mission_id="m1", agent_id="alice", task_id="t1", namespace="research", topic="pricing",
                    text=text, idempotency_key=key)


@pytest.fixture
def config(tmp_path):
    return MemoryConfig(data_dir=str(tmp_path / "mem"), snapshot_every_writes=1000)


@pytest.fixture
def store(config):
    s = MemoryStore(config, dim=DIM)
    s.grant("alice", read=["research"], write=["research"])
    yield s
    s.close()


def post(store, entries, seed=0):
    stored = store.post(entries, unit(len(entries), seed), as_agent="alice", now_s=10.0)
    return stored, store.receipts(entries, stored)


def reopen(store):
    store.close()
    return MemoryStore(store.config, dim=DIM)


KEY = "m1/t1/1/post/0"


def test_a_retried_post_is_stored_once_and_gets_the_original_receipt(store):
    first, receipts = post(store, [new("x", KEY)])
    again, repeat = post(store, [new("x", KEY)], seed=1)
    assert again == [] and repeat == receipts and len(store.entries) == 1
    assert store.stats()["version"] == 2  # the grant and one post: the retry wrote nothing


def test_a_mixed_batch_stores_only_what_is_new_and_answers_in_order(store):
    _, old = post(store, [new("x", KEY)])
    stored, receipts = post(store, [new("plain"), new("x", KEY), new("y", "m1/t1/1/post/1"), new("x", KEY)])
    assert [e.text for e in stored] == ["plain", "y"]
    assert receipts[1] == receipts[3] == old[0]
    assert [r.id for r in receipts] == [stored[0].id, old[0].id, stored[1].id, old[0].id]
    hits = store.search(unit(1, 0), k=10, namespace="research", as_agent="alice", filters=None, now_s=11.0)
    assert sorted(h.entry.text for h in hits[0]) == ["plain", "x", "y"]


def test_the_key_survives_a_restart_from_the_log(store):
    _, receipts = post(store, [new("x", KEY)])
    again = reopen(store)
    stored, repeat = post(again, [new("x", KEY)])
    assert stored == [] and repeat == receipts and len(again.entries) == 1
    again.close()


def test_the_key_survives_a_snapshot_and_a_delete(store):
    stored, receipts = post(store, [new("x", KEY)])
    store.delete([stored[0].id], as_agent="alice", now_s=11.0)
    store.snapshot()
    again = reopen(store)
    assert again.entries == {}
    assert post(again, [new("x", KEY)]) == ([], receipts)  # a late retry does not bring it back
    again.close()
