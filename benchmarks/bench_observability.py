"""Observability benchmark: what tracing costs a real mission and a span, and how long a 1,000-task report takes.

1. tracing_overhead_ratio. A 500-task mission (10 agents x 4 slots, layers 10 wide, each task needs two of the
   layer above) on a zero-latency scripted engine behind the real router, through the real SupervisorActor and
   agent actors: makespan with tracing on (every span to the run's OTLP JSON lines file: the mission, each
   attempt, each router call with its queue-wait event) / the same mission with tracing off. Runs alternate
   off/on after one warm-up of each; medians. Makespan: from the mission's `running` event to the last task's end.
   tracing_sampled_out_ratio: the same, for the mission traced but sampled out (`sample_ratio` 0, as
   OTEL_TRACES_SAMPLER=always_off gives): what tracing costs a mission that a sampler drops.
2. span_overhead_us. One `invoke_agent` span with a `chat` span inside (attributes, a queue-wait event and
   the usage recorded), tracing on with the OTLP JSON lines file exporter (batched), timed until the file
   holds every span, divided by the spans made; minus the same loop with tracing off. Baseline: the loop
   with tracing off (`span_off_us`), in the same run.
3. report_render_s_1000_tasks. A 1,000-task run (6 agents x 4 slots, each task needs up to two of the 30
   before it, 5% of first attempts fail and retry) made by the real Scheduler on a simulated clock, then
   `render_report_html(result, events)`: the timeline, critical path, bottleneck and the page.

`python_ref_us` (sum(range(1000))) shows how loaded the machine was: about 10 us on an idle core.

    python benchmarks/bench_observability.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# -- settings -------------------------------------------------------------------------------------------
SPAN_LOOPS, SPAN_LOOPS_QUICK = 5_000, 2_000
REPORT_TASKS = 1_000
REPS = 3
MISSION_TASKS, MISSION_WIDTH, AGENT_SLOTS = 500, 10, 4
MISSION_REPS, MISSION_REPS_QUICK = 5, 3
RAY_CPUS = 16
AGENTS = ["lead", "researcher", "copywriter", "reviewer", "designer", "analyst"]
TARGET_SPAN_US, TARGET_RATIO = 200, 1.05


def traced_step() -> None:
    from controlplane import _tracing as tracing

    with tracing.invoke_agent("writer", mission_id="m-bench", task_id="t1", attempt=1):
        with tracing.chat("default", agent="writer", mission_id="m-bench", max_tokens=64) as span:
            tracing.queue_wait(0.01, model="default")
            tracing.record_chat_result(span, input_tokens=120, output_tokens=40, finish_reasons=["stop"], usd=1e-4)


def loop_s(loops: int) -> float:
    from controlplane import _tracing as tracing

    started = time.perf_counter()
    for _ in range(loops):
        traced_step()
    tracing.force_flush()
    return time.perf_counter() - started


def span_costs(loops: int) -> tuple[float, float]:
    """(per-span seconds with tracing on, per-span seconds off): medians over REPS after a warm-up."""
    from controlplane import _tracing as tracing
    from controlplane._tracing import TracingConfig

    spans = 2 * loops
    off = statistics.median(loop_s(loops) for _ in range(REPS + 1)) / spans
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.jsonl"
        tracing.configure(TracingConfig(service_name="bench", file_path=str(path), otlp_endpoint=None))
        try:
            loop_s(loops // 4)
            on = statistics.median(loop_s(loops) for _ in range(REPS)) / spans
        finally:
            tracing.shutdown()
        written = sum(len(json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"])
                      for line in path.read_text().splitlines())
    assert written == 2 * (loops // 4) + REPS * spans, f"{written} spans in the file"
    return on, off


def thousand_task_run():
    from controlplane._core.timeline import AttemptDetail
    from tests.helpers.synthetic_run import Step, agent, simulate, task

    rng = random.Random(7)
    tasks = [task(f"t{i}", AGENTS[i % len(AGENTS)],
                  *(f"t{j}" for j in rng.sample(range(max(0, i - 30), i), min(i, 2)))) for i in range(REPORT_TASKS)]

    def plan(task_id: str, agent_name: str, attempt: int) -> Step:
        if attempt == 1 and rng.random() < 0.05:
            return Step(duration_s=0.5, error="ReplicaUnavailable: timed out")
        seconds = rng.uniform(0.5, 3.0) * (3 if agent_name == "copywriter" else 1)
        return Step(duration_s=seconds, detail=AttemptDetail(
            queue_s=0.3 * seconds, model_s=0.5 * seconds, tools_s={"web.search": 0.1 * seconds}, model="default",
            usd=0.001, input_tokens=300, output_tokens=80))

    return simulate(tasks, [agent(a, max_concurrency=4) for a in AGENTS], plan)


def render_s() -> tuple[float, int]:
    from controlplane._core.report_html import render_report_html

    run = thousand_task_run()
    render_report_html(run.result, run.events)
    times, size = [], 0
    for _ in range(REPS):
        started = time.perf_counter()
        size = len(render_report_html(run.result, run.events))
        times.append(time.perf_counter() - started)
    return statistics.median(times), size


def layered_mission(tasks: int) -> dict:
    """`tasks` no-op tasks in layers of MISSION_WIDTH; task (l, i) needs (l-1, i) and (l-1, i+1)."""
    agents = [{"name": f"a{i}", "role": "worker", "model": "zero", "max_tokens": 8, "max_concurrency": AGENT_SLOTS,
               "resources": {"num_cpus": 0}} for i in range(MISSION_WIDTH)]
    items = []
    for n in range(tasks):
        layer, i = divmod(n, MISSION_WIDTH)
        deps = [] if layer == 0 else sorted({f"t{layer - 1}-{i}", f"t{layer - 1}-{(i + 1) % MISSION_WIDTH}"})
        items.append({"id": f"t{layer}-{i}", "agent": f"a{i}", "description": "no-op", "depends_on": deps,
                      "retries": 0, "timeout_s": 120})
    return {"name": "bench-tracing", "goal": "measure tracing", "agents": agents, "tasks": items}


def mission_makespan_s(router, data: dict, traces: Path | None, sample_ratio: float = 1.0) -> tuple[float, int]:
    """(makespan of one mission through the supervisor, spans in its traces file); tracing off when None."""
    import ray

    from actors import follow, start_mission
    from controlplane import parse_mission
    from controlplane._trace_file import read_spans
    from controlplane._tracing import TracingConfig

    config = (TracingConfig(file_path=str(traces), otlp_endpoint=None, sample_ratio=sample_ratio)
              if traces is not None else None)
    handle = start_mission(parse_mission(data), router=router, tracing=config)
    try:
        result = follow(handle, poll_s=0.5)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    began = next(e["time_s"] for e in result["events"] if e["kind"] == "mission" and e["status"] == "running")
    spans = len(read_spans(traces)) if traces is not None and traces.exists() else 0
    return max(t["ended_at"] for t in result["tasks"]) - began, spans


def tracing_overhead(reps: int) -> dict:
    """Makespans of the same mission with tracing off, on, and on but sampled out, alternating, after a warm-up
    of each."""
    import ray
    from ray import serve

    from benchmarks._ports import free_port
    from controlplane.config import ServingConfig
    from serving import deploy

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        router = deploy(ServingConfig.model_validate({"router": {"agent": {"max_in_flight": 64}},
                                                      "models": {"zero": {"kind": "scripted", "latency_s": 0.0}}}),
                        app_name="bench-observability", http_port=free_port())
        data = layered_mission(MISSION_TASKS)
        off, on, sampled_out, spans = [], [], [], 0
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(reps + 1):
                off_s, _ = mission_makespan_s(router, data, None)
                on_s, spans = mission_makespan_s(router, data, Path(tmp) / f"traces-{rep}.jsonl")
                out_s, dropped = mission_makespan_s(router, data, Path(tmp) / f"out-{rep}.jsonl", sample_ratio=0.0)
                assert dropped == 0, f"a sampled-out mission wrote {dropped} spans"
                print(f"{f'mission {MISSION_TASKS} tasks, rep {rep}':<32}{off_s:>10.3f} off {on_s:>8.3f} on "
                      f"({spans} spans) {out_s:>8.3f} sampled out{' (warm-up)' if rep == 0 else ''}")
                if rep:
                    off.append(off_s)
                    on.append(on_s)
                    sampled_out.append(out_s)
    finally:
        serve.shutdown()
        ray.shutdown()
    return {"tracing_overhead_ratio": round(statistics.median(on) / statistics.median(off), 3),
            "tracing_sampled_out_ratio": round(statistics.median(sampled_out) / statistics.median(off), 3),
            "makespan_sampled_out_s": round(statistics.median(sampled_out), 3),
            "makespans_sampled_out_s": [round(x, 3) for x in sampled_out],
            "makespan_off_s": round(statistics.median(off), 3), "makespan_on_s": round(statistics.median(on), 3),
            "makespans_off_s": [round(x, 3) for x in off], "makespans_on_s": [round(x, 3) for x in on],
            "spans_per_mission": spans, "mission_tasks": MISSION_TASKS, "mission_reps": reps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{SPAN_LOOPS_QUICK} span loops, "
                                                             f"{MISSION_REPS_QUICK} mission repetitions")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loops = SPAN_LOOPS_QUICK if args.quick else SPAN_LOOPS
    python_ref_us = min(timeit.repeat("sum(range(1000))", number=2000, repeat=3)) / 2000 * 1e6
    print(f"{'figure':<32}{'value':>12}")
    mission = tracing_overhead(MISSION_REPS_QUICK if args.quick else MISSION_REPS)
    on_s, off_s = span_costs(loops)
    render, size = render_s()
    figures = {
        **mission,
        "span_overhead_us": round((on_s - off_s) * 1e6, 1), "span_on_us": round(on_s * 1e6, 1),
        "span_off_us": round(off_s * 1e6, 2), "report_render_s_1000_tasks": round(render, 4),
        "report_bytes_1000_tasks": size,
        "python_ref_us": round(python_ref_us, 1), "span_loops": loops, "reps": REPS,
        "exporter": "OTLP JSON lines file, batched", "engine": "scripted (zero latency) behind the real router",
        "concurrency": f"{MISSION_WIDTH} agents x {AGENT_SLOTS} slots", "cores": os.cpu_count(), "gpu": False,
    }
    figures["span_overhead_target_met"] = figures["span_overhead_us"] <= TARGET_SPAN_US
    figures["tracing_overhead_target_met"] = figures["tracing_overhead_ratio"] <= TARGET_RATIO
    for key in ("tracing_overhead_ratio", "tracing_sampled_out_ratio", "span_on_us", "span_off_us", "span_overhead_us",
                "report_render_s_1000_tasks", "python_ref_us"):
        print(f"{key:<32}{figures[key]:>12}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"bench_observability: tracing_overhead_ratio {figures['tracing_overhead_ratio']} (target "
          f"<={TARGET_RATIO}; {MISSION_TASKS}-task scripted mission, {figures['makespan_off_s']} s off vs "
          f"{figures['makespan_on_s']} s on, {figures['spans_per_mission']} spans; sampled out "
          f"{figures['tracing_sampled_out_ratio']}); span overhead "
          f"{figures['span_overhead_us']} us/span (target <={TARGET_SPAN_US}; file exporter, batched); report of "
          f"{REPORT_TASKS} tasks rendered in {figures['report_render_s_1000_tasks']} s ({size / 1e6:.1f} MB); "
          f"{figures['cores']} cores, no GPU, python_ref {figures['python_ref_us']} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
