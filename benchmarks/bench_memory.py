"""bench_memory: the memory actor against raw FAISS in the same process, and MiniLM embedding throughput.

Index: 100k random 384-d unit vectors in an exact (flat) inner-product index. The same queries go to
raw FAISS in this process and to the memory actor's raw-vector search (numpy in, full hits out), read the way
agents read it: through `MemoryReader`, over the actor's read channel (memory/_channel.py). The same search as a
Ray actor call (`actor_ray`) shows what the channel saves.
Both run single queries on one OpenMP thread and batches on all (the actor's own policy). A third
path, raw FAISS inside a bare async actor, separates the process hop from the memory actor's own cost; it
times each search inside itself too, so its round trip splits into the search and Ray's hop.
Embedding: 2,000 real English texts (docstrings of the Python standard library), embedded in this
process with sentence-transformers and posted through the actor (embedding + durable log write).

    python benchmarks/bench_memory.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import pkgutil
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from memory import MemoryReader  # noqa: E402
from memory._index import SERIAL_BELOW_QUERIES  # noqa: E402

# ---- settings ------------------------------------------------------------------------------------
N_VECTORS = 100_000
DIM = 384
K = 10
LOAD_CHUNK = 5_000
REPS = 3
SINGLE_QUERIES = {"quick": 200, "full": 1_000}
BATCHES_256 = {"quick": 2, "full": 8}
N_TEXTS = 2_000
TARGETS = {"batch256_qps_ratio_actor_vs_raw": (">=", 0.8), "single_query_added_p50_ms": ("<=", 1.5),
           "recall_at_10_actor_vs_raw": (">=", 1.0)}


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def real_texts(n: int) -> list[str]:
    """First paragraphs of standard-library docstrings: real English, offline, deterministic."""
    import importlib

    texts: list[str] = []
    seen: set[str] = set()
    skip = ("test", "idlelib", "tkinter", "turtle", "antigravity", "this", "lib2to3", "ensurepip", "venv", "__")
    for module_info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if module_info.name.startswith(skip) or not module_info.module_finder.path.startswith(sys.base_prefix):
            continue
        try:
            module = importlib.import_module(module_info.name)
        except Exception:  # noqa: BLE001 - some stdlib modules need platform extras
            continue
        for obj in documented(module):
            para = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ").strip()
            if 40 <= len(para) <= 1_000 and para not in seen:
                seen.add(para)
                texts.append(para)
            if len(texts) == n:
                return texts
    raise RuntimeError(f"found only {len(texts)} docstrings; need {n}")


def documented(module) -> list:
    """The module's own functions and classes, and the classes' methods, in name order."""
    found = []
    for _, obj in sorted(vars(module).items(), key=lambda kv: kv[0]):
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == module.__name__:
            found.append(obj)
            if inspect.isclass(obj):
                found += [m for _, m in sorted(vars(obj).items(), key=lambda kv: kv[0]) if inspect.isfunction(m)]
    return found


def rotated(paths: list, turn: int) -> list:
    """The paths in the order of this turn, each first as often as the others. A call right after another
    path's full scan of the index may find the CPU caches cold, so a fixed order would charge that to one path."""
    shift = turn % len(paths)
    return paths[shift:] + paths[:shift]


def interleaved_singles(calls: dict, queries: np.ndarray) -> dict[str, tuple[float, list[float]]]:
    """Per path: (queries per second, per-call latencies in ms). The paths take turns query by query,
    so a change in machine load hits them all alike."""
    latencies: dict[str, list[float]] = {path: [] for path in calls}
    for turn, q in enumerate(queries):
        for path in rotated(list(calls), turn):
            call = calls[path]
            t = time.perf_counter()
            call(q[None, :])
            latencies[path].append((time.perf_counter() - t) * 1e3)
    return {path: (1e3 * len(lat) / sum(lat), lat) for path, lat in latencies.items()}


def interleaved_batches(calls: dict, queries: np.ndarray) -> dict[str, float]:
    """Per path: queries per second over batches of 256, the paths taking turns batch by batch."""
    spent = dict.fromkeys(calls, 0.0)
    for turn, b in enumerate(range(0, len(queries), 256)):
        for path in rotated(list(calls), turn):
            t = time.perf_counter()
            calls[path](queries[b:b + 256])
            spent[path] += time.perf_counter() - t
    return {path: len(queries) / seconds for path, seconds in spent.items()}


def median_of_reps(measure) -> list:
    measure()  # warm-up
    return [measure() for _ in range(REPS)]


def row(name: str, value: float, unit: str) -> None:
    print(f"  {name:<44} {value:>12.3f} {unit}")


def bare_faiss_actor(ray, vectors: np.ndarray):
    """A second baseline: raw FAISS inside a plain async actor, returning numpy arrays. The memory actor
    minus this is what the memory actor's own code costs; this minus raw FAISS is the process hop."""
    @ray.remote(num_cpus=0)
    class BareFaiss:
        def __init__(self, vectors: np.ndarray, threads: int) -> None:
            self.threads = threads
            self.index = faiss.IndexFlatIP(DIM)
            self.index.add(vectors)

        async def search(self, q: np.ndarray, k: int):
            """The hits, and the milliseconds the search itself took inside this actor."""
            faiss.omp_set_num_threads(1 if len(q) < SERIAL_BELOW_QUERIES else self.threads)
            started = time.perf_counter()
            found = self.index.search(q, k)
            return found, (time.perf_counter() - started) * 1e3

    bare = BareFaiss.remote(vectors, os.cpu_count() or 1)
    ray.get(bare.search.remote(vectors[:1], K))
    return bare


def bench_index(actor, vectors: np.ndarray, ids: np.ndarray, mode: str, ray, token: str) -> dict[str, float]:
    raw = faiss.IndexFlatIP(DIM)
    raw.add(vectors)
    bare = bare_faiss_actor(ray, vectors)
    singles = unit_vectors(SINGLE_QUERIES[mode], seed=1)
    batch = unit_vectors(256 * BATCHES_256[mode], seed=2)

    loop = asyncio.new_event_loop()
    reader = MemoryReader(actor)

    def via_actor(q):
        return loop.run_until_complete(reader.search_vectors(q, k=K, namespace="bench", token=token))

    def via_actor_ray(q):
        return ray.get(actor.search_vectors.remote(q, k=K, namespace="bench", token=token))

    def via_raw(q):  # raw FAISS at its best: one thread for a single query, all of them for a batch
        faiss.omp_set_num_threads(1 if len(q) < SERIAL_BELOW_QUERIES else all_threads)
        return raw.search(q, K)

    inside_bare: list[float] = []  # the search's own time inside the bare actor, per single query

    def via_bare(q):
        found, search_ms = ray.get(bare.search.remote(q, K))
        if len(q) == 1:
            inside_bare.append(search_ms)
        return found

    all_threads = faiss.omp_get_max_threads()
    calls = {"raw": via_raw, "actor": via_actor, "actor_ray": via_actor_ray, "bare_actor": via_bare}
    single_runs = median_of_reps(lambda: interleaved_singles(calls, singles))
    batch_runs = median_of_reps(lambda: interleaved_batches(calls, batch))
    out: dict[str, float] = {}
    for path in calls:
        out[f"single_query_qps_{path}"] = statistics.median(run[path][0] for run in single_runs)
        for pct in (50, 99):
            out[f"single_query_p{pct}_ms_{path}"] = statistics.median(
                float(np.percentile(run[path][1], pct)) for run in single_runs)
        out[f"batch256_qps_{path}"] = statistics.median(run[path] for run in batch_runs)
        for key in (f"single_query_qps_{path}", f"single_query_p50_ms_{path}", f"batch256_qps_{path}"):
            row(key, out[key], "QPS" if "qps" in key else "ms")
    faiss.omp_set_num_threads(all_threads)
    queries = np.concatenate([singles, batch])
    _, expected = raw.search(queries, K)
    hits = via_actor(queries)
    out["recall_at_10_actor_vs_raw"] = float(np.mean([
        len({h.entry.id for h in got} & set(ids[want].tolist())) / K for got, want in zip(hits, expected)]))
    out["read_channel_used"] = reader.over_channel
    reader.close()
    loop.run_until_complete(asyncio.sleep(0))  # lets the closed channel's receiver finish
    loop.close()
    ray.kill(bare)
    out["single_query_added_p50_ms_vs_bare_actor"] = (out["single_query_p50_ms_actor"]
                                                      - out["single_query_p50_ms_bare_actor"])
    # The bare actor's round trip split: its search, timed inside it (warm-up included), and the rest, Ray's hop.
    out["single_query_p50_ms_bare_actor_search"] = float(np.percentile(inside_bare, 50))
    out["single_query_p50_ms_bare_actor_hop"] = (out["single_query_p50_ms_bare_actor"]
                                                 - out["single_query_p50_ms_bare_actor_search"])
    for key in ("single_query_p50_ms_bare_actor_search", "single_query_p50_ms_bare_actor_hop"):
        row(key, out[key], "ms")
    out["batch256_qps_ratio_actor_vs_bare_actor"] = out["batch256_qps_actor"] / out["batch256_qps_bare_actor"]
    out["batch256_qps_ratio_actor_vs_raw"] = out["batch256_qps_actor"] / out["batch256_qps_raw"]
    # Per repetition: the actor's p50 minus raw FAISS's p50; the figure is their median, with the spread.
    added = sorted(float(np.percentile(run["actor"][1], 50) - np.percentile(run["raw"][1], 50)) for run in single_runs)
    out["single_query_added_p50_ms_over_ray"] = statistics.median(
        float(np.percentile(run["actor_ray"][1], 50) - np.percentile(run["raw"][1], 50)) for run in single_runs)
    row("single_query_added_p50_ms_over_ray", out["single_query_added_p50_ms_over_ray"], "ms")
    out["single_query_added_p50_ms"] = statistics.median(added)
    out["single_query_added_p50_ms_min"], out["single_query_added_p50_ms_max"] = added[0], added[-1]
    out["single_query_added_p50_ms_reps"] = len(added)
    row("single_query_added_p50_ms (median of reps)", out["single_query_added_p50_ms"], "ms")
    row(f"  spread over {len(added)} reps", added[-1] - added[0], f"ms ({added[0]:+.2f} .. {added[-1]:+.2f})")
    # The same, as the median of per-query differences (the paths alternate query by query): less noisy.
    out["single_query_added_p50_ms_paired"] = statistics.median(
        float(np.median(np.subtract(run["actor"][1], run["raw"][1]))) for run in single_runs)
    return out


def bench_raw_ray_call(ray) -> float:
    """p50 of a no-op async actor call: the floor of any actor round trip here."""
    @ray.remote(num_cpus=0)
    class Echo:
        async def ping(self, x):
            return x

    echo = Echo.remote()
    q = unit_vectors(1, seed=3)
    runs = median_of_reps(lambda: interleaved_singles({"echo": lambda v: ray.get(echo.ping.remote(v))},
                                                      np.repeat(q, 300, axis=0)))
    ray.kill(echo)
    return statistics.median(float(np.percentile(run["echo"][1], 50)) for run in runs)


def bench_embedding(actor, texts: list[str], ray, token: str) -> dict[str, float]:
    from memory import NewEntry
    from memory._embed import Embedder

    embedder = Embedder()

    def in_process() -> float:
        start = time.perf_counter()
        embedder.encode(texts)
        return len(texts) / (time.perf_counter() - start)

    def through_actor() -> float:
        entries = [NewEntry(mission_id="bench", agent_id="bench", namespace="texts", topic="docs", text=t)
                   for t in texts]
        start = time.perf_counter()
        for b in range(0, len(entries), 500):
            ray.get(actor.post.remote(entries[b:b + 500], token=token))
        return len(texts) / (time.perf_counter() - start)

    out = {"embedding_texts_per_s": statistics.median(median_of_reps(in_process)),
           "embedding_texts_per_s_actor_post": statistics.median(median_of_reps(through_actor))}
    for key, value in out.items():
        row(key, value, "texts/s")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries (about 2 minutes on 2 cores)")
    parser.add_argument("--json", metavar="PATH", help="write every figure as one flat JSON object")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"

    import ray

    from memory import MemoryConfig, NewEntry, start_memory_actor
    from serving import mission_tokens

    cores = os.cpu_count() or 1
    print(f"bench_memory ({mode}): {N_VECTORS:,} x {DIM} unit vectors, flat IP index, k={K}; FAISS "
          f"{faiss.__version__} (1 thread per single query, {faiss.omp_get_max_threads()} per batch); "
          "all-MiniLM-L6-v2 on CPU; "
          f"{cores} cores; GPU: none used; median of {REPS} reps after a warm-up")
    data_dir = tempfile.mkdtemp(prefix="bench_memory_")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ray.init(num_cpus=max(4, cores), include_dashboard=False, log_to_driver=False)
    try:
        config = MemoryConfig(data_dir=data_dir, exact_below=N_VECTORS * 2, snapshot_every_writes=10_000,
                              max_batch=LOAD_CHUNK, max_k=K)
        actor = start_memory_actor(config, mission_id="bench")
        tokens = mission_tokens("bench")  # every memory call carries a capability token; minted once, up front
        token = tokens.agent("bench", now_s=time.time(), ttl_s=24 * 3600)
        ray.get(actor.grant.remote("bench", read=[], write=["bench", "texts"],
                                   token=tokens.control(now_s=time.time(), ttl_s=600)))
        vectors = unit_vectors(N_VECTORS, seed=0)
        start = time.perf_counter()
        ids = []
        for b in range(0, N_VECTORS, LOAD_CHUNK):
            chunk = [NewEntry(mission_id="bench", agent_id="bench", namespace="bench", topic="v", text=f"v{i}")
                     for i in range(b, b + LOAD_CHUNK)]
            receipts = ray.get(actor.post.remote(chunk, token=token, vectors=vectors[b:b + LOAD_CHUNK]))
            ids += [r.id for r in receipts]
        figures: dict[str, float | str | int] = {"load_s": time.perf_counter() - start}
        row("load 100k vectors through the actor", figures["load_s"], "s")
        figures["raw_ray_call_p50_ms"] = bench_raw_ray_call(ray)
        row("raw_ray_call_p50_ms", figures["raw_ray_call_p50_ms"], "ms")
        figures.update(bench_index(actor, vectors, np.array(ids), mode, ray, token))
        figures.update(bench_embedding(actor, real_texts(N_TEXTS), ray, token))
        figures.update({"load_before": load_before, "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())})
        figures.update({"mode": mode, "n_vectors": N_VECTORS, "dim": DIM, "k": K, "cores": cores, "gpu": "none",
                        "index": "faiss.IndexFlatIP", "embedding_model": "all-MiniLM-L6-v2", "reps": REPS})
    finally:
        ray.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)

    met = {key: (figures[key] >= bound if op == ">=" else figures[key] <= bound)
           for key, (op, bound) in TARGETS.items()}
    figures.update({f"{key}_target_met": ok for key, ok in met.items()})
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    print(f"bench_memory: batch-256 QPS actor/raw = {figures['batch256_qps_ratio_actor_vs_raw']:.2f}x (>= 0.8 "
          f"{'met' if met['batch256_qps_ratio_actor_vs_raw'] else 'MISSED'}) | single-query p50 added "
          f"{figures['single_query_added_p50_ms']:+.2f} ms, "
          f"median of {figures['single_query_added_p50_ms_reps']} reps, "
          f"range {figures['single_query_added_p50_ms_min']:+.2f}..{figures['single_query_added_p50_ms_max']:+.2f} "
          f"(<= 1.5 {'met' if met['single_query_added_p50_ms'] else 'MISSED'}; read channel "
          f"{'used' if figures['read_channel_used'] else 'NOT used'}; as Ray calls "
          f"{figures['single_query_added_p50_ms_over_ray']:+.2f} ms; "
          f"raw Ray call {figures['raw_ray_call_p50_ms']:.2f} ms) | recall@10 actor vs raw = "
          f"{figures['recall_at_10_actor_vs_raw']:.3f} "
          f"(= 1.0 {'met' if met['recall_at_10_actor_vs_raw'] else 'MISSED'})"
          f" | vs FAISS in a bare actor: p50 {figures['single_query_added_p50_ms_vs_bare_actor']:+.2f} ms, batch-256 "
          f"{figures['batch256_qps_ratio_actor_vs_bare_actor']:.2f}x (its search inside it "
          f"{figures['single_query_p50_ms_bare_actor_search']:.2f} ms, Ray's hop "
          f"{figures['single_query_p50_ms_bare_actor_hop']:.2f} ms)"
          f" | load {figures['load_before']} -> {figures['load_after']}"
          f" | embedding {figures['embedding_texts_per_s']:.0f} texts/s in process, "
          f"{figures['embedding_texts_per_s_actor_post']:.0f} texts/s posted through the actor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
