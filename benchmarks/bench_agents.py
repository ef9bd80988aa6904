"""Agents benchmark: what the tool-calling loop, MCP and delegation add, each against the same work done directly.

1. tool_call_overhead_ms. A no-op in-process tool called N times (1,000 full, 300 quick) through the loop:
   `AgentLoop` (the pure state machine: the door, the schema check, the repeat counter, the transcript) and
   `ToolRunner` (the actors' runner), in this process, the "model" a zero-latency function that writes the
   constrained tool call. Minus the same N calls of the function made directly. Per call, median of the reps.
   This is the in-process path of an AgentActor minus its router hop (which part 2 measures).
2. loop_overhead_ratio_vs_raw_router. A 10-step agent loop against the real router (Ray Serve, the scripted
   zero-latency engine): each step is a router call plus the loop's work and a no-op tool; against 10 raw router
   calls with the same messages, one after another. Ratio of the medians.
3. mcp_call_overhead_ms. A call of the SDK-written stdio MCP server (missions/mcp/facts_server.py) through the
   loop and ToolRunner, minus the same call made with the SDK client directly, on one connection, in this
   process (the MCP host actor's Ray hop is not in it: about one actor call, 0.5 ms).
4. delegate_overhead_ms. Mission A: task t1 delegates to another agent (a child task added to the running DAG)
   and then answers. Mission B: the same three model calls as declared tasks t1 -> t2 -> t3. Makespan of A minus
   makespan of B, on the real supervisor and router with the scripted zero-latency engine; medians of 10 pairs
   (20 without --quick), the two missions alternating.

    python benchmarks/bench_agents.py [--quick] [--json PATH] [--no-ray]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._ports import free_port  # noqa: E402

TOOL_CALLS, TOOL_CALLS_QUICK = 1000, 300
CALLS_PER_TASK = 50
LOOP_STEPS = 10
MCP_CALLS, MCP_CALLS_QUICK = 200, 50
REPS, REPS_QUICK = 5, 3
DELEGATE_PAIRS, DELEGATE_PAIRS_QUICK = 20, 10  # missions of ~50 ms: their spread needs more pairs than REPS
RAY_CPUS = 8
TARGETS = {"tool_call_overhead_ms": ("<=", 1.0), "loop_overhead_ratio_vs_raw_router": ("<=", 1.2),
           "mcp_call_overhead_ms": ("<=", 2.0), "delegate_overhead_ms": ("<=", 5.0)}


def noop(n: int) -> int:
    """Return n.

    Args:
        n: Any integer.
    """
    return n


# -- 1. the loop's cost per tool call, in process -----------------------------------------------------------
async def loop_calls(runner: Any, tool: str, arguments: list[dict[str, Any]], *, final: str = '{"final": "done"}'
                     ) -> int:
    """One task's loop: one tool call per step, with the given arguments, then the final answer."""
    from controlplane._core.agent_loop import AgentLoop
    from controlplane._core.loop_types import Finished, LoopLimits, RunTools

    loop = AgentLoop(agent="bench", task="t", messages=[{"role": "user", "content": "go"}],
                     known_tools=runner.specs(), allow=[tool],
                     limits=LoopLimits(max_steps=len(arguments) + 1, max_tool_calls=len(arguments)))
    replies = [json.dumps({"tool": tool, "arguments": a}) for a in arguments] + [final]
    calls = 0
    for text in replies:
        loop.next_request()
        decision = loop.on_reply(text)
        if isinstance(decision, RunTools):
            results = [await runner.run(call) for call in decision.calls]
            calls += len(results)
            loop.on_tool_results(results)
        elif isinstance(decision, Finished):
            return calls
    raise RuntimeError(f"the loop did not finish: {decision}")


def tool_call_overhead(calls: int, reps: int) -> dict[str, float]:
    from actors._tools import ToolRunner
    from controlplane._core.tools import tool_from_function

    runner = ToolRunner(functions={"noop": tool_from_function(noop, name="noop")}, builtins={})
    tasks = [[{"n": i * CALLS_PER_TASK + j} for j in range(CALLS_PER_TASK)] for i in range(calls // CALLS_PER_TASK)]

    async def through_loop() -> float:
        started = time.perf_counter()
        for arguments in tasks:
            await loop_calls(runner, "noop", arguments)
        return time.perf_counter() - started

    def direct() -> float:
        started = time.perf_counter()
        for arguments in tasks:
            for a in arguments:
                noop(**a)
        return time.perf_counter() - started

    asyncio.run(through_loop())
    looped = [asyncio.run(through_loop()) for _ in range(reps)]
    raw = [direct() for _ in range(reps)]
    per_call = [(l_s - r_s) / calls * 1000 for l_s, r_s in zip(looped, raw)]
    return {"tool_call_overhead_ms": statistics.median(per_call), "tool_calls_measured": calls,
            "tool_loop_s_median": statistics.median(looped), "tool_direct_s_median": statistics.median(raw)}


# -- 3. MCP through the loop, against the SDK client ----------------------------------------------------------
async def mcp_overhead(calls: int, reps: int) -> dict[str, float]:
    from mcp import Client, StdioServerParameters

    from actors._mcp import tool_spec
    from actors._tools import ToolRunner
    from controlplane.config._tools import McpServerDecl

    decl = McpServerDecl(name="facts", command="python", args=["-m", "missions.mcp.facts_server"])
    params = StdioServerParameters(command=sys.executable, args=list(decl.args), cwd=str(ROOT))
    async with Client(params) as client:
        specs = {s.name: s for s in (tool_spec(decl, t) for t in (await client.list_tools()).tools)}

        async def host_call(name: str, arguments: dict[str, Any]) -> Any:
            result = await client.call_tool(name.split(".", 1)[1], arguments)
            return result.structured_content

        class _Host:
            class call:  # noqa: N801 - mirrors the actor handle's `call.remote`
                remote = staticmethod(host_call)

        runner = ToolRunner(functions={}, builtins={}, mcp=_Host(), mcp_specs=specs)
        topics = ["price", "audience", "platforms", "market", "alternatives"]
        arguments = [{"topic": topics[i % len(topics)]} for i in range(calls)]
        batches = [arguments[i:i + 2] for i in range(0, calls, 2)]  # 2 calls per task: never a repeat-limit stop

        async def paired() -> tuple[float, float]:
            """Each batch through the loop, then the same calls direct: load drifts hit both paths alike."""
            looped_s = direct_s = 0.0
            for batch in batches:
                started = time.perf_counter()
                await loop_calls(runner, "facts.lookup", batch)
                middle = time.perf_counter()
                for a in batch:
                    await client.call_tool("lookup", a)
                looped_s, direct_s = looped_s + middle - started, direct_s + time.perf_counter() - middle
            return looped_s, direct_s

        await paired()
        looped, raw = map(list, zip(*[await paired() for _ in range(reps)]))
    per_call = [(l_s - r_s) / calls * 1000 for l_s, r_s in zip(looped, raw)]
    return {"mcp_call_overhead_ms": statistics.median(per_call), "mcp_calls_measured": calls,
            "mcp_direct_ms_per_call": statistics.median(raw) / calls * 1000}


# -- 2 and 4: on Ray, the real router and supervisor ----------------------------------------------------------
RULES = [
    {"match": r"Result of delegate", "text": '{"final": "done"}'},
    {"match": r"(?i)hand it over", "text": '{"tool": "delegate", "arguments": {"to": "b", "description": "child"}}'},
    {"match": r"Result of noop", "text": '{"tool": "noop", "arguments": {"n": 1}}'},
]


async def loop_vs_raw(router: Any, reps: int) -> dict[str, float]:
    from actors._tools import ToolRunner
    from benchmarks._serving_load import agent_tokens
    from controlplane._core.agent_loop import AgentLoop
    from controlplane._core.loop_types import LoopLimits, RunTools
    from controlplane._core.tools import tool_from_function
    from serving import ChatRequest

    runner = ToolRunner(functions={"noop": tool_from_function(noop, name="noop")}, builtins={})
    [token] = agent_tokens("bench-agents-loop", 1)  # the router takes every caller's identity from its token

    def request(messages: list[dict[str, Any]], schema: dict[str, Any] | None) -> Any:
        return ChatRequest.model_validate({"model": "bench", "messages": messages, "max_tokens": 32,
                                           "json_schema": schema, "token": token})

    async def agent_loop() -> tuple[float, list[tuple[list[dict[str, Any]], Any]]]:
        loop = AgentLoop(agent="bench", task="t", messages=[{"role": "user", "content": "start"}],
                         known_tools=runner.specs(), allow=["noop"],
                         limits=LoopLimits(max_steps=LOOP_STEPS, max_tool_calls=LOOP_STEPS, loop_repeat_limit=50,
                                           final_on_last_step=False))
        sent = []
        started = time.perf_counter()
        for n in range(LOOP_STEPS):
            r = loop.next_request()
            sent.append((r.messages, r.json_schema))
            reply = await router.chat(request(r.messages, r.json_schema))
            text = reply.text if n < LOOP_STEPS - 1 else '{"final": "done"}'
            decision = loop.on_reply(text if n else '{"tool": "noop", "arguments": {"n": 1}}')
            if isinstance(decision, RunTools):
                loop.on_tool_results([await runner.run(call) for call in decision.calls])
        return time.perf_counter() - started, sent

    async def raw(sent: list[tuple[list[dict[str, Any]], Any]]) -> float:
        started = time.perf_counter()
        for messages, schema in sent:
            await router.chat(request(messages, schema))
        return time.perf_counter() - started

    _, sent = await agent_loop()
    await raw(sent)
    looped, raws = [], []
    for _ in range(reps):
        looped.append((await agent_loop())[0])
        raws.append(await raw(sent))
    return {"loop_overhead_ratio_vs_raw_router": statistics.median(looped) / statistics.median(raws),
            "loop_10_steps_ms_median": statistics.median(looped) * 1000,
            "raw_10_calls_ms_median": statistics.median(raws) * 1000}


def mission_makespan_s(router: Any, data: dict[str, Any]) -> float:
    import ray

    from actors import follow, start_mission
    from controlplane import parse_mission

    handle = start_mission(parse_mission(data), router=router)
    try:
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    if result["status"] != "succeeded":
        raise RuntimeError(f"bench mission {data['name']}: {result['status']}: {result['reason']}")
    tasks = result["tasks"]
    return max(t["ended_at"] for t in tasks) - min(t["started_at"] for t in tasks)


def delegate_overhead(router: Any, pairs: int) -> dict[str, float]:
    agents = [{"name": "a", "role": "lead", "model": "bench", "tools": ["delegate"], "max_steps": 3,
               "resources": {"num_cpus": 0}},
              {"name": "b", "role": "helper", "model": "bench", "max_steps": 2, "resources": {"num_cpus": 0}}]
    delegated = {"name": "bench-delegate", "goal": "measure", "agents": agents,
                 "tasks": [{"id": "t1", "agent": "a", "description": "Hand it over", "retries": 0}]}
    declared = {"name": "bench-declared", "goal": "measure", "agents": agents,
                "tasks": [{"id": "t1", "agent": "a", "description": "first", "retries": 0},
                          {"id": "t2", "agent": "b", "description": "child", "depends_on": ["t1"], "retries": 0},
                          {"id": "t3", "agent": "a", "description": "then", "depends_on": ["t2"], "retries": 0}]}
    mission_makespan_s(router, delegated)
    mission_makespan_s(router, declared)
    with_delegate, with_dag = [], []
    for _ in range(pairs):
        with_delegate.append(mission_makespan_s(router, delegated))
        with_dag.append(mission_makespan_s(router, declared))
    return {"delegate_overhead_ms": (statistics.median(with_delegate) - statistics.median(with_dag)) * 1000,
            "delegate_pairs": pairs,
            "delegate_makespan_ms_median": statistics.median(with_delegate) * 1000,
            "declared_makespan_ms_median": statistics.median(with_dag) * 1000}


def on_ray(reps: int, pairs: int) -> dict[str, float]:
    import ray
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy

    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, namespace="bench-agents")
    try:
        config = {"router": {"agent": {"max_in_flight": 64}},
                  "models": {"bench": {"kind": "scripted", "latency_s": 0.0, "replies": RULES}}}
        router = deploy(ServingConfig.model_validate(config), app_name="bench-agents", http_port=free_port())
        figures = asyncio.run(loop_vs_raw(router, reps))
        figures |= delegate_overhead(router, pairs)
        serve.shutdown()
        return figures
    finally:
        ray.shutdown()


# -- report ------------------------------------------------------------------------------------------------
def verdict(key: str, value: float) -> str:
    op, target = TARGETS[key]
    ok = value <= target if op == "<=" else value >= target
    return f"{'meets' if ok else 'MISSES'} {op} {target}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 2 minutes on 2 cores)")
    parser.add_argument("--json", help="write every figure to this file as one JSON object")
    parser.add_argument("--no-ray", action="store_true", help="only the in-process parts (1 and 3)")
    args = parser.parse_args()
    os.chdir(ROOT)  # the MCP server is the module missions.mcp.facts_server
    reps = REPS_QUICK if args.quick else REPS
    figures: dict[str, Any] = {"cores": os.cpu_count(), "gpu": False, "model": "scripted, zero latency",
                               "engine": "scripted", "concurrency": 1, "reps": reps, "quick": args.quick}
    print(f"bench_agents: {figures['cores']} cores, no GPU, scripted zero-latency model, concurrency 1, "
          f"{reps} reps (median)")
    figures |= tool_call_overhead(TOOL_CALLS_QUICK if args.quick else TOOL_CALLS, reps)
    figures |= asyncio.run(mcp_overhead(MCP_CALLS_QUICK if args.quick else MCP_CALLS, reps))
    if not args.no_ray:
        figures |= on_ray(reps, DELEGATE_PAIRS_QUICK if args.quick else DELEGATE_PAIRS)
    print(f"{'key':<36} {'value':>10}  target")
    for key in TARGETS:
        if key in figures:
            print(f"{key:<36} {figures[key]:>10.3f}  {verdict(key, figures[key])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1, sort_keys=True))
    print("summary: " + ", ".join(f"{key}={figures[key]:.3f}" + (" ms" if key.endswith("_ms") else "x")
                                  for key in TARGETS if key in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
