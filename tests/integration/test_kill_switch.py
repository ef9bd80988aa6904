"""The kill switch with work in flight: slow tools (a Ray task, a sync tool in the agent's thread, an async one)
and generations that would take a minute. After `stop_all` no tool finishes later than a coarse bound after the
command (each tool rewrites a tick file every 0.1 s while it runs), the command waits neither for the tools nor
for the generations, and every actor of the mission is dead soon after."""

from __future__ import annotations

import time

import ray

from actors import MISSION_NAMESPACE, follow, start_mission, stop_all
from controlplane import parse_mission
from tests.helpers import actor_alive, agent, task, wait_for
from tests.helpers.slow_tools import last_side_effect_s, started

SIDE_EFFECT_BOUND_S = 5.0  # the target is 2 s (bench_governance); a loaded CI machine gets slack
ACTORS_DEAD_BOUND_S = 20.0  # the target is 10 s
TOOL_SLEEP_S = 30.0  # the transcripts' `seconds`


def slow_tools() -> list[dict]:
    return [{"name": "slow_remote", "function": "tests.helpers.slow_tools:slow_remote", "timeout_s": 60,
             "resources": {"num_cpus": 0}},
            {"name": "slow_local", "function": "tests.helpers.slow_tools:slow_local", "timeout_s": 60},
            {"name": "slow_async", "function": "tests.helpers.slow_tools:slow_async", "timeout_s": 60}]


def test_stop_all_cancels_tools_and_generations_and_kills_the_mission(scripted_router, tmp_path):
    tools = ["slow_remote", "slow_local", "slow_async"]
    spec = parse_mission({
        "name": "killme", "goal": "Be stopped", "tools": slow_tools(), "workspace": str(tmp_path),
        "agents": [agent("worker", model="scripted-tools", tools=tools, max_concurrency=8),
                   agent("thinker", model="scripted-glacial", max_concurrency=4)],
        "tasks": [task("remote1", "worker", "Sleep in a Ray task"), task("remote2", "worker", "Sleep in a Ray task"),
                  task("local1", "worker", "Sleep in a thread"), task("local2", "worker", "Sleep in a thread"),
                  task("async1", "worker", "Sleep on the loop"),
                  task("think1", "thinker", "Think hard"), task("think2", "thinker", "Think harder")]})
    handle = start_mission(spec, router=scripted_router, mission_id="killme-1")
    try:
        wait_for(lambda: started(tmp_path) == 5, timeout_s=120, what="all five tools to start")
        assert not list(tmp_path.glob("finished-*"))  # all five tick when the switch is thrown
        cancelled_at = time.time()
        stopped = stop_all("kill switch test")
        returned_s = time.time() - cancelled_at
        assert stopped["killme-1"] == "cancelled"
        assert returned_s < TOOL_SLEEP_S  # it waited neither for the tools nor for the minute-long generations
        wait_for(lambda: all(not actor_alive(f"killme-1:{a}", MISSION_NAMESPACE) for a in ("worker", "thinker")),
                 timeout_s=ACTORS_DEAD_BOUND_S, what="every agent of the mission to be dead")
        dead_s = time.time() - cancelled_at
        result = follow(handle, timeout_s=30)
        time.sleep(max(0.0, cancelled_at + SIDE_EFFECT_BOUND_S + 1.0 - time.time()))  # a late tick would show
    finally:
        ray.kill(handle)
    last_s = last_side_effect_s(tmp_path) - cancelled_at
    assert last_s < SIDE_EFFECT_BOUND_S, f"a tool's last side effect came {last_s:.2f} s after the kill switch"
    assert dead_s < ACTORS_DEAD_BOUND_S
    assert result["status"] == "cancelled" and result["reason"] == "kill switch test"
    assert {t["status"] for t in result["tasks"]} == {"cancelled"}
