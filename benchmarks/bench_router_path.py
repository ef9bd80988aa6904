"""bench_router_path: how many tokens a second the router's path carries when the engine is fast.

On a GPU the engine steps every sequence of its batch together, a token each every few milliseconds (one H200,
SmolLM2-1.7B's shape, 256 sequences: about 15 ms, docs/benchmarks.md); every token then crosses the replica,
the router and, over HTTP, Serve's proxy, each a Python process. This benchmark stands a scripted engine that
steps at that pace (`step_s`: every running call of the replica gets its next word each step) behind the real
router, so no GPU is needed and the engine costs almost nothing, and measures what reaches the clients against
the engine's pace (C calls x one token per step):
  - `no_router`: one Serve call per request to the replica (bench_serving's `direct`);
  - the router over the handle API, and over HTTP through Serve's proxy.
Streaming chat, 64 words a reply, C/4 and C clients x 2 requests each, a warm-up, three repetitions, medians, and
the CPU per generated token of each process at C.

    python benchmarks/bench_router_path.py [--concurrency 256] [--step-ms 15] [--router-replicas 1]
        [--stream-interval-ms 0] [--client-processes 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_worker_niceness", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._ports import free_port  # noqa: E402
from benchmarks._ray_start import start_ray  # noqa: E402
from benchmarks._serving_load import direct_caller, handle_caller, one_replica_for, router_for  # noqa: E402
from benchmarks.bench_serving import MAX_TOKENS, http_paths  # noqa: E402

APP = "bench-path"
REPLY = " ".join(f"word{index}" for index in range(MAX_TOKENS["full"]))


def router_config(concurrency: int, step_s: float, router_replicas: int, stream_interval_s: float):
    from controlplane.config import ServingConfig

    model = {"kind": "scripted", "step_s": step_s, "replies": [{"match": ".", "text": REPLY}],
             "replicas": one_replica_for(concurrency, num_cpus=0)}
    router = router_for(concurrency, replicas=router_replicas, stream_interval_s=stream_interval_s)
    return ServingConfig.model_validate({"router": router, "models": {"default": model}})


def measure(args: argparse.Namespace) -> dict[str, float]:
    from ray import serve

    from serving._deploy import deploy, start_serve

    c = args.concurrency
    start_ray(num_cpus=os.cpu_count() or 2)
    http_port = free_port()
    start_serve(http_port=http_port)
    config = router_config(c, args.step_ms / 1000, args.router_replicas, args.stream_interval_ms / 1000)
    client = deploy(config, app_name=APP, route_prefix=f"/{APP}")
    replica = serve.get_deployment_handle("scripted:default", APP)
    handles = {"no_router": direct_caller(replica), "router_handle": handle_caller(client.stream)}
    return asyncio.run(http_paths({"router_http": f"http://127.0.0.1:{http_port}/{APP}/v1"}, (c // 4, c), "full",
                                  profile_level=c, handles=handles, client_processes=args.client_processes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--step-ms", type=float, default=15.0, help="the scripted engine's decode step")
    parser.add_argument("--router-replicas", type=int, default=1)
    parser.add_argument("--stream-interval-ms", type=float, default=0.0,
                        help="the router's stream_interval_s: its text after the first token at most this often")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="HTTP clients spread over this many processes (one reading every chunk is a limit)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    c = args.concurrency
    figures: dict[str, object] = {"concurrency": c, "step_ms": args.step_ms, "router_replicas": args.router_replicas,
                                  "stream_interval_ms": args.stream_interval_ms,
                                  "client_processes": args.client_processes,
                                  "cores": os.cpu_count()}
    figures.update(measure(args))
    figures["engine_pace_tok_s"] = pace = c / (args.step_ms / 1000)
    for path in ("no_router", "router_handle", "router_http"):
        figures[f"{path}_vs_engine_pace_c{c}"] = figures[f"{path}_tok_s_c{c}"] / pace
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    ratios = {path: figures[f"{path}_vs_engine_pace_c{c}"] for path in ("router_http", "router_handle", "no_router")}
    print(f"router path | scripted engine, one step every {args.step_ms:g} ms, c{c} (engine pace {pace:.0f} tok/s), "
          f"{args.router_replicas} router replica(s), stream interval {args.stream_interval_ms:g} ms, "
          f"{args.client_processes} HTTP client process(es), {os.cpu_count()} cores | router(HTTP) "
          f"{ratios['router_http']:.3f}x, handle {ratios['router_handle']:.3f}x, no router {ratios['no_router']:.3f}x "
          "of the engine's pace", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
