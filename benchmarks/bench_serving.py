"""bench_serving: the controlplane router beside what users would run instead, on the same engine.

In one run, one engine at a time, each started and stopped by the benchmark, same model and engine settings
(max_model_len 2048, enforce_eager, the router's dtype and CPU step size, 1 GiB KV cache, 1 CPU bundle):
  0. the ceiling: vLLM's offline `LLM.chat`, the c64 level's requests submitted at once, at most 64 in the batch
     (no server, no streaming);
  1. vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`);
  2. Ray Serve LLM's `build_openai_app`;
  3. this router over HTTP, over the handle API, with batching off (a second router on the same replica),
     and `direct` (one Serve call per request to the replica, no router); then cancellation and overload;
  4. two replicas on a shared-prefix workload: prefix affinity against load-based routing, cold and warm.
Streaming chat with ignore_eos, 64 output tokens (32 in --quick), c = 1, 16, 64 (--quick: the peers at 1 and 16,
the router and batching on/off at 64 too), a warm-up, then repetitions (medians). Every process runs at niceness 0.

    python benchmarks/bench_serving.py [--quick] [--json PATH] [--only PHASES]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray runs its workers at niceness 15; the peers started outside Ray run at 0. One niceness for all, or a busy
# machine decides the comparison.
os.environ.setdefault("RAY_worker_niceness", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _serving_affinity as affinity  # noqa: E402
from benchmarks._ports import free_port  # noqa: E402
from benchmarks._ray_start import start_ray  # noqa: E402
from benchmarks._serving_load import (  # noqa: E402
    ENGINE_EXTRA,
    KV_CACHE_GB,
    MAX_MODEL_LEN,
    Call,
    SpreadHttpLoad,
    add_stream_interval,
    cpu_engine_settings,
    cpu_seconds,
    direct_caller,
    engine_dtype,
    engine_env,
    engines_stopped,
    exit_on_sigterm,
    handle_caller,
    http_caller,
    run_level,
    use_stream_interval,
    vllm_server,
    wait_http,
)
from serving._engine_cores import engine_worker_cores, off_cores  # noqa: E402

LEVELS = (1, 16, 64)
MAX_TOKENS = {"quick": 32, "full": 64}
ONLY_AT = {  # the levels each path runs at; the required keys need c16 everywhere, c64 for batching on/off
    "quick": {"vllm_server": (1, 16), "serve_llm": (1, 16), "router_http": (1, 16, 64), "direct": (16,),
              "router_nobatch": (16, 64)},
    "full": {"direct": (16,), "router_nobatch": (16, 64)},
}
REPS = {"quick": 1, "full": 3}
PER_CLIENT = {"quick": 1, "full": 2}
APP = "bench-router"
PHASES = ("offline", "vllm", "serve_llm", "router", "affinity")
CPU_PROFILE_LEVEL = 16


def router_config(model_dir: str, *, batching: bool = True, replicas: int = 1):
    from controlplane.config import ServingConfig

    model = {"kind": "vllm", "max_context_tokens": MAX_MODEL_LEN, "model_path": model_dir,
             "kv_cache_space_gb": KV_CACHE_GB, "reserve_engine_cores": True,  # the setting for a node that serves
             "engine_kwargs": dict(ENGINE_EXTRA),
             "replicas": {"min_replicas": replicas, "max_replicas": replicas, "num_cpus": 1,
                          "max_ongoing_requests": 1024, "target_ongoing_requests": 256}}
    router = {"max_in_flight_per_model": 1024, "max_queue": 4096, "agent": {"max_in_flight": 1024},
              "request_timeout_s": 1800}  # a loaded 2-core machine can take minutes at c64
    if not batching:
        router.update(batch_max_size=1, batch_wait_s=0.0)
    return ServingConfig.model_validate({"router": router, "models": {"default": model}})


def _cpu_per_token(path: str, level: int, before: dict[str, float], after: dict[str, float],
                   row: dict[str, float]) -> dict[str, float]:
    """CPU milliseconds per generated token in each process role: where the time goes."""
    tokens = row["tokens_per_request"] * row["requests"]
    used = {role: after[role] - before.get(role, 0.0) for role in after}
    shown = {role: 1000 * cpu_s / tokens for role, cpu_s in sorted(used.items()) if cpu_s > 0.01}
    print(f"  {path} CPU ms/token at c{level}: "
          + ", ".join(f"{role} {ms:.2f}" for role, ms in shown.items()), flush=True)
    return {f"{path}_cpu_ms_per_token_c{level}_{role}": ms for role, ms in shown.items()}


async def measure(paths: dict[str, Call | SpreadHttpLoad], levels: tuple[int, ...], mode: str,
                  profile_level: int = CPU_PROFILE_LEVEL) -> dict[str, float]:
    """Each path at each level (or at its `only_at` levels), repetitions interleaved across paths (same
    noise for all); medians; CPU per token of each process role at `profile_level`. The load generator keeps
    off the engine workers' cores, as remote clients would."""
    with off_cores(engine_worker_cores(psutil.Process())) as moved:
        print(f"  load generator: {moved} threads kept off the engine workers' cores", flush=True)
        return await _measure(paths, levels, mode, profile_level)


async def _measure(paths: dict[str, Call | SpreadHttpLoad], levels: tuple[int, ...], mode: str, profile_level: int
                   ) -> dict[str, float]:
    figures: dict[str, float] = {}
    print(f"{'path':14} {'conc':>5} {'tok/s':>9} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'ITL ms':>8} "
          f"{'tokens':>6}", flush=True)
    for call in paths.values():  # warm-up
        await run_level(call, 2, 1, 16)
    for concurrency in levels:
        here = {name: call for name, call in paths.items() if concurrency in ONLY_AT[mode].get(name, levels)}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in here}
        for rep in range(REPS[mode]):
            for name, call in here.items():
                before = cpu_seconds()
                runs[name].append(await run_level(call, concurrency, PER_CLIENT[mode], MAX_TOKENS[mode]))
                if rep == 0 and concurrency == profile_level:
                    figures.update(_cpu_per_token(name, profile_level, before, cpu_seconds(), runs[name][-1]))
        for name, rows in runs.items():
            row = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            figures.update({f"{name}_{key}_c{concurrency}": value for key, value in row.items()})
            print(f"{name:14} {concurrency:>5} {row['tok_s']:>9.1f} {row['ttft_p50_ms']:>12.1f} "
                  f"{row['ttft_p99_ms']:>12.1f} {row['itl_ms']:>8.1f} {row['tokens_per_request']:>6.0f}", flush=True)
    return figures


async def http_paths(base_urls: dict[str, str], levels, mode, *, handles: dict[str, Call] | None = None,
                     profile_level: int = CPU_PROFILE_LEVEL, client_processes: int = 1) -> dict[str, float]:
    """`measure` of these OpenAI-compatible servers, and of `handles` beside them, over one HTTP client; or,
    with `client_processes` > 1, each server's clients spread over that many client processes."""
    import httpx

    if client_processes > 1:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(client_processes, mp_context=spawn) as pool:
            paths = {name: SpreadHttpLoad(url, "default", pool, client_processes) for name, url in base_urls.items()}
            return await measure(paths | (handles or {}), levels, mode, profile_level)
    limits = httpx.Limits(max_connections=max(256, 2 * max(levels)))
    async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as client:
        paths = {name: http_caller(client, url, "default") for name, url in base_urls.items()} | (handles or {})
        return await measure(paths, levels, mode, profile_level)


def phase_offline(model_dir: str, mode: str, log_dir: Path) -> dict[str, float]:
    """vLLM's offline throughput on the c64 level's requests (64 clients x PER_CLIENT), all submitted at once, at
    most 64 in the engine's batch."""
    from benchmarks._serving_offline import offline_tok_s

    requests = LEVELS[-1] * PER_CLIENT[mode]
    rates = offline_tok_s(model_dir, requests=requests, concurrency=LEVELS[-1], max_tokens=MAX_TOKENS[mode],
                          reps=REPS[mode], log_path=log_dir / "offline.log")
    print(f"{'offline':14} {requests:>5} {statistics.median(rates):>9.1f}  (requests at once; reps "
          f"{[round(r, 1) for r in rates]})", flush=True)
    return {"offline_tok_s": statistics.median(rates), "offline_requests": requests}


def phase_vllm_server(model_dir: str, levels, mode, port: int, log_dir: Path) -> dict[str, float]:
    start = time.monotonic()
    with vllm_server(model_dir, port, log_dir / "vllm_server.log") as base_url:
        figures = {"vllm_server_startup_s": time.monotonic() - start}
        figures.update(asyncio.run(http_paths({"vllm_server": base_url}, levels, mode)))
    return figures


def phase_serve_llm(model_dir: str, levels, mode, http_port: int) -> dict[str, float]:
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    config = LLMConfig(model_loading_config={"model_id": "default", "model_source": model_dir},
                       engine_kwargs=cpu_engine_settings(),
                       placement_group_config={"bundles": [{"CPU": 1}]},
                       runtime_env={"env_vars": engine_env()})
    start = time.monotonic()
    with engines_stopped("serve_llm", lambda: serve.delete("serve-llm")):
        serve.run(build_openai_app({"llm_configs": [config]}), name="serve-llm", route_prefix="/serve-llm")
        base_url = f"http://127.0.0.1:{http_port}/serve-llm/v1"
        wait_http(f"{base_url}/models", 120)
        figures = {"serve_llm_startup_s": time.monotonic() - start}
        figures.update(asyncio.run(http_paths({"serve_llm": base_url}, levels, mode)))
    return figures


def build_router_app(model_dir: str):
    """The router app plus a second, handle-only router with batching off on the same replica."""
    from ray import serve

    from serving._client import ROUTER_DEPLOYMENT
    from serving._deploy import ROUTER_ENV, _vllm_deployment
    from serving._router import Router
    from serving._secrets import secret_file_env

    on, off = router_config(model_dir), router_config(model_dir, batching=False)
    replica = _vllm_deployment("default", on.models["default"], on.router.affinity_busy_at)
    options = {"ray_actor_options": {"num_cpus": 0, "runtime_env": {"env_vars": {**ROUTER_ENV, **secret_file_env()}}}}
    no_batch = serve.deployment(NoBatchRouter, name="RouterNoBatch", max_ongoing_requests=Router.max_ongoing_requests,
                                **options).bind(
        off.model_dump(mode="json"), replica)
    return Router.options(name=ROUTER_DEPLOYMENT, **options).bind(
        on.model_dump(mode="json"), {"default": replica, "_no_batch": no_batch})


class NoBatchRouter:
    """The router's core with batching off (batch_max_size 1: one Serve call per call), handle API only.
    One app may hold one FastAPI ingress, so this is not the Router class itself. It checks each call's token
    as the router does, and takes as many calls at once as the router (Serve's default, 5, capped it before
    2026-12-04, so the batcher's gains measured before then are gains over 5 calls in flight)."""

    def __init__(self, config: dict, replica) -> None:
        from controlplane.config import ServingConfig
        from serving._auth import Authenticator
        from serving._batcher import Batcher
        from serving._core import RouterCore
        from serving._keys import ApiKeyStore
        from serving._secrets import load_or_create_root_secret

        config = ServingConfig.model_validate(config)
        batcher = Batcher(replica, max_size=config.router.batch_max_size, wait_s=config.router.batch_wait_s)
        self._core = RouterCore(config, {"default": batcher})
        self._auth = Authenticator(root_secret=load_or_create_root_secret(),
                                   keys=ApiKeyStore(config.router.auth.api_keys_file))

    async def chat_stream(self, request):
        from serving._router import _call_of, _result
        from serving._tool_calls import ReplyAssembler

        identity = self._auth.for_handle(request.token, request.priority, now_s=time.time())
        reply = ReplyAssembler()
        async for event in self._core.stream(_call_of(request, identity)):
            reply.add(event)
            if event.get("done"):
                yield _result(reply)
            elif event.get("delta"):
                yield event["delta"]


def phase_router(model_dir: str, levels, mode, http_port: int) -> dict[str, float]:
    from ray import serve

    from benchmarks import _serving_cancel as cancel
    from serving import RouterClient

    start = time.monotonic()
    with engines_stopped("router", lambda: serve.delete(APP)):
        serve.run(build_router_app(model_dir), name=APP, route_prefix=f"/{APP}")
        figures = {"router_startup_s": time.monotonic() - start}
        client = RouterClient(APP)
        replica = serve.get_deployment_handle("vllm:default", APP)
        no_batch = serve.get_deployment_handle("RouterNoBatch", APP).options(stream=True)
        base_url = f"http://127.0.0.1:{http_port}/{APP}/v1"

        async def http_and_handles() -> dict[str, float]:
            import httpx

            async with httpx.AsyncClient(timeout=httpx.Timeout(600),
                                         limits=httpx.Limits(max_connections=256)) as http:
                paths = {"router_http": http_caller(http, base_url, "default"),
                         "router_handle": handle_caller(client.stream),
                         "router_nobatch": handle_caller(lambda r: no_batch.chat_stream.remote(r)),
                         "direct": direct_caller(replica)}
                figures = await measure(paths, levels, mode)
            stats = await client.batch_stats()
            figures["router_calls_per_serve_call"] = stats["default"]["calls"] / max(1, stats["default"]["batches"])
            trials = 4 if mode == "quick" else 10
            figures.update(await cancel.cancel_to_abort(client, replica, base_url, trials=trials))
            figures.update(await cancel.overload_recovery(client, replica))
            return figures

        figures.update(asyncio.run(http_and_handles()))
    return figures


def phase_affinity(model_dir: str, mode: str) -> dict[str, float]:
    from ray import serve

    from serving import deploy

    start = time.monotonic()
    with engines_stopped("affinity", lambda: serve.delete(APP)):
        deploy(router_config(model_dir, replicas=2), app_name=APP, route_prefix=f"/{APP}")
        figures = {"affinity_startup_s": time.monotonic() - start}
        figures.update(asyncio.run(affinity.measure(serve.get_deployment_handle("vllm:default", APP),
                                                    reps=1 if mode == "quick" else 3)))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, one request per client")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases of {PHASES}")
    parser.add_argument("--model-dir", help="checkpoint; default: the converted SmolLM2-135M-Instruct")
    parser.add_argument("--append", action="store_true", help="add to the figures already in --json (phases run "
                        "as separate invocations)")
    add_stream_interval(parser)
    args = parser.parse_args(argv)
    use_stream_interval(parser, args.stream_interval)
    exit_on_sigterm()
    mode = "quick" if args.quick else "full"
    phases = args.only.split(",")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import ray
    import vllm
    from ray import serve

    from controlplane._model_cache import default_model_path
    from serving._deploy import start_serve

    model_dir = args.model_dir or str(default_model_path())
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_serving"
    log_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {
        "model": Path(model_dir).name, "engine": f"vllm {vllm.__version__}", "cores": os.cpu_count(), "gpu": False,
        "dtype": engine_dtype(), "mode": mode, "max_tokens": MAX_TOKENS[mode], "reps": REPS[mode],
        "levels": list(LEVELS), "load_before": _load(), "niceness": os.nice(0),
        "stream_interval": args.stream_interval}
    if args.append and args.json and args.json.exists():
        figures = {**json.loads(args.json.read_text()), **figures}
    started = time.monotonic()

    def run_phase(name: str, phase, *phase_args) -> None:
        if name not in phases:
            return
        figures[f"{name}_load_before"] = _load()
        figures.update(phase(*phase_args))
        figures[f"{name}_load_after"] = _load()
        if args.json:  # partial results survive a later phase's failure
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=1))

    run_phase("offline", phase_offline, model_dir, mode, log_dir)
    run_phase("vllm", phase_vllm_server, model_dir, LEVELS, mode, free_port(), log_dir)
    if not set(phases) & {"serve_llm", "router", "affinity"}:
        figures["load_after"] = _load()
        return report(figures, args.json)
    start_ray(num_cpus=16)
    try:
        http_port = free_port()
        start_serve(http_port=http_port)
        run_phase("serve_llm", phase_serve_llm, model_dir, LEVELS, mode, http_port)
        run_phase("router", phase_router, model_dir, LEVELS, mode, http_port)
        run_phase("affinity", phase_affinity, model_dir, mode)
    finally:
        with engines_stopped("shutdown", lambda: (serve.shutdown(), ray.shutdown())):
            pass
    figures["wall_s"] = time.monotonic() - started
    figures["load_after"] = _load()
    return report(figures, args.json)


def _ratio(figures: dict, top: str, bottom: str) -> float | None:
    return figures[top] / figures[bottom] if top in figures and bottom in figures else None


def _diff(figures: dict, a: str, b: str) -> float | None:
    return figures[a] - figures[b] if a in figures and b in figures else None


def report(figures: dict, json_path: Path | None) -> int:
    derived = {
        "throughput_ratio_vs_vllm_server_c16": _ratio(figures, "router_http_tok_s_c16", "vllm_server_tok_s_c16"),
        "ttft_p50_overhead_ms_vs_vllm_server_c16": _diff(figures, "router_http_ttft_p50_ms_c16",
                                                         "vllm_server_ttft_p50_ms_c16"),
        "throughput_ratio_vs_serve_llm_c16": _ratio(figures, "router_http_tok_s_c16", "serve_llm_tok_s_c16"),
        "handle_throughput_ratio_vs_vllm_server_c16": _ratio(figures, "router_handle_tok_s_c16",
                                                             "vllm_server_tok_s_c16"),
        "throughput_ratio_vs_vllm_server_c64": _ratio(figures, "router_http_tok_s_c64", "vllm_server_tok_s_c64"),
        "batcher_gain_c64": _ratio(figures, "router_handle_tok_s_c64", "router_nobatch_tok_s_c64"),
        "batcher_gain_c16": _ratio(figures, "router_handle_tok_s_c16", "router_nobatch_tok_s_c16"),
        "throughput_ratio_router_vs_direct_c16": _ratio(figures, "router_handle_tok_s_c16", "direct_tok_s_c16"),
        "ttft_p50_overhead_ms_c16": _diff(figures, "router_handle_ttft_p50_ms_c16", "direct_ttft_p50_ms_c16"),
        "batching_gain_c16_vs_c1": _ratio(figures, "router_handle_tok_s_c16", "router_handle_tok_s_c1"),
        "router_vs_offline_tok_s": _ratio(figures, "router_http_tok_s_c64", "offline_tok_s"),
        "router_handle_vs_offline_tok_s": _ratio(figures, "router_handle_tok_s_c64", "offline_tok_s"),
        "vllm_server_vs_offline_tok_s": _ratio(figures, "vllm_server_tok_s_c64", "offline_tok_s"),
    }
    figures.update(derived)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=1))

    def show(key: str, fmt: str, unit: str) -> str:
        value = figures.get(key)
        return "n/a" if value is None else format(value, fmt) + unit

    print(f"serving | {figures['model']} on {figures['engine']}, {figures['cores']} cores, gpu=False, "
          f"{figures['mode']}, {figures['max_tokens']} tokens, "
          f"load {figures['load_before']} -> {figures['load_after']} | "
          f"router(HTTP)/vLLM server tok/s c16: {show('throughput_ratio_vs_vllm_server_c16', '.3f', 'x')} (>= 0.95) | "
          f"TTFT p50 vs vLLM server c16: {show('ttft_p50_overhead_ms_vs_vllm_server_c16', '+.1f', ' ms')} (<= 30) | "
          f"router/Serve LLM c16: {show('throughput_ratio_vs_serve_llm_c16', '.3f', 'x')} (>= 1.1) | "
          f"batcher on/off c64: {show('batcher_gain_c64', '.3f', 'x')} | "
          f"cancel->abort p95: {show('cancel_to_engine_abort_s_p95', '.3f', ' s')} (<= 1) | "
          f"overload recovery: {show('overload_recovery_s', '.2f', ' s')} (<= 5) | "
          f"affinity TTFT gain cold: {show('prefix_affinity_ttft_gain_cold', '.2f', 'x')} (>= 1.3), "
          f"warm: {show('prefix_affinity_ttft_gain_warm', '.2f', 'x')} | "
          f"c64 tok/s over offline vLLM: router(HTTP) {show('router_vs_offline_tok_s', '.3f', 'x')}, "
          f"handle {show('router_handle_vs_offline_tok_s', '.3f', 'x')}, "
          f"vLLM server {show('vllm_server_vs_offline_tok_s', '.3f', 'x')} | "
          f"router/direct c16: {show('throughput_ratio_router_vs_direct_c16', '.3f', 'x')}, "
          f"TTFT {show('ttft_p50_overhead_ms_c16', '+.1f', ' ms')}, batching c16/c1: "
          f"{show('batching_gain_c16_vs_c1', '.2f', 'x')}", flush=True)
    return 0


def _load() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, so every figure carries them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
