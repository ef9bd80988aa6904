"""bench_serving: the same vLLM engine, called directly and through the controlplane router.

Direct = one Serve call per request straight to the vLLM replica deployment (ray.serve.llm's LLMServer
with our `run_batch` entry point), no router. Router = `RouterClient.stream` (the handle API agents use):
admission, priority gate, breaker, batching, affinity routing, accounting, then the same replica.
Both paths stream, so TTFT and inter-token latency are measured at the client.

    python benchmarks/bench_serving.py [--quick] [--json PATH] [--gpu]

--gpu runs the same code on a CUDA machine with dummy weights (no hub there) and also measures offline
vLLM (`vllm.LLM.generate`) on the same prompts in the same run, for `throughput_ratio_router_vs_offline`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Settings.
CPU_CONCURRENCY = (1, 4, 16)
GPU_CONCURRENCY = (1, 16, 256)
MAX_TOKENS = {"quick": 32, "full": 64, "gpu": 128}
REQUESTS_PER_CLIENT = {"quick": 2, "full": 4, "gpu": 4}
REPS = {"quick": 3, "full": 5, "gpu": 3}
TOPICS = ["the ocean", "a bicycle", "coffee", "mountains", "a library", "rain", "trains", "the moon",
          "bread", "chess", "winter", "a garden", "music", "bridges", "clocks", "volcanoes"]
APP_NAME = "bench-serving"


@dataclass
class Sample:
    ttft_s: float
    latency_s: float
    tokens: int
    inner_ttft_s: float | None = None
    """Router path only: TTFT seen inside the router (admission to first token), to split the overhead."""


def prompt(index: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Write three sentences about {TOPICS[index % len(TOPICS)]}."}]


def serving_config(gpu: bool, model_dir: str | None):
    from controlplane.config import ServingConfig

    model = {"kind": "vllm", "max_context_tokens": 2048, "model_path": model_dir,
             "replicas": {"num_cpus": 1, "max_ongoing_requests": 1024, "target_ongoing_requests": 256}}
    if gpu:
        model.update(load_format="dummy", kv_cache_space_gb=None, gpu_memory_utilization=0.85,
                     replicas={**model["replicas"], "num_gpus": 1}, engine_kwargs={"enforce_eager": False})
    router = {"max_in_flight_per_model": 1024, "max_queue": 4096, "agent": {"max_in_flight": 1024},
              "stream_interval_s": 0.05 if gpu else 0.0}
    return ServingConfig.model_validate({"router": router, "models": {"default": model}})


async def direct_call(handle, index: int, max_tokens: int) -> Sample:
    start, first, final = time.perf_counter(), None, None
    call = {"messages": prompt(index), "max_tokens": max_tokens, "temperature": 0.0}
    async for events in handle.options(stream=True).run_batch.remote([call]):
        for event in events:
            if first is None and event.get("delta"):
                first = time.perf_counter()
            if event.get("done"):
                final = event
    if "error" in final:
        raise RuntimeError(final["error"])
    end = time.perf_counter()
    return Sample((first or end) - start, end - start, final["completion_tokens"])


@functools.cache
def agent_tokens() -> list[str]:
    """Capability tokens of 16 agents of mission `bench`, minted once: the router verifies one per call."""
    from serving import mission_tokens

    tokens = mission_tokens("bench")
    return [tokens.agent(f"agent-{n}", now_s=time.time(), ttl_s=24 * 3600) for n in range(16)]


async def router_call(client, index: int, max_tokens: int) -> Sample:
    from serving import ChatMessage, ChatRequest

    request = ChatRequest(model="default", max_tokens=max_tokens, messages=[ChatMessage(**m) for m in prompt(index)],
                          token=agent_tokens()[index % 16])
    start, first, result = time.perf_counter(), None, None
    async for item in client.stream(request):
        if isinstance(item, str):
            first = first or time.perf_counter()
        else:
            result = item
    end = time.perf_counter()
    return Sample((first or end) - start, end - start, result.usage.completion_tokens, result.ttft_s)


async def run_level(call, concurrency: int, per_client: int, max_tokens: int) -> dict[str, float]:
    async def client(worker: int) -> list[Sample]:
        return [await call(worker * per_client + i, max_tokens) for i in range(per_client)]

    start = time.perf_counter()
    samples = [s for batch in await asyncio.gather(*[client(w) for w in range(concurrency)]) for s in batch]
    wall_s = time.perf_counter() - start
    ttfts = sorted(s.ttft_s for s in samples)
    itls = [(s.latency_s - s.ttft_s) / (s.tokens - 1) for s in samples if s.tokens > 1]
    row = {"tok_s": sum(s.tokens for s in samples) / wall_s, "ttft_p50_ms": 1000 * statistics.median(ttfts),
           "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
           "itl_ms": 1000 * statistics.median(itls) if itls else 0.0}
    if samples[0].inner_ttft_s is not None:
        row["inner_ttft_p50_ms"] = 1000 * statistics.median(s.inner_ttft_s for s in samples)
    return row


def offline_tok_s(model_dir: str, n_requests: int, max_tokens: int) -> float:
    """Offline vLLM on the same prompts (GPU mode): the ceiling the router is compared with."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, load_format="dummy", gpu_memory_utilization=0.85, max_model_len=2048)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    conversations = [prompt(i) for i in range(n_requests)]
    llm.chat(conversations[:8], params)  # warm-up
    start = time.perf_counter()
    outputs = llm.chat(conversations, params)
    tok_s = sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start)
    del llm
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    return tok_s


def measure(mode: str, levels: tuple[int, ...], direct, router) -> dict[str, float]:
    figures: dict[str, float] = {}
    max_tokens, per_client = MAX_TOKENS[mode], REQUESTS_PER_CLIENT[mode]
    print(f"{'path':8} {'conc':>5} {'tok/s':>9} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'ITL ms':>8}", flush=True)
    for concurrency in levels:
        reps: dict[str, list[dict[str, float]]] = {"direct": [], "router": []}
        for _ in range(REPS[mode]):
            for path, call in (("direct", direct), ("router", router)):  # interleaved: same noise for both
                reps[path].append(asyncio.run(run_level(call, concurrency, per_client, max_tokens)))
        for path, runs in reps.items():
            row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            figures.update({f"{path}_{key}_c{concurrency}": value for key, value in row.items()})
            print(f"{path:8} {concurrency:>5} {row['tok_s']:>9.1f} {row['ttft_p50_ms']:>12.1f} "
                  f"{row['ttft_p99_ms']:>12.1f} {row['itl_ms']:>8.1f}", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 2-3 minutes on 2 cores)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--gpu", action="store_true", help="CUDA machine, dummy weights, plus offline vLLM")
    parser.add_argument("--model-dir", help="checkpoint (GPU mode: config + tokenizer for dummy weights)")
    args = parser.parse_args(argv)
    mode = "gpu" if args.gpu else "quick" if args.quick else "full"
    levels = GPU_CONCURRENCY if args.gpu else CPU_CONCURRENCY

    import ray
    import vllm
    from ray import serve

    from controlplane._model_cache import default_model_path
    from serving import deploy

    model_dir = args.model_dir or str(default_model_path())
    figures: dict[str, float | str | int | bool] = {
        "model": Path(model_dir).name, "engine": f"vllm {vllm.__version__}", "cores": os.cpu_count(),
        "gpu": args.gpu, "mode": mode, "max_tokens": MAX_TOKENS[mode], "reps": REPS[mode]}
    if args.gpu:
        figures["offline_tok_s"] = offline_tok_s(model_dir, levels[-1] * REQUESTS_PER_CLIENT[mode], MAX_TOKENS[mode])
    ray.init(num_cpus=max(16, os.cpu_count() or 1), num_gpus=1 if args.gpu else 0, include_dashboard=False,
             log_to_driver=False)
    try:
        client = deploy(serving_config(args.gpu, model_dir), app_name=APP_NAME, http_port=_free_port(),
                        route_prefix=f"/{APP_NAME}")
        replica = serve.get_deployment_handle("vllm:default", APP_NAME)

        async def direct(index, max_tokens):
            return await direct_call(replica, index, max_tokens)

        async def router(index, max_tokens):
            return await router_call(client, index, max_tokens)

        for call in (direct, router):  # warm-up
            asyncio.run(run_level(call, 4, 1, MAX_TOKENS[mode]))
        figures.update(measure(mode, levels, direct, router))
        figures["router_batches"] = asyncio.run(client.batch_stats())["default"]["batches"]
        figures["router_calls"] = asyncio.run(client.batch_stats())["default"]["calls"]
    finally:
        serve.shutdown()
        ray.shutdown()
    return report(figures, levels, args.json)


def report(figures: dict, levels: tuple[int, ...], json_path: Path | None) -> int:
    low = levels[0]
    for top in sorted({16, levels[-1]}):  # the required keys are at c16; GPU mode adds its top level
        figures[f"throughput_ratio_router_vs_direct_c{top}"] = (figures[f"router_tok_s_c{top}"]
                                                                / figures[f"direct_tok_s_c{top}"])
        figures[f"ttft_p50_overhead_ms_c{top}"] = (figures[f"router_ttft_p50_ms_c{top}"]
                                                   - figures[f"direct_ttft_p50_ms_c{top}"])
        figures[f"batching_gain_c{top}_vs_c{low}"] = figures[f"router_tok_s_c{top}"] / figures[f"router_tok_s_c{low}"]
    if "offline_tok_s" in figures:
        figures["throughput_ratio_router_vs_offline"] = figures[f"router_tok_s_c{levels[-1]}"] / figures["offline_tok_s"]
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=1))
    print(f"serving | {figures['model']} on {figures['engine']}, {figures['cores']} cores, gpu={figures['gpu']} | "
          f"router/direct tok/s at c16: {figures['throughput_ratio_router_vs_direct_c16']:.3f}x (target >= 0.9) | "
          f"TTFT p50 overhead at c16: {figures['ttft_p50_overhead_ms_c16']:+.1f} ms (target <= 15) | "
          f"batching gain c16/c1: {figures['batching_gain_c16_vs_c1']:.2f}x (target >= 4) | "
          f"{figures['router_calls'] / max(1, figures['router_batches']):.2f} calls per Serve call"
          + (f" | router/offline: {figures['throughput_ratio_router_vs_offline']:.3f}x" if "offline_tok_s" in figures
             else ""))
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())
