"""Kill-switch benchmark: how fast `cancel` stops a mission's side effects and kills its actors.

Each round starts a mission with 8 slow tool calls in flight (3 as Ray tasks, 3 sync in the agent's threads,
2 async on its loop; each rewrites a tick file every 0.1 s while it runs) and 8 generations that would take
60 s (scripted engine behind the real router), then cancels it through the supervisor, as `controlplane cancel`
does. kill_to_last_side_effect_s = the last tick or tool end after the command; kill_to_actors_dead_s = until
every agent actor of the mission is gone. Max over the rounds (5; 2 with --quick). The generations' abort inside
vLLM is measured by bench_serving.py (cancel_to_engine_abort_s_p95): the scripted engine has no side effect.

Run from the repository root (the tools are imported as tests.helpers.slow_tools):

    python benchmarks/bench_kill_switch.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._ports import free_port  # noqa: E402
from benchmarks._ray_start import actor_alive  # noqa: E402

ROUNDS, ROUNDS_QUICK = 5, 2
TOOLS_IN_FLIGHT, GENERATIONS_IN_FLIGHT = 8, 8
TOOL_S, GENERATION_S = 30.0, 60.0
RAY_CPUS = 16
TARGETS = {"kill_to_last_side_effect_s_max": 2.0, "kill_to_actors_dead_s_max": 10.0}


def transcripts() -> list[dict]:
    """The worker's model: a task names its tool, the tool's result ends it."""
    return [{"match": r"Result of slow_", "text": '{"final": "slept"}'}] + [
        {"match": f"use {tool}", "text": json.dumps({"tool": tool, "arguments": {"seconds": TOOL_S}})}
        for tool in ("slow_remote", "slow_local", "slow_async")]


def mission(workspace: str) -> dict:
    tools = [{"name": "slow_remote", "function": "tests.helpers.slow_tools:slow_remote", "timeout_s": 120,
              "resources": {"num_cpus": 0}},
             {"name": "slow_local", "function": "tests.helpers.slow_tools:slow_local", "timeout_s": 120},
             {"name": "slow_async", "function": "tests.helpers.slow_tools:slow_async", "timeout_s": 120}]
    kinds = ["slow_remote"] * 3 + ["slow_local"] * 3 + ["slow_async"] * 2
    tasks = [{"id": f"tool{i}", "agent": "worker", "description": f"use {kind}"} for i, kind in enumerate(kinds)]
    tasks += [{"id": f"gen{i}", "agent": "thinker", "description": "think"} for i in range(GENERATIONS_IN_FLIGHT)]
    return {"name": "killbench", "goal": "be stopped", "tools": tools, "workspace": workspace, "tasks": tasks,
            "agents": [{"name": "worker", "role": "worker", "model": "tools", "tools": [t["name"] for t in tools],
                        "max_concurrency": TOOLS_IN_FLIGHT, "resources": {"num_cpus": 0}},
                       {"name": "thinker", "role": "worker", "model": "glacial",
                        "max_concurrency": GENERATIONS_IN_FLIGHT, "resources": {"num_cpus": 0}}]}


def one_round(router, n: int) -> tuple[float, float]:
    import ray

    from actors import MISSION_NAMESPACE, start_mission
    from controlplane import parse_mission
    from tests.helpers.slow_tools import last_side_effect_s, started

    folder = Path(tempfile.mkdtemp(prefix="killbench-"))
    mission_id = f"killbench-{n}"
    handle = start_mission(parse_mission(mission(str(folder))), router=router, mission_id=mission_id)
    try:
        deadline = time.monotonic() + 180
        while started(folder) < TOOLS_IN_FLIGHT:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {started(folder)} of {TOOLS_IN_FLIGHT} tool calls started")
            time.sleep(0.1)
        time.sleep(0.5)  # every generation is in flight too
        killed_at = time.time()
        ray.get(handle.cancel.remote("bench_kill_switch"))
        names = [f"{mission_id}:worker", f"{mission_id}:thinker"]
        while any(actor_alive(name, MISSION_NAMESPACE) for name in names):
            time.sleep(0.05)
        dead_s = time.time() - killed_at
        time.sleep(3.0)  # a late side effect would show by now
        return max(0.0, last_side_effect_s(folder) - killed_at), dead_s
    finally:
        ray.kill(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{ROUNDS_QUICK} rounds instead of {ROUNDS}")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from controlplane.config import ServingConfig
    from serving import deploy

    rounds = ROUNDS_QUICK if args.quick else ROUNDS
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        router = deploy(ServingConfig.model_validate({
            "router": {"agent": {"max_in_flight": 64}},
            "models": {"tools": {"kind": "scripted", "replies": transcripts()},
                       "glacial": {"kind": "scripted", "latency_s": GENERATION_S}}}),
            app_name="bench-kill-switch", http_port=free_port())
        print(f"{'round':<8}{'last side effect s':>20}{'actors dead s':>16}")
        side, dead = [], []
        for n in range(rounds):
            side_s, dead_s = one_round(router, n)
            side.append(side_s)
            dead.append(dead_s)
            print(f"{n:<8}{side_s:>20.3f}{dead_s:>16.3f}")
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    figures = {"kill_to_last_side_effect_s_max": round(max(side), 3), "kill_to_actors_dead_s_max": round(max(dead), 3),
               "kill_to_last_side_effect_s": [round(s, 3) for s in side],
               "kill_to_actors_dead_s": [round(s, 3) for s in dead], "rounds": rounds,
               "in_flight": f"{TOOLS_IN_FLIGHT} tool calls (3 Ray tasks, 3 threads, 2 async), "
                            f"{GENERATIONS_IN_FLIGHT} generations of {GENERATION_S:g} s",
               "engine": "scripted (serving) behind the real router", "cores": os.cpu_count(), "gpu": False}
    report(figures, args.json)
    return 0


def report(figures: dict, json_path: str | None) -> None:
    for key, goal in TARGETS.items():
        figures[f"{key}_target_met"] = figures[key] <= goal
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"bench_kill_switch: last side effect {figures['kill_to_last_side_effect_s_max']} s after cancel "
          f"(target <=2.0), actors dead {figures['kill_to_actors_dead_s_max']} s (target <=10.0); max over "
          f"{figures['rounds']} cancels, {figures['in_flight']}; {figures['cores']} cores, no GPU, scripted engine")


if __name__ == "__main__":
    sys.exit(main())
