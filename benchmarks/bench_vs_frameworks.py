"""Peers side by side: controlplane, LangGraph and CrewAI run the same DAGs against the same router endpoint.

Two DAGs, each run by every system in one invocation, interleaved repetition by repetition, all calling one
router deployment (so one model, one engine, one set of settings):
- demo: the nine tasks of missions/product_launch.yaml (same agents, dependencies, output schemas and
  max_tokens), one model call per task: the demo's tools and delegation are left out, since the peers would have
  to re-create them differently (see benchmarks/_vs_frameworks_dags.py).
- wide: 27 one-sentence tasks, 9 wide, 3 layers; task (l, i) needs (l-1, i) and (l-1, i+1).

Systems:
- controlplane: the real supervisor and agent actors (start_mission, as `controlplane run` does, with its file
  tracing), model calls over the router's handle API. On the demo DAG with the demo's memory (fixed recall, the
  contradiction judge), and once more without memory (`controlplane_nomem`) to show what memory costs.
- langgraph: a StateGraph with one node per task, edges from the dependencies (a node with several waits for all
  of them), independent branches in one superstep, `ainvoke`; ChatOpenAI (langchain-openai) on the router's
  OpenAI-compatible HTTP API, `with_structured_output(method="json_schema")` for schema tasks. Its prompts are
  controlplane's (build_messages), so the two send the same text, memory aside.
- crewai_sequential, crewai_async: CrewAI's default sequential process, and the same with async_execution on the
  tasks CrewAI lets run beside others; in its own virtual environment (benchmarks/_vs_frameworks_crewai.py).

Per system and DAG: makespan (median, min, max), model calls and tokens from the router's accounting (each run has
its own mission id; the peers call with an API key scoped to it), and overhead = makespan - critical path, the
critical path being the DAG's longest chain of that run's own model-call latencies as the router measured them
(admission to last token). controlplane's makespan runs from its `running` event (agents placed) to the last
task's end; its agent start-up (`agents_ready_s`) and end-to-end time are reported beside it. The peers' makespan
is their invoke / kickoff call; building the graph or crew is not in it. controlplane's demo ratio to LangGraph is
also given over only the repetitions in which both sent the same prompt tokens and drew completion tokens within
2% (`..._like_for_like`): at temperature 0 the model's text still differs now and then, and a run that drew longer
answers is slower whoever sent it.

    python benchmarks/bench_vs_frameworks.py [--quick] [--json PATH] [--scripted] [--crewai-python PATH]

The real model by default (serving/default.yaml: SmolLM2-135M on vLLM-CPU); `--scripted` puts the scripted
engine (a fixed latency per call, short valid answers) behind the same router, for development.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _vs_frameworks_dags import (  # noqa: E402
    critical_path_s,
    demo_mission,
    like_for_like_ratio,
    scripted_replies,
    spread,
    wide_mission,
    workload,
)

from benchmarks._ports import free_port  # noqa: E402

# -- settings -------------------------------------------------------------------------------------------
REPS, REPS_QUICK = 3, 1
SCRIPTED_CALL_S = 0.3
RAY_CPUS = 16
MODEL = "default"
DEMO_YAML = ROOT / "missions" / "product_launch.yaml"
CREWAI_RUNNER = ROOT / "benchmarks" / "_vs_frameworks_crewai.py"
CREWAI_VENV_PYTHON = ROOT / ".venv-crewai" / "bin" / "python"
SYSTEMS = {"demo": ("controlplane", "controlplane_nomem", "langgraph", "crewai_async", "crewai_sequential"),
           "wide": ("controlplane", "langgraph", "crewai_async", "crewai_sequential")}
OVERHEAD_SLACK_S = 0.2
TARGETS = {"makespan_ratio_vs_langgraph": ("<=", 1.0), "makespan_ratio_vs_crewai_async": ("<=", 1.0),
           "speedup_vs_crewai_sequential_wide": (">=", 3.0)}


# -- the systems ----------------------------------------------------------------------------------------
def merge_outputs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {**old, **new}


class GraphState(TypedDict):
    """LangGraph's state: each node adds its task's output (branches of one superstep write side by side)."""

    outputs: Annotated[dict[str, Any], merge_outputs]


def run_controlplane(router: Any, mission: dict, mission_id: str, workdir: Path, router_url: str) -> dict:
    """The mission through the supervisor and agent actors, as `controlplane run` starts it."""
    import ray

    from actors import follow, start_mission
    from controlplane import parse_mission
    from controlplane.cli.run import mission_tracing_config

    spec = parse_mission(mission)
    run_dir = str(workdir / mission_id)
    started = time.time()
    handle = start_mission(spec, router=router, mission_id=mission_id, memory_dir=f"{run_dir}/memory",
                           router_url=router_url, run_dir=run_dir, tracing=mission_tracing_config(run_dir, spec))
    try:
        result = follow(handle)
    finally:
        ray.kill(handle)
    events = result["events"]
    began = next(e["time_s"] for e in events if e["kind"] == "mission" and e["status"] == "running")
    seconds: dict[str, float] = defaultdict(float)
    attempts: dict[str, float] = defaultdict(float)  # the attempts' wall time, as the supervisor saw it
    for event in events:
        data = event.get("data", {})
        if event["kind"] == "task" and "model_s" in data:
            seconds[event["task"]] += data["model_s"] + data.get("queue_s", 0.0)
            attempts[event["task"]] += data.get("latency_s", 0.0)
    ended = [t["ended_at"] for t in result["tasks"] if t.get("ended_at")]
    return {"ok": result["status"] == "succeeded", "error": result["reason"], "seconds": dict(seconds),
            "attempt_seconds": dict(attempts), "makespan_s": max(ended) - began, "agents_ready_s": began - started,
            "e2e_s": time.time() - started}


def run_langgraph(mission: dict, base_url: str, api_key: str, loop: asyncio.AbstractEventLoop) -> dict:
    """The DAG as a LangGraph StateGraph over the router's OpenAI API, on `loop` (one event loop for every run,
    as in a long-lived service: langchain-openai caches its HTTP client, which is bound to the loop it ran on)."""
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph

    from controlplane import parse_mission
    from controlplane._core.prompts import build_messages

    spec = parse_mission(mission)
    seconds: dict[str, float] = defaultdict(float)

    def node(task: Any) -> Any:
        agent = spec.agent(task.agent)
        llm = ChatOpenAI(model=MODEL, base_url=base_url, api_key=api_key, max_tokens=agent.max_tokens,
                         temperature=agent.temperature)
        schema = task.expected_output if isinstance(task.expected_output, dict) else None
        structured = (llm.with_structured_output({"title": task.id, **schema}, method="json_schema",
                                                 include_raw=True) if schema else None)

        async def step(state: GraphState) -> dict:
            context = {dep: state["outputs"][dep] for dep in task.depends_on}
            messages = build_messages(agent, goal=spec.goal, task=task, context=context)
            reply = await (structured or llm).ainvoke(messages)
            raw = reply["raw"] if schema else reply
            seconds[task.id] += raw.response_metadata["token_usage"].get("latency_s", 0.0)
            output = (reply["parsed"] if schema and reply["parsed"] is not None else raw.content)
            return {"outputs": {task.id: output}}

        return step

    graph = StateGraph(GraphState)
    for task in spec.tasks:
        graph.add_node(task.id, node(task))
        graph.add_edge(task.depends_on if len(task.depends_on) > 1 else task.depends_on[0] if task.depends_on
                       else START, task.id)
    needed = {dep for task in spec.tasks for dep in task.depends_on}
    for task in spec.tasks:
        if task.id not in needed:
            graph.add_edge(task.id, END)
    app = graph.compile()

    async def invoke() -> float:
        started = time.perf_counter()
        await app.ainvoke({"outputs": {}})
        return time.perf_counter() - started

    return {"ok": True, "makespan_s": loop.run_until_complete(invoke()), "seconds": dict(seconds)}


class CrewAISide:
    """The CrewAI runner subprocess in CrewAI's own venv: one JSON job per line in, one result per line out."""

    def __init__(self, python: str, log_path: Path) -> None:
        self.log_path = log_path
        self.version = crewai_version(python)
        self._proc = None
        if self.version is not None:
            env = {**os.environ, "CREWAI_DISABLE_TELEMETRY": "true", "OTEL_SDK_DISABLED": "true"}
            self._proc = subprocess.Popen([python, str(CREWAI_RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log_path.open("w"), text=True, env=env)

    def run(self, work: dict, mode: str, base_url: str, api_key: str) -> dict:
        if self._proc is None:
            return {"ok": False, "error": "crewai is not installed (see --crewai-python)"}
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"workload": work, "mode": mode, "base_url": base_url,
                                           "api_key": api_key, "model": MODEL}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text().strip().splitlines()[-1:] or ["no output"]
            self._proc = None
            return {"ok": False, "error": f"the CrewAI runner exited: {tail[0]}"}
        result = json.loads(line)
        seconds: dict[str, float] = defaultdict(float)
        for call in result.pop("calls", []):
            seconds[call["task"]] += call["latency_s"]
        return {**result, "seconds": dict(seconds)}

    def close(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def crewai_version(python: str) -> str | None:
    try:
        found = subprocess.run([python, "-c", "import crewai; print(crewai.__version__)"], capture_output=True,
                               text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


# -- one run --------------------------------------------------------------------------------------------
class Bench:
    """What every run needs: the router, its HTTP URL and key store, the missions, the CrewAI runner."""

    def __init__(self, router: Any, base_url: str, keys_file: str, workdir: Path, crewai: CrewAISide,
                 missions: dict[str, dict]) -> None:
        self.router, self.base_url, self.keys_file, self.workdir = router, base_url, keys_file, workdir
        self.crewai, self.missions = crewai, missions
        self.loop = asyncio.new_event_loop()

    def run(self, dag: str, system: str) -> dict:
        """One run of `dag` by `system`, under its own mission id; adds the router's usage and the overhead."""
        mission = self.missions["demo_nomem" if system == "controlplane_nomem" else dag]
        mission_id = f"vsf-{dag}-{system.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        try:
            if system.startswith("controlplane"):
                run = run_controlplane(self.router, mission, mission_id, self.workdir, self.base_url)
            else:
                run = self._peer(system, mission, mission_id)
        except Exception as exc:  # a peer that fails is reported, not fatal
            run = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": {}}
        run.update(self.usage(mission_id))
        if run["ok"]:
            depends = {t["id"]: t.get("depends_on", []) for t in mission["tasks"]}
            run["critical_path_s"] = critical_path_s(depends, run["seconds"])
            run["overhead_s"] = run["makespan_s"] - run["critical_path_s"]
            if "attempt_seconds" in run:  # controlplane: where its overhead is, inside the agents or between tasks
                attempts = critical_path_s(depends, run["attempt_seconds"])
                run["overhead_in_agents_s"] = attempts - run["critical_path_s"]
                run["overhead_between_tasks_s"] = run["makespan_s"] - attempts
        return run

    def _peer(self, system: str, mission: dict, mission_id: str) -> dict:
        from serving._keys import ApiKeyStore

        store = ApiKeyStore(self.keys_file)
        now = time.time()
        api_key, scope = store.create(system.replace("_", "-"), kind="mission", scope_id=mission_id, now_s=now,
                                      expires_at_s=now + 3600)
        try:
            if system == "langgraph":
                return run_langgraph(mission, self.base_url, api_key, self.loop)
            return self.crewai.run(workload(mission), system.removeprefix("crewai_"), self.base_url, api_key)
        finally:
            store.revoke(scope.id, now_s=time.time())

    def usage(self, mission_id: str) -> dict:
        rows = self.router.handle.usage.remote(mission_id).result(timeout_s=60)
        return {"calls": sum(r["calls"] + r["errors"] for r in rows),
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "completion_tokens": sum(r["completion_tokens"] for r in rows)}


# -- the whole benchmark --------------------------------------------------------------------------------
def serving_config(scripted: bool, keys_file: str, missions: dict[str, dict]) -> Any:
    """serving/default.yaml, its API keys in a file of this run; with `scripted`, its model scripted."""
    from controlplane.config import ServingConfig
    from serving import load_serving_config

    data = load_serving_config(None).model_dump(mode="json")
    data["router"]["auth"]["api_keys_file"] = keys_file
    if scripted:
        rules = scripted_replies(workload(m) for m in missions.values())
        data["models"] = {MODEL: {"kind": "scripted", "latency_s": SCRIPTED_CALL_S, "replies": rules}}
    return ServingConfig.model_validate(data)


def measure(bench: Bench, reps: int) -> dict[tuple[str, str], list[dict]]:
    """A warm-up round of each DAG by every system, then `reps` rounds of each, systems interleaved. After the
    warm-up, every system's prompts are in vLLM's prefix cache alike: controlplane and LangGraph send the same text,
    so without it whichever ran second would find the other's prompts cached."""
    print(f"{'dag':<5} {'system':<19} {'rep':>4} {'makespan s':>11} {'crit. path s':>13} {'overhead s':>11} "
          f"{'calls':>6} {'prompt tok':>11} {'compl. tok':>11}", flush=True)
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for dag, systems in SYSTEMS.items():
        for rep, system in itertools.product(range(reps + 1), systems):
            run = bench.run(dag, system)
            show(dag, system, "warm" if rep == 0 else str(rep), run)
            if rep:
                runs[(dag, system)].append(run)
    return runs


def show(dag: str, system: str, rep: str, run: dict) -> None:
    if not run["ok"]:
        print(f"{dag:<5} {system:<19} {rep:>4}  failed: {run.get('error', '')[:160]}", flush=True)
        return
    print(f"{dag:<5} {system:<19} {rep:>4} {run['makespan_s']:>11.2f} {run['critical_path_s']:>13.2f} "
          f"{run['overhead_s']:>11.2f} {run['calls']:>6} {run['prompt_tokens']:>11} {run['completion_tokens']:>11}",
          flush=True)


def figures_of(runs: dict[tuple[str, str], list[dict]]) -> dict[str, Any]:
    """Per DAG and system: makespan median/min/max, medians of the rest, and the failed runs."""
    figures: dict[str, Any] = {}
    for (dag, system), all_runs in runs.items():
        ok = [run for run in all_runs if run["ok"]]
        prefix = f"{system}_{dag}"
        figures[f"{prefix}_failed_runs"] = len(all_runs) - len(ok)
        if not ok:
            continue
        span = spread(run["makespan_s"] for run in ok)
        figures.update({f"{prefix}_makespan_s": span["median"], f"{prefix}_makespan_s_min": span["min"],
                        f"{prefix}_makespan_s_max": span["max"]})
        for key in ("critical_path_s", "overhead_s", "calls", "prompt_tokens", "completion_tokens",
                    "overhead_in_agents_s", "overhead_between_tasks_s", "agents_ready_s", "e2e_s"):
            if key in ok[0]:
                figures[f"{prefix}_{key}"] = statistics.median(run[key] for run in ok)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """The required keys (None when a side has no successful run) and whether each target is met."""
    def over(a: str, b: str) -> float | None:
        x, y = figures.get(a), figures.get(b)
        return round(x / y, 3) if x is not None and y else None

    out = {"makespan_ratio_vs_langgraph": over("controlplane_demo_makespan_s", "langgraph_demo_makespan_s"),
           "makespan_ratio_vs_crewai_async": over("controlplane_demo_makespan_s", "crewai_async_demo_makespan_s"),
           "speedup_vs_crewai_sequential_wide": over("crewai_sequential_wide_makespan_s",
                                                     "controlplane_wide_makespan_s"),
           "overhead_s_per_run": figures.get("controlplane_demo_overhead_s"),
           "langgraph_overhead_s_per_run": figures.get("langgraph_demo_overhead_s"),
           "crewai_async_overhead_s_per_run": figures.get("crewai_async_demo_overhead_s")}
    for key, (op, goal) in TARGETS.items():
        out[f"{key}_target_met"] = None if out[key] is None else (out[key] <= goal if op == "<=" else out[key] >= goal)
    ours, theirs = out["overhead_s_per_run"], out["langgraph_overhead_s_per_run"]
    out["overhead_s_per_run_target_met"] = None if ours is None or theirs is None else ours <= theirs + OVERHEAD_SLACK_S
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{REPS_QUICK} repetition after each DAG's warm-up")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--scripted", action="store_true",
                        help=f"the scripted engine ({SCRIPTED_CALL_S} s per call) instead of the real model")
    parser.add_argument("--crewai-python", default=str(CREWAI_VENV_PYTHON if CREWAI_VENV_PYTHON.exists()
                                                        else sys.executable),
                        help="a Python with crewai installed (default: .venv-crewai/bin/python)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import yaml

    demo = yaml.safe_load(DEMO_YAML.read_text())
    missions = {"demo": demo_mission(demo), "demo_nomem": demo_mission(demo, memory=False), "wide": wide_mission()}
    conditions = conditions_of(args)
    with tempfile.TemporaryDirectory(prefix="bench-vs-frameworks-") as tmp:
        runs, crewai_version = run_all(args, missions, Path(tmp))
    figures = {**conditions, "crewai_version": crewai_version, **figures_of(runs)}
    figures["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    figures.update(ratios(figures))
    for system in ("controlplane", "controlplane_nomem"):
        alike, ratio = like_for_like_ratio(runs.get(("demo", system), []), runs.get(("demo", "langgraph"), []))
        figures[f"{system}_demo_reps_like_for_like_with_langgraph"] = alike
        figures[f"{system}_demo_makespan_ratio_vs_langgraph_like_for_like"] = ratio
    report(figures, args.json)
    return 0


def run_all(args: argparse.Namespace, missions: dict[str, dict], workdir: Path
            ) -> tuple[dict[tuple[str, str], list[dict]], str | None]:
    """Ray, the router, then the CrewAI runner (started last: importing crewai is heavy); every run."""
    import ray
    from ray import serve

    from serving import deploy

    keys_file = str(workdir / "api_keys.json")
    port = free_port()
    # address="local": a cluster of this benchmark's own, never one that happens to run on the machine
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    crewai = bench = None
    try:
        router = deploy(serving_config(args.scripted, keys_file, missions), app_name="bench-vs-frameworks",
                        http_port=port)
        crewai = CrewAISide(args.crewai_python, workdir / "crewai.log")
        if crewai.version is None:
            print(f"CrewAI is not importable with {args.crewai_python}: its figures are left out. Fix: "
                  "python3.11 -m venv .venv-crewai && .venv-crewai/bin/pip install -r "
                  "benchmarks/requirements-crewai.txt", flush=True)
        bench = Bench(router, f"http://127.0.0.1:{port}/v1", keys_file, workdir, crewai, missions)
        return measure(bench, REPS_QUICK if args.quick else REPS), crewai.version
    finally:
        if bench is not None:
            bench.loop.close()
        if crewai is not None:
            crewai.close()
        serve.shutdown()
        ray.shutdown()


def conditions_of(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {"mode": "quick" if args.quick else "full", "reps": REPS_QUICK if args.quick else REPS,
            "engine": f"scripted, {SCRIPTED_CALL_S} s per call" if args.scripted else
            f"vllm-cpu {version('vllm-cpu')}", "model": "scripted" if args.scripted else "SmolLM2-135M-Instruct",
            "cores": os.cpu_count(), "gpu": False, "ray_logical_cpus": RAY_CPUS,
            "load_avg_1m_start": round(os.getloadavg()[0], 2), "langgraph_version": version("langgraph"),
            "langchain_openai_version": version("langchain-openai"),
            "concurrency": "demo DAG up to 3 tasks at once, wide DAG up to 9"}


def report(figures: dict[str, Any], json_path: Path | None) -> None:
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=1) + "\n")

    def fmt(value: Any, unit: str = "") -> str:
        return "n/a" if value is None else f"{value:.2f}{unit}"

    print(f"bench_vs_frameworks: demo DAG makespan {fmt(figures['makespan_ratio_vs_langgraph'], 'x')} LangGraph's "
          f"(target <=1.0), {fmt(figures['makespan_ratio_vs_crewai_async'], 'x')} CrewAI async's (target <=1.0); "
          f"{fmt(figures['controlplane_demo_makespan_ratio_vs_langgraph_like_for_like'], 'x')} LangGraph's over the "
          f"{figures['controlplane_demo_reps_like_for_like_with_langgraph']} of {figures['reps']} repetitions that "
          "drew the same tokens (completion within 2%); "
          f"wide DAG {fmt(figures['speedup_vs_crewai_sequential_wide'], 'x')} faster than CrewAI sequential "
          f"(target >=3); overhead {fmt(figures['overhead_s_per_run'], ' s')}/run vs LangGraph "
          f"{fmt(figures['langgraph_overhead_s_per_run'], ' s')} (target <= LangGraph + {OVERHEAD_SLACK_S} s); "
          f"{figures['model']} on {figures['engine']} behind the router, {figures['cores']} cores, no GPU, "
          f"load {figures['load_avg_1m_start']}-{figures['load_avg_1m_end']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
