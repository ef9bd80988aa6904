"""bench_chaos: missions on scripted models while actors are killed; the mission log counts what was lost or redone.

Scenarios (same run, same local Ray cluster, scripted engine, 50 ms calls):
- r1: a wide mission (independent tasks over 4 agents); a random agent is killed every 2 s. Figures: tasks
  without a success (lost), tasks with more than one success (duplicated), and the makespan beside the same
  mission without kills.
- r2: a chain mission; its supervisor is killed 3 times. Figures: the longest time from a kill to the `resumed`
  record of the restarted supervisor, and tasks dispatched again after they had succeeded.
- r3: nobody follows the mission (its driver is gone); `controlplane wait RUN`, in another process, collects it.

Not measured here (see docs/reliability.md): r6 (memory actor killed during posts), r7 (backend faults), and
a side-effecting tool whose agent is killed mid-call.

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

SIZES = {"quick": {"r1_tasks": 40, "r2_tasks": 16}, "full": {"r1_tasks": 200, "r2_tasks": 40}}
AGENT_KILL_EVERY_S = 2.0
SUPERVISOR_KILLS = 3
LATENCY_S = 0.05


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


def wait_result(run_dir: str, timeout_s: float = 900.0) -> dict:
    from controlplane._rundir import read_result

    deadline = time.monotonic() + timeout_s
    while (result := read_result(run_dir)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"mission in {run_dir} did not end in {timeout_s} s")
        time.sleep(0.2)
    return result


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small missions (about 2 minutes)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from controlplane.config import ServingConfig
    from serving import deploy

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    router = deploy(ServingConfig.model_validate({
        "router": {"agent": {"max_in_flight": 64}, "request_timeout_s": 60},
        "models": {"scripted-50ms": {"kind": "scripted", "latency_s": LATENCY_S,
                                                     "replies": [{"match": ".", "text": '{"final": "done"}'}]}}}),
        app_name="chaos")
    root = tempfile.mkdtemp(prefix="bench-chaos-")
    print(f"conditions: scripted engine, {LATENCY_S * 1000:.0f} ms calls, {os.cpu_count()} cores, no GPU; "
          f"runs in {root}")
    figures = {**run_r1(router, root, size["r1_tasks"]), **run_r2_r3(router, root, size["r2_tasks"])}
    print(f"summary: lost {figures['r1_tasks_lost']}, duplicated {figures['r1_tasks_duplicated']}, makespan x"
          f"{figures['r1_makespan_ratio_vs_no_kill']} under agent kills; supervisor resume <= "
          f"{figures['r2_resume_s_max']} s, {figures['r2_completed_tasks_rerun']} reruns; driver-less result "
          f"collected: {figures['r3_driver_kill_result_collected']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
