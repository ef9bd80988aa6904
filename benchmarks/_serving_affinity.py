"""bench_serving's prefix-affinity figures: two replicas, a shared-prefix workload (a few agents' long
system prompts, many tasks each), prefix affinity against load-based routing (power of two choices,
no key), with cold caches and with every replica already holding every prefix. vLLM's own prefix-cache
counters give the hit rate."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

from serving._affinity import preferred, prefix_key

AGENTS = 4
TASKS_PER_AGENT = 8
CONCURRENCY = 8
MAX_TOKENS = 8
SYSTEM_WORDS = 1000
"""About 1,000 tokens of system prompt per agent: prefill dominates TTFT."""
WORDS = ("market customer report launch budget risk review schedule supplier design quality metric team "
         "forecast region channel pricing survey partner contract audit roadmap feature feedback").split()


def system_prompt(agent: int) -> str:
    rng = random.Random(agent)
    return f"You are agent {agent}. " + " ".join(rng.choice(WORDS) for _ in range(SYSTEM_WORDS))


def workload(tag: str) -> list[list[dict[str, str]]]:
    """Tasks interleaved across agents, so that concurrent calls carry different prefixes."""
    return [[{"role": "system", "content": system_prompt(agent)},
             {"role": "user", "content": f"Task {tag}-{task}: summarise your role in one line."}]
            for task in range(TASKS_PER_AGENT) for agent in range(AGENTS)]


async def _replicas(handle) -> list[str]:
    seen: set[str] = set()
    for _ in range(40):
        seen.add((await handle.prefix_cache_stats.remote())["replica"])
        if len(seen) == 2:
            break
    return sorted(seen)


async def _counters(handle, replicas: list[str]) -> tuple[float, float]:
    stats = [await handle.prefix_cache_stats.remote(replica_id=r) for r in replicas]
    assert [s["replica"] for s in stats] == replicas, "a stats call reached the wrong replica"
    return sum(s["queries"] for s in stats), sum(s["hits"] for s in stats)


async def _one(streaming, messages, key: str | None) -> float:
    start = time.perf_counter()
    call = {"messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.0}
    first = None
    async for events in streaming.run_batch.remote([call], affinity_key=key):
        if first is None and any(e.get("delta") for e in events):
            first = time.perf_counter()
    return (first or time.perf_counter()) - start


async def _run(streaming, calls, affinity: bool) -> list[float]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(messages) -> float:
        async with gate:
            return await _one(streaming, messages, prefix_key(messages) if affinity else None)

    return await asyncio.gather(*[one(m) for m in calls])


async def _warm_every_replica(streaming, replicas: list[str]) -> None:
    """Send each agent's prefix to each replica: a key that rendezvous hashing maps to that replica."""
    keys = {}
    for i in range(1000):
        keys.setdefault(preferred(f"warm-{i}", replicas), f"warm-{i}")
        if len(keys) == len(replicas):
            break
    for key in keys.values():
        for messages in workload("warm")[:AGENTS]:
            await _one(streaming, messages, key)


async def measure(handle, *, reps: int) -> dict[str, float]:
    streaming = handle.options(stream=True)
    replicas = await _replicas(handle)
    if len(replicas) != 2:
        raise RuntimeError(f"expected 2 replicas, saw {replicas}")
    ttfts: dict[str, list[float]] = {}
    hits: dict[str, list[float]] = {}
    for rep in range(reps):
        for regime in ("cold", "warm"):
            for policy in ("affinity", "load"):
                await asyncio.gather(*[handle.reset_prefix_cache_of.remote(replica_id=r) for r in replicas])
                if regime == "warm":
                    await _warm_every_replica(streaming, replicas)
                before = await _counters(handle, replicas)
                times = await _run(streaming, workload(f"{regime}{rep}"), policy == "affinity")
                after = await _counters(handle, replicas)
                name = f"{regime}_{policy}"
                ttfts.setdefault(name, []).append(statistics.median(times))
                hits.setdefault(name, []).append((after[1] - before[1]) / max(1.0, after[0] - before[0]))
    figures = {}
    for name in ttfts:
        figures[f"prefix_affinity_ttft_p50_ms_{name}"] = 1000 * statistics.median(ttfts[name])
        figures[f"prefix_cache_hit_rate_{name}"] = statistics.median(hits[name])
        print(f"affinity {name:14} TTFT p50 {figures[f'prefix_affinity_ttft_p50_ms_{name}']:8.1f} ms, "
              f"prefix-cache hit rate {figures[f'prefix_cache_hit_rate_{name}']:.2f}", flush=True)
    for regime in ("cold", "warm"):
        figures[f"prefix_affinity_ttft_gain_{regime}"] = (figures[f"prefix_affinity_ttft_p50_ms_{regime}_load"]
                                                         / figures[f"prefix_affinity_ttft_p50_ms_{regime}_affinity"])
    return figures
