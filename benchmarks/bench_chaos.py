"""bench_chaos: missions on scripted models while actors die and backends fail; the mission log, the memory's log
and the tools' own records count what was lost or done twice.

Scenarios (same run, same local Ray cluster, scripted engine):
- r1: a wide mission (independent tasks over 4 agents, 50 ms calls); a random agent is killed every 2 s. Figures:
  tasks without a success (lost), tasks with more than one success (duplicated), and the makespan beside the same
  mission without kills.
- r2: a chain mission; its supervisor is killed 3 times. Figures: the longest time from a kill to the `resumed`
  record of the restarted supervisor, and tasks dispatched again after they had succeeded.
- r3: nobody follows the mission (its driver is gone); `controlplane wait RUN`, in another process, collects it.
- r6: 4 python agents post findings through `ctx.memory.post` (each post with its idempotency key
  `<mission>/<task>/<attempt>/post/<n>`); the memory actor is killed twice (Ray restarts it and retries the posts
  in flight). Figures: acknowledged posts missing from the memory's log afterwards, findings stored twice, and the
  longest stall of the posts after a kill.
- r7: a wide mission on a scripted model of which 30% of calls fail, with a fallback that fails 30% too; the model
  is down for 10 s after its first 20 calls (`faults` of the scripted engine; breaker threshold 5, open_s 2).
  Figures: whether the mission succeeded, the outage's failures before the breaker was seen open (the driver polls
  it), and the time from the outage's end to the first success of the model (the probe that closed the breaker).
- side effects: a `side_effects: true`, non-idempotent tool that appends a line to a file; its agent is killed once
  after the call's result was recorded (during the next model call), once while the call still runs (it acted and
  waits for a slow confirmation). Figure: executions beyond the first, counted in the file.
- r8 (last: it kills the app's Router replica): a chain of 12 tasks under a 300-token cap (6 tasks' worth); the
  Router replica's process is killed after 3 tasks. Figures: the mission's status and tasks done, the tokens the
  budget book charged it beyond the cap, and the time from the kill to the next task's success.
- r9: r8 on a second app with two Router replicas (`router.replicas: 2`, one cap kept in the app's budget book);
  the chain starts two tasks wide and one replica is killed after 5 tasks. The same figures, the model calls in
  the mission's usage, and the time from the kill to the mission's end.
- r10: r9's mission on the same app, but the process of the app's budget book is killed after 5 tasks (Ray
  restarts it from what it saved in the GCS). The same figures.

The r6, r7, side-effect, r8, r9 and r10 scenarios are `tests/helpers/chaos.py`, which
`tests/integration/test_chaos_faults.py` runs with coarse bounds.

    python benchmarks/bench_chaos.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"quick": {"r1_tasks": 40, "r2_tasks": 16, "r6_posts": 400, "r7_tasks": 200},
         "full": {"r1_tasks": 200, "r2_tasks": 40, "r6_posts": 1000, "r7_tasks": 400}}
AGENT_KILL_EVERY_S = 2.0
SUPERVISOR_KILLS = 3
LATENCY_S = 0.05
APP_NAME = "chaos"


def spec(name: str, tasks: list[dict], agents: list[str]):
    from controlplane import parse_mission

    return parse_mission({"name": name, "goal": "Survive", "tasks": tasks,
                          "agents": [{"name": a, "role": "worker", "model": "scripted-50ms"} for a in agents]})


def wide(n: int) -> list[dict]:
    return [{"id": f"t{i}", "role": "worker", "description": f"part {i}", "retries": 5} for i in range(n)]


def chain(n: int) -> list[dict]:
    return [{"id": f"t{i}", "agent": "a" if i % 2 else "b", "description": f"step {i}", "retries": 5,
             **({"depends_on": [f"t{i - 1}"]} if i else {})} for i in range(n)]


def counts(run_dir: str) -> tuple[Counter, int]:
    """Successes per task, and dispatches of tasks that had already succeeded."""
    from controlplane._logfile import read_log

    successes: Counter = Counter()
    rerun = 0
    for record in read_log(run_dir):
        if record.kind == "task.succeeded":
            successes[record.data["task"]] += 1
        elif record.kind == "task.dispatch" and successes[record.data["task"]]:
            rerun += 1
    return successes, rerun


def run_r1(router, root: str, n: int) -> dict:
    import ray

    from actors import MISSION_NAMESPACE, start_mission
    from controlplane._rundir import read_result

    agents = ["a", "b", "c", "d"]
    figures = {}
    for label, kill in (("no_kill", False), ("kill", True)):
        run_dir = f"{root}/r1-{label}"
        started = time.monotonic()
        start_mission(spec(f"r1{label}", wide(n), agents), router=router, mission_id=f"r1-{label}", run_dir=run_dir)
        next_kill = time.monotonic() + AGENT_KILL_EVERY_S
        kills = 0
        while read_result(run_dir) is None:
            if kill and time.monotonic() >= next_kill:
                name = f"r1-{label}:{random.choice(agents)}"
                try:
                    ray.kill(ray.get_actor(name, namespace=MISSION_NAMESPACE), no_restart=False)
                    kills += 1
                except ValueError:
                    pass
                next_kill += AGENT_KILL_EVERY_S
            time.sleep(0.05)
        figures[label] = time.monotonic() - started
        if kill:
            successes, _ = counts(run_dir)
            figures["lost"] = sum(1 for i in range(n) if successes[f"t{i}"] == 0)
            figures["duplicated"] = sum(1 for c in successes.values() if c > 1)
            figures["kills"] = kills
            figures["status"] = read_result(run_dir)["status"]
    print(f"r1: {n} tasks, {figures['kills']} agent kills: lost {figures['lost']}, duplicated "
          f"{figures['duplicated']}, makespan {figures['kill']:.1f} s vs {figures['no_kill']:.1f} s without kills")
    return {"r1_tasks_lost": figures["lost"], "r1_tasks_duplicated": figures["duplicated"],
            "r1_makespan_ratio_vs_no_kill": round(figures["kill"] / figures["no_kill"], 3),
            "r1_agent_kills": figures["kills"], "r1_status": figures["status"]}


def run_r2_r3(router, root: str, n: int) -> dict:
    import ray

    from actors import MISSION_NAMESPACE, start_mission
    from controlplane._logfile import read_log
    from tests.helpers.chaos import wait_result

    run_dir = f"{root}/r2"
    start_mission(spec("r2", chain(n), ["a", "b"]), router=router, mission_id="r2-1", run_dir=run_dir)
    resume_s = []
    for k in range(SUPERVISOR_KILLS):
        target = (k + 1) * n // (SUPERVISOR_KILLS + 2)
        while sum(counts(run_dir)[0].values()) < target:
            time.sleep(0.1)
        resumed_before = _resumed(read_log(run_dir))
        killed_at = time.time()
        ray.kill(ray.get_actor("r2-1", namespace=MISSION_NAMESPACE), no_restart=False)
        while len(_resumed(read_log(run_dir))) <= len(resumed_before):
            time.sleep(0.05)
        resume_s.append(_resumed(read_log(run_dir))[-1] - killed_at)
    waited = subprocess.run([sys.executable, "-m", "controlplane", "wait", run_dir, "--timeout-s", "900"],
                            capture_output=True, text=True, timeout=960)
    result = wait_result(run_dir)
    successes, rerun = counts(run_dir)
    print(f"r2: {n} chained tasks, {SUPERVISOR_KILLS} supervisor kills: resumed in "
          f"{', '.join(f'{s:.2f}' for s in resume_s)} s; {rerun} completed tasks rerun; status {result['status']}")
    print(f"r3: `controlplane wait` exit {waited.returncode}: {waited.stdout.strip()}")
    return {"r2_resume_s_max": round(max(resume_s), 3), "r2_completed_tasks_rerun": rerun,
            "r2_status": result["status"], "r2_tasks_lost": sum(1 for i in range(n) if successes[f"t{i}"] == 0),
            "r3_driver_kill_result_collected": waited.returncode == 0 and result["status"] == "succeeded"}


def _resumed(records) -> list[float]:
    return [r.time_s for r in records if r.kind == "mission.status" and "resumed:" in r.data.get("message", "")]


def run_r6_r7_side_effects_r8(router, root: str, size: dict) -> dict:
    from tests.helpers.chaos import run_r6, run_r7, run_r8, run_side_effects

    started = time.monotonic()
    r6 = run_r6(router, root, posts=size["r6_posts"], kills=2)
    r6["r6_wall_s"] = round(time.monotonic() - started, 1)
    print(f"r6: {r6['r6_posts_acked']} posts acknowledged, {r6['r6_memory_kills']} memory actor kills: lost "
          f"{r6['r6_acked_posts_lost']}, stored twice {r6['r6_duplicates']}, longest post stall after a kill "
          f"{r6['r6_post_stall_s_max']:.1f} s; status {r6['r6_status']} in {r6['r6_wall_s']} s")
    r7 = run_r7(router, root, tasks=size["r7_tasks"])
    print(f"r7: {size['r7_tasks']} tasks, {r7['r7_random_failures']} random failures, {r7['r7_outage_failures']} "
          f"outage failures ({r7['r7_failures_before_breaker_open']} before the breaker opened, the rest probes), "
          f"{r7['r7_calls_on_fallback']} calls on the fallback, {r7['r7_task_retries']} task retries: status "
          f"{r7['r7_status']} in {r7['r7_makespan_s']} s; breaker closed {r7['r7_breaker_recovered_s']} s after "
          "the outage")
    started = time.monotonic()
    effects = run_side_effects(router, root)
    effects["side_effects_wall_s"] = round(time.monotonic() - started, 1)
    for label in ("after_result", "in_flight"):
        print(f"side effects, agent killed {label.replace('_', ' ')}: executed "
              f"{effects[f'side_effects_{label}_executions']} time(s); task "
              f"{effects[f'side_effects_{label}_status']}; {effects[f'side_effects_{label}_error'][:60]}")
    r8 = run_r8(router, root, APP_NAME)
    print(f"r8: Router replica killed after 3 tasks (replaced: {r8['r8_router_replaced']}): status {r8['r8_status']} "
          f"with {r8['r8_tasks_succeeded']} tasks done, {r8['r8_tokens_charged']} of {r8['r8_cap_tokens']} tokens "
          f"charged; the next task succeeded {r8['r8_stall_s']} s after the kill")
    return {**r6, **r7, **effects, **r8}


def run_r9_r10_on_two_router_replicas(root: str, http_port: int) -> dict:
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy
    from tests.helpers.chaos import r9_serving_config, run_r9, run_r10

    app = f"{APP_NAME}-2r"
    router = deploy(ServingConfig.model_validate(r9_serving_config()), app_name=app, http_port=http_port,
                    route_prefix=f"/{app}")
    try:
        r9 = run_r9(router, root, app)
        r10 = run_r10(router, root, app)
    finally:
        serve.delete(app)
    for figures, label, killed in ((r9, "r9", "one of 2 Router replicas"),
                                   (r10, "r10", "the budget book of 2 Router replicas")):
        print(f"{label}: {killed} killed after 5 tasks: status {figures[f'{label}_status']} with "
              f"{figures[f'{label}_tasks_succeeded']} tasks done ({figures[f'{label}_llm_calls']} model calls in "
              f"its usage), {figures[f'{label}_tokens_charged']} of {figures[f'{label}_cap_tokens']} tokens "
              f"charged; the next task succeeded {figures[f'{label}_stall_s']} s after the kill, the mission ended "
              f"{figures[f'{label}_end_after_kill_s']} s after it")
    return {**r9, **r10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small missions (about 5 minutes)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from benchmarks._ports import free_port
    from controlplane.config import ServingConfig
    from serving import deploy
    from tests.helpers.chaos import chaos_models

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    http_port = free_port()
    router = deploy(ServingConfig.model_validate({
        "router": {"agent": {"max_in_flight": 64}, "request_timeout_s": 60},
        "models": {"scripted-50ms": {"kind": "scripted", "latency_s": LATENCY_S,
                                     "replies": [{"match": ".", "text": '{"final": "done"}'}]}, **chaos_models()}}),
        app_name=APP_NAME, http_port=http_port)
    root = tempfile.mkdtemp(prefix="bench-chaos-")
    started, load_before = time.monotonic(), os.getloadavg()[0]
    print(f"conditions: scripted engine, {LATENCY_S * 1000:.0f} ms calls (r1-r3), {os.cpu_count()} cores, no GPU, "
          f"load average {load_before:.1f}; runs in {root}")
    figures = {**run_r1(router, root, size["r1_tasks"]), **run_r2_r3(router, root, size["r2_tasks"]),
               **run_r6_r7_side_effects_r8(router, root, size), **run_r9_r10_on_two_router_replicas(root, http_port)}
    figures.update(bench_s=round(time.monotonic() - started, 1), load_average_start=round(load_before, 1),
                   load_average_end=round(os.getloadavg()[0], 1))
    print(f"summary: lost {figures['r1_tasks_lost']}, duplicated {figures['r1_tasks_duplicated']}, makespan x"
          f"{figures['r1_makespan_ratio_vs_no_kill']} under agent kills; supervisor resume <= "
          f"{figures['r2_resume_s_max']} s, {figures['r2_completed_tasks_rerun']} reruns; driver-less result "
          f"collected: {figures['r3_driver_kill_result_collected']}; memory kills: {figures['r6_acked_posts_lost']} "
          f"acked posts lost, {figures['r6_duplicates']} stored twice; backend faults: mission succeeded "
          f"{figures['r7_mission_succeeded']}, {figures['r7_failures_before_breaker_open']} failures before the "
          f"breaker opened, closed {figures['r7_breaker_recovered_s']} s after the outage; side effects executed "
          f"twice: {figures['side_effects_executed_twice']}; Router replica killed: {figures['r8_status']}, "
          f"{figures['r8_cap_overshoot_tokens']} tokens over the cap; one of two killed: {figures['r9_status']}, "
          f"{figures['r9_cap_overshoot_tokens']} tokens over the cap; budget book killed: {figures['r10_status']}, "
          f"{figures['r10_cap_overshoot_tokens']} tokens over the cap; {figures['bench_s']} s, load average "
          f"{load_before:.1f} -> {figures['load_average_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
