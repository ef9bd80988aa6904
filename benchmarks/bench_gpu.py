"""bench_gpu: on one GPU, the router's streaming throughput against vLLM's offline ceiling on the same engine.

The GPU target `router_vs_offline_tok_s` (docs/benchmarks.md): the router's output tok/s at concurrency C over
vLLM's offline `LLM.chat` with the same requests submitted at once, at most C in the batch. Both engines get the
same settings: random weights (`load_format: dummy`, nothing to fetch) in a Llama shape built from the default
model's config and tokenizer, bfloat16, max_model_len 2048, the router's `enforce_eager`, `max_num_seqs` C.
Then the router over HTTP and over the handle API, then vLLM's own OpenAI server with the same engine settings;
streaming chat with `ignore_eos`, C clients x 2 requests each, a warm-up, three repetitions (medians), at C/4 and
C, with the CPU per generated token of each process at C.

    python benchmarks/bench_gpu.py [--shape 1.7b|135m] [--concurrency 256] [--json PATH [--append]] [--model-dir DIR]
        [--only offline,router,vllm_server]
        [--router-replicas 1] [--model-replicas 1] [--client-processes 4] [--stream-interval N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_worker_niceness", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._ports import free_port  # noqa: E402
from benchmarks._serving_load import (  # noqa: E402
    ENGINE_EXTRA,
    MAX_MODEL_LEN,
    add_stream_interval,
    cli_args,
    engines_stopped,
    exit_on_sigterm,
    handle_caller,
    one_replica_for,
    router_for,
    use_stream_interval,
    vllm_server,
)
from benchmarks._serving_offline import offline_tok_s  # noqa: E402
from benchmarks.bench_serving import MAX_TOKENS, PER_CLIENT, REPS, _ratio, http_paths  # noqa: E402

APP = "bench-gpu"
SHAPES = {  # Llama shapes over SmolLM2's tokenizer; 1.7b is SmolLM2-1.7B's
    "135m": {},
    "1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
             "num_key_value_heads": 32, "head_dim": 64},
}
GPU_MEMORY_UTILIZATION = 0.85


def shaped_model_dir(source: Path, shape: str, into: Path) -> Path:
    """`source`'s config (reshaped) and tokenizer, no weights: engines load it with `load_format: dummy`."""
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, into / name)
    config = json.loads((source / "config.json").read_text())
    (into / "config.json").write_text(json.dumps({**config, **SHAPES[shape]}, indent=1))
    return into


def levels(concurrency: int) -> tuple[int, int]:
    return concurrency // 4, concurrency


def engine_settings(concurrency: int) -> dict:
    return {"max_model_len": MAX_MODEL_LEN, "enforce_eager": True, "dtype": "bfloat16", "load_format": "dummy",
            "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, "max_num_seqs": concurrency, **ENGINE_EXTRA}


def router_config(model_dir: str, concurrency: int, router_replicas: int = 1, model_replicas: int = 1,
                  gpu_share: float | None = None):
    """With `model_replicas` N > 1, N engines share the GPU: `gpu_share` / N of it each (fractional GPU placement;
    default 0.98 / N, leaving nothing else a share) and 1 / N of the whole run's GPU memory share."""
    from controlplane.config import ServingConfig

    gpus = 1 if model_replicas == 1 and gpu_share is None else round((gpu_share or 0.98) / model_replicas, 3)
    replicas = {**one_replica_for(concurrency, num_cpus=1, num_gpus=gpus),
                "min_replicas": model_replicas, "max_replicas": model_replicas}
    model = {"kind": "vllm", "max_context_tokens": MAX_MODEL_LEN, "model_path": model_dir, "dtype": "bfloat16",
             "load_format": "dummy", "gpu_memory_utilization": round(GPU_MEMORY_UTILIZATION / model_replicas, 3),
             "kv_cache_space_gb": None, "engine_kwargs": {"max_num_seqs": concurrency, **ENGINE_EXTRA},
             "replicas": replicas}
    router = router_for(concurrency, replicas=router_replicas)
    return ServingConfig.model_validate({"router": router, "models": {"default": model}})


def phase_offline(model_dir: str, concurrency: int, log_dir: Path) -> dict[str, float]:
    requests = concurrency * PER_CLIENT["full"]
    rates = offline_tok_s(model_dir, requests=requests, concurrency=concurrency, max_tokens=MAX_TOKENS["full"],
                          reps=REPS["full"], log_path=log_dir / "offline.log", timeout_s=1200,
                          engine_kwargs={key: value for key, value in engine_settings(concurrency).items()
                                         if key != "max_num_seqs"})
    print(f"offline c{concurrency}: {statistics.median(rates):.1f} tok/s (reps {[round(r, 1) for r in rates]})",
          flush=True)
    return {f"offline_tok_s_c{concurrency}": statistics.median(rates)}


def phase_vllm_server(model_dir: str, args: argparse.Namespace, log_dir: Path) -> dict[str, float]:
    with vllm_server(model_dir, free_port(), log_dir / "vllm_server.log",
                     engine_args=cli_args(engine_settings(args.concurrency))) as url:
        return asyncio.run(http_paths({"vllm_server": url}, levels(args.concurrency), "full",
                                      profile_level=args.concurrency, client_processes=args.client_processes))


def phase_router(model_dir: str, args: argparse.Namespace) -> dict[str, float]:
    import ray
    from ray import serve

    from benchmarks._ray_start import start_ray
    from serving._deploy import deploy, start_serve

    start_ray(num_cpus=os.cpu_count() or 16)
    http_port = free_port()
    start_serve(http_port=http_port)
    started = time.monotonic()
    with engines_stopped("router", lambda: (serve.shutdown(), ray.shutdown())):  # the GPU is free after
        client = deploy(router_config(model_dir, args.concurrency, args.router_replicas, args.model_replicas),
                        app_name=APP, route_prefix=f"/{APP}")
        figures = {"router_startup_s": time.monotonic() - started}
        print(f"router up in {figures['router_startup_s']:.0f} s", flush=True)
        figures.update(asyncio.run(http_paths({"router_http": f"http://127.0.0.1:{http_port}/{APP}/v1"},
                                              levels(args.concurrency), "full", profile_level=args.concurrency,
                                              handles={"router_handle": handle_caller(client.stream)},
                                              client_processes=args.client_processes)))
    return figures


PHASES = ("offline", "router", "vllm_server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.7b")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--model-dir", help="config and tokenizer to shape; default: the default model's")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases of {PHASES}")
    parser.add_argument("--append", action="store_true", help="add to the figures already in --json (phases run "
                        "as separate invocations, e.g. one device call each)")
    parser.add_argument("--router-replicas", type=int, default=1)
    parser.add_argument("--model-replicas", type=int, default=1,
                        help="engines sharing the GPU behind the router (each process carries 1/N of the tokens)")
    parser.add_argument("--client-processes", type=int, default=4,
                        help="HTTP clients spread over this many processes (one reading every chunk is a limit)")
    add_stream_interval(parser)
    args = parser.parse_args(argv)
    use_stream_interval(parser, args.stream_interval)
    phases = args.only.split(",")
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"--only {args.only!r}: unknown phase(s) {unknown}; choose from {', '.join(PHASES)}")
    exit_on_sigterm()
    import torch

    from controlplane._model_cache import default_model_path

    source = Path(args.model_dir) if args.model_dir else default_model_path()
    log_dir = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    model_dir = str(shaped_model_dir(source, args.shape, Path(tempfile.mkdtemp(prefix="bench_gpu_model_"))))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    figures: dict[str, object] = {}
    if args.append and args.json and args.json.exists():
        figures = json.loads(args.json.read_text())
    figures.update({"device": device, "shape": args.shape, "concurrency": args.concurrency,
                    "stream_interval": args.stream_interval, "router_replicas": args.router_replicas,
                    "model_replicas": args.model_replicas, "client_processes": args.client_processes,
                    "max_tokens": MAX_TOKENS["full"], "reps": REPS["full"], "cores": os.cpu_count()})
    runs = {"offline": lambda: phase_offline(model_dir, args.concurrency, log_dir),
            "router": lambda: phase_router(model_dir, args),
            "vllm_server": lambda: phase_vllm_server(model_dir, args, log_dir)}
    for name in PHASES:
        if name in phases:
            figures.update(runs[name]())
            if args.json:  # what a phase measured survives a later one's failure
                args.json.write_text(json.dumps(figures, indent=1))
    return report(figures, args.json)


def report(figures: dict, json_path: Path | None) -> int:
    """The summary line, with the ratios whose both sides were measured (n/a for the others)."""
    c = figures["concurrency"]
    for path in ("router_http", "router_handle", "vllm_server"):
        figures[f"{path}_vs_offline_tok_s"] = _ratio(figures, f"{path}_tok_s_c{c}", f"offline_tok_s_c{c}")
    figures["router_http_vs_vllm_server_tok_s"] = _ratio(figures, f"router_http_tok_s_c{c}", f"vllm_server_tok_s_c{c}")
    if json_path:
        json_path.write_text(json.dumps(figures, indent=1))

    def show(key: str) -> str:
        value = figures.get(key)
        return "n/a" if value is None else f"{value:.3f}x"

    offline = figures.get(f"offline_tok_s_c{c}")
    print(f"gpu | {figures['device']}, SmolLM2 tokenizer, {figures['shape']} shape, random weights, bf16, eager, "
          f"{figures['max_tokens']} tokens, c{c}, {figures['cores']} cores | router(HTTP)/offline "
          f"{show('router_http_vs_offline_tok_s')} (>= 0.9), handle {show('router_handle_vs_offline_tok_s')}, "
          f"vLLM server {show('vllm_server_vs_offline_tok_s')} | router(HTTP)/vLLM server "
          f"{show('router_http_vs_vllm_server_tok_s')} | offline "
          f"{'n/a' if offline is None else f'{offline:.0f} tok/s'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
