"""Chaos scenarios beyond the mission's own actors dying: the memory actor killed during posts (r6), backend faults
under the router (r7), an agent killed around a side-effecting tool call, and a Router replica killed during a
capped mission, on an app with one Router replica (r8) and with two (r9). Each runs a real mission on the local
Ray cluster with scripted models (CHAOS_MODELS, deployed on the router it is given) and returns its figures:
`tests/integration/test_chaos_faults.py` asserts coarse bounds on them, `benchmarks/bench_chaos.py` reports them.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.chaos_code import EFFECTS_FILE

FINAL = [{"match": ".", "text": '{"final": "done"}'}]
FLAKY, BACKUP, EFFECTS, IDLE = "chaos-flaky", "chaos-flaky-backup", "chaos-effects", "chaos-idle"
STEADY = "chaos-steady"
R7_FAILURE_RATE, R7_OUTAGE_S, R7_OPEN_S, R7_FAILURE_THRESHOLD = 0.3, 10.0, 2.0, 5
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2, the memory actor's embedder
CHAOS_MODELS: dict[str, dict[str, Any]] = {
    # r7: 30% of calls fail on both models; the primary also has one 10 s outage, after its first 20 calls. The
    # outage happens once per replica: deploy a fresh app for each r7 run.
    FLAKY: {"kind": "scripted", "latency_s": 0.25, "replies": FINAL, "fallback": BACKUP,
            "breaker": {"failure_threshold": R7_FAILURE_THRESHOLD, "open_s": R7_OPEN_S},
            "faults": {"failure_rate": R7_FAILURE_RATE, "outage_after_calls": 20, "outage_s": R7_OUTAGE_S, "seed": 1}},
    BACKUP: {"kind": "scripted", "latency_s": 0.25, "replies": FINAL,
             "faults": {"failure_rate": R7_FAILURE_RATE, "seed": 2}},
    # Side effects: one tool call, then a final answer; each reply takes 1.5 s (the window for a kill).
    EFFECTS: {"kind": "scripted", "latency_s": 1.5, "replies": [
        {"match": "Result of record_effect", "text": '{"final": "recorded"}'},
        {"match": "(?i)call record_effect_slowly", "tool_call": {"name": "record_effect_slowly",
                                                                 "arguments": {"note": "effect"}}},
        {"match": "(?i)call record_effect once", "tool_call": {"name": "record_effect",
                                                               "arguments": {"note": "effect"}}}]},
    IDLE: {"kind": "scripted", "replies": FINAL},  # r6's python agents never call it
    STEADY: {"kind": "scripted", "latency_s": 0.3, "replies": FINAL},  # r8
}
R8_TASKS, R8_CAP_TOKENS = 12, 300


def chaos_models() -> dict[str, dict[str, Any]]:
    """The models the scenarios call, for a serving config's `models`."""
    return copy.deepcopy(CHAOS_MODELS)


def wait_result(run_dir: str, timeout_s: float = 900.0) -> dict[str, Any]:
    """The mission's result.json, once the supervisor wrote it."""
    from controlplane._rundir import read_result

    deadline = time.monotonic() + timeout_s
    while (result := read_result(run_dir)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"mission in {run_dir} did not end in {timeout_s} s")
        time.sleep(0.2)
    return result


def end_mission(mission_id: str) -> None:
    """Kill what is left of a mission's actors (its supervisor ends itself a while after the result)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"] == mission_id or actor["name"].startswith(f"{mission_id}:"):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
            except ValueError:
                pass


# -- r6: the memory actor killed while agents post --------------------------------------------------------------
def run_r6(router: Any, root: str, *, posts: int = 1000, tasks: int = 20, agents: int = 4, kills: int = 2
           ) -> dict[str, Any]:
    """`agents` python agents post `posts` findings through `ctx.memory.post` (idempotency keys as every agent's
    posts); the memory actor is killed (Ray restarts it) after each further 1/(kills+1) of them is acknowledged.
    Lost: acknowledged findings not in the memory's log afterwards. Duplicates: findings stored more than once."""
    import ray

    from actors import MISSION_NAMESPACE, start_mission
    from controlplane import parse_mission

    mission_id, workspace = f"r6-{uuid.uuid4().hex[:6]}", Path(root) / "r6-workspace"
    workspace.mkdir(parents=True)
    run_dir, memory_dir = f"{root}/r6", f"{root}/r6-memory"
    spec = parse_mission({
        "name": "r6", "goal": "Post findings while the memory dies", "workspace": str(workspace),
        "memory": {"snapshot_every_writes": max(1, posts // 4)},  # recovery reads a snapshot and a log tail
        "agents": [{"name": f"p{i}", "role": "poster", "kind": "python", "model": IDLE, "tools": ["memory.post"],
                    "entrypoint": "tests.helpers.chaos_code:poster",
                    "memory": {"read": ["findings"], "write": ["findings"]}} for i in range(agents)],
        "tasks": [{"id": f"t{i}", "role": "poster", "description": f"post {posts // tasks}", "timeout_s": 600}
                  for i in range(tasks)]})
    start_mission(spec, router=router, mission_id=mission_id, run_dir=run_dir, memory_dir=memory_dir)
    killed_at: list[float] = []
    try:
        for k in range(kills):
            target = posts * (k + 1) // (kills + 1)
            _wait(lambda target=target: len(_acks(workspace)) >= target, what=f"{target} acknowledged posts")
            ray.kill(ray.get_actor(f"{mission_id}:memory", namespace=MISSION_NAMESPACE), no_restart=False)
            killed_at.append(time.time())
        result = wait_result(run_dir)
    finally:
        end_mission(mission_id)
    acks = _acks(workspace)
    acked = {text for _, text in acks}
    stored = Counter(entry.text for entry in _stored(memory_dir))
    stalls = [min((t for t, _ in acks if t > kill), default=float("nan")) - kill for kill in killed_at]
    return {"r6_posts_acked": len(acked), "r6_acked_posts_lost": sum(1 for text in acked if not stored[text]),
            "r6_duplicates": sum(count - 1 for count in stored.values()), "r6_memory_kills": len(killed_at),
            "r6_post_stall_s_max": round(max(stalls), 3), "r6_status": result["status"]}


def _acks(workspace: Path) -> list[tuple[float, str]]:
    acks = []
    for path in workspace.glob("acks-*.txt"):
        for line in path.read_text().splitlines():
            stamp, text = line.split(" ", 1)
            acks.append((float(stamp), text))
    return acks


def _stored(memory_dir: str) -> list[Any]:
    """Every entry the memory's log and snapshots hold, read as a restarted actor would."""
    from controlplane.config.memory import MemoryConfig
    from memory._store import MemoryStore

    store = MemoryStore(MemoryConfig(data_dir=memory_dir), dim=EMBEDDING_DIM)
    try:
        return list(store.entries.values())
    finally:
        store.close()


# -- r7: random backend failures and an outage of a model with a fallback -----------------------------------------
def run_r7(router: Any, root: str, *, tasks: int = 200, agents: int = 2) -> dict[str, Any]:
    """A wide mission on FLAKY while 30% of calls fail on it and on its fallback, and FLAKY is down for 10 s.
    The driver polls FLAKY's breaker; the replica's fault record says when each outage failure came."""
    from ray import serve

    from actors import start_mission
    from controlplane import parse_mission
    from controlplane._logfile import read_log
    from controlplane._rundir import read_result

    mission_id, run_dir = f"r7-{uuid.uuid4().hex[:6]}", f"{root}/r7"
    spec = parse_mission({
        "name": "r7", "goal": "Finish despite faults", "policies": {"retry_backoff_s": 0.2, "retry_backoff_max_s": 2},
        "agents": [{"name": f"w{i}", "role": "worker", "model": FLAKY} for i in range(agents)],
        "tasks": [{"id": f"t{i}", "role": "worker", "description": f"part {i}", "retries": 10}
                  for i in range(tasks)]})
    started = time.time()
    start_mission(spec, router=router, mission_id=mission_id, run_dir=run_dir)
    states: list[tuple[float, str]] = []  # the breaker's state each time it changed, as polled
    try:
        while read_result(run_dir) is None:
            state = router.handle.breaker_state.remote(FLAKY).result()
            if not states or states[-1][1] != state:
                states.append((time.time(), state))
            time.sleep(0.02)
        result = wait_result(run_dir)
    finally:
        end_mission(mission_id)
    record = serve.get_deployment_handle(f"scripted:{FLAKY}", app_name=router.app_name).fault_record.remote().result()
    usage = router.handle.usage.remote(mission_id).result()
    opened_at = _opened_at(states, record["outage_started_at_s"])
    recovered = record["first_success_after_outage_at_s"]
    return {
        "r7_mission_succeeded": result["status"] == "succeeded", "r7_status": result["status"],
        "r7_makespan_s": round(time.time() - started, 1),
        "r7_failures_before_breaker_open": sum(1 for t in record["outage_failures_at_s"]
                                               if opened_at is None or t <= opened_at),
        "r7_outage_failures": len(record["outage_failures_at_s"]),
        "r7_breaker_recovered_s": None if recovered is None else round(recovered - record["outage_ended_at_s"], 3),
        "r7_random_failures": record["random_failures"] + sum(row["errors"] for row in usage if row["model"] == BACKUP),
        "r7_calls_on_fallback": sum(row["calls"] for row in usage if row["model"] == BACKUP),
        "r7_task_retries": sum(1 for r in read_log(run_dir) if r.kind == "task.retry")}


def _opened_at(states: list[tuple[float, str]], outage_started_at_s: float | None) -> float | None:
    """When the breaker was first seen open (or half-open) from the outage's start on; the start itself when it was
    open already."""
    if outage_started_at_s is None:
        return None
    before = [state for t, state in states if t <= outage_started_at_s]
    if before and before[-1] != "closed":
        return outage_started_at_s
    return next((t for t, state in states if t > outage_started_at_s and state != "closed"), None)


# -- side effects: the agent killed around a `side_effects: true` call ----------------------------------------------
def run_side_effects(router: Any, root: str) -> dict[str, Any]:
    """Two missions of one task that calls a side-effecting, non-idempotent tool once; the agent is killed
    - `after_result`: once the call's result is recorded, during the model call that follows (the retry replays
      the recorded result; the task succeeds);
    - `in_flight`: once the tool has acted, while it waits for a slow confirmation (the retry finds the call in
      doubt and fails the task with ToolCallInDoubt).
    Executions are counted in the tool's own file, one line each."""
    from controlplane._logfile import read_log

    figures: dict[str, Any] = {}
    twice = 0
    for label, tool, ready in (
            ("after_result", "record_effect", lambda run_dir, _: any(r.kind == "tool.result"
                                                                     for r in read_log(run_dir))),
            ("in_flight", "record_effect_slowly", lambda _, effects: effects.exists() and effects.read_text())):
        result, executions, retried = _effect_mission(router, root, label, tool, ready)
        twice += max(0, executions - 1)
        figures.update({f"side_effects_{label}_executions": executions, f"side_effects_{label}_status":
                        result["status"], f"side_effects_{label}_retried": retried,
                        f"side_effects_{label}_error": result["tasks"][0]["error"] or ""})
    return {"side_effects_executed_twice": twice, **figures}


def _effect_mission(router: Any, root: str, label: str, tool: str, ready: Any) -> tuple[dict[str, Any], int, bool]:
    import ray

    from actors import MISSION_NAMESPACE, start_mission
    from controlplane import parse_mission
    from controlplane._logfile import read_log

    mission_id, workspace = f"fx-{label.replace('_', '-')}-{uuid.uuid4().hex[:6]}", Path(root) / f"fx-{label}"
    workspace.mkdir(parents=True)
    run_dir, effects = f"{root}/fx-{label}-run", workspace / EFFECTS_FILE
    spec = parse_mission({
        "name": "effects", "goal": "Act exactly once", "workspace": str(workspace),
        "tools": [{"name": tool, "function": f"tests.helpers.chaos_code:{tool}", "side_effects": True,
                   "idempotent": False, "timeout_s": 60}],
        "agents": [{"name": "actor", "role": "worker", "model": EFFECTS, "tools": [tool]}],
        # Retries outlast the agent's restart (attempts sent meanwhile fail with ActorUnavailableError).
        "tasks": [{"id": "act", "agent": "actor", "description": f"Call {tool} once", "retries": 8}]})
    start_mission(spec, router=router, mission_id=mission_id, run_dir=run_dir)
    try:
        _wait(lambda: ready(run_dir, effects), what=f"{label}: the moment to kill the agent")
        ray.kill(ray.get_actor(f"{mission_id}:actor", namespace=MISSION_NAMESPACE), no_restart=False)
        result = wait_result(run_dir, timeout_s=300)
    finally:
        end_mission(mission_id)
    retried = any(r.kind == "task.retry" for r in read_log(run_dir))
    return result, len(effects.read_text().splitlines()) if effects.exists() else 0, retried


# -- r8, r9: a Router replica killed during a capped mission --------------------------------------------------------
def run_r8(router: Any, root: str, app_name: str) -> dict[str, Any]:
    """A chain of 12 tasks under a 300-token cap; the process of the app's one Router replica is killed after 3
    tasks. Without the kill the mission ends `budget_exceeded` with 6 tasks done (a call reserves about 160 tokens
    and uses about 23). The calls wait for the replica Serve starts next."""
    return _killed_under_a_cap("r8", router, root, app_name, roots=1, kill_after=3, victim=_first_router_replica)


def r9_serving_config() -> dict[str, Any]:
    """r9's app: two Router replicas in front of the steady model."""
    return {"router": {"replicas": 2, "agent": {"max_in_flight": 64}, "request_timeout_s": 60},
            "models": {STEADY: chaos_models()[STEADY]}}


def run_r9(router: Any, root: str, app_name: str) -> dict[str, Any]:
    """r8 on an app with two Router replicas (`router.replicas: 2`), which keep the cap in the app's budget book.
    The chain starts with two tasks at once, so that both replicas read the mission early, and one replica is
    killed after 5 tasks; the other takes the calls at once. Were the cap kept per replica, each would allow about
    6 tasks. A call the killed replica held is charged its worst case (about 160 tokens) as soon as it holds back
    another, so the mission may end with 5 tasks done."""
    return _killed_under_a_cap("r9", router, root, app_name, roots=2, kill_after=5, victim=_first_router_replica)


def run_r10(router: Any, root: str, app_name: str) -> dict[str, Any]:
    """r9, but the process of the app's budget book is killed after 5 tasks, not a Router replica. Ray restarts
    the book, which carries on the mission's caps, calls in flight and usage rows from the GCS: the mission ends
    `budget_exceeded` as r9 without a kill would (about 6 tasks), with every call in its usage."""
    return _killed_under_a_cap("r10", router, root, app_name, roots=2, kill_after=5, victim=_budget_book)


def _first_router_replica(app_name: str) -> Any:
    return router_replicas(app_name)[0]


def _budget_book(app_name: str) -> Any:
    """The process of the app's budget book."""
    import psutil
    import ray

    from serving._limiter import LIMITER_NAMESPACE
    from tests.helpers import actor_pid

    book = ray.get_actor(f"{app_name}:budgets", namespace=LIMITER_NAMESPACE)
    pid = actor_pid(book)
    assert pid is not None, "the budget book does not answer"  # psutil.Process(None) is this process
    return psutil.Process(pid)


def _killed_under_a_cap(label: str, router: Any, root: str, app_name: str, *, roots: int, kill_after: int,
                        victim: Callable[[str], Any]) -> dict[str, Any]:
    """A chain of R8_TASKS tasks, after `roots` tasks at once, under a 300-token cap; the process `victim` finds
    for the app is killed after `kill_after` tasks. Figures: the mission's status and tasks done, the model calls
    in its result's usage, the tokens the app's budget book charged it, and the times from the kill to the next
    task's success and to the mission's end."""
    import ray

    from actors import start_mission
    from controlplane import parse_mission
    from controlplane._logfile import read_log
    from serving._limiter import LIMITER_NAMESPACE

    mission_id, run_dir = f"{label}-{uuid.uuid4().hex[:6]}", f"{root}/{label}-run"
    tasks = [{"id": f"t{i}", "agent": "ab"[i % 2], "description": f"Do t{i}", "retries": 5,
              "depends_on": [] if i < roots else [f"t{j}" for j in range(roots)] if i == roots else [f"t{i - 1}"]}
             for i in range(R8_TASKS)]
    spec = parse_mission({
        "name": "routerkill", "goal": "Survive", "tasks": tasks, "budgets": {"max_tokens": R8_CAP_TOKENS},
        # Retries outlast the replica's replacement.
        "policies": {"retry_backoff_s": 1.0, "retry_backoff_max_s": 8.0},
        "agents": [{"name": name, "role": "worker", "model": STEADY, "max_tokens": 16} for name in "ab"]})

    def succeeded() -> list[float]:
        return [r.time_s for r in read_log(run_dir) if r.kind == "task.succeeded"]

    start_mission(spec, router=router, mission_id=mission_id, run_dir=run_dir)
    try:
        _wait(lambda: len(succeeded()) >= kill_after, what=f"{label}: {kill_after} tasks done")
        replicas, killed = router_replicas(app_name), victim(app_name)
        killed_at = time.time()
        killed.kill()
        result = wait_result(run_dir, timeout_s=300)
        ended_s = time.time() - killed_at
    finally:
        end_mission(mission_id)
    book = ray.get_actor(f"{app_name}:budgets", namespace=LIMITER_NAMESPACE)
    [account] = [a for a in ray.get(book.load.remote(mission_id)) if a.agent_id is None]
    after = [t for t in succeeded() if t > killed_at]
    return {f"{label}_status": result["status"], f"{label}_tasks_succeeded": len(succeeded()),
            f"{label}_router_replicas": len(replicas), f"{label}_llm_calls": result["usage"]["llm_calls"],
            f"{label}_router_replaced": {p.pid for p in router_replicas(app_name)} != {p.pid for p in replicas},
            f"{label}_cap_tokens": account.max_tokens, f"{label}_tokens_charged": account.used_tokens,
            f"{label}_cap_overshoot_tokens": max(0, account.used_tokens - R8_CAP_TOKENS),
            f"{label}_stall_s": round(after[0] - killed_at, 2) if after else None,
            f"{label}_end_after_kill_s": round(ended_s, 1)}


def router_replicas(app_name: str) -> list[Any]:
    """The processes of an app's Router replicas (Ray titles them after their actor)."""
    from serving._client import ROUTER_DEPLOYMENT
    from tests.helpers import actor_processes

    return actor_processes(f"ray::ServeReplica:{app_name}:{ROUTER_DEPLOYMENT}")


def _wait(condition: Any, *, what: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
