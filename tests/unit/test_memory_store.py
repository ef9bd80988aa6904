from pathlib import Path

import numpy as np
import pytest

from controlplane.config.memory import MemoryConfig
from controlplane.errors import AccessDenied, SpecError
from memory._store import MemoryStore
from memory._types import NewEntry, SearchFilters

DIM = 8


def unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def new(text="a finding", agent="alice", namespace="research", topic="pricing", **kw):
    return NewEntry(mission_id="m1", agent_id=agent, task_id="t1", namespace=namespace, topic=topic, text=text, **kw)


@pytest.fixture
def config(tmp_path):
    return MemoryConfig(data_dir=str(tmp_path / "mem"), max_text_chars=100, max_k=50, snapshot_every_writes=1000)


@pytest.fixture
def store(config):
    s = MemoryStore(config, dim=DIM)
    s.grant("alice", read=["research"], write=["research"])
    s.grant("bob", read=["notes"], write=["notes"])
    yield s
    s.close()


def reopen(store):
    store.close()
    return MemoryStore(store.config, dim=DIM)


def test_post_then_search_finds_the_entry_with_its_fields(store):
    vectors = unit(3)
    stored = store.post([new("a"), new("b"), new("c")], vectors, as_agent="alice", now_s=100.0)
    assert [e.id for e in stored] == [1, 2, 3] and len({e.version for e in stored}) == 1
    hits = store.search(vectors[1], k=2, namespace="research", as_agent="alice", filters=None, now_s=101.0)
    assert hits[0][0].entry.text == "b" and hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0][0].entry.created_at_s == 100.0 and hits[0][0].entry.task_id == "t1"


def test_filters_by_agent_topic_and_time(store):
    store.grant("carol", read=["research"], write=["research"])
    store.post([new("x", topic="pricing")], unit(1, 1), as_agent="alice", now_s=10.0)
    store.post([new("y", topic="launch")], unit(1, 2), as_agent="alice", now_s=20.0)
    store.post([new("z", agent="carol")], unit(1, 3), as_agent="carol", now_s=30.0)

    def texts(**f):
        hits = store.search(unit(1, 4), k=10, namespace="research", as_agent="alice",
                            filters=SearchFilters(**f), now_s=40.0)
        return sorted(h.entry.text for h in hits[0])

    assert texts(topic="pricing") == ["x", "z"]
    assert texts(agent_id="carol") == ["z"]
    assert texts(since_s=15.0, until_s=25.0) == ["y"]
    assert texts(mission_id="other") == []


def test_get_list_delete(store):
    stored = store.post([new("a"), new("b")], unit(2), as_agent="alice", now_s=1.0)
    assert store.get(stored[0].id, as_agent="alice", now_s=2.0).text == "a"
    assert [e.text for e in store.list_entries(namespace="research", as_agent="supervisor", filters=None,
                                               limit=10, now_s=2.0)] == ["a", "b"]
    assert store.delete([stored[0].id, 999], as_agent="alice", now_s=3.0) == 1
    assert store.get(stored[0].id, as_agent="alice", now_s=4.0) is None
    assert reopen(store).get(stored[0].id, as_agent="alice", now_s=4.0) is None


def test_ttl_expires_entries_at_their_time_and_logs_it(store):
    stored = store.post([new("short", ttl_s=5.0), new("long")], unit(2), as_agent="alice", now_s=100.0)
    assert store.get(stored[0].id, as_agent="alice", now_s=104.9) is not None
    assert store.get(stored[0].id, as_agent="alice", now_s=105.0) is None
    hits = store.search(unit(2), k=5, namespace="research", as_agent="alice", filters=None, now_s=106.0)
    assert {h.entry.text for row in hits for h in row} == {"long"}
    assert reopen(store).entries.keys() == {stored[1].id}


def test_access_control_on_every_path(store):
    stored = store.post([new("a")], unit(1), as_agent="alice", now_s=1.0)
    with pytest.raises(AccessDenied) as denied:
        store.post([new("x", agent="bob", namespace="research")], unit(1), as_agent="bob", now_s=1.0)
    assert denied.value.agent == "bob" and "research" in denied.value.resource and denied.value.granted == ["notes"]
    with pytest.raises(AccessDenied):
        store.search(unit(1), k=1, namespace="research", as_agent="bob", filters=None, now_s=1.0)
    with pytest.raises(AccessDenied):
        store.get(stored[0].id, as_agent="bob", now_s=1.0)
    with pytest.raises(AccessDenied):
        store.delete([stored[0].id], as_agent="bob", now_s=1.0)
    with pytest.raises(AccessDenied):  # posting under another agent's name
        store.post([new("x", agent="alice")], unit(1), as_agent="bob", now_s=1.0)
    assert store.search(unit(1), k=1, namespace="research", as_agent="supervisor", filters=None, now_s=1.0)[0]
    assert {(d["agent"], d["mode"], d["namespace"]) for d in store.stats()["denials"]} == {
        ("bob", "write", "research"), ("bob", "read", "research"), ("bob", "post-as", "alice")}
    assert len(store.entries) == 1


BAD_POSTS = {
    "empty text": (lambda: [new("a"), new("   ")], "text", "empty"),
    "text over the limit": (lambda: [new("a"), new("x" * 101)], "text", "max_text_chars"),
    "unknown namespace": (lambda: [new("a"), new("b", namespace="nope")], "namespace", "unknown namespace"),
    "reserved topic": (lambda: [new("a"), new("b", topic="conflicts")], "topic", "reserved"),
    "metadata not JSON": (lambda: [new("a"), new("b", metadata={"x": object()})], "metadata", "JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_POSTS))
def test_bad_posts_fail_clearly_and_write_nothing(store, case):
    make, field, why = BAD_POSTS[case]
    version = store.stats()["version"]
    with pytest.raises(SpecError) as error:
        store.post(make(), unit(2), as_agent="alice", now_s=1.0)
    assert error.value.where.endswith(f"entries[1].{field}") and why in str(error.value)
    assert store.entries == {} and store.stats()["version"] == version
    assert reopen(store).entries == {}


@pytest.mark.parametrize("vectors, why", [
    (lambda: unit(2)[:, :4], "8-dimensional"),
    (lambda: unit(1), "2 entries"),
    (lambda: unit(2) * 3, "unit length"),
    (lambda: np.full((2, DIM), np.nan, dtype=np.float32), "finite"),
])
def test_bad_post_vectors_fail_clearly_and_write_nothing(store, vectors, why):
    with pytest.raises(SpecError, match=why):
        store.post([new("a"), new("b")], vectors(), as_agent="alice", now_s=1.0)
    assert store.entries == {} and reopen(store).entries == {}


@pytest.mark.parametrize("k", [0, -1, 51, 2.5, True])
def test_k_out_of_range(store, k):
    with pytest.raises(SpecError, match="max_k=50") as error:
        store.search(unit(1), k=k, namespace="research", as_agent="alice", filters=None, now_s=1.0)
    assert error.value.where == "memory.search: k"


def test_min_score_leaves_out_hits_below_it_and_a_bad_one_is_refused(store):
    query = unit(1)[0]
    near = query + 0.2 * unit(1, seed=1)[0]
    far = unit(1, seed=2)[0]
    vectors = np.stack([v / np.linalg.norm(v) for v in (near, far)])
    store.post([new("near"), new("far")], vectors, as_agent="alice", now_s=1.0)
    everything = store.search(query, k=2, namespace="research", as_agent="alice", filters=None, now_s=2.0)[0]
    assert [h.entry.text for h in everything] == ["near", "far"] and everything[1].score < 0.5 < everything[0].score
    kept = store.search(query, k=2, namespace="research", as_agent="alice", filters=None, now_s=2.0, min_score=0.5)
    assert [h.entry.text for h in kept[0]] == ["near"]
    for bad in (1.5, -2, "0.3", True):
        with pytest.raises(SpecError, match="from -1 to 1") as error:
            store.search(query, k=2, namespace="research", as_agent="alice", filters=None, now_s=2.0, min_score=bad)
        assert error.value.where == "memory.search: min_score"


def test_bad_search_namespace_and_dimension(store):
    with pytest.raises(SpecError, match="unknown namespace; known: \\['notes', 'research'\\]"):
        store.search(unit(1), k=1, namespace="nope", as_agent="supervisor", filters=None, now_s=1.0)
    with pytest.raises(SpecError, match="8-dimensional"):
        store.search(np.ones(3, dtype=np.float32), k=1, namespace="research", as_agent="alice",
                     filters=None, now_s=1.0)


def test_grant_rejects_the_wildcard(store):
    with pytest.raises(SpecError, match="not a namespace name"):
        store.grant("eve", read=["*"], write=[])
    assert not store.acl.can_read("eve", "research")


@pytest.mark.parametrize(("call", "where", "value"), [
    (lambda s: s.grant("eve", read="research", write=[]), "memory.grant('eve'): read", "research"),
    (lambda s: s.grant("eve", read=[], write=["research", 3]), "memory.grant('eve'): write", ["research", 3]),
    (lambda s: s.delete(1, as_agent="alice", now_s=1.0), "memory.delete: ids", 1),
    (lambda s: s.supersede(["1"], by=2, now_s=1.0), "memory.supersede: ids", ["1"]),
    (lambda s: s.get("1", as_agent="alice", now_s=1.0), "memory.get: entry_id", "1"),
    (lambda s: s.list_entries(namespace="research", as_agent="alice", filters=None, limit=-1, now_s=1.0),
     "memory.list: limit", -1),
])
def test_a_bare_name_or_id_where_a_list_belongs_and_ids_that_are_no_integers_are_refused(store, call, where, value):
    """A bare string taken as a list is its characters: grant("eve", read="research") granted 'r', 'e', 's'...;
    a bare id raised TypeError, and get("1") said the entry was gone."""
    store.post([new("a")], unit(1), as_agent="alice", now_s=0.0)
    with pytest.raises(SpecError) as error:
        call(store)
    assert (error.value.where, error.value.value) == (where, value) and error.value.fix.startswith("pass ")
    assert not store.acl.can_read("eve", "r") and store.get(1, as_agent="alice", now_s=1.0) is not None


def test_recovery_from_log_only(store):
    vectors = unit(5)
    stored = store.post([new(str(i)) for i in range(5)], vectors, as_agent="alice", now_s=1.0)
    again = reopen(store)
    assert again.entries == {e.id: e for e in stored} and again.acl.can_write("alice", "research")
    hits = again.search(vectors[3], k=1, namespace="research", as_agent="alice", filters=None, now_s=2.0)
    assert hits[0][0].entry.text == "3"
    assert again.post([new("next")], unit(1, 7), as_agent="alice", now_s=3.0)[0].id == 6


def test_recovery_from_snapshot_plus_log_tail(tmp_path):
    config = MemoryConfig(data_dir=str(tmp_path / "mem"), snapshot_every_writes=3, exact_below=4)
    store = MemoryStore(config, dim=DIM)
    store.grant("alice", read=[], write=["research"])
    vectors = unit(7)
    for i in range(7):  # grant + 7 posts: snapshots at seq 3 and 6, then a tail of 2 records
        store.post([new(str(i))], vectors[i:i + 1], as_agent="alice", now_s=float(i))
    names = sorted(p.name for p in (tmp_path / "mem").iterdir())
    assert names[-1] == "snapshot-000000000006" and sum(n.startswith("log-") for n in names) == 1
    before = store.search(vectors, k=3, namespace="research", as_agent="alice", filters=None, now_s=9.0)
    again = reopen(store)
    assert again.indexes["research"].kind == "hnsw" and len(again.entries) == 7
    assert again.search(vectors, k=3, namespace="research", as_agent="alice", filters=None, now_s=9.0) == before


def test_a_torn_last_record_is_ignored_and_later_writes_survive(store):
    store.post([new("kept")], unit(1), as_agent="alice", now_s=1.0)
    segment = sorted(Path(store.config.data_dir).glob("log-*"))[-1]
    store.close()
    with open(segment, "ab") as f:
        f.write(b"0badc0de {\"seq\": 3, \"op\": \"po")  # a crash mid-append
    again = MemoryStore(store.config, dim=DIM)
    assert [e.text for e in again.entries.values()] == ["kept"]
    again.post([new("after")], unit(1, 1), as_agent="alice", now_s=2.0)
    third = reopen(again)
    assert sorted(e.text for e in third.entries.values()) == ["after", "kept"]


def test_topic_neighbours_are_other_agents_on_the_same_mission_and_topic(store):
    store.grant("carol", read=[], write=["notes"])
    vectors = unit(4)
    a = store.post([new("a")], vectors[0:1], as_agent="alice", now_s=1.0)[0]
    store.post([new("c1", agent="carol", namespace="notes")], vectors[1:2], as_agent="carol", now_s=2.0)
    store.post([new("c2", agent="carol", namespace="notes", topic="other")], vectors[2:3], as_agent="carol", now_s=3.0)
    neighbours = store.topic_neighbours(a)
    assert [(e.text, round(s, 5)) for s, e in neighbours] == [("c1", round(float(vectors[0] @ vectors[1]), 5))]


def test_an_fsspec_url_works_as_data_dir():
    config = MemoryConfig(data_dir="memory://memory-store-test/mem", snapshot_every_writes=2)
    store = MemoryStore(config, dim=DIM)
    store.grant("alice", read=[], write=["research"])
    stored = store.post([new("a"), new("b")], unit(2), as_agent="alice", now_s=1.0)  # snapshot at seq 2
    store.post([new("c")], unit(1, 1), as_agent="alice", now_s=2.0)                   # log tail
    again = reopen(store)
    assert sorted(e.text for e in again.entries.values()) == ["a", "b", "c"]
    assert again.get(stored[1].id, as_agent="alice", now_s=3.0).text == "b"


def test_a_failed_snapshot_does_not_fail_the_durable_write(tmp_path, monkeypatch):
    config = MemoryConfig(data_dir=str(tmp_path / "mem"), snapshot_every_writes=2)
    store = MemoryStore(config, dim=DIM)
    store.grant("alice", read=[], write=["research"])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store._durable, "write_snapshot", disk_full)
    stored = store.post([new("a")], unit(1), as_agent="alice", now_s=1.0)  # the 2nd write: its snapshot fails
    store.post([new("b")], unit(1, 1), as_agent="alice", now_s=2.0)
    monkeypatch.undo()
    again = reopen(store)
    assert sorted(e.text for e in again.entries.values()) == ["a", "b"] and stored[0].id in again.entries


def test_subscriptions_are_logged_by_actor_name_never_as_a_pickled_handle(store):
    store.subscribe("tests/inbox", ["launch"], "alice", actor="inbox", namespace="tests")
    store.snapshot()
    store.subscribe("tests/other", ["*"], "supervisor", actor="other", namespace="tests")  # in the log tail
    again = reopen(store)
    assert again.subscriptions == {
        "tests/inbox": {"topics": ["launch"], "as_agent": "alice", "actor": "inbox", "namespace": "tests"},
        "tests/other": {"topics": ["*"], "as_agent": "supervisor", "actor": "other", "namespace": "tests"}}
    logged = "".join(p.read_text() for p in Path(again.config.data_dir).rglob("*.jsonl"))
    assert '"actor":"other"' in logged and "blob" not in logged


def test_a_superseded_entry_leaves_search_list_and_checks_but_get_returns_it_also_after_recovery(store):
    store.grant("carol", read=[], write=["research"])
    vectors = unit(2)
    loser = store.post([new("May")], vectors[0:1], as_agent="alice", now_s=1.0)[0]
    winner = store.post([new("October", agent="carol")], vectors[1:2], as_agent="carol", now_s=2.0)[0]
    assert store.supersede([loser.id], by=winner.id, now_s=3.0) == [loser.id]
    assert store.supersede([loser.id], by=winner.id, now_s=3.5) == []  # already superseded: nothing to log
    for s in (store, reopen(store)):
        hits = s.search(vectors, k=2, namespace="research", as_agent="alice", filters=None, now_s=4.0)
        assert [[h.entry.id for h in q] for q in hits] == [[winner.id], [winner.id]]
        listed = s.list_entries(namespace="research", as_agent="alice", filters=None, limit=10, now_s=4.0)
        assert [e.id for e in listed] == [winner.id]
        assert s.get(loser.id, as_agent="alice", now_s=4.0).superseded_by == winner.id
        assert s.topic_neighbours(s.entries[winner.id]) == []
        store = s


def test_superseding_needs_a_live_entry_that_stands(store):
    loser = store.post([new("May")], unit(1), as_agent="alice", now_s=1.0)[0]
    with pytest.raises(SpecError, match="memory.supersede: by"):
        store.supersede([loser.id], by=999, now_s=2.0)


def test_the_supervisor_may_post_for_any_agent_in_any_namespace(store):
    [entry] = store.post([new("synthesis", agent="bob", namespace="research")], unit(1), as_agent="supervisor",
                         now_s=1.0)
    assert entry.agent_id == "bob" and entry.namespace == "research"
