"""The memory actor on real Ray, FAISS and MiniLM: search by meaning, recall, ACL, bad input, pub/sub, TTL, GPU share."""

import faiss
import numpy as np
import pytest
import ray

from controlplane.errors import AccessDenied, SpecError
from memory import MemoryConfig, NewEntry, PostEvent, start_memory_actor
from memory._embed import Embedder
from tests.helpers import new_inbox, wait_for

TOPICS = ["pricing", "launch", "hiring", "security", "marketing"]


def entry(text, agent="alice", namespace="alice", topic="pricing", **kw):
    return NewEntry(mission_id="m1", agent_id=agent, task_id="t1", namespace=namespace, topic=topic, text=text, **kw)


def corpus(n):
    subjects = ["The launch", "Our price", "The hiring plan", "The audit", "The campaign", "The roadmap", "Churn"]
    verbs = ["moves to", "is set at", "depends on", "was cut by", "targets", "slips past", "grows by"]
    objects = ["May", "20 dollars", "three engineers", "the security review", "Europe", "the beta", "5 percent"]
    return [f"{subjects[i % 7]} {verbs[(i // 7) % 7]} {objects[(i // 49) % 7]} (note {i})" for i in range(n)]


@pytest.fixture(scope="module")
def mem(ray_cluster, tmp_path_factory):
    config = MemoryConfig(data_dir=str(tmp_path_factory.mktemp("memory")), max_text_chars=500, max_k=100,
                          namespaces=["shared"], num_gpus=0.25)
    actor = start_memory_actor(config, mission_id="memory-actor-tests")
    ray.get(actor.grant.remote("alice", read=["shared"], write=["alice"]))
    ray.get(actor.grant.remote("bob", read=[], write=["bob"]))
    yield actor
    ray.kill(actor)


def test_search_finds_entries_by_meaning_with_filters(mem):
    texts = ["The product will cost 20 dollars per month", "We launch the product in May",
             "We need three more backend engineers"]
    receipts = ray.get(mem.post.remote([entry(t, topic=topic) for t, topic in zip(texts, ["pricing", "launch", "hiring"])],
                                       as_agent="alice"))
    assert len({r.id for r in receipts}) == 3
    hits = ray.get(mem.search.remote(["When is the release date?", "how much does it cost"], k=3, namespace="alice",
                                     as_agent="alice"))
    assert hits[0][0].entry.text == texts[1] and hits[1][0].entry.text == texts[0]
    assert hits[0][0].score > hits[0][1].score and hits[0][0].entry.id == receipts[1].id
    only_hiring = ray.get(mem.search.remote("release date", k=3, namespace="alice", as_agent="alice",
                                            filters={"topic": "hiring"}))
    assert [h.entry.text for h in only_hiring[0]] == [texts[2]]


def test_recall_at_10_equals_raw_faiss_on_the_same_vectors(mem):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = []
    for start in range(0, 3000, 1000):
        chunk = [entry(f"v{i}", namespace="bob", agent="bob") for i in range(start, start + 1000)]
        ids += [r.id for r in ray.get(mem.post.remote(chunk, as_agent="bob", vectors=vectors[start:start + 1000]))]
    raw = faiss.IndexFlatIP(384)
    raw.add(vectors)
    queries = rng.standard_normal((64, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, expected = raw.search(queries, 10)
    hits = ray.get(mem.search_vectors.remote(queries, k=10, namespace="bob", as_agent="bob"))
    got = [[h.entry.id for h in row] for row in hits]
    assert got == [[ids[j] for j in row] for row in expected]


def test_recall_at_10_on_real_minilm_text_equals_raw_faiss(ray_cluster, tmp_path):
    actor = start_memory_actor(MemoryConfig(data_dir=str(tmp_path)), mission_id="memory-recall")
    try:
        texts = corpus(600)
        ray.get(actor.grant.remote("alice", read=[], write=["alice"]))
        receipts = ray.get(actor.post.remote([entry(t) for t in texts], as_agent="alice"))
        embedder = Embedder()
        raw = faiss.IndexFlatIP(embedder.dim)
        raw.add(embedder.encode(texts))
        queries = ["when does the launch happen", "what is the price", "hiring engineers", "security audit",
                   "growth in Europe", "beta roadmap"]
        _, expected = raw.search(embedder.encode(queries), 10)
        hits = ray.get(actor.search.remote(queries, k=10, namespace="alice", as_agent="alice"))
        recall = np.mean([len({h.entry.id for h in row} & {receipts[j].id for j in exp}) / 10
                          for row, exp in zip(hits, expected)])
        assert recall == 1.0
    finally:
        ray.kill(actor)


def test_access_control_denies_with_a_typed_error_and_counts_it(mem):
    ray.get(mem.post.remote([entry("alice's secret plan")], as_agent="alice"))
    with pytest.raises(AccessDenied) as denied:
        ray.get(mem.search.remote("plan", namespace="alice", as_agent="bob"))
    assert denied.value.agent == "bob" and "alice" in denied.value.resource and denied.value.granted == ["bob"]
    with pytest.raises(AccessDenied):
        ray.get(mem.post.remote([entry("x", agent="bob", namespace="alice")], as_agent="bob"))
    with pytest.raises(AccessDenied):
        ray.get(mem.list.remote(namespace="alice", as_agent="bob"))
    assert ray.get(mem.search.remote("plan", namespace="alice", as_agent="supervisor"))[0]
    denials = {(d["agent"], d["mode"], d["namespace"]): d["count"] for d in ray.get(mem.stats.remote())["denials"]}
    assert denials[("bob", "read", "alice")] == 2 and denials[("bob", "write", "alice")] == 1


@pytest.mark.parametrize("call, field", [
    (lambda m: m.post.remote([entry("ok"), entry("  ")], as_agent="alice"), "entries[1].text"),
    (lambda m: m.post.remote([entry("ok"), entry("x" * 501)], as_agent="alice"), "entries[1].text"),
    (lambda m: m.post.remote([entry("ok"), entry("y", namespace="nowhere")], as_agent="alice"), "entries[1].namespace"),
    (lambda m: m.post.remote([entry("ok"), {"text": "no fields"}], as_agent="alice"), "entries[1].mission_id"),
    (lambda m: m.post.remote([entry("ok")], as_agent="alice", vectors=np.ones((1, 100), np.float32)), "vectors"),
    (lambda m: m.search_vectors.remote(np.ones((2, 17), np.float32), namespace="alice", as_agent="alice"), "queries"),
    (lambda m: m.search.remote("q", k=0, namespace="alice", as_agent="alice"), "k"),
    (lambda m: m.search.remote("q", k=101, namespace="alice", as_agent="alice"), "k"),
    (lambda m: m.search.remote("q", namespace="nowhere", as_agent="supervisor"), "namespace"),
    (lambda m: m.search.remote("", namespace="alice", as_agent="alice"), "queries[0]"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(mem, call, field):
    before = ray.get(mem.stats.remote())
    with pytest.raises(SpecError) as error:
        ray.get(call(mem))
    assert error.value.where.endswith(field) and "Fix:" in str(error.value)
    after = ray.get(mem.stats.remote())
    assert (after["version"], after["entries"]) == (before["version"], before["entries"])


def test_subscribers_get_posts_on_their_topics_pushed(mem):
    inbox, bobs_inbox = new_inbox(), new_inbox()
    ray.get(mem.subscribe.remote(inbox, ["launch"]))
    ray.get(mem.subscribe.remote(bobs_inbox, ["launch"], as_agent="bob"))
    ray.get(mem.post.remote([entry("pricing news", topic="pricing"), entry("launch news", topic="launch")],
                            as_agent="alice"))
    ray.get(mem.post.remote([entry("bob's launch view", agent="bob", namespace="bob", topic="launch")],
                            as_agent="bob"))
    events = wait_for(lambda: len(ray.get(inbox.received.remote())) == 2 and ray.get(inbox.received.remote()),
                      what="two launch events")
    assert all(isinstance(e, PostEvent) for e in events)
    assert sorted(e.entry.text for e in events) == ["bob's launch view", "launch news"]
    # Bob may not read alice's namespace, so his subscription gets only his own launch entry.
    bobs = wait_for(lambda: ray.get(bobs_inbox.received.remote()), what="bob's event")
    assert [e.entry.text for e in bobs] == ["bob's launch view"]


def test_ttl_expires_entries(mem):
    receipt = ray.get(mem.post.remote([entry("ephemeral note", ttl_s=0.5), entry("lasting note")], as_agent="alice"))
    assert ray.get(mem.get.remote(receipt[0].id, as_agent="alice")).text == "ephemeral note"
    wait_for(lambda: ray.get(mem.get.remote(receipt[0].id, as_agent="alice")) is None, timeout_s=10,
             what="the entry to expire")
    assert ray.get(mem.get.remote(receipt[1].id, as_agent="alice")).text == "lasting note"


def test_delete_needs_write_access(mem):
    receipt = ray.get(mem.post.remote([entry("to delete")], as_agent="alice"))[0]
    with pytest.raises(AccessDenied):
        ray.get(mem.delete.remote([receipt.id], as_agent="bob"))
    assert ray.get(mem.delete.remote([receipt.id], as_agent="alice")) == 1
    assert ray.get(mem.get.remote(receipt.id, as_agent="alice")) is None


def test_actor_takes_its_fractional_gpu_share(mem):
    stats = ray.get(mem.stats.remote())
    assert stats["gpu_ids"] == ["0"] or stats["gpu_ids"] == [0]
    assert stats["device"] == "cpu"  # the logical GPU of the test cluster has no CUDA behind it
