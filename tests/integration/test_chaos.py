"""Chaos: actors die mid-mission and the mission still ends with every task done exactly once (scripted models).

The mission log is the witness: each task has exactly one `task.succeeded` record, and no task is dispatched
again after it succeeded.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import ray

from actors import MISSION_NAMESPACE, start_mission
from controlplane import parse_mission
from controlplane._logfile import read_log, verify_log
from controlplane._rundir import read_events, read_result
from tests.helpers import actor_pid, agent, processes_running, supervisor_token, task, wait_for

MCP_SERVER = Path(__file__).resolve().parents[1] / "helpers" / "agent_code.py"


@pytest.fixture(scope="module")
def chaos_router(ray_cluster, http_port):
    """A Serve app with scripted models only (no vLLM)."""
    from ray import serve

    from controlplane.config import ServingConfig
    from serving import deploy

    config = {"router": {"agent": {"max_in_flight": 64}, "request_timeout_s": 60},
              "models": {"scripted-slow": {"kind": "scripted", "latency_s": 0.3, "replies": [
                  {"match": r"Result of echo\.shout", "text": '{"final": "The server shouted back."}'},
                  {"match": "(?i)shout hello", "text": '{"tool": "echo.shout", "arguments": {"text": "hello"}}'},
                  {"match": ".", "text": '{"final": "done"}'}]},
              "scripted-thinking": {"kind": "scripted", "latency_s": 3.0},
              "scripted-long": {"kind": "scripted", "latency_s": 15.0},
              "scripted-lead": {"kind": "scripted", "replies": [
                  {"match": r"Result of delegate", "text": '{"final": "The reviewer answered."}'},
                  {"match": "(?i)ask the reviewer", "text": '{"tool": "delegate", "arguments": {"to": "reviewer", '
                                                            '"description": "Check the tagline"}}'}]}}}
    # Serve's HTTP proxy is the session's (one per cluster): the app joins it under its own route, and only it
    # goes at the end (serve.shutdown would take the session's shared app down with it).
    client = deploy(ServingConfig.model_validate(config), app_name="chaos", http_port=http_port, route_prefix="/chaos")
    yield client
    serve.delete("chaos")


def chain_tasks(n: int) -> list[dict]:
    return [task("t0", "a")] + [task(f"t{i}", "a" if i % 2 else "b", deps=(f"t{i - 1}",)) for i in range(1, n)]


def chain_spec(name: str, n: int) -> object:
    return parse_mission({"name": name, "goal": "Survive", "tasks": chain_tasks(n),
                          "agents": [agent("a", model="scripted-slow"), agent("b", model="scripted-slow")]})


def succeeded_count(run_dir: str) -> int:
    return sum(r.kind == "task.succeeded" for r in read_log(run_dir))


def assert_exactly_once(run_dir: str, n: int) -> None:
    assert_exactly_once_each(run_dir, [f"t{i}" for i in range(n)])


def assert_exactly_once_each(run_dir: str, task_ids: list[str]) -> None:
    records = read_log(run_dir)
    successes = Counter(r.data["task"] for r in records if r.kind == "task.succeeded")
    assert successes == Counter(task_ids), successes  # none lost, none twice
    done: set[str] = set()
    for record in records:
        if record.kind == "task.dispatch":
            assert record.data["task"] not in done, f"{record.data['task']} was run again after it succeeded"
        elif record.kind == "task.succeeded":
            done.add(record.data["task"])
    assert verify_log(run_dir).ok


def mcp_chain(name: str, n: int) -> dict:
    """The chain, with an MCP server whose tool its last task (agent a's) calls, long after the chaos begins."""
    tasks = chain_tasks(n)
    tasks[-1]["description"] = "Shout hello"
    server = {"name": "echo", "command": sys.executable, "args": [str(MCP_SERVER)]}
    return {"name": name, "goal": "Survive", "tasks": tasks, "mcp_servers": [server],
            "agents": [agent("a", model="scripted-slow", tools=["echo.*"]), agent("b", model="scripted-slow")]}


def assert_the_server_answered(result: dict) -> None:
    """The last task (`Shout hello`) called the MCP server, and it answered."""
    shout = max((t for t in result["tasks"] if t["id"][1:].isdigit()), key=lambda t: int(t["id"][1:]))
    assert [(r["tool"], r["status"]) for r in shout["loop"]["tool_records"]] == [("echo.shout", "ok")], shout["loop"]
    assert shout["output"] == "The server shouted back."


def collect_with_cli(run_dir: str) -> subprocess.CompletedProcess:
    """`controlplane wait RUN` from another process: reads storage, needs neither Ray nor the driver."""
    return subprocess.run([sys.executable, "-m", "controlplane", "wait", run_dir, "--timeout-s", "240"],
                          capture_output=True, text=True, timeout=300)


def test_supervisor_killed_mid_mission_resumes_without_rerunning_completed_tasks(chaos_router, tmp_path):
    run_dir, n = str(tmp_path / "sup-kill"), 10
    handle = start_mission(chain_spec("supkill", n), router=chaos_router, mission_id="supkill-1", run_dir=run_dir)
    try:
        wait_for(lambda: succeeded_count(run_dir) >= 3, timeout_s=300, what="three tasks done")
        ray.kill(handle, no_restart=False)  # Ray restarts it; it continues from its log
        waited = collect_with_cli(run_dir)  # the driver does not follow: the result is collected from storage
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert read_result(run_dir)["status"] == "succeeded"
        assert_exactly_once(run_dir, n)
        assert any(r.kind == "mission.status" and "resumed" in r.data.get("message", "") for r in read_log(run_dir))
        events = read_events(run_dir)  # the stream goes on across the restart: the report's timeline has it all
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert Counter(e["task"] for e in events if (e["kind"], e["status"]) == ("task", "succeeded")) == Counter(
            {f"t{i}": 1 for i in range(n)})
        # The restarted supervisor found its agents' placement group again (no second one), and removed it.
        wait_for(lambda: [g["state"] for g in ray.util.placement_group_table().values()
                          if g["name"] == "supkill-1:agents"] == ["REMOVED"],
                 timeout_s=60, what="one placement group of the agents, removed")
    finally:
        ray.kill(handle)


def test_supervisor_killed_while_its_planner_thinks_plans_again_and_runs_the_plan(chaos_router, tmp_path):
    run_dir = str(tmp_path / "plan-kill")
    spec = parse_mission({"name": "plankill", "goal": "Survive planning", "plan": "auto",
                          "planner": {"model": "scripted-thinking"}, "agents": [agent("a", model="scripted-slow")]})
    handle = start_mission(spec, router=chaos_router, mission_id="plankill-1", run_dir=run_dir)
    try:
        wait_for(lambda: ray.get(handle.summary.remote())["status"] == "planning", timeout_s=120,
                 what="the planner's call")
        ray.kill(handle, no_restart=False)  # before the plan is in the log
        waited = collect_with_cli(run_dir)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        ray.kill(handle)
    result = read_result(run_dir)
    assert result["status"] == "succeeded" and result["tasks"], result  # not an empty mission that "succeeded"
    assert [r.kind for r in read_log(run_dir)].count("mission.plan") == 1
    assert_exactly_once_each(run_dir, [t["id"] for t in result["tasks"]])


def test_a_conflict_being_settled_when_the_supervisor_dies_is_settled_after_the_restart(chaos_router, tmp_path):
    from memory import Conflict

    run_dir, mission_id = str(tmp_path / "conflict-kill"), "conflictkill-1"
    finder = {"model": "scripted-slow", "fixed_memory": True}
    spec = parse_mission({"name": "conflictkill", "goal": "Agree on a launch month",
                          "policies": {"conflicts": {"policy": "resolver", "resolver_agent": "judge"}},
                          "agents": [agent("a", **finder), agent("b", **finder),
                                     agent("judge", model="scripted-long"), agent("keeper", model="scripted-slow")],
                          "tasks": [task("ta", "a", topic="launch"), task("tb", "b", topic="launch"),
                                    task("k0", "keeper", deps=("ta", "tb"))]
                          + [task(f"k{i}", "keeper", deps=(f"k{i - 1}",)) for i in range(1, 20)]})
    handle = start_mission(spec, router=chaos_router, mission_id=mission_id, run_dir=run_dir,
                           memory_dir=str(tmp_path / "memory"))
    try:
        wait_for(lambda: succeeded_count(run_dir) >= 2, timeout_s=300, what="both findings")
        memory = ray.get_actor(f"{mission_id}:memory", namespace=MISSION_NAMESPACE)

        def findings() -> dict:
            entries = ray.get(memory.list.remote(namespace="shared", token=supervisor_token(mission_id),
                                                 filters={"topic": "launch"}))
            return {e.agent_id: e for e in entries} if len(entries) == 2 else {}

        posted = wait_for(findings, timeout_s=60, what="both findings in memory")
        ray.get(handle.on_memory_event.remote(Conflict(topic="launch", existing=posted["a"], new=posted["b"],
                                                       similarity=0.9, verdict="contradict")))
        wait_for(lambda: any(r.kind == "conflict.detected" for r in read_log(run_dir)), timeout_s=60,
                 what="the conflict in the log")
        ray.kill(handle, no_restart=False)  # its resolver thinks for 15 s
        waited = collect_with_cli(run_dir)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        ray.kill(handle)
    [decision] = read_result(run_dir)["conflicts"]
    assert decision["entries"] == [posted["a"].id, posted["b"].id] and decision["winner"] is None
    records = read_log(run_dir)
    assert [r.kind for r in records if r.kind.startswith("conflict.")] == [
        "conflict.detected", "conflict.reopened", "conflict.decision"]
    # the dead supervisor's resolver run was stopped (its call is in the audit log), not left to hold the judge
    judged = [r.data["outcome"] for r in records if r.kind == "model.call" and r.data["agent"] == "judge"]
    assert sorted(judged) == ["CancelledError", "ok"]


def test_a_restarted_supervisor_stops_the_attempts_its_dead_self_sent_instead_of_waiting_behind_them(chaos_router,
                                                                                                    tmp_path):
    run_dir = str(tmp_path / "orphan")
    spec = parse_mission({"name": "orphan", "goal": "Survive", "tasks": [task("t0", "a")],
                          "agents": [agent("a", model="scripted-long")]})  # max_concurrency 1; a 15 s model call
    handle = start_mission(spec, router=chaos_router, mission_id="orphan-1", run_dir=run_dir)
    try:
        wait_for(lambda: any(r.kind == "task.dispatch" for r in read_log(run_dir)), timeout_s=120, what="the attempt")
        ray.kill(handle, no_restart=False)
        [dropped] = wait_for(lambda: [r for r in read_log(run_dir) if r.kind == "agent.dropped"], timeout_s=120,
                             what="the old run to be stopped")
        assert ray.get(handle.cancel.remote("seen enough")) == "cancelled"  # the relaunched 15 s call is not awaited
    finally:
        ray.kill(handle)
    assert "orphan-1/t0/1" in dropped.data["message"]
    records = read_log(run_dir)
    restarted = next(r for r in records if "resumed from the mission log" in r.data.get("message", ""))
    placed = next(r for r in records if r.seq > restarted.seq and r.data.get("status") == "placed")
    assert placed.time_s - restarted.time_s < 6.0  # its agent answered at once, not after the old call's 15 s


def test_a_supervisor_killed_while_a_task_waits_for_its_delegated_child_rejoins_that_child(chaos_router, tmp_path):
    run_dir = str(tmp_path / "delegate-kill")
    spec = parse_mission({"name": "delegatekill", "goal": "Survive", "tasks": [
        task("edit", "lead", "Ask the reviewer about the tagline")], "agents": [
        agent("lead", role="editor", model="scripted-lead", tools=["delegate"]),
        agent("rev", role="reviewer", model="scripted-thinking")]})  # the child takes 3 s
    handle = start_mission(spec, router=chaos_router, mission_id="delegatekill-1", run_dir=run_dir)
    try:
        wait_for(lambda: any(r.kind == "task.delegate" for r in read_log(run_dir)), timeout_s=120, what="the child")
        ray.kill(handle, no_restart=False)
        waited = collect_with_cli(run_dir)
        assert waited.returncode == 0, waited.stdout + waited.stderr
    finally:
        ray.kill(handle)
    tasks = {t["id"]: t for t in read_result(run_dir)["tasks"]}
    assert sorted(tasks) == ["edit", "edit.d1"]  # the relaunched call found its child: no second one
    assert tasks["edit"]["output"] == "The reviewer answered." and tasks["edit"]["ended_at"] >= tasks["edit.d1"][
        "ended_at"]  # it waited for the child, and read its result
    assert [r.data["outcome"] for r in read_log(run_dir) if r.kind == "tool.result"] == ["ok"]


def test_a_mission_cancelled_while_its_supervisor_restarts_leaves_no_agent_running(chaos_router, tmp_path):
    run_dir = str(tmp_path / "cancel-restart")
    spec = parse_mission({"name": "cancelrestart", "goal": "Stop", "tasks": [task("t0", "a")],
                          "agents": [agent("a", model="scripted-long")]})
    handle = start_mission(spec, router=chaos_router, mission_id="cancelrestart-1", run_dir=run_dir)
    try:
        wait_for(lambda: any(r.kind == "task.dispatch" for r in read_log(run_dir)), timeout_s=120, what="the attempt")
        ray.kill(handle, no_restart=False)
        assert ray.get(handle.cancel.remote("stop it"), timeout=120) == "cancelled"  # reaches it as it restarts
    finally:
        ray.kill(handle)
    wait_for(lambda: not named_actor_alive("cancelrestart-1:a"), timeout_s=30,
             what="the agent its dead self started, mid-call, to go too")


def named_actor_alive(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=MISSION_NAMESPACE)
    except ValueError:
        return False
    return True


def test_a_mission_with_an_mcp_server_resumes_and_its_agents_still_call_the_server(chaos_router, tmp_path):
    run_dir, n = str(tmp_path / "mcp-kill"), 8
    handle = start_mission(parse_mission(mcp_chain("mcpkill", n)), router=chaos_router, mission_id="mcpkill-1",
                           run_dir=run_dir)
    try:
        wait_for(lambda: succeeded_count(run_dir) >= 3, timeout_s=300, what="three tasks done")
        ray.kill(handle, no_restart=False)
        waited = collect_with_cli(run_dir)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        result = read_result(run_dir)
        assert result["status"] == "succeeded", result["reason"]
        assert_exactly_once(run_dir, n)
        records = read_log(run_dir)
        resumed = next(r.seq for r in records if r.kind == "mission.status" and "resumed" in r.data.get("message", ""))
        assert next(r.seq for r in records if r.kind == "task.succeeded" and r.data["task"] == "t7") > resumed
        assert_the_server_answered(result)
        wait_for(lambda: not processes_running(MCP_SERVER), timeout_s=30,
                 what="the MCP server to stop with the mission")
    finally:
        ray.kill(handle)


def test_the_mcp_host_killed_mid_mission_is_restarted_and_serves_the_next_call(chaos_router, tmp_path):
    run_dir, n, go = str(tmp_path / "mcp-host-kill"), 8, tmp_path / "go"
    data = mcp_chain("mcphost", n)  # the last task, which calls the server, waits for the test's gate
    data["agents"].append(agent("gate", model="scripted-slow", kind="python",
                                entrypoint="tests.helpers.agent_code:waits_for_file"))
    data["tasks"][-1]["depends_on"].append("gate")
    data["tasks"].append(task("gate", "gate", str(go)))
    handle = start_mission(parse_mission(data), router=chaos_router, mission_id="mcphost-1", run_dir=run_dir)
    try:
        wait_for(lambda: succeeded_count(run_dir) >= 3, timeout_s=300, what="three tasks done")
        host = ray.get_actor("mcphost-1:mcp", namespace=MISSION_NAMESPACE)
        killed_pid = actor_pid(host)
        ray.kill(host, no_restart=False)
        # A call already on its way to the host when it died fails (it may have had side effects): the call
        # under test is the next one, made once Ray has restarted the host.
        wait_for(lambda: actor_pid(host) not in (None, killed_pid), timeout_s=120, what="the MCP host's restart")
        go.touch()
        wait_for(lambda: read_result(run_dir) is not None, timeout_s=240, what="the mission to end")
        result = read_result(run_dir)
        assert result["status"] == "succeeded", result["reason"]
        assert_the_server_answered(result)
        wait_for(lambda: not processes_running(MCP_SERVER), timeout_s=30,  # the killed host's server too
                 what="the MCP servers of both hosts to stop")
    finally:
        ray.kill(handle)


def test_agent_killed_mid_mission_is_restarted_and_its_attempt_retried(chaos_router, tmp_path):
    run_dir, n = str(tmp_path / "agent-kill"), 8
    handle = start_mission(chain_spec("agentkill", n), router=chaos_router, mission_id="agentkill-1",
                           run_dir=run_dir)
    try:
        wait_for(lambda: succeeded_count(run_dir) >= 2, timeout_s=300, what="two tasks done")
        ray.kill(ray.get_actor("agentkill-1:a", namespace=MISSION_NAMESPACE), no_restart=False)
        ray.kill(ray.get_actor("agentkill-1:b", namespace=MISSION_NAMESPACE), no_restart=True)  # replaced
        wait_for(lambda: read_result(run_dir) is not None, timeout_s=240, what="the mission to end")
        assert read_result(run_dir)["status"] == "succeeded", read_result(run_dir)["reason"]
        assert_exactly_once(run_dir, n)
    finally:
        ray.kill(handle)


def test_a_mission_on_a_router_that_does_not_run_is_refused_before_anything_starts(chaos_router):
    from actors import running_missions
    from controlplane.errors import SetupError
    from serving import RouterClient

    with pytest.raises(SetupError, match=rf"no router runs as Serve app 'nope' on this cluster \(routers: .*"
                                         rf"'{chaos_router.app_name}'.*Fix: deploy one with serving.deploy"):
        start_mission(chain_spec("norouter", 2), router=RouterClient("nope"), mission_id="norouter-1")
    assert "norouter-1" not in running_missions()


def test_a_second_run_with_a_taken_id_is_refused(chaos_router, tmp_path):
    from controlplane.errors import MissionIdInUse

    run_dir = str(tmp_path / "dup")
    handle = start_mission(chain_spec("dup", 4), router=chaos_router, mission_id="dup-1", run_dir=run_dir)
    try:
        with pytest.raises(MissionIdInUse, match="running"):
            start_mission(chain_spec("dup", 4), router=chaos_router, mission_id="dup-1", run_dir=run_dir)
        wait_for(lambda: read_result(run_dir) is not None, timeout_s=120, what="the mission to end")
    finally:
        ray.kill(handle)
    wait_for(lambda: "dup-1" not in [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)],
             timeout_s=30, what="the supervisor to go")
    with pytest.raises(MissionIdInUse, match="already ended"):
        start_mission(chain_spec("dup", 4), router=chaos_router, mission_id="dup-1", run_dir=run_dir)
