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

    python benchmarks/bench_fleet.py [--quick] [--agents N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_worker_niceness", "0")  # the offline engine runs at 0 too
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._ray_start import start_ray  # noqa: E402
from benchmarks._serving_load import engine_dtype, engines_stopped  # noqa: E402
from benchmarks._serving_offline import offline_tok_s  # noqa: E402
from benchmarks.bench_scheduling import mission_to_end  # noqa: E402
from benchmarks.bench_serving import router_config  # noqa: E402

AGENTS = 16
CALLS = {"quick": 1, "full": 2}
MAX_TOKENS = {"quick": 32, "full": 64}
REPS = {"quick": 1, "full": 3}
TARGET = 0.8
APP = "bench-fleet"


def fleet_mission(agents: int, calls: int, max_tokens: int) -> dict:
    return {
        "name": "fleet", "goal": "generate",
        "agents": [{"name": f"a{n}", "role": "worker", "kind": "python", "entrypoint": "benchmarks._fleet_agent:run",
                    "model": "default", "resources": {"num_cpus": 0}} for n in range(agents)],
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
    return {"window_s": window_s, "tokens": sum(per_call), "calls": len(per_call),
            "short_calls": sum(1 for n in per_call if n != max_tokens), "tok_s": sum(per_call) / window_s,
            "agents_ready_s": placed - called}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one call per task, 32 tokens, one repetition")
    parser.add_argument("--agents", type=int, default=AGENTS, help=f"agents in the fleet (default {AGENTS})")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--model-dir", help="checkpoint; default: the converted SmolLM2-135M-Instruct")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    calls, max_tokens, reps = CALLS[mode], MAX_TOKENS[mode], REPS[mode]

    import ray
    import vllm
    from ray import serve

    from controlplane._model_cache import default_model_path
    from serving import deploy

    model_dir = args.model_dir or str(default_model_path())
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_fleet"
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    requests = args.agents * calls
    offline = offline_tok_s(model_dir, requests=requests, concurrency=args.agents, max_tokens=max_tokens, reps=reps,
                            log_path=log_dir / "offline.log")
    print(f"offline: {requests} requests at once, at most {args.agents} in the batch, tok/s "
          f"{[round(r, 1) for r in offline]}", flush=True)
    data = fleet_mission(args.agents, calls, max_tokens)
    start_ray(num_cpus=16)
    try:
        with engines_stopped("router", lambda: serve.delete(APP)):
            router = deploy(router_config(model_dir), app_name=APP, route_prefix=f"/{APP}")
            run_fleet(router, fleet_mission(2, 1, 16), 16)  # warm-up: the replica's first calls, Ray's first workers
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
        "replicas": 1, "model": Path(model_dir).name, "engine": f"vllm {vllm.__version__}", "dtype": engine_dtype(),
        "cores": os.cpu_count(), "gpu": False, "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2), "wall_s": round(time.monotonic() - started, 1)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    short = sum(r["short_calls"] for r in runs)
    print(f"fleet | {figures['model']} on {figures['engine']}, {figures['cores']} cores, gpu=False, {mode}, "
          f"{args.agents} agents x {calls} calls x {max_tokens} tokens, 1 replica, load {figures['load_before']} -> "
          f"{figures['load_after']} | fleet/offline tok/s: {figures['fleet_vs_offline_tok_s']:.3f}x "
          f"(>= {TARGET}) | fleet {fleet_tok_s:.1f} tok/s, offline {offline_median:.1f} tok/s"
          + (f" | {short} calls stopped short of max_tokens" if short else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
