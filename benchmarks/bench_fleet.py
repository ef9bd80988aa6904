"""bench_fleet: a fleet of agents under the control plane against offline batch on the same engine.

A mission of N agents (`kind: python`, benchmarks/_fleet_agent.py), one task each, every task K router calls one
after another (the benchmark prompts, T output tokens with ignore_eos), on the router with one vLLM replica; so
about N calls are in flight at once. The window runs from the supervisor's `placed` event (every agent started)
to the last task's end. fleet tok/s = completion tokens / window.

The ceiling, on the same model and engine settings (benchmarks/_serving_offline.py): vLLM's offline `LLM.chat`
on the same N x K prompts submitted at once, at most N in the engine's batch (the fleet's concurrency), no server,
no agents. fleet_vs_offline_tok_s = fleet / offline.
The engines run one at a time: the offline one first, then the router's. Each path: a warm-up, then
repetitions (medians); every mission starts fresh agents, once the last mission's agent processes are gone.

`--gpu` is the issue's GPU form: 64 agents with a 0.001 GPU share each, on two vLLM replicas at 0.45 GPU each,
random weights in SmolLM2-1.7B's shape (bench_gpu's engine settings, offline on the whole GPU), and NVML's
utilisation and memory (through nvidia-smi) over each path's measured windows.

    python benchmarks/bench_fleet.py [--quick] [--gpu] [--agents N] [--calls K] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_worker_niceness", "0")  # the offline engine runs at 0 too
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._gpu_sampler import GpuSampler, summarise  # noqa: E402
from benchmarks._ray_start import start_ray  # noqa: E402
from benchmarks._serving_load import engine_dtype, engines_stopped, exit_on_sigterm  # noqa: E402
from benchmarks._serving_offline import offline_runs  # noqa: E402
from benchmarks.bench_scheduling import mission_to_end  # noqa: E402
from benchmarks.bench_serving import router_config  # noqa: E402

AGENTS = 16
CALLS = {"quick": 1, "full": 2}
MAX_TOKENS = {"quick": 32, "full": 64}
REPS = {"quick": 1, "full": 3}
TARGET = 0.8
GPU = {"agents": 64, "per_agent": 0.001, "model_replicas": 2, "per_model_replica": 0.45, "shape": "1.7b"}
APP = "bench-fleet"


def fleet_mission(agents: int, calls: int, max_tokens: int, agent_gpus: float = 0.0) -> dict:
    return {
        "name": "fleet", "goal": "generate",
        "agents": [{"name": f"a{n}", "role": "worker", "kind": "python", "entrypoint": "benchmarks._fleet_agent:run",
                    "model": "default", "resources": {"num_cpus": 0, "num_gpus": agent_gpus}}
                   for n in range(agents)],
        "tasks": [{"id": f"t{n}", "agent": f"a{n}", "retries": 0, "timeout_s": 1800,
                   "description": json.dumps({"first": n * calls, "calls": calls, "max_tokens": max_tokens})}
                  for n in range(agents)],
    }


def previous_agents_gone(timeout_s: float = 60) -> None:
    """Wait until the last mission's agent processes have exited (the supervisor kills them as it ends; their exit
    would otherwise share the next window's two cores)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any("AgentActor" in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])):
            return
        time.sleep(0.5)


def run_fleet(router, data: dict, max_tokens: int) -> dict[str, float]:
    """One mission, once the last one's agents are gone; its window, tokens and agent start-up (see the module
    docstring)."""
    previous_agents_gone()
    called, result, events = mission_to_end(router, data)
    placed = next(e["time_s"] for e in events if e["kind"] == "mission" and e.get("status") == "placed")
    window_s = max(t["ended_at"] for t in result["tasks"]) - placed
    per_call = [n for t in result["tasks"] for n in t["output"]]
    return {"window_s": window_s, "window": [placed, placed + window_s], "tokens": sum(per_call),
            "calls": len(per_call),
            "short_calls": sum(1 for n in per_call if n != max_tokens), "tok_s": sum(per_call) / window_s,
            "agents_ready_s": placed - called}


class Form:
    """What differs between the CPU form and the issue's GPU form: the model, the engines' settings, the GPU
    shares."""

    def __init__(self, args: argparse.Namespace) -> None:
        from controlplane._model_cache import default_model_path

        source = args.model_dir or str(default_model_path())
        self.gpu, self.model_name = args.gpu, Path(source).name
        if not self.gpu:
            self.model_dir, self.offline_engine, self.agent_gpus = source, None, 0.0
            self.replicas, self.device = 1, "no GPU"
            return
        import torch

        from benchmarks.bench_gpu import engine_settings, shaped_model_dir

        self.model_dir = str(shaped_model_dir(Path(source), GPU["shape"], Path(tempfile.mkdtemp(prefix="fleet_"))))
        self.offline_engine = {k: v for k, v in engine_settings(args.agents).items() if k != "max_num_seqs"}
        self.agent_gpus, self.replicas = GPU["per_agent"], GPU["model_replicas"]
        self.device = torch.cuda.get_device_name(0)

    def router_config(self, agents: int):
        if not self.gpu:
            return router_config(self.model_dir)
        from benchmarks.bench_gpu import router_config as gpu_router_config

        return gpu_router_config(self.model_dir, agents, model_replicas=self.replicas,
                                 gpu_share=self.replicas * GPU["per_model_replica"])

    def sampler(self):
        return GpuSampler() if self.gpu else contextlib.nullcontext()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one call per task, 32 tokens, one repetition")
    parser.add_argument("--gpu", action="store_true",
                        help=f"the GPU form: {GPU['agents']} agents at {GPU['per_agent']} GPU each, "
                             f"{GPU['model_replicas']} vLLM replicas at {GPU['per_model_replica']} GPU each, random "
                             f"weights in SmolLM2-{GPU['shape'].upper()}'s shape, utilisation and memory from "
                             "nvidia-smi")
    parser.add_argument("--agents", type=int,
                        help=f"agents in the fleet (default {AGENTS}; {GPU['agents']} with --gpu)")
    parser.add_argument("--calls", type=int, help="router calls per task (default 1 with --quick, else 2)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--model-dir", help="checkpoint; default: the converted SmolLM2-135M-Instruct (with --gpu: "
                        "the config and tokenizer to shape)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    if args.agents is None:
        args.agents = GPU["agents"] if args.gpu else AGENTS
    if args.calls is None:
        args.calls = CALLS[mode]
    for name in ("agents", "calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.gpu:
        import torch

        if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
            parser.error("--gpu: no CUDA device or no nvidia-smi on this machine; run it on a GPU node, or drop "
                         "--gpu for the CPU form")
        replicas_share = GPU["model_replicas"] * GPU["per_model_replica"]
        most = int(round((1 - replicas_share) / GPU["per_agent"], 6))
        if args.agents > most:
            parser.error(f"--agents {args.agents}: at {GPU['per_agent']} GPU each beside the replicas' "
                         f"{replicas_share:g}, they do not fit on one GPU; at most {most}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    exit_on_sigterm()  # a stopped run must not leave its engines on the GPU
    mode = "quick" if args.quick else "full"
    calls, max_tokens, reps = args.calls, MAX_TOKENS[mode], REPS[mode]

    import ray
    import vllm
    from ray import serve

    from serving import deploy

    form = Form(args)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_fleet"
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    requests = args.agents * calls
    with form.sampler() as offline_gpu:
        offline, offline_windows = offline_runs(form.model_dir, requests=requests, concurrency=args.agents,
                                                max_tokens=max_tokens, reps=reps, log_path=log_dir / "offline.log",
                                                engine_kwargs=form.offline_engine)
    print(f"offline: {requests} requests at once, at most {args.agents} in the batch, tok/s "
          f"{[round(r, 1) for r in offline]}", flush=True)
    data = fleet_mission(args.agents, calls, max_tokens, form.agent_gpus)
    start_ray(num_cpus=16)
    try:
        with engines_stopped("router", lambda: serve.delete(APP)), form.sampler() as fleet_gpu:
            router = deploy(form.router_config(args.agents), app_name=APP, route_prefix=f"/{APP}")
            run_fleet(router, fleet_mission(2, 1, 16, form.agent_gpus), 16)  # warm-up: first calls, first workers
            runs = []
            for _ in range(reps):
                runs.append(run_fleet(router, data, max_tokens))
                print(f"fleet: {args.agents} agents, {runs[-1]['calls']} calls, {runs[-1]['tok_s']:.1f} tok/s over "
                      f"{runs[-1]['window_s']:.2f} s (agents ready in {runs[-1]['agents_ready_s']:.1f} s)", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    fleet_tok_s, offline_median = statistics.median(r["tok_s"] for r in runs), statistics.median(offline)
    figures = {
        "fleet_vs_offline_tok_s": fleet_tok_s / offline_median, "fleet_tok_s": fleet_tok_s,
        "offline_tok_s": offline_median, "fleet_runs": runs, "offline_runs_tok_s": offline,
        "agents": args.agents, "calls_per_task": calls, "max_tokens": max_tokens, "reps": reps, "mode": mode,
        "replicas": form.replicas, "model": form.model_name, "engine": f"vllm {vllm.__version__}",
        "dtype": "bfloat16" if form.gpu else engine_dtype(), "cores": os.cpu_count(), "gpu": form.gpu,
        "device": form.device, "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.monotonic() - started, 1)}
    if form.gpu:
        figures.update({"shape": GPU["shape"], "gpu_per_agent": form.agent_gpus,
                        "gpu_per_model_replica": GPU["per_model_replica"],
                        "gpu_offline": summarise(offline_gpu.samples, offline_windows),
                        "gpu_fleet": summarise(fleet_gpu.samples, [r["window"] for r in runs])})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    print(summary_line(figures), flush=True)
    return 0


def summary_line(figures: dict) -> str:
    runs = figures["fleet_runs"]
    short = sum(r["short_calls"] for r in runs)
    where = (f"{figures['device']}, {figures['shape']} shape, random weights" if figures["gpu"]
             else f"{figures['model']}")
    line = (f"fleet | {where} on {figures['engine']}, {figures['cores']} cores, gpu={figures['gpu']}, "
            f"{figures['mode']}, {figures['agents']} agents x {figures['calls_per_task']} calls x "
            f"{figures['max_tokens']} tokens, {figures['replicas']} replica(s), load {figures['load_before']} -> "
            f"{figures['load_after']} | fleet/offline tok/s: {figures['fleet_vs_offline_tok_s']:.3f}x (>= {TARGET}) "
            f"| fleet {figures['fleet_tok_s']:.1f} tok/s, offline {figures['offline_tok_s']:.1f} tok/s")
    if figures["gpu"]:
        line += " | " + ", ".join(f"{path} SM util {_pct(figures[f'gpu_{path}'])}, memory peak "
                                  f"{_mib(figures[f'gpu_{path}'])}" for path in ("fleet", "offline"))
    return line + (f" | {short} calls stopped short of max_tokens" if short else "")


def _pct(gpu: dict) -> str:
    return "n/a" if gpu["sm_util_mean_pct"] is None else f"{gpu['sm_util_mean_pct']:.0f}% mean"


def _mib(gpu: dict) -> str:
    peak = gpu["memory_used_peak_mib"]
    return "n/a" if peak is None else f"{peak / 1024:.1f} of {gpu['memory_total_mib'] / 1024:.0f} GiB"


if __name__ == "__main__":
    sys.exit(main())
