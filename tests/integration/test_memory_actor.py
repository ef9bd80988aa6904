"""The memory actor on real Ray, FAISS and MiniLM: search by meaning, recall, tokens, ACL, bad input, pub/sub, TTL,
GPU share."""

import threading

import faiss
import numpy as np
import pytest
import ray

from controlplane.errors import AccessDenied, IdentityError, ScopeDenied, SpecError
from memory import MemoryConfig, NewEntry, PostEvent, start_memory_actor
from memory._embed import Embedder
from tests.helpers import agent_token, new_inbox, supervisor_token, wait_for

TOPICS = ["pricing", "launch", "hiring", "security", "marketing"]
MISSION = "memory-actor-tests"


def entry(text, agent="alice", namespace="alice", topic="pricing", mission=MISSION, **kw):
    return NewEntry(mission_id=mission, agent_id=agent, task_id="t1", namespace=namespace, topic=topic, text=text,
                    **kw)


def tok(agent: str, mission: str = MISSION) -> str:
    """The token of an agent of the mission (the supervisor's for `supervisor`)."""
    return supervisor_token(mission) if agent == "supervisor" else agent_token(mission, agent)


def corpus(n):
    subjects = ["The launch", "Our price", "The hiring plan", "The audit", "The campaign", "The roadmap", "Churn"]
    verbs = ["moves to", "is set at", "depends on", "was cut by", "targets", "slips past", "grows by"]
    objects = ["May", "20 dollars", "three engineers", "the security review", "Europe", "the beta", "5 percent"]
    return [f"{subjects[i % 7]} {verbs[(i // 7) % 7]} {objects[(i // 49) % 7]} (note {i})" for i in range(n)]


@pytest.fixture(scope="module")
def mem(ray_cluster, tmp_path_factory):
    config = MemoryConfig(data_dir=str(tmp_path_factory.mktemp("memory")), max_text_chars=500, max_k=100,
                          namespaces=["shared"], num_gpus=0.25)
    actor = start_memory_actor(config, mission_id=MISSION)
    ray.get(actor.grant.remote("alice", read=["shared"], write=["alice"], token=tok("supervisor")))
    ray.get(actor.grant.remote("bob", read=[], write=["bob"], token=tok("supervisor")))
    yield actor
    ray.kill(actor)


def test_search_finds_entries_by_meaning_with_filters(mem):
    texts = ["The product will cost 20 dollars per month", "We launch the product in May",
             "We need three more backend engineers"]
    entries = [entry(t, topic=topic) for t, topic in zip(texts, ["pricing", "launch", "hiring"])]
    receipts = ray.get(mem.post.remote(entries, token=tok("alice")))
    assert len({r.id for r in receipts}) == 3
    hits = ray.get(mem.search.remote(["When is the release date?", "how much does it cost"], k=3, namespace="alice",
                                     token=tok("alice")))
    assert hits[0][0].entry.text == texts[1] and hits[1][0].entry.text == texts[0]
    assert hits[0][0].score > hits[0][1].score and hits[0][0].entry.id == receipts[1].id
    only_hiring = ray.get(mem.search.remote("release date", k=3, namespace="alice", token=tok("alice"),
                                            filters={"topic": "hiring"}))
    assert [h.entry.text for h in only_hiring[0]] == [texts[2]]
    floor = (hits[0][0].score + hits[0][1].score) / 2
    close_only = ray.get(mem.search.remote("When is the release date?", k=3, namespace="alice", token=tok("alice"),
                                           min_score=floor))
    assert [h.entry.text for h in close_only[0]] == [texts[1]]


def test_recall_at_10_equals_raw_faiss_on_the_same_vectors(mem):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = []
    for start in range(0, 3000, 1000):
        chunk = [entry(f"v{i}", namespace="bob", agent="bob") for i in range(start, start + 1000)]
        receipts = ray.get(mem.post.remote(chunk, token=tok("bob"), vectors=vectors[start:start + 1000]))
        ids += [r.id for r in receipts]
    raw = faiss.IndexFlatIP(384)
    raw.add(vectors)
    queries = rng.standard_normal((64, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, expected = raw.search(queries, 10)
    hits = ray.get(mem.search_vectors.remote(queries, k=10, namespace="bob", token=tok("bob")))
    got = [[h.entry.id for h in row] for row in hits]
    assert got == [[ids[j] for j in row] for row in expected]


def test_the_embedder_embeds_a_few_texts_on_one_torch_thread_and_a_bulk_batch_on_all():
    """A search's text must not wait on torch's thread team (it spins until every thread has a core, so on busy
    cores a search took many times longer); a bulk batch still uses every thread it is given."""
    import torch

    embedder = Embedder(threads=2)

    def threads_of_an_encode(texts):
        seen = []
        worker = threading.Thread(target=lambda: (embedder.encode(texts), seen.append(torch.get_num_threads())))
        worker.start()
        worker.join()
        return seen[0]

    assert threads_of_an_encode(["When does the launch happen?"]) == 1
    assert threads_of_an_encode(corpus(40)) == 2
    assert threads_of_an_encode(corpus(3)) == 1


def test_recall_at_10_on_real_minilm_text_equals_raw_faiss(ray_cluster, tmp_path):
    actor = start_memory_actor(MemoryConfig(data_dir=str(tmp_path)), mission_id="memory-recall")
    try:
        texts = corpus(600)
        ray.get(actor.grant.remote("alice", read=[], write=["alice"], token=tok("supervisor", "memory-recall")))
        receipts = ray.get(actor.post.remote([entry(t, mission="memory-recall") for t in texts],
                                             token=tok("alice", "memory-recall")))
        embedder = Embedder()
        raw = faiss.IndexFlatIP(embedder.dim)
        raw.add(embedder.encode(texts))
        queries = ["when does the launch happen", "what is the price", "hiring engineers", "security audit",
                   "growth in Europe", "beta roadmap"]
        _, expected = raw.search(embedder.encode(queries), 10)
        hits = ray.get(actor.search.remote(queries, k=10, namespace="alice", token=tok("alice", "memory-recall")))
        recall = np.mean([len({h.entry.id for h in row} & {receipts[j].id for j in exp}) / 10
                          for row, exp in zip(hits, expected)])
        assert recall == 1.0
    finally:
        ray.kill(actor)


def test_access_control_denies_with_a_typed_error_and_counts_it(mem):
    ray.get(mem.post.remote([entry("alice's secret plan")], token=tok("alice")))
    with pytest.raises(AccessDenied) as denied:
        ray.get(mem.search.remote("plan", namespace="alice", token=tok("bob")))
    assert denied.value.agent == "bob" and "alice" in denied.value.resource and denied.value.granted == ["bob"]
    with pytest.raises(AccessDenied):
        ray.get(mem.post.remote([entry("x", agent="bob", namespace="alice")], token=tok("bob")))
    with pytest.raises(AccessDenied):
        ray.get(mem.list.remote(namespace="alice", token=tok("bob")))
    assert ray.get(mem.search.remote("plan", namespace="alice", token=tok("supervisor")))[0]
    stats = ray.get(mem.stats.remote(token=tok("supervisor")))
    denials = {(d["agent"], d["mode"], d["namespace"]): d["count"] for d in stats["denials"]}
    assert denials[("bob", "read", "alice")] == 2 and denials[("bob", "write", "alice")] == 1


@pytest.mark.parametrize("call, field", [
    (lambda m: m.post.remote([entry("ok"), entry("  ")], token=tok("alice")), "entries[1].text"),
    (lambda m: m.post.remote([entry("ok"), entry("x" * 501)], token=tok("alice")), "entries[1].text"),
    (lambda m: m.post.remote([entry("ok"), entry("y", namespace="nowhere")], token=tok("alice")),
     "entries[1].namespace"),
    (lambda m: m.post.remote([entry("ok"), {"text": "no fields"}], token=tok("alice")), "entries[1].mission_id"),
    (lambda m: m.post.remote([entry("ok")], token=tok("alice"), vectors=np.ones((1, 100), np.float32)), "vectors"),
    (lambda m: m.search_vectors.remote(np.ones((2, 17), np.float32), namespace="alice", token=tok("alice")),
     "queries"),
    (lambda m: m.search.remote("q", k=0, namespace="alice", token=tok("alice")), "k"),
    (lambda m: m.search.remote("q", k=101, namespace="alice", token=tok("alice")), "k"),
    (lambda m: m.search.remote("q", namespace="nowhere", token=tok("supervisor")), "namespace"),
    (lambda m: m.search.remote("", namespace="alice", token=tok("alice")), "queries[0]"),
    (lambda m: m.search.remote("q", namespace="alice", token=tok("alice"), min_score=2), "min_score"),
    (lambda m: m.post.remote(entry("one entry, not a list"), token=tok("alice")), "memory.post: entries"),
    (lambda m: m.search.remote(5, namespace="alice", token=tok("alice")), "memory.search: queries"),
    (lambda m: m.subscribe.remote("inbox", "topic", token=tok("alice")), "memory.subscribe: topics"),
    (lambda m: m.grant.remote("bob", "alice", [], token=tok("supervisor")), "read"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(mem, call, field):
    before = ray.get(mem.stats.remote(token=tok("supervisor")))
    with pytest.raises(SpecError) as error:
        ray.get(call(mem))
    assert error.value.where.endswith(field) and "Fix:" in str(error.value)
    after = ray.get(mem.stats.remote(token=tok("supervisor")))
    assert (after["version"], after["entries"]) == (before["version"], before["entries"])


def test_subscribers_get_posts_on_their_topics_pushed(mem):
    (inbox, inbox_name), (bobs_inbox, bobs_name) = new_inbox(), new_inbox()
    ray.get(mem.subscribe.remote(inbox_name, ["launch"], token=tok("supervisor")))
    ray.get(mem.subscribe.remote(bobs_name, ["launch"], token=tok("bob")))
    ray.get(mem.post.remote([entry("pricing news", topic="pricing"), entry("launch news", topic="launch")],
                            token=tok("alice")))
    ray.get(mem.post.remote([entry("bob's launch view", agent="bob", namespace="bob", topic="launch")],
                            token=tok("bob")))
    events = wait_for(lambda: len(ray.get(inbox.received.remote())) == 2 and ray.get(inbox.received.remote()),
                      what="two launch events")
    assert all(isinstance(e, PostEvent) for e in events)
    assert sorted(e.entry.text for e in events) == ["bob's launch view", "launch news"]
    # Bob may not read alice's namespace, so his subscription gets only his own launch entry.
    bobs = wait_for(lambda: ray.get(bobs_inbox.received.remote()), what="bob's event")
    assert [e.entry.text for e in bobs] == ["bob's launch view"]


def test_ttl_expires_entries(mem):
    receipt = ray.get(mem.post.remote([entry("ephemeral note", ttl_s=0.5), entry("lasting note")],
                                      token=tok("alice")))
    assert ray.get(mem.get.remote(receipt[0].id, token=tok("alice"))).text == "ephemeral note"
    wait_for(lambda: ray.get(mem.get.remote(receipt[0].id, token=tok("alice"))) is None, timeout_s=10,
             what="the entry to expire")
    assert ray.get(mem.get.remote(receipt[1].id, token=tok("alice"))).text == "lasting note"


def test_delete_needs_write_access(mem):
    receipt = ray.get(mem.post.remote([entry("to delete")], token=tok("alice")))[0]
    with pytest.raises(AccessDenied):
        ray.get(mem.delete.remote([receipt.id], token=tok("bob")))
    assert ray.get(mem.delete.remote([receipt.id], token=tok("alice"))) == 1
    assert ray.get(mem.get.remote(receipt.id, token=tok("alice"))) is None


def test_actor_takes_its_fractional_gpu_share(mem):
    stats = ray.get(mem.stats.remote(token=tok("supervisor")))
    assert stats["gpu_ids"] == ["0"] or stats["gpu_ids"] == [0]
    assert stats["device"] == "cpu"  # the logical GPU of the test cluster has no CUDA behind it


def test_a_forged_expired_or_foreign_token_is_refused_and_counted(mem):
    from controlplane._core.identity import mint_token, mission_key

    forged = mint_token(mission_key(b"x" * 32, MISSION), mission_id=MISSION, agent_id="alice", expires_at_s=2e9)
    expired = agent_token(MISSION, "alice", ttl_s=1e-6)
    before = ray.get(mem.stats.remote(token=tok("supervisor")))
    for bad, needle in ((forged, "signature"), (expired, "expired"), ("not-a-token", "malformed")):
        with pytest.raises(IdentityError, match=needle):
            ray.get(mem.search.remote("plan", namespace="alice", token=bad))
        with pytest.raises(IdentityError, match=needle):
            ray.get(mem.post.remote([entry("forged finding")], token=bad))
    with pytest.raises(ScopeDenied, match="belongs to mission 'elsewhere'"):
        ray.get(mem.search.remote("plan", namespace="alice", token=agent_token("elsewhere", "alice")))
    after = ray.get(mem.stats.remote(token=tok("supervisor")))
    assert after["identity_refused"] == before.get("identity_refused", 0) + 7
    assert (after["version"], after["entries"]) == (before["version"], before["entries"])  # nothing written


def test_grant_from_an_agent_is_refused_and_an_agent_posts_only_as_itself_in_its_mission(mem):
    with pytest.raises(ScopeDenied, match="memory.grant needs the supervisor's token"):
        ray.get(mem.grant.remote("bob", read=["alice"], write=["alice"], token=tok("bob")))
    with pytest.raises(AccessDenied):  # bob's grant was not widened by his own call
        ray.get(mem.search.remote("plan", namespace="alice", token=tok("bob")))
    with pytest.raises(SpecError, match="control-plane identity"):
        ray.get(mem.grant.remote("supervisor", read=["alice"], write=[], token=tok("supervisor")))
    with pytest.raises(AccessDenied, match="post as agent 'alice'"):
        ray.get(mem.post.remote([entry("as alice", agent="alice", namespace="bob")], token=tok("bob")))
    with pytest.raises(AccessDenied, match="post to mission 'other'"):
        ray.get(mem.post.remote([entry("elsewhere", mission="other")], token=tok("alice")))
    with pytest.raises(ScopeDenied, match="memory.snapshot needs the supervisor's token"):
        ray.get(mem.snapshot.remote(token=tok("alice")))
