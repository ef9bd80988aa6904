"""Scheduling benchmark: the supervisor's cost per task, and how close its makespan gets to the critical path.

1. Overhead. A DAG of no-op tasks (10 wide, each task needs two of the layer above) on a zero-latency
   scripted engine behind the real router: once through the SupervisorActor, once as raw Ray actor calls
   (the same step, dependencies passed as ObjectRefs so Ray itself resolves the DAG).
   overhead_ms_per_task = (supervised - raw) / tasks; overhead_ratio_vs_raw_ray = supervised / raw.
2. Parallelism. 9 agents, 36 tasks, DAG 9 wide (4 layers, each task needs two of the layer above), every
   model call a fixed 200 ms on the scripted engine behind the real router.
   makespan_ratio_vs_critical_path = makespan / (4 x 200 ms); speedup_vs_sequential = the same 36 tasks run
   one after another (one agent, max_concurrency 1, same supervisor path) / makespan. The same 36-task DAG
   as raw Ray actor calls is measured too (raw_ray_makespan_s): it shows what the router path alone costs.

Makespans run from the mission's `running` event (agents placed) to the last task's end; raw Ray runs from
the first submission to the last result. Median of the repetitions after one warm-up run of each.

    python benchmarks/bench_scheduling.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# -- settings -------------------------------------------------------------------------------------------
OVERHEAD_TASKS, OVERHEAD_TASKS_QUICK = 1000, 300
OVERHEAD_WIDTH = 10
PARALLEL_AGENTS, PARALLEL_LAYERS, CALL_S = 9, 4, 0.2
REPS, REPS_QUICK = 3, 3
RAY_CPUS = 16


def layered(width: int, tasks: int, model: str, agent_concurrency: int = 4) -> dict:
    """A mission dict: `tasks` tasks in layers of `width`; task (l, i) needs (l-1, i) and (l-1, i+1)."""
    agents = [{"name": f"a{i}", "role": "worker", "model": model, "max_tokens": 8,
               "max_concurrency": agent_concurrency, "resources": {"num_cpus": 0}} for i in range(width)]
    items = []
    for n in range(tasks):
        layer, i = divmod(n, width)
        deps = [] if layer == 0 else sorted({f"t{layer - 1}-{i}", f"t{layer - 1}-{(i + 1) % width}"})
        items.append({"id": f"t{layer}-{i}", "agent": f"a{i}", "description": "no-op", "depends_on": deps,
                      "retries": 0, "timeout_s": 60})
    return {"name": "bench", "goal": "measure", "agents": agents, "tasks": items}


def supervised_s(router, data: dict) -> float:
    """Run the mission through the supervisor; seconds from `running` to the last task's end."""
    import ray

    from actors import follow, start_mission
    from controlplane import parse_mission

    handle = start_mission(parse_mission(data), router=router)
    try:
        result = follow(handle, poll_s=0.5)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    began = next(e["time_s"] for e in result["events"] if e["kind"] == "mission" and e["status"] == "running")
    return max(t["ended_at"] for t in result["tasks"]) - began


def raw_agents(router, data: dict) -> dict:
    import ray

    from controlplane import parse_mission

    @ray.remote(num_cpus=0)
    class RawAgent:
        """The agent step without the control plane: prompt -> router -> parsed output."""

        def __init__(self, agent, goal, router, token):
            self.agent, self.goal, self.router, self.token = agent, goal, router, token

        def ready(self) -> bool:
            return True

        async def run(self, task, *deps):
            from controlplane._core.prompts import build_messages, output_schema, parse_output
            from serving import ChatMessage, ChatRequest

            messages = build_messages(self.agent, goal=self.goal, task=task,
                                      context=dict(zip(task.depends_on, deps)))
            reply = await self.router.chat(ChatRequest(
                model=self.agent.model, max_tokens=self.agent.max_tokens, json_schema=output_schema(task),
                messages=[ChatMessage(**m) for m in messages],
                token=self.token))
            return parse_output(task, reply.text)

    spec = parse_mission(data)
    from serving import mission_tokens

    tokens = mission_tokens("raw")  # the raw path calls the same router, so it needs tokens too (minted up front)
    actors = {a.name: RawAgent.options(max_concurrency=a.max_concurrency).remote(
        a, spec.goal, router, tokens.agent(a.name, now_s=time.time(), ttl_s=24 * 3600)) for a in spec.agents}
    ray.get([h.ready.remote() for h in actors.values()])
    return {"spec": spec, "actors": actors}


def raw_s(raw: dict) -> float:
    """The same DAG as raw Ray actor calls, submitted at once in topological order."""
    import ray

    refs: dict = {}
    t0 = time.perf_counter()
    for task in raw["spec"].tasks:
        refs[task.id] = raw["actors"][task.agent].run.remote(task, *(refs[d] for d in task.depends_on))
    ray.get(list(refs.values()))
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(fn, reps: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    runs = [fn() for _ in range(reps)]
    return statistics.median(runs), runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{OVERHEAD_TASKS_QUICK} overhead tasks")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from controlplane.config import ServingConfig
    from serving import deploy

    n_tasks = OVERHEAD_TASKS_QUICK if args.quick else OVERHEAD_TASKS
    reps = REPS_QUICK if args.quick else REPS
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        router = deploy(ServingConfig.model_validate({
            "router": {"agent": {"max_in_flight": 64}},
            "models": {"zero": {"kind": "scripted", "latency_s": 0.0},
                       "fixed": {"kind": "scripted", "latency_s": CALL_S}}}),
            app_name="bench-scheduling", http_port=free_port())
        figures = run_all(router, n_tasks, reps)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    report(figures, args.json)
    return 0


def run_all(router, n_tasks: int, reps: int) -> dict:
    overhead = layered(OVERHEAD_WIDTH, n_tasks, "zero")
    print(f"{'run':<34}{'median s':>10}  reps")
    sup, sup_runs = measure(lambda: supervised_s(router, overhead), reps)
    print(f"{f'supervisor, {n_tasks} no-op tasks':<34}{sup:>10.3f}  {[round(r, 3) for r in sup_runs]}")
    raw = raw_agents(router, overhead)
    base, base_runs = measure(lambda: raw_s(raw), reps)
    print(f"{f'raw Ray calls, {n_tasks} no-op tasks':<34}{base:>10.3f}  {[round(r, 3) for r in base_runs]}")
    wide = layered(PARALLEL_AGENTS, PARALLEL_AGENTS * PARALLEL_LAYERS, "fixed", agent_concurrency=1)
    span, span_runs = measure(lambda: supervised_s(router, wide), reps)
    print(f"{'supervisor, 36 tasks 9 wide':<34}{span:>10.3f}  {[round(r, 3) for r in span_runs]}")
    raw_wide = raw_agents(router, wide)
    raw_span, raw_span_runs = measure(lambda: raw_s(raw_wide), reps)
    print(f"{'raw Ray calls, 36 tasks 9 wide':<34}{raw_span:>10.3f}  {[round(r, 3) for r in raw_span_runs]}")
    one = dict(wide, agents=[wide["agents"][0]], tasks=[t | {"agent": "a0"} for t in wide["tasks"]])
    seq, seq_runs = measure(lambda: supervised_s(router, one), reps)
    print(f"{'sequential, 36 tasks on 1 agent':<34}{seq:>10.3f}  {[round(r, 3) for r in seq_runs]}")
    critical = PARALLEL_LAYERS * CALL_S
    return {
        "overhead_ms_per_task": round((sup - base) / n_tasks * 1000, 3),
        "overhead_ratio_vs_raw_ray": round(sup / base, 3),
        "makespan_ratio_vs_critical_path": round(span / critical, 3),
        "speedup_vs_sequential": round(seq / span, 2),
        "supervised_s": round(sup, 4), "raw_ray_s": round(base, 4), "overhead_tasks": n_tasks,
        "supervised_ms_per_task": round(sup / n_tasks * 1000, 3), "raw_ms_per_task": round(base / n_tasks * 1000, 3),
        "makespan_s": round(span, 4), "critical_path_s": critical, "sequential_s": round(seq, 4),
        "raw_ray_makespan_s": round(raw_span, 4), "makespan_ratio_vs_raw_ray": round(span / raw_span, 3),
        "raw_ray_makespan_ratio_vs_critical_path": round(raw_span / critical, 3),
        "reps": reps, "engine": "scripted (serving) behind the real router", "model_call_s": CALL_S,
        "cores": os.cpu_count(), "gpu": False, "ray_logical_cpus": RAY_CPUS,
        "concurrency": f"overhead: {OVERHEAD_WIDTH} agents x 4; parallel: {PARALLEL_AGENTS} agents x 1",
    }


def report(figures: dict, json_path: str | None) -> None:
    targets = {"overhead_ms_per_task": ("<=", 2.0), "overhead_ratio_vs_raw_ray": ("<=", 1.5),
               "makespan_ratio_vs_critical_path": ("<=", 1.1), "speedup_vs_sequential": (">=", 5)}
    for key, (op, goal) in targets.items():
        met = figures[key] <= goal if op == "<=" else figures[key] >= goal
        figures[f"{key}_target_met"] = met
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"bench_scheduling: overhead {figures['overhead_ms_per_task']} ms/task "
          f"({figures['overhead_ratio_vs_raw_ray']}x raw Ray, target <=2.0 ms, <=1.5x); makespan "
          f"{figures['makespan_ratio_vs_critical_path']}x critical path (target <=1.1; raw Ray "
          f"{figures['raw_ray_makespan_ratio_vs_critical_path']}x); speedup "
          f"{figures['speedup_vs_sequential']}x vs sequential (target >=5); {figures['cores']} cores, no GPU, "
          f"scripted engine behind the real router")


if __name__ == "__main__":
    sys.exit(main())
