"""Governance benchmark: what the identity check costs per router call, and whether a tight token cap holds
against parallel tasks.

1. identity_check_overhead_ms. Router calls to a zero-latency model with a capability token (verified: HMAC,
   claims, expiry, priority narrowing) and without one (the router allows anonymous calls here, so nothing is
   checked): the difference of the medians, median over the repetitions; the two paths alternate call by
   call. The key is measured on the router's own call path (`RouterCore` and the router's `Authenticator`,
   an in-process zero-latency backend), where the check runs. The same difference through Ray Serve's handle
   API to a scripted zero-latency replica (concurrency 1) is `identity_check_overhead_ms_serve`: it adds the
   token's bytes on the wire, but on a loaded 2-core machine its noise is larger than the check.
2. budget_book_overhead_ms. What a mission's hard cap costs per call: the check against the cap, and the
   call's usage sent to the app's budget book (serving/_budget_book.py, so that a Router replica started later
   carries the cap on). RouterCore calls (in process, zero-latency backend, the real book actor)
   of a mission capped at 10^12 tokens and of an uncapped one, alternating call by call: the difference of
   the medians, median over the repetitions. With two router replicas the book is the authority: a capped
   call awaits its reservation there, and every call's usage row goes there. The same difference for a capped
   and for an uncapped call on a RouterCore configured with `router.replicas: 2` (and its own book), each
   against the uncapped call on one replica: `budget_book_two_replicas_capped_overhead_ms` and
   `budget_book_two_replicas_uncapped_overhead_ms`. The book answers a batch of reservations once it is saved
   in the GCS, and a replica's reservations that ask meanwhile go as the next batch:
   `budget_book_two_replicas_capped_calls_per_s_c16` is how many capped calls a second that router makes from 16
   concurrent callers, against `..._uncapped_calls_per_s_c16` for uncapped ones.
3. shared_limit_lease_overhead_ms. With several router replicas, rpm and tpm limits are leased from the app's
   limiter actor (serving/_limiter.py). The worst case, a call that finds its scope's lease spent and asks the
   limiter: RouterCore calls of an agent with an rpm limit whose leases are one request each (the real limiter
   actor, started with the smallest leases, as an rpm of 100 or less has), against the uncapped call on one
   replica. shared_limit_slot_overhead_ms: the same for an agent with a max_in_flight limit (and no rpm), whose
   every call takes a slot from the limiter and hands it back. shared_limit_leases_and_slot_overhead_ms: an
   agent with both, in a mission with an rpm limit too: the agent's slot and the two scopes' leases.
   shared_limit_capped_slots_overhead_ms: a call of a capped mission whose agent and mission both have a
   max_in_flight limit: its reservation in the budget book and its two slots.
4. budget_overshoot_tokens. A mission of 20 independent tasks on one agent (max_concurrency 20, scripted model
   with 0.2 s latency) against a mission cap of 600 tokens, run by the real supervisor, agents and router; the
   router's charged tokens for the mission minus the cap (0 when under it), the maximum over the repetitions.
   Baseline: the same mission without a cap, in the same run (`budget_uncapped_tokens`).

    python benchmarks/bench_governance.py [--quick] [--json PATH]
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._ports import free_port  # noqa: E402

# -- settings -------------------------------------------------------------------------------------------
IDENTITY_CALLS = {"quick": 300, "full": 1_000}
"""Calls per path and repetition."""
IN_ROUTER_CALLS = {"quick": 3_000, "full": 10_000}
THROUGHPUT_CALLS = {"quick": 1_600, "full": 4_800}
THROUGHPUT_CONCURRENCY = 16
REPS = {"quick": 3, "full": 5}
BUDGET_TASKS = 20
BUDGET_CAP_TOKENS = 600
APP_NAME = "bench-governance"
TARGETS = {"identity_check_overhead_ms": ("<=", 0.2), "budget_overshoot_tokens": ("==", 0)}


def serving_config(anonymous: bool, router_replicas: int = 1) -> dict:
    return {"router": {"auth": {"allow_anonymous": anonymous}, "agent": {"max_in_flight": 64},
                       "replicas": router_replicas},
            "models": {"zero": {"kind": "scripted", "latency_s": 0.0},
                       "slow": {"kind": "scripted", "latency_s": 0.2}}}


def request(token: str | None):
    from serving import ChatMessage, ChatRequest

    return ChatRequest(model="zero", max_tokens=8, token=token,
                       messages=[ChatMessage(role="user", content="What is the capital of France?")])


# -- 1. identity check ----------------------------------------------------------------------------------
async def serve_path_ms(client, token: str, calls: int) -> tuple[float, float]:
    """(p50 with the token, p50 without), alternating the two paths call by call."""
    with_token, without = [], []
    for n in range(2 * calls):
        started = time.perf_counter()
        await client.chat(request(token if n % 2 == 0 else None))
        (with_token if n % 2 == 0 else without).append((time.perf_counter() - started) * 1e3)
    return statistics.median(with_token), statistics.median(without)


class ZeroBackend:
    """An in-process model that answers at once: what is left of a call is the router's own path."""

    async def stream(self, call, affinity_key):
        yield {"delta": "Paris"}
        yield {"done": True, "finish_reason": "stop", "prompt_tokens": 6, "completion_tokens": 1}


async def alternating_p50_ms(first, second, calls: int) -> tuple[float, float]:
    """(p50 of the first path's calls, p50 of the second's) of RouterCore calls to the zero model, the two paths
    alternating call by call. A path is a function that gives the (RouterCore, Identity) of its next call; it runs
    inside the timed window."""
    paths, times_ms = (first, second), ([], [])
    for n in range(2 * calls):
        started = time.perf_counter()
        await zero_call(*paths[n % 2]())
        times_ms[n % 2].append((time.perf_counter() - started) * 1e3)
    return statistics.median(times_ms[0]), statistics.median(times_ms[1])


async def zero_call(core, identity) -> None:
    """One RouterCore call to the zero model, streamed to its end."""
    from serving._core import Call

    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8}
    async for _ in core.stream(Call(model="zero", body=body, identity=identity)):
        pass


async def calls_per_s(core, identity, calls: int, concurrency: int) -> float:
    """RouterCore calls per second to the zero model from `concurrency` callers, each calling one after another."""
    async def caller() -> None:
        for _ in range(calls // concurrency):
            await zero_call(core, identity)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return calls // concurrency * concurrency / (time.perf_counter() - started)


async def in_router_ms(token: str, root: bytes, keys_file: str, calls: int) -> tuple[float, float]:
    """(p50 with the token, p50 without) of RouterCore calls, the identity taken as the router replica does."""
    from controlplane.config import ServingConfig
    from serving._auth import Authenticator
    from serving._core import RouterCore
    from serving._keys import ApiKeyStore

    config = ServingConfig.model_validate(serving_config(anonymous=True))
    core = RouterCore(config, {"zero": ZeroBackend(), "slow": ZeroBackend()})
    door = Authenticator(root_secret=root, keys=ApiKeyStore(keys_file), allow_anonymous=True)
    return await alternating_p50_ms(lambda: (core, door.for_handle(token, None, now_s=time.time())),
                                    lambda: (core, door.for_handle(None, None, now_s=time.time())), calls)


def identity_figures(client, root: bytes, keys_file: str, mode: str) -> dict[str, float]:
    from serving import mission_tokens

    token = mission_tokens("bench-identity").agent("agent-1", now_s=time.time(), ttl_s=24 * 3600)
    asyncio.run(serve_path_ms(client, token, 50))  # warm-up: handles, replicas, the ledger's rows
    serve = [asyncio.run(serve_path_ms(client, token, IDENTITY_CALLS[mode])) for _ in range(REPS[mode])]
    asyncio.run(in_router_ms(token, root, keys_file, 200))
    inner = [asyncio.run(in_router_ms(token, root, keys_file, IN_ROUTER_CALLS[mode])) for _ in range(REPS[mode])]
    return {"identity_check_overhead_ms": statistics.median(on - off for on, off in inner),
            "router_call_p50_ms_token": statistics.median(on for on, _ in inner),
            "router_call_p50_ms_anonymous": statistics.median(off for _, off in inner),
            "identity_check_overhead_ms_serve": statistics.median(on - off for on, off in serve),
            "serve_call_p50_ms_token": statistics.median(on for on, _ in serve),
            "serve_call_p50_ms_anonymous": statistics.median(off for _, off in serve)}


# -- 2. the budget book ---------------------------------------------------------------------------------
def book_figures(mode: str) -> dict[str, float]:
    """Alternating RouterCore calls, each pair against an uncapped call on one router replica: a capped call on one
    replica, and a capped and an uncapped call on a router of two replicas (whose book the calls await or feed)."""
    from controlplane.config import ServingConfig
    from serving import Identity
    from serving._budget_book import BudgetBook
    from serving._core import RouterCore

    def router(replicas: int, book: BudgetBook) -> RouterCore:
        return RouterCore(ServingConfig.model_validate(serving_config(anonymous=True, router_replicas=replicas)),
                          {"zero": ZeroBackend(), "slow": ZeroBackend()}, book=book)

    one = router(1, BudgetBook(f"{APP_NAME}-in-process"))
    two = router(2, BudgetBook(f"{APP_NAME}-in-process-2r", start=True))
    capped, free = Identity(mission_id="bench-book-capped"), Identity(mission_id="bench-book-free")
    for core in (one, two):
        asyncio.run(core.set_budget(capped.mission_id, max_tokens=10**12))  # starts the one-replica book

    def against_uncapped(core: RouterCore, identity: Identity) -> tuple[float, float, float]:
        """(median overhead, median p50 of the path, median p50 of the uncapped one-replica call)."""
        paths = (lambda: (core, identity)), (lambda: (one, free))
        asyncio.run(alternating_p50_ms(*paths, 200))
        reps = [asyncio.run(alternating_p50_ms(*paths, IN_ROUTER_CALLS[mode])) for _ in range(REPS[mode])]
        return (statistics.median(on - off for on, off in reps), statistics.median(on for on, _ in reps),
                statistics.median(off for _, off in reps))

    book, capped_ms, uncapped_ms = against_uncapped(one, capped)
    shared_capped, _, _ = against_uncapped(two, capped)
    shared_usage, _, _ = against_uncapped(two, free)
    rates = [[asyncio.run(calls_per_s(two, identity, THROUGHPUT_CALLS[mode], THROUGHPUT_CONCURRENCY))
              for identity in (capped, free)] for _ in range(REPS[mode])]
    return {"budget_book_overhead_ms": book, "router_call_p50_ms_capped": capped_ms,
            "router_call_p50_ms_uncapped": uncapped_ms, "budget_book_two_replicas_capped_overhead_ms": shared_capped,
            "budget_book_two_replicas_uncapped_overhead_ms": shared_usage,
            "budget_book_two_replicas_capped_calls_per_s_c16": statistics.median(c for c, _ in rates),
            "budget_book_two_replicas_uncapped_calls_per_s_c16": statistics.median(u for _, u in rates)}


# -- 3. budget overshoot --------------------------------------------------------------------------------
def budget_mission(cap: int | None) -> dict:
    return {"name": "bench-budget", "goal": "Spend tokens in parallel",
            "agents": [{"name": "crowd", "role": "worker", "model": "slow", "max_concurrency": BUDGET_TASKS,
                        "max_tokens": 64, "tool_style": "native"}],  # no tools: the scripted reply is the answer
            "budgets": {"max_tokens": cap} if cap else {},
            "policies": {"retry_backoff_s": 0.05, "retry_backoff_max_s": 0.5},
            "tasks": [{"id": f"t{i}", "agent": "crowd", "description": f"Write note {i}", "retries": 10}
                      for i in range(BUDGET_TASKS)]}


def run_budget_mission(client, cap: int | None, mission_id: str) -> tuple[int, str, int]:
    """(tokens the router charged the mission, the mission's status, attempts that did not succeed: refused
    by the budget, or cancelled when the mission stopped)."""
    import ray

    from actors import follow, start_mission
    from controlplane import parse_mission

    handle = start_mission(parse_mission(budget_mission(cap)), router=client, mission_id=mission_id)
    try:
        result = follow(handle, timeout_s=300)
    finally:
        ray.kill(handle)
    rows = asyncio.run(client.usage(mission_id))
    unsucceeded = sum(t["attempts"] for t in result["tasks"]) - sum(t["status"] == "succeeded" for t in result["tasks"])
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows), result["status"], unsucceeded


def budget_figures(client, mode: str) -> dict[str, float | str]:
    uncapped, capped = [], []
    run_budget_mission(client, None, "bench-budget-warmup")
    for rep in range(REPS[mode]):
        uncapped.append(run_budget_mission(client, None, f"bench-budget-free-{rep}"))
        capped.append(run_budget_mission(client, BUDGET_CAP_TOKENS, f"bench-budget-cap-{rep}"))
    return {"budget_overshoot_tokens": max(max(0, charged - BUDGET_CAP_TOKENS) for charged, _, _ in capped),
            "budget_cap_tokens": BUDGET_CAP_TOKENS,
            "budget_charged_tokens_max": max(charged for charged, _, _ in capped),
            "budget_uncapped_tokens": statistics.median(charged for charged, _, _ in uncapped),
            "budget_unsucceeded_attempts_median": statistics.median(n for _, _, n in capped),
            "budget_capped_status": ",".join(sorted({status for _, status, _ in capped}))}


# -- main -----------------------------------------------------------------------------------------------

# -- 3. a limiter lease per call ------------------------------------------------------------------------
def limiter_figures(mode: str) -> dict[str, float]:
    from controlplane.config import ServingConfig
    from serving import Identity
    from serving._budget_book import BudgetBook
    from serving._core import RouterCore
    from serving._limiter import LimiterActor, SharedLimits

    limiter = LimiterActor.remote(max_lease_fraction=0.0)  # type: ignore[attr-defined]

    def router(agent_limits: dict, mission_limits: dict | None = None, book: BudgetBook | None = None) -> RouterCore:
        config = serving_config(anonymous=True, router_replicas=2)
        config["router"]["agent"] = agent_limits
        config["router"]["mission"] = mission_limits or {}
        return RouterCore(ServingConfig.model_validate(config), {"zero": ZeroBackend(), "slow": ZeroBackend()},
                          book=book, shared=SharedLimits(limiter, holder="bench-governance"))

    one = RouterCore(ServingConfig.model_validate(serving_config(anonymous=True)),
                     {"zero": ZeroBackend(), "slow": ZeroBackend()})
    capped = router({"max_in_flight": 64}, {"max_in_flight": 256}, BudgetBook(f"{APP_NAME}-slots", start=True))
    asyncio.run(capped.set_budget("bench-limits", max_tokens=10**12))
    figures = {}
    for name, shared in (("lease", router({"rpm": 10**12})),  # never refuses; each lease is one request
                         ("slot", router({"max_in_flight": 64})),
                         ("capped_slots", capped),
                         ("leases_and_slot", router({"rpm": 10**12, "max_in_flight": 64}, {"rpm": 10**12}))):
        paths = ((lambda core=shared: (core, Identity(mission_id="bench-limits"))),
                 (lambda: (one, Identity(mission_id="free"))))
        asyncio.run(alternating_p50_ms(*paths, 200))
        reps = [asyncio.run(alternating_p50_ms(*paths, IN_ROUTER_CALLS[mode])) for _ in range(REPS[mode])]
        figures[f"shared_limit_{name}_overhead_ms"] = statistics.median(on - off for on, off in reps)
        figures[f"router_call_p50_ms_shared_{name}"] = statistics.median(on for on, _ in reps)
    return figures


def met(key: str, value: float) -> bool:
    op, target = TARGETS[key]
    return value <= target if op == "<=" else value == target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repetitions (about 2 minutes)")
    parser.add_argument("--json", metavar="PATH", help="write every figure as one flat JSON object")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cores = os.cpu_count() or 1
    print(f"bench_governance ({mode}): the router's call path with a zero-latency model (in process, and through "
          f"the Ray Serve handle API) at concurrency 1 for the identity check; a scripted 0.2 s model for "
          f"{BUDGET_TASKS} parallel tasks against a "
          f"{BUDGET_CAP_TOKENS}-token cap; {cores} cores; GPU: none used; median of {REPS[mode]} reps after a warm-up",
          flush=True)
    with tempfile.TemporaryDirectory() as folder:
        from serving._secrets import API_KEYS_ENV, ROOT_SECRET_ENV, load_or_create_root_secret

        os.environ[ROOT_SECRET_ENV] = str(Path(folder) / "root_secret")  # before Ray starts: every process sees it
        os.environ[API_KEYS_ENV] = keys_file = str(Path(folder) / "api_keys.json")
        root = load_or_create_root_secret()

        import ray
        from ray import serve

        from controlplane.config import ServingConfig
        from serving import deploy

        ray.init(num_cpus=max(16, cores), include_dashboard=False, log_to_driver=False, namespace=APP_NAME)
        try:
            client = deploy(ServingConfig.model_validate(serving_config(anonymous=True)), app_name=APP_NAME,
                            http_port=free_port())
            figures: dict[str, float | str | int | bool] = {}
            figures.update(identity_figures(client, root, keys_file, mode))
            figures.update(book_figures(mode))
            figures.update(limiter_figures(mode))
            figures.update(budget_figures(client, mode))
        finally:
            serve.shutdown()
            ray.shutdown()
    for key in TARGETS:
        figures[f"{key}_target_met"] = met(key, float(figures[key]))
    figures.update({"mode": mode, "cores": cores, "gpu": False, "reps": REPS[mode],
                    "identity_calls_per_rep": IDENTITY_CALLS[mode], "model": "scripted (router's ScriptedEngine)"})
    print(f"{'figure':<44}{'value':>14}")
    for key, value in figures.items():
        shown = round(value, 4) if isinstance(value, float) else value
        print(f"{key:<44}{shown!s:>14}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"bench_governance: identity check {figures['identity_check_overhead_ms']:.3f} ms per router call "
          f"(target <=0.2; a call without it {figures['router_call_p50_ms_anonymous']:.3f} ms; through Serve "
          f"{figures['identity_check_overhead_ms_serve']:+.3f} ms on {figures['serve_call_p50_ms_anonymous']:.2f} ms "
          f"calls); budget book {figures['budget_book_overhead_ms']:.3f} ms per capped call (two router replicas: "
          f"{figures['budget_book_two_replicas_capped_overhead_ms']:.3f} ms capped, "
          f"{figures['budget_book_two_replicas_uncapped_overhead_ms']:.3f} ms uncapped; at concurrency 16 "
          f"{figures['budget_book_two_replicas_capped_calls_per_s_c16']:.0f} capped calls/s against "
          f"{figures['budget_book_two_replicas_uncapped_calls_per_s_c16']:.0f} uncapped); a limiter lease "
          f"{figures['shared_limit_lease_overhead_ms']:.3f} ms per call that needs one, a shared max_in_flight slot "
          f"{figures['shared_limit_slot_overhead_ms']:.3f} ms per call, a slot and two leases "
          f"{figures['shared_limit_leases_and_slot_overhead_ms']:.3f} ms, a capped call with two shared slots "
          f"{figures['shared_limit_capped_slots_overhead_ms']:.3f} ms; budget overshoot "
          f"{figures['budget_overshoot_tokens']} tokens (target 0) with {BUDGET_TASKS} parallel tasks on a "
          f"{BUDGET_CAP_TOKENS}-token cap (uncapped they use {figures['budget_uncapped_tokens']:.0f}); "
          f"{cores} cores, no GPU", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
