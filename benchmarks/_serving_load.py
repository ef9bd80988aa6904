"""bench_serving's load generators and peers: streaming chat over HTTP (any OpenAI server), over the
router's handle API and straight to a replica; vLLM's own server as a child process; and the engine
processes each phase must leave behind it dead."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from serving._engine_args import CPU_MAX_BATCHED_TOKENS

TOPICS = ["the ocean", "a bicycle", "coffee", "mountains", "a library", "rain", "trains", "the moon",
          "bread", "chess", "winter", "a garden", "music", "bridges", "clocks", "volcanoes"]
KV_CACHE_GB = 1
"""VLLM_CPU_KVCACHE_SPACE of every engine (the router's default `kv_cache_space_gb`)."""
MAX_MODEL_LEN = 2048
"""max_model_len of every engine (the router's default `max_context_tokens`)."""


ENGINE_EXTRA: dict[str, Any] = {}
"""More engine settings that every engine of a run gets alike (bench_serving's `--stream-interval`)."""


def add_stream_interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream-interval", type=int, default=1, help="vLLM's stream_interval for every engine "
                        "alike: tokens per streamed chunk after the first (default 1)")


def use_stream_interval(parser: argparse.ArgumentParser, interval: int) -> None:
    """`--stream-interval` into ENGINE_EXTRA, or the parser's error."""
    if interval < 1:
        parser.error(f"--stream-interval {interval}: vLLM sends at least one token per chunk; give 1 or more")
    if interval > 1:
        ENGINE_EXTRA["stream_interval"] = interval


def cpu_engine_settings() -> dict[str, Any]:
    """Every CPU engine's settings: the router's defaults on this machine, plus ENGINE_EXTRA."""
    return {"max_model_len": MAX_MODEL_LEN, "enforce_eager": True, "dtype": engine_dtype(),
            "max_num_batched_tokens": CPU_MAX_BATCHED_TOKENS, **ENGINE_EXTRA}


def cli_args(settings: dict[str, Any]) -> list[str]:
    """Engine settings as `vllm serve` flags."""
    args: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def router_for(concurrency: int, **settings: Any) -> dict[str, Any]:
    """Router settings that neither refuse nor hold back `concurrency` streams (4x in flight, 16x queued), plus
    `settings`."""
    return {"max_in_flight_per_model": 4 * concurrency, "max_queue": 16 * concurrency,
            "agent": {"max_in_flight": 4 * concurrency}, "request_timeout_s": 600, **settings}


def one_replica_for(concurrency: int, **resources: Any) -> dict[str, Any]:
    """One model replica that Serve lets take 4x `concurrency` calls, with `resources` (num_cpus, num_gpus)."""
    return {"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 4 * concurrency,
            "target_ongoing_requests": concurrency, **resources}


def engine_dtype() -> str:
    """dtype of every engine: the router's `auto` as its replica resolves it on this machine (serving._engine_args)."""
    from serving._engine_args import local_engine_dtype

    return local_engine_dtype("auto", on_gpu=False)


@dataclass
class Sample:
    ttft_s: float
    latency_s: float
    tokens: int


Call = Callable[[int, int], Awaitable[Sample]]
"""(request index, max_tokens) -> Sample."""


def prompt(index: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Write three sentences about {TOPICS[index % len(TOPICS)]}."}]


@functools.cache
def agent_tokens(mission_id: str = "bench", agents: int = 64) -> tuple[str, ...]:
    """Capability tokens of `agents` agents of one mission, minted once: the router verifies one per call."""
    from serving import mission_tokens

    tokens = mission_tokens(mission_id)
    return tuple(tokens.agent(f"agent-{n}", now_s=time.time(), ttl_s=24 * 3600) for n in range(agents))


def http_caller(client: httpx.AsyncClient, base_url: str, model: str) -> Call:
    """Streaming chat with `ignore_eos` against an OpenAI-compatible server; each worker sends its own agent's
    token as the bearer (the router's credential; the peers ignore it)."""
    async def call(index: int, max_tokens: int) -> Sample:
        body = {"model": model, "messages": prompt(index), "max_tokens": max_tokens, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
        headers = {"authorization": f"Bearer {agent_tokens()[index % 64]}"}
        start, first, tokens = time.perf_counter(), None, 0
        async with client.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{base_url}: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"{base_url}: error in the stream: {chunk['error']}")
                if first is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        end = time.perf_counter()
        return Sample((first or end) - start, end - start, tokens)

    return call


def handle_caller(stream: Callable[..., object], *, model: str = "default") -> Call:
    """Streaming chat through a router's handle API (`RouterClient.stream`, or a Router handle's chat_stream)."""
    from serving import ChatMessage, ChatRequest, ChatResult

    async def call(index: int, max_tokens: int) -> Sample:
        request = ChatRequest(model=model, max_tokens=max_tokens, ignore_eos=True,
                              messages=[ChatMessage(**m) for m in prompt(index)], token=agent_tokens()[index % 64])
        start, first, result = time.perf_counter(), None, None
        async for item in stream(request):
            if isinstance(item, ChatResult):
                result = item
            elif first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        return Sample((first or end) - start, end - start, result.usage.completion_tokens)

    return call


def direct_caller(replica_handle) -> Call:
    """One `run_batch` Serve call per request straight to the replica deployment: no router."""
    streaming = replica_handle.options(stream=True)

    async def call(index: int, max_tokens: int) -> Sample:
        body = {"messages": prompt(index), "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
        start, first, final = time.perf_counter(), None, None
        async for events in streaming.run_batch.remote([body]):
            for event in events:
                if first is None and event.get("delta"):
                    first = time.perf_counter()
                if event.get("done"):
                    final = event
        if "error" in final:
            raise RuntimeError(final["error"])
        end = time.perf_counter()
        return Sample((first or end) - start, end - start, final["completion_tokens"])

    return call


@dataclass(frozen=True)
class SpreadHttpLoad:
    """An OpenAI-compatible server driven by `pool`'s client processes, the clients split evenly between them:
    at thousands of streamed tokens a second one Python process reading the chunks is the limit, not the server."""

    base_url: str
    model: str
    pool: concurrent.futures.ProcessPoolExecutor
    processes: int

    async def level(self, concurrency: int, per_client: int, max_tokens: int) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        start_at = time.time() + 0.5  # every process starts its clients then
        shares = [range(p, concurrency, self.processes) for p in range(self.processes)]
        runs = await asyncio.gather(*[
            loop.run_in_executor(self.pool, _clients_in_this_process, self.base_url, self.model, share, per_client,
                                 max_tokens, start_at) for share in shares if share])
        wall_s = max(end for _, end in runs) - start_at
        return level_figures([sample for samples, _ in runs for sample in samples], wall_s)


def _clients_in_this_process(base_url: str, model: str, workers: range, per_client: int, max_tokens: int,
                             start_at: float) -> tuple[list[Sample], float]:
    """A SpreadHttpLoad process's share: its clients' samples and when the last one ended (epoch seconds)."""
    async def run() -> tuple[list[Sample], float]:
        limits = httpx.Limits(max_connections=max(64, 2 * len(workers)))
        async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as client:
            call = http_caller(client, base_url, model)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            samples = await asyncio.gather(*[_client(call, worker, per_client, max_tokens) for worker in workers])
            return [sample for batch in samples for sample in batch], time.time()

    return asyncio.run(run())


async def _client(call: Call, worker: int, per_client: int, max_tokens: int) -> list[Sample]:
    return [await call(worker * per_client + i, max_tokens) for i in range(per_client)]


async def run_level(call: Call | SpreadHttpLoad, concurrency: int, per_client: int, max_tokens: int
                    ) -> dict[str, float]:
    """`concurrency` clients, each sending `per_client` requests one after another; tok/s over the wall time."""
    if isinstance(call, SpreadHttpLoad):
        return await call.level(concurrency, per_client, max_tokens)
    start = time.perf_counter()
    samples = [s for batch in await asyncio.gather(*[_client(call, w, per_client, max_tokens)
                                                     for w in range(concurrency)]) for s in batch]
    return level_figures(samples, time.perf_counter() - start)


def level_figures(samples: list[Sample], wall_s: float) -> dict[str, float]:
    ttfts = sorted(s.ttft_s for s in samples)
    itls = [(s.latency_s - s.ttft_s) / (s.tokens - 1) for s in samples if s.tokens > 1]
    return {"tok_s": sum(s.tokens for s in samples) / wall_s, "ttft_p50_ms": 1000 * statistics.median(ttfts),
            "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
            "itl_ms": 1000 * statistics.median(itls) if itls else 0.0,
            "tokens_per_request": statistics.median(s.tokens for s in samples), "requests": len(samples)}


def engine_env() -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GB)}


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it answered {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


@contextlib.contextmanager
def vllm_server(model_dir: str, port: int, log_path: Path, timeout_s: float = 900,
                engine_args: list[str] | None = None) -> Iterator[str]:
    """vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`; `vllm serve` fails on the
    vllm-cpu distribution name) with the CPU engine settings, or `engine_args` in their place (a GPU engine's);
    stopped with its whole process group."""
    if engine_args is None:
        engine_args = cli_args(cpu_engine_settings())
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", "default", "--host", "127.0.0.1", "--port", str(port), *engine_args,
               "--disable-uvicorn-access-log"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env={**os.environ, **engine_env()}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout_s, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def exit_on_sigterm() -> None:
    """SIGTERM (`timeout`, a stopped job) exits through Python's cleanup, so the servers a benchmark started in their
    own process groups (vllm_server) are stopped by their context managers instead of outliving it on the GPU."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def engine_processes() -> list[psutil.Process]:
    """vLLM engine processes started under this process (the replicas' EngineCore and Worker children)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.name().startswith("VLLM::") or "vllm.entrypoints" in " ".join(proc.cmdline()):
                found.append(proc)
    return found


@contextlib.contextmanager
def engines_stopped(what: str, teardown: Callable[[], None], grace_s: float = 30) -> Iterator[None]:
    """Run the block, then `teardown`; the engine processes that ran before the teardown must be gone
    `grace_s` after it. Survivors (started by this benchmark) are killed by pid and named."""
    try:
        yield
    finally:
        engines = engine_processes()  # before the teardown: orphaned engines are no longer our children
        teardown()
        _, alive = psutil.wait_procs(engines, timeout=grace_s)
        for proc in alive:
            print(f"  {what}: engine process {proc.pid} outlived its server; killed", flush=True)
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _label(proc: psutil.Process) -> str:
    name = proc.name()
    if name.startswith("VLLM::"):
        return "engine_" + name.split("::", 1)[1].lower()
    title = " ".join(proc.cmdline())
    if "multiprocessing.spawn" in title and proc.ppid() == os.getpid():  # a SpreadHttpLoad process
        return "client"
    if "vllm.entrypoints" in title:
        return "vllm_api_server"
    if title.startswith("ray::ServeReplica:"):
        return "replica:" + title.split(":")[-1].split(".")[0].split(" ")[0]
    if title.startswith("ray::ProxyActor"):
        return "serve_proxy"
    return "other"


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process (the load generator) and each process it started, by role."""
    totals = {"client": sum(psutil.Process().cpu_times()[:2])}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            label = _label(proc)
            totals[label] = totals.get(label, 0.0) + sum(proc.cpu_times()[:2])
    return totals
