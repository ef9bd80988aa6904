"""Scale benchmark: how the control plane's costs grow with mission size, memory size, missions and nodes.

1. Supervisor cost per task at 1k, 10k and 50k tasks: the real SupervisorActor loop (tick -> Scheduler.dispatch
   -> launch -> result -> on_success -> events, each one appended to the mission log in a temporary run
   directory), run in process with agents that answer at once: Ray's actor calls (about 0.5 ms each, the same
   at any size) are left out, so only what grows with the mission shows.
   A full Ray run at 50k tasks does not fit 2 shared cores. Target: _50k <= 1.5 x _1k.
2. Agent start: AgentActors started 2 at a time on a local Ray (each asks for no resources), ms per agent.
3. Memory: one namespace of 1M entries (IVF-Flat; 10 missions, synthetic clustered 384-d unit vectors) searched
   with a mission filter (inside FAISS) and without; p50 of single queries, their ratio, and recall@10 of the
   filtered search against an exact scan of that mission's entries.
4. Fair share: 4 missions at weights 1:1:2:4 keep the router core saturated (in process, a 5 ms fake backend,
   2 slots, 8 clients each); shares of the completed calls after a warm-up against the weights, as the largest
   relative error. The same load without weights (an even split) is the baseline.
5. Shared limits: a Serve app with 3 router replicas and a scripted model at rpm=600, driven by 24 concurrent
   clients through the handle API; admissions over a window that starts once the full bucket's burst is
   spent (and the leases taken during it with it), against the limit's exact count for that window. Then the
   same with the rpm=600 on the agent (router.agent.rpm) instead of the model.
6. Autoscaling: Ray's fake multi-node provider (tests/helpers/fake_autoscaler.py); 3 actors at 0.5 GPU on a
   GPU-less head: seconds until 2 fake GPU nodes serve them, then until they are gone (idle timeout 12 s).

    python benchmarks/bench_scale.py [--quick] [--json PATH] [--skip PART ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._ports import free_port  # noqa: E402

# -- settings -------------------------------------------------------------------------------------------
SUPERVISOR_SIZES = (1_000, 10_000, 50_000)
SUPERVISOR_WIDTH, SUPERVISOR_REPS = 10, 3
AGENTS, AGENTS_QUICK, AGENTS_AT_ONCE = 200, 40, 2
MEMORY_ENTRIES, MEMORY_ENTRIES_QUICK, MEMORY_MISSIONS, DIM = 1_000_000, 1_000_000, 10, 384
MEMORY_QUERIES, RECALL_QUERIES, MEMORY_NPROBE = 200, 50, 32
FAIR_WEIGHTS = {"m1": 1, "m2": 1, "m3": 2, "m4": 4}
FAIR_CALLS, FAIR_CALLS_QUICK, FAIR_WARM_CALLS, FAIR_CALL_S, FAIR_SLOTS, FAIR_OUTSTANDING = 4000, 1600, 400, 0.005, 2, 8
LIMIT_RPM, LIMIT_REPLICAS, LIMIT_CLIENTS, LEASE_TTL_S = 600, 3, 24, 1.0
LIMIT_WINDOW_S, LIMIT_WINDOW_S_QUICK = 90.0, 30.0
RAY_CPUS = 16
PARTS = ("supervisor", "agents", "memory", "fair", "limits", "autoscale")


def median_of(fn, reps: int) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(reps)]
    return statistics.median(runs), runs


# -- 1. supervisor ---------------------------------------------------------------------------------------
def _layered(n_tasks: int) -> dict:
    agents = [{"name": f"a{i}", "role": "worker", "model": "zero", "max_concurrency": 4,
               "resources": {"num_cpus": 0}} for i in range(SUPERVISOR_WIDTH)]
    tasks = []
    for n in range(n_tasks):
        layer, i = divmod(n, SUPERVISOR_WIDTH)
        deps = [] if layer == 0 else sorted({f"t{layer - 1}-{i}", f"t{layer - 1}-{(i + 1) % SUPERVISOR_WIDTH}"})
        tasks.append({"id": f"t{layer}-{i}", "agent": f"a{i}", "description": "no-op", "depends_on": deps,
                      "retries": 0})
    return {"name": "scale", "goal": "measure", "agents": agents, "tasks": tasks}


def supervisor_s(spec) -> float:
    from controlplane._core.events import MissionStatus
    from tests.helpers.inprocess_supervisor import InstantAgent, run_supervised

    agents = {a.name: InstantAgent() for a in spec.agents}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as run_dir:  # the mission log is part of the cost
        sched, took = asyncio.run(run_supervised(spec, agents, run_dir, mission_id="bench-scale"))
    assert sched.status() == MissionStatus.SUCCEEDED, sched.reason()
    return took


def bench_supervisor(quick: bool) -> dict:
    from controlplane import parse_mission

    out = {}
    print(f"{'supervisor path':<36}{'ms/task':>10}  runs (s)")
    supervisor_s(parse_mission(_layered(SUPERVISOR_SIZES[0])))  # warm-up
    for size in SUPERVISOR_SIZES:
        spec = parse_mission(_layered(size))
        reps = 1 if quick and size > 10_000 else SUPERVISOR_REPS
        took, runs = median_of(lambda spec=spec: supervisor_s(spec), reps)
        key = f"supervisor_ms_per_task_{size // 1000}k"
        out[key] = round(took / size * 1000, 4)
        print(f"{f'{size} tasks, {SUPERVISOR_WIDTH} wide':<36}{out[key]:>10.4f}  {[round(r, 2) for r in runs]}")
    out["supervisor_50k_vs_1k"] = round(out["supervisor_ms_per_task_50k"] / out["supervisor_ms_per_task_1k"], 3)
    out["supervisor_path"] = "SupervisorActor loop in process, agents answer at once (no Ray hop)"
    return out


# -- 2. agent start --------------------------------------------------------------------------------------
def bench_agents(quick: bool) -> dict:
    import ray

    from actors import AgentActor
    from controlplane import parse_mission

    n = AGENTS_QUICK if quick else AGENTS
    spec = parse_mission({"name": "start", "goal": "g", "agents": [{"name": "a", "role": "r"}],
                          "tasks": [{"id": "t", "agent": "a", "description": "d"}]})
    agent = spec.agents[0]

    def start(count: int) -> float:
        began = time.perf_counter()
        for _ in range(0, count, AGENTS_AT_ONCE):
            handles = [AgentActor.options(num_cpus=0).remote(mission_id="start", goal="g", agent=agent, router=None)
                       for _ in range(AGENTS_AT_ONCE)]
            ray.get([h.ready.remote() for h in handles])
            for handle in handles:
                ray.kill(handle)
        return time.perf_counter() - began

    start(4)  # warm-up
    took = start(n)
    out = {"agent_start_ms_per_agent_200": round(took / n * 1000, 1), "agent_start_agents": n,
           "agent_start_at_once": AGENTS_AT_ONCE}
    print(f"{'agent start':<36}{out['agent_start_ms_per_agent_200']:>10.1f}  ms/agent over {n} agents, "
          f"{AGENTS_AT_ONCE} at a time")
    return out


# -- 3. memory -------------------------------------------------------------------------------------------
def _clustered(n: int, rng, centers):
    import numpy as np

    x = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        end = min(n, start + 100_000)
        x[start:end] = centers[rng.integers(0, len(centers), end - start)]
        x[start:end] += rng.standard_normal((end - start, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_memory(quick: bool) -> dict:
    import numpy as np

    from memory._index import NamespaceIndex
    from memory._types import SearchFilters

    n = MEMORY_ENTRIES_QUICK if quick else MEMORY_ENTRIES
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((2000, DIM), dtype=np.float32)
    began = time.perf_counter()
    vectors = _clustered(n, rng, centers)
    attrs = {"mission_id": [f"m{i % MEMORY_MISSIONS}" for i in range(n)], "agent_id": [f"a{i % 7}" for i in range(n)],
             "topic": ["t"] * n, "task_id": [""] * n, "created_at_s": np.zeros(n)}
    index = NamespaceIndex(DIM, exact_below=50_000, large="ivf", ivf_nprobe=MEMORY_NPROBE)
    index.add(np.arange(n), vectors, attrs)
    build_s = time.perf_counter() - began
    queries = _clustered(MEMORY_QUERIES, rng, centers)
    where = SearchFilters(mission_id="m3")

    def p50_ms(filtered: bool) -> float:
        times = []
        for i in range(len(queries)):
            t0 = time.perf_counter()
            index.search(queries[i:i + 1], 10, where=where if filtered else None)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    p50_ms(True), p50_ms(False)  # warm-up
    filtered, unfiltered = [], []
    for _ in range(3):  # interleaved, so both paths see the same machine
        filtered.append(p50_ms(True))
        unfiltered.append(p50_ms(False))
    keep = np.arange(3, n, MEMORY_MISSIONS)
    subset = vectors[keep]
    recall = []
    for q in queries[:RECALL_QUERIES]:
        exact = set(keep[np.argsort(-(subset @ q))[:10]].tolist())
        recall.append(len(exact & {i for _, i in index.search(q[None, :], 10, where=where)[0]}) / 10)
    out = {"memory_filtered_search_p50_ms_1m": round(statistics.median(filtered), 3),
           "memory_unfiltered_search_p50_ms_1m": round(statistics.median(unfiltered), 3),
           "memory_filtered_vs_unfiltered_ratio_1m": round(
               statistics.median(filtered) / statistics.median(unfiltered), 3),
           "memory_filtered_recall_at_10_1m": round(float(np.mean(recall)), 4), "memory_entries": n,
           "memory_index": f"IVF-Flat, {index.index.nlist} lists, nprobe {MEMORY_NPROBE} (filtered: x1/sqrt(f))",
           "memory_filter": f"mission_id, 1 of {MEMORY_MISSIONS} missions", "memory_build_s": round(build_s, 1)}
    print(f"{'memory search, filtered p50':<36}{out['memory_filtered_search_p50_ms_1m']:>10.3f}  ms; unfiltered "
          f"{out['memory_unfiltered_search_p50_ms_1m']:.3f} ms; recall@10 {out['memory_filtered_recall_at_10_1m']}"
          f" ({n} entries, built in {build_s:.0f} s)")
    return out


# -- 4. fair share ---------------------------------------------------------------------------------------
class _TimedBackend:
    async def stream(self, call, affinity_key):
        await asyncio.sleep(FAIR_CALL_S)
        yield {"delta": "ok"}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 8, "completion_tokens": 1}


def _fair_shares(calls: int, weights: dict[str, int] | None) -> dict[str, float]:
    """Shares of `calls` completions once the first FAIR_WARM_CALLS (the start-up transient) are past."""
    from controlplane.config import ServingConfig
    from serving import Identity
    from serving._core import Call, RouterCore

    config = ServingConfig.model_validate({
        "router": {"max_in_flight_per_model": FAIR_SLOTS, "max_queue": 10_000, "request_timeout_s": 600,
                   "agent": {"max_in_flight": 10_000}},
        "models": {"m": {"kind": "scripted", "max_context_tokens": 4096}}})
    core = RouterCore(config, {"m": _TimedBackend()})
    for mission, weight in (weights or {}).items():
        core.set_mission_weight(mission, weight)
    done: list[str] = []

    async def client(mission: str, worker: int) -> None:
        call = Call(model="m", body={"messages": [{"role": "user", "content": "same size"}], "max_tokens": 4},
                    identity=Identity(mission_id=mission, agent_id=f"w{worker}"))
        while len(done) < FAIR_WARM_CALLS + calls:
            async for _ in core.stream(call):
                pass
            done.append(mission)

    async def run() -> None:
        await asyncio.gather(*(client(m, w) for m in FAIR_WEIGHTS for w in range(FAIR_OUTSTANDING)))

    asyncio.run(run())
    served = Counter(done[FAIR_WARM_CALLS:FAIR_WARM_CALLS + calls])
    return {m: served[m] / calls for m in FAIR_WEIGHTS}


def _share_error(shares: dict[str, float]) -> float:
    total = sum(FAIR_WEIGHTS.values())
    return max(abs(shares[m] - w / total) / (w / total) for m, w in FAIR_WEIGHTS.items())


def bench_fair(quick: bool) -> dict:
    calls = FAIR_CALLS_QUICK if quick else FAIR_CALLS
    weighted = _fair_shares(calls, FAIR_WEIGHTS)
    fifo = _fair_shares(calls, None)
    out = {"router_fair_share_error": round(_share_error(weighted), 4),
           "router_fair_share_error_without_weights": round(_share_error(fifo), 4),
           "router_fair_shares": {m: round(s, 4) for m, s in weighted.items()},
           "router_fair_setup": f"4 missions x {FAIR_OUTSTANDING} clients, {FAIR_SLOTS} slots, "
                                f"{FAIR_CALL_S * 1000:.0f} ms calls, {calls} calls after {FAIR_WARM_CALLS}"}
    print(f"{'fair share error (1:1:2:4)':<36}{out['router_fair_share_error']:>10.4f}  shares "
          f"{out['router_fair_shares']}; without weights {out['router_fair_share_error_without_weights']}")
    return out


# -- 5. shared limits over 3 router replicas ------------------------------------------------------------
LIMITED_SCOPES = {"model": "model:limited:rpm", "agent": "agent:default/anonymous:rpm"}


def bench_limits(quick: bool) -> dict:
    """A model's rpm, then an agent's (every call here is the anonymous agent's), each shared by 3 replicas."""
    return bench_limit("model", quick) | bench_limit("agent", quick)


def bench_limit(scope: str, quick: bool) -> dict:
    import ray
    from ray import serve

    from controlplane import BackpressureError
    from controlplane.config import ServingConfig
    from serving import ChatMessage, ChatRequest, deploy
    from serving._limiter import LIMITER_NAMESPACE

    window_s = LIMIT_WINDOW_S_QUICK if quick else LIMIT_WINDOW_S
    app = f"bench-scale-{scope}-limits"
    limited = {"rpm": LIMIT_RPM}
    config = ServingConfig.model_validate({
        "router": {"replicas": LIMIT_REPLICAS, "agent": {"max_in_flight": 1000} | (limited if scope == "agent" else {}),
                   "request_timeout_s": 60, "auth": {"allow_anonymous": True}},  # a local app: calls without a token
        "models": {"limited": {"kind": "scripted"} | ({"limits": limited} if scope == "model" else {})}})
    port = free_port()
    serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1", "port": port})  # handles only
    client = deploy(config, app_name=app, http_port=port)
    try:
        replicas = sum(serve.status().applications[app].deployments["Router"].replica_states.values())
        limiter = ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE)
        stamps: list[float] = []
        refused: list[float] = []  # refusals all through the window show the clients asked for more than the limit
        window = {"from": float("inf"), "until": float("inf")}
        request = ChatRequest(model="limited", messages=[ChatMessage(role="user", content="hi")], max_tokens=4)

        async def hammer() -> None:
            while time.time() < window["until"]:
                try:
                    await client.chat(request)
                    stamps.append(time.time())
                except BackpressureError as exc:
                    refused.append(time.time())
                    await asyncio.sleep(min(exc.retry_after_s, 0.05))

        async def measure_once_drained() -> None:
            # The bucket starts full (a minute's worth at once) when the first call asks for it; the rate is
            # measured once that burst is gone (the level of a bucket not yet made is infinite).
            while await limiter.level.remote(LIMITED_SCOPES[scope]) >= 1:
                await asyncio.sleep(0.25)
            await asyncio.sleep(LEASE_TTL_S + 1.0)  # leases taken during the burst are spent or handed back
            window["from"] = time.time()
            window["until"] = window["from"] + window_s

        async def run() -> None:
            await asyncio.gather(measure_once_drained(), *(hammer() for _ in range(LIMIT_CLIENTS)))

        asyncio.run(run())
    finally:
        serve.delete(app)
        _kill_limiter(ray, app)
    counted = [t for t in stamps if window["from"] <= t < window["until"]]
    exact = LIMIT_RPM / 60.0 * window_s
    key = "router_limit" if scope == "model" else "router_agent_limit"
    out = {f"{key}_error_3_replicas": round(abs(len(counted) - exact) / exact, 4),
           f"{key}_admitted": len(counted), f"{key}_exact": exact, f"{key}_window_s": window_s,
           f"{key}_replicas": replicas, f"{key}_burst": len([t for t in stamps if t < window["from"]]),
           f"{key}_refused_in_window": len([t for t in refused if window["from"] <= t < window["until"]])}
    print(f"{f'{scope} limit error, 3 router replicas':<36}{out[f'{key}_error_3_replicas']:>10.4f}  admitted "
          f"{len(counted)} of exactly {exact:g} in {window_s:g} s ({replicas} replicas, {scope} rpm={LIMIT_RPM})")
    return out


def _kill_limiter(ray, app: str) -> None:
    from serving._limiter import LIMITER_NAMESPACE

    try:
        ray.kill(ray.get_actor(f"{app}:limiter", namespace=LIMITER_NAMESPACE))
    except ValueError:
        pass


# -- 6. autoscaling -------------------------------------------------------------------------------------
def bench_autoscale(quick: bool) -> dict:

    from tests.helpers.fake_autoscaler import fake_autoscaling_cluster, run_driver

    with tempfile.TemporaryDirectory() as work, fake_autoscaling_cluster(Path(work)) as cluster:
        figures = run_driver(cluster, "measure")
    out = {"autoscale_gpu_node_up_s": round(figures["up_s"], 2),
           "autoscale_gpu_node_down_s": round(figures["down_s"], 2),
           "autoscale_gpu_nodes": figures["gpu_nodes"], "autoscale_idle_timeout_s": 12}
    print(f"{'autoscale: GPU nodes up':<36}{out['autoscale_gpu_node_up_s']:>10.2f}  s; down "
          f"{out['autoscale_gpu_node_down_s']:.2f} s after idle ({figures['gpu_nodes']} fake GPU nodes)")
    return out


# -- main ------------------------------------------------------------------------------------------------
TARGETS = {"supervisor_50k_vs_1k": ("<=", 1.5), "memory_filtered_search_p50_ms_1m": ("<=", 10.0),
           "memory_filtered_vs_unfiltered_ratio_1m": ("<=", 2.0), "router_fair_share_error": ("<=", 0.1),
           "router_limit_error_3_replicas": ("<=", 0.05), "router_agent_limit_error_3_replicas": ("<=", 0.05)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smaller agent count, shorter windows)")
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures: dict = {"cores": os.cpu_count(), "gpu": False, "engine": "scripted", "quick": args.quick}
    for part in ("supervisor", "fair", "memory"):
        if part not in args.skip:
            figures |= globals()[f"bench_{part}"](args.quick)
    if {"agents", "limits"} - set(args.skip):
        import ray

        _start_ray(ray)
        try:
            for part in ("agents", "limits"):
                if part not in args.skip:
                    figures |= globals()[f"bench_{part}"](args.quick)
        finally:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    if "autoscale" not in args.skip:
        figures |= bench_autoscale(args.quick)
    report(figures, args.json)
    return 0


def _start_ray(ray, attempts: int = 3) -> None:
    """A local Ray; retried, since Ray waits only 30 s for its raylet and a busy machine may miss that."""
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, namespace="bench-scale")
            return
        except Exception:
            ray.shutdown()
            if attempt == attempts - 1:
                raise


def report(figures: dict, json_path: str | None) -> None:
    for key, (op, goal) in TARGETS.items():
        if key in figures:
            figures[f"{key}_target_met"] = figures[key] <= goal if op == "<=" else figures[key] >= goal
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
    get = figures.get
    parts = {
        "supervisor_ms_per_task_1k": lambda: (
            f"supervisor {get('supervisor_ms_per_task_1k')}/{get('supervisor_ms_per_task_10k')}/"
            f"{get('supervisor_ms_per_task_50k')} ms/task at 1k/10k/50k ({get('supervisor_50k_vs_1k')}x, "
            f"target <=1.5x)"),
        "agent_start_ms_per_agent_200": lambda: f"agent start {get('agent_start_ms_per_agent_200')} ms/agent",
        "memory_filtered_search_p50_ms_1m": lambda: (
            f"memory filtered p50 {get('memory_filtered_search_p50_ms_1m')} ms at {get('memory_entries')} entries "
            f"(target <=10), {get('memory_filtered_vs_unfiltered_ratio_1m')}x unfiltered (target <=2), recall@10 "
            f"{get('memory_filtered_recall_at_10_1m')}"),
        "router_fair_share_error": lambda: (
            f"fair share error {get('router_fair_share_error')} (target <=0.1; "
            f"{get('router_fair_share_error_without_weights')} without weights)"),
        "router_limit_error_3_replicas": lambda: (
            f"limit error {get('router_limit_error_3_replicas')} (a model's rpm), "
            f"{get('router_agent_limit_error_3_replicas')} (an agent's) with 3 router replicas (target <=0.05)"),
        "autoscale_gpu_node_up_s": lambda: (
            f"GPU nodes up {get('autoscale_gpu_node_up_s')} s, down {get('autoscale_gpu_node_down_s')} s"),
    }
    shown = [describe() for key, describe in parts.items() if key in figures]  # the parts that ran
    print(f"bench_scale: {'; '.join(shown)}; {get('cores')} cores, no GPU, scripted engine")

if __name__ == "__main__":
    sys.exit(main())
