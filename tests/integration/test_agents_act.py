"""Agents that act, on real Ray and the real router, with scripted multi-turn transcripts (`scripted-tools`):
tool calls and their results, delegation into the running DAG, the allow-list door, loop detection, python
agents with `ctx`, MCP servers over stdio, and a GPU tool that runs as a Ray task."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pytest
import ray

from serving._secrets import ROOT_SECRET_ENV
from tests.helpers import (
    MCP_TOKEN_ENV,
    actor_alive,
    agent,
    by_id,
    free_port,
    listening_pids,
    processes_running,
    run_mission,
    task,
    wait_for,
)
from tests.helpers.agent_code import (
    MCP_SERVER_HTTP_PORT,
    MCP_SERVER_LEGACY,
    MCP_SERVER_REQUIRES_TOKEN,
    MCP_SERVER_TOKEN,
    MCP_SERVER_TOKEN_DIGEST,
    MCP_SERVER_TOUCHES,
    MCP_SERVER_WAITS_FOR,
)

CALCULATOR = {"name": "calculator", "function": "controlplane.builtin_tools:calculator"}
HELPERS = Path(__file__).resolve().parents[1] / "helpers" / "agent_code.py"


def job_runtime_env() -> dict:
    return json.loads(ray.get_runtime_context().get_runtime_env_string())


def actor(name: str, **extra):
    return agent(name, role=extra.pop("role", name), model="scripted-tools", **extra)


def test_an_agent_calls_a_tool_and_answers_with_its_result(router):
    result = run_mission(router, {"tools": [CALCULATOR], "agents": [actor("analyst", tools=["calculator"])],
                                  "tasks": [task("sum", "analyst", "Compute the total of the order")]})
    done = by_id(result)["sum"]
    assert result["status"] == "succeeded", result["reason"]
    assert done["output"] == "The total is 42."  # the answer the model gave after reading the tool's result
    tools = [record["tool"] for record in done["loop"]["tool_records"]]
    assert tools == ["calculator"] and done["loop"]["tool_records"][0]["status"] == "ok"
    assert done["loop"]["steps"] == 2 and done["tool_calls"] == 1


@pytest.mark.parametrize("min_score, recalled", [(None, "recalled the venue note only"), (0.9, "recalled no note")])
def test_recall_leaves_out_the_notes_of_tasks_whose_results_are_already_in_the_prompt(router, tmp_path, min_score,
                                                                                       recalled):
    """And, with `memory_min_score`, the notes less similar to the task text than that."""
    finder = {"model": "scripted-findings", "fixed_memory": True}
    result = run_mission(router, {"agents": [agent("v", **finder), agent("a", **finder),
                                             agent("c", **finder, memory_min_score=min_score)],
                                  "tasks": [task("venue", "v", "Note the venue."),
                                            task("month", "a", "Research the launch month.", deps=("venue",)),
                                            task("plan", "c", "Summarise the plan.", deps=("month",))]},
                         memory_dir=str(tmp_path / "memory"))
    assert result["status"] == "succeeded", result["reason"]
    plan = by_id(result)["plan"]
    # month's note is its result, already in the prompt; venue's, two steps up, is not
    assert plan["output"] == recalled


def test_agents_route_their_router_calls_on_their_own_event_loop_over_grpc_without_a_runtime_env_of_their_own(router):
    """Set on the handle, not in a runtime_env of the agent's own, which would keep it off Ray's prestarted
    workers: the agent runs under the job's."""
    result = run_mission(router, {"agents": [agent("p", kind="python",
                                                   entrypoint="tests.helpers.agent_code:router_handle_setup")],
                                  "tasks": [task("setup", "p")]})
    assert result["status"] == "succeeded", result["reason"]
    setup = by_id(result)["setup"]["output"]
    assert (setup["router_in_separate_loop"], setup["by_reference"]) == (False, False)
    assert json.loads(setup["runtime_env"]) == job_runtime_env()


def test_the_memory_actor_verifies_with_the_drivers_root_secret_while_agents_keep_the_jobs_runtime_env(
        router, tmp_path, monkeypatch):
    """The driver's secret-file paths reach the memory actor as an argument, not through the supervisor's
    runtime_env, which its agents would inherit (and start on fresh workers for)."""
    monkeypatch.setenv(ROOT_SECRET_ENV, str(tmp_path / "drivers_root_secret"))  # not the one Ray's processes see
    result = run_mission(router, {"agents": [agent("p", kind="python", tools=["memory.post", "memory.search"],
                                                   entrypoint="tests.helpers.agent_code:memory_round_trip")],
                                  "tasks": [task("note", "p")]}, memory_dir=str(tmp_path / "memory"))
    assert result["status"] == "succeeded", result["reason"]
    note = by_id(result)["note"]["output"]
    assert note["found"] == ["The launch venue is Lisbon."]
    assert json.loads(note["runtime_env"]) == job_runtime_env()


def test_delegation_adds_a_child_task_and_hands_its_result_back(router):
    result = run_mission(router, {"agents": [actor("lead", role="editor", tools=["delegate"]),
                                             actor("rev", role="reviewer")],
                                  "tasks": [task("edit", "lead", "Ask the reviewer about the tagline")]})
    tasks = by_id(result)
    assert result["status"] == "succeeded", result["reason"]
    child = tasks["edit.d1"]
    assert (child["delegated_by"], child["agent"], child["output"]) == ("edit", "rev", "tagline approved")
    assert tasks["edit"]["output"] == "The reviewer said the tagline is approved."
    assert tasks["edit"]["ended_at"] >= child["ended_at"]
    delegated = [e for e in result["events"] if e["status"] == "delegated"]
    assert delegated and delegated[0]["data"]["parent"] == "edit"


def test_a_tool_outside_the_allow_list_is_denied_and_the_denial_is_an_event(router):
    read_file = {"name": "read_file", "function": "controlplane.builtin_tools:read_file"}
    result = run_mission(router, {"tools": [CALCULATOR, read_file],
                                  "agents": [actor("snoop", tools=["calculator"])],
                                  "tasks": [task("t", "snoop", "Read the secret file")]})
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["t"]["output"] == "I may not read that file."
    denials = [e for e in result["events"] if e["kind"] == "tool" and e["status"] == "denied"]
    assert len(denials) == 1 and denials[0]["agent"] == "snoop"
    assert denials[0]["data"]["tool"] == "read_file" and denials[0]["data"]["arguments_digest"]
    assert "secret.txt" not in str(denials[0])  # arguments stay out of events: only their digest


def test_the_same_call_repeated_ends_the_task_as_a_loop(router):
    result = run_mission(router, {"tools": [CALCULATOR], "agents": [actor("looper", tools=["calculator"])],
                                  "tasks": [task("t", "looper", "Add one and one forever", retries=2)]})
    looped = by_id(result)["t"]
    assert result["status"] == "failed" and looped["status"] == "failed"
    assert "AgentStopped" in looped["error"] and "(loop)" in looped["error"]
    assert looped["attempts"] == 1  # a loop is not retried: the same prompt would loop again


def test_a_python_agent_acts_through_ctx_under_its_own_identity(router):
    result = run_mission(router, {"tools": [CALCULATOR], "agents": [
        actor("coder", kind="python", entrypoint="tests.helpers.agent_code:python_agent", tools=["calculator"])],
        "tasks": [task("t", "coder", "Use the tools")]})
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["t"]["output"] == {"total": 42, "capital": "Paris"}
    assert any(e["status"] == "note" and e["agent"] == "coder" for e in result["events"])


def test_a_python_agent_class_that_fails_to_build_fails_the_mission_start_with_its_own_error(router):
    entrypoint = "tests.helpers.agent_code:NeedsAKey"
    result = run_mission(router, {"agents": [actor("keyed", kind="python", entrypoint=entrypoint)],
                                  "tasks": [task("t", "keyed", "Go")]})
    assert result["status"] == "failed"
    assert result["reason"].startswith(  # not Ray's "ActorDiedError: The actor died because of an error raised ..."
        f"SpecError: agents(keyed).entrypoint: '{entrypoint}' is invalid: building class NeedsAKey raised "
        "KeyError: 'AGENT_CODE_UNSET_KEY'. Fix: ")
    from actors import MISSION_NAMESPACE

    wait_for(lambda: not actor_alive(f"{result['mission_id']}:keyed", MISSION_NAMESPACE), timeout_s=30,
             what="the agent's actor to go with the mission")  # nothing is left half-started


def test_a_tool_module_that_imports_in_the_driver_but_not_on_the_workers_fails_the_mission_start_naming_it(router):
    function = "tests.helpers.driver_only_tool:shout"
    result = run_mission(router, {"tools": [{"name": "shout", "function": function}],
                                  "agents": [actor("caller", tools=["shout"])], "tasks": [task("t", "caller", "Go")]})
    assert result["status"] == "failed"
    assert result["reason"].startswith(
        f"SpecError: tools(shout).function: '{function}' is invalid: module 'tests.helpers.driver_only_tool' does "
        "not import (ModuleNotFoundError: No module named 'only_on_the_driver'). Fix: ")


def test_a_python_agents_sampling_fields_reach_the_engine_and_nothing_else_passes(router):
    result = run_mission(router, {"agents": [
        actor("sampler", kind="python", entrypoint="tests.helpers.agent_code:sampled_chat")],
        "tasks": [task("t", "sampler", "Sample")]})
    assert result["status"] == "succeeded", result["reason"]
    output = by_id(result)["t"]["output"]
    assert output["text"] == "scripted reply"  # the scripted engine's "scripted reply to: hello", cut at " to"
    assert output["refused"].startswith("ToolError") and "token='forged' is not a sampling field" in output["refused"]


def test_mcp_stdio_server_tools_are_called_and_the_server_stops_with_the_mission(router):
    server = {"name": "echo", "command": sys.executable, "args": [str(HELPERS)]}
    result = run_mission(router, {"mcp_servers": [server], "agents": [actor("caller", tools=["echo.*"])],
                                  "tasks": [task("t", "caller", "Shout hello")]})
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["t"]["output"] == "The server shouted back."
    tools = [e for e in result["events"] if e["status"] == "tools"][0]["data"]["mcp_tools"]
    assert tools == ["echo.crash", "echo.credential", "echo.report", "echo.shout", "echo.wait"]
    assert not processes_running(HELPERS), "the MCP server outlived its mission"


def http_mcp_server(port: int, *, env: dict[str, str] | None = None):
    """The helper server over streamable HTTP on `port`, listening."""
    import os
    import subprocess

    server = subprocess.Popen([sys.executable, str(HELPERS)],
                              env={**os.environ, MCP_SERVER_HTTP_PORT: str(port), **(env or {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: listening_pids(port), timeout_s=60, what="the HTTP MCP server to listen")
    return server


@contextlib.contextmanager
def mcp_host(**server):
    """An `McpHostActor` holding one server named `echo`, started; stopped and killed at the end."""
    from actors._mcp import McpHostActor
    from controlplane.config._tools import McpServerDecl

    host = McpHostActor.remote([McpServerDecl(name="echo", **server)])
    try:
        ray.get(host.start.remote(), timeout=60)
        yield host
    finally:
        ray.get(host.stop.remote(), timeout=60)
        ray.kill(host)


def restart(servers: list, start_again) -> None:
    """Kill the last of `servers` and append the one `start_again()` starts on its port."""
    servers[-1].kill()
    servers[-1].wait(timeout=30)
    servers.append(start_again())


def test_an_mcp_server_over_streamable_http_is_called_by_url(router):
    port = free_port()
    server = http_mcp_server(port)
    try:
        result = run_mission(router, {"mcp_servers": [{"name": "echo", "url": f"http://127.0.0.1:{port}/mcp"}],
                                      "agents": [actor("caller", tools=["echo.*"])],
                                      "tasks": [task("t", "caller", "Shout hello")]})
    finally:
        server.kill()
        server.wait(timeout=30)
    assert result["status"] == "succeeded", result["reason"]
    done = by_id(result)["t"]
    assert [(r["tool"], r["status"]) for r in done["loop"]["tool_records"]] == [("echo.shout", "ok")]
    assert done["output"] == "The server shouted back."


def test_an_http_mcp_servers_session_is_reopened_once_the_server_is_back():
    import asyncio

    from actors._mcp import McpConnection
    from controlplane.config._tools import McpServerDecl

    port = free_port()

    servers = [http_mcp_server(port)]

    async def scenario():
        connection = McpConnection(McpServerDecl(name="echo", url=f"http://127.0.0.1:{port}/mcp"))
        await connection.start()
        try:
            servers[0].kill()
            servers[0].wait(timeout=30)
            with pytest.raises(Exception, match="Connection closed"):
                await connection.client.call_tool("shout", {"text": "x"})
            connection.lost()  # as McpHostActor.call marks it
            servers.append(http_mcp_server(port))
            await connection.restart_if_lost()
            return (await connection.client.call_tool("shout", {"text": "back"})).content[0].text
        finally:
            await connection.stop()

    try:
        assert asyncio.run(scenario()) == "BACK"
    finally:
        for server in servers:
            server.kill()


def test_an_http_mcp_server_restarted_between_calls_gets_a_new_session_and_the_call(ray_cluster):
    """A server on the 2025 protocol holds a session, which it forgets when it restarts (or drops when idle): the
    next call is answered 404 before it runs. The host opens a new session and sends that call again."""
    port = free_port()
    servers = [http_mcp_server(port, env={MCP_SERVER_LEGACY: "1"})]
    try:
        with mcp_host(url=f"http://127.0.0.1:{port}/mcp") as host:
            assert ray.get(host.call.remote("echo.shout", {"text": "one"}), timeout=60) == "ONE"
            restart(servers, lambda: http_mcp_server(port, env={MCP_SERVER_LEGACY: "1"}))
            assert ray.get(host.call.remote("echo.shout", {"text": "two"}), timeout=60) == "TWO"
    finally:
        for server in servers:
            server.kill()


def test_an_http_mcp_server_that_stops_accepting_the_credential_fails_the_call_with_its_status(ray_cluster,
                                                                                                mcp_token):
    """The server restarts with a new credential (a rotation) between two calls: the next call is a tool error
    that gives the HTTP status, which the SDK's error leaves out."""
    import hashlib

    from controlplane.errors import ToolError

    def server_accepting(token: str):
        return http_mcp_server(port, env={MCP_SERVER_TOKEN_DIGEST: hashlib.sha256(token.encode()).hexdigest(),
                                          MCP_SERVER_REQUIRES_TOKEN: "1"})

    port = free_port()
    servers = [server_accepting(mcp_token)]
    try:
        with mcp_host(url=f"http://127.0.0.1:{port}/mcp",
                      headers={"Authorization": f"Bearer ${{{MCP_TOKEN_ENV}}}"}) as host:
            assert ray.get(host.call.remote("echo.shout", {"text": "one"}), timeout=60) == "ONE"
            restart(servers, lambda: server_accepting("the rotated token"))
            with pytest.raises(ToolError, match=r"the server answered HTTP 401 Unauthorized.*Fix: check the "
                               r"credential"):
                ray.get(host.call.remote("echo.shout", {"text": "two"}), timeout=60)
    finally:
        for server in servers:
            server.kill()


def test_an_mcp_call_past_its_timeout_is_cancelled_on_the_server_and_the_session_serves_the_next(ray_cluster,
                                                                                                   tmp_path):
    from controlplane.errors import ToolError

    cancelled = tmp_path / "cancelled"
    with mcp_host(command=sys.executable, args=[str(HELPERS)], timeout_s=1) as host:
        started = time.monotonic()
        with pytest.raises(ToolError, match=r"did not finish within timeout_s=1"):
            ray.get(host.call.remote("echo.wait", {"seconds": 60, "cancelled_file": str(cancelled)}), timeout=60)
        assert time.monotonic() - started < 5
        wait_for(cancelled.exists, timeout_s=5, what="the server to be told the call was cancelled")
        assert ray.get(host.call.remote("echo.shout", {"text": "next"}), timeout=60) == "NEXT"


def test_an_mcp_results_embedded_text_is_kept_and_what_a_text_model_cannot_read_is_named(ray_cluster):
    with mcp_host(command=sys.executable, args=[str(HELPERS)]) as host:
        assert ray.get(host.call.remote("echo.report", {}), timeout=60) == (
            "Summary: sales rose.\nSales rose 4% in May.\n[image left out: image/png]")


def test_mcp_credentials_come_from_the_hosts_environment_and_never_reach_the_run_directory(router, mcp_token,
                                                                                             tmp_path):
    """A `${NAME}` in a server's env or headers is read where the MCP host runs: the servers get the secret, and
    the mission log keeps only the reference (which a restarted supervisor resolves again)."""
    import hashlib

    digest = hashlib.sha256(mcp_token.encode()).hexdigest()
    reference = f"${{{MCP_TOKEN_ENV}}}"
    port = free_port()
    http_server = http_mcp_server(port, env={MCP_SERVER_TOKEN_DIGEST: digest, MCP_SERVER_REQUIRES_TOKEN: "1"})
    servers = [{"name": "echo", "command": sys.executable, "args": [str(HELPERS)],
                "env": {MCP_SERVER_TOKEN: reference, MCP_SERVER_TOKEN_DIGEST: digest}},
               {"name": "web", "url": f"http://127.0.0.1:{port}/mcp",
                "headers": {"Authorization": f"Bearer {reference}"}}]
    run_dir = tmp_path / "run"
    try:
        result = run_mission(router, {"mcp_servers": servers, "agents": [actor("caller", tools=["echo.*", "web.*"])],
                                      "tasks": [task("stdio", "caller", "Show your credential"),
                                                task("http", "caller", "Show the web credential")]},
                             run_dir=str(run_dir))
    finally:
        http_server.kill()
    assert result["status"] == "succeeded", result["reason"]
    for task_id, tool in (("stdio", "echo.credential"), ("http", "web.credential")):
        assert [(r["tool"], r["status"]) for r in by_id(result)[task_id]["loop"]["tool_records"]] == [(tool, "ok")]
        assert by_id(result)[task_id]["output"] == "The server accepted the credential."
    written = "".join(f.read_text(errors="replace") for f in run_dir.rglob("*") if f.is_file())
    assert reference in written and mcp_token not in written


def test_an_http_mcp_server_that_refuses_the_credential_fails_the_mission_start_with_its_status(router, mcp_token):
    """The SDK's error for a refused request leaves out the HTTP status; the reason gives it, and the fix names
    the credential."""
    import hashlib

    port = free_port()
    server = http_mcp_server(port, env={MCP_SERVER_TOKEN_DIGEST: hashlib.sha256(mcp_token.encode()).hexdigest(),
                                        MCP_SERVER_REQUIRES_TOKEN: "1"})
    wrong = {"name": "web", "url": f"http://127.0.0.1:{port}/mcp",
             "headers": {"Authorization": "Bearer ${HOME}"}}  # set where the host runs, but not the token
    try:
        result = run_mission(router, {"mcp_servers": [wrong], "agents": [actor("caller", tools=["web.*"])],
                                      "tasks": [task("t", "caller", "Show the web credential")]})
    finally:
        server.kill()
    assert result["status"] == "failed" and result["tasks"] == []
    assert "it answered HTTP 401 Unauthorized" in result["reason"], result["reason"]
    assert "Fix: check the credential it is given" in result["reason"], result["reason"]


def test_an_mcp_credential_whose_variable_is_not_set_fails_the_mission_start_naming_it(router):
    server = {"name": "echo", "command": sys.executable, "args": [str(HELPERS)],
              "env": {MCP_SERVER_TOKEN: "${CONTROLPLANE_TEST_NOT_SET}"}}
    result = run_mission(router, {"mcp_servers": [server], "agents": [actor("caller", tools=["echo.*"])],
                                  "tasks": [task("t", "caller", "Show your credential")]})
    assert result["status"] == "failed"
    assert "mcp_servers(echo).env.ECHO_SERVER_TOKEN" in result["reason"], result["reason"]
    assert "$CONTROLPLANE_TEST_NOT_SET is not set where the MCP host runs" in result["reason"], result["reason"]
    assert result["tasks"] == []  # nothing was planned or dispatched


def test_an_mcp_server_that_crashed_is_started_again_for_the_next_call(router):
    server = {"name": "echo", "command": sys.executable, "args": [str(HELPERS)]}
    result = run_mission(router, {"mcp_servers": [server], "agents": [actor("caller", tools=["echo.*"])],
                                  "tasks": [task("crash", "caller", "Crash the server"),
                                            task("shout", "caller", "Shout hello", deps=("crash",))]})
    assert result["status"] == "succeeded", result["reason"]
    records = {t["id"]: t["loop"]["tool_records"] for t in result["tasks"]}
    assert [(r["tool"], r["status"]) for r in records["crash"]] == [("echo.crash", "error")]
    assert [(r["tool"], r["status"]) for r in records["shout"]] == [("echo.shout", "ok")], records["shout"]
    assert by_id(result)["shout"]["output"] == "The server shouted back."


def test_agents_start_while_the_mcp_servers_start(router, tmp_path):
    from actors import MISSION_NAMESPACE, follow, new_mission_id, start_mission
    from controlplane import parse_mission

    gate = tmp_path / "serve"
    server = {"name": "echo", "command": sys.executable, "args": [str(HELPERS)], "startup_timeout_s": 120,
              "env": {MCP_SERVER_WAITS_FOR: str(gate)}}
    spec = parse_mission({"name": "itest", "goal": "Test the runtime", "mcp_servers": [server],
                          "agents": [actor("caller", tools=["echo.*"])], "tasks": [task("t", "caller", "Shout hello")]})
    mission_id = new_mission_id(spec.name)
    handle = start_mission(spec, router=router, mission_id=mission_id)
    try:
        try:  # the server answers only once the gate opens: the agent's actor must be up before that
            wait_for(lambda: actor_alive(f"{mission_id}:caller", MISSION_NAMESPACE), timeout_s=60,
                     what="the agent's actor while the MCP server is still starting")
        finally:
            gate.touch()
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["t"]["output"] == "The server shouted back."  # it knew the server's tools when it ran
    at = {e["status"]: e["time_s"] for e in result["events"] if e["kind"] == "mission"}
    assert at["tools"] <= at["placed"]


def test_a_missions_mcp_servers_start_at_once(router, tmp_path):
    started = tmp_path / "loud-started"  # "echo" answers only once "loud" has started: one at a time, it never would
    server = {"command": sys.executable, "args": [str(HELPERS)], "startup_timeout_s": 30}
    servers = [{"name": "echo", **server, "env": {MCP_SERVER_WAITS_FOR: str(started)}},
               {"name": "loud", **server, "env": {MCP_SERVER_TOUCHES: str(started)}}]
    result = run_mission(router, {"mcp_servers": servers, "agents": [actor("caller", tools=["echo.*"])],
                                  "tasks": [task("t", "caller", "Shout hello")]})
    assert result["status"] == "succeeded", result["reason"]
    tools = [e for e in result["events"] if e["status"] == "tools"][0]["data"]["mcp_tools"]
    assert tools == [f"{server}.{tool}" for server in ("echo", "loud") for tool in ("crash", "credential", "report",
                                                                                     "shout", "wait")]
    assert by_id(result)["t"]["output"] == "The server shouted back."


def test_a_server_that_fails_stops_the_ones_still_starting(router, tmp_path):
    slow = {"name": "echo", "command": sys.executable, "args": [str(HELPERS)], "startup_timeout_s": 120,
            "env": {MCP_SERVER_WAITS_FOR: str(tmp_path / "never")}}
    broken = {"name": "broken", "command": "/nonexistent/mcp-server"}
    result = run_mission(router, {"mcp_servers": [slow, broken], "agents": [actor("caller", tools=["echo.*"])],
                                  "tasks": [task("t", "caller", "Shout hello")]})
    assert result["status"] == "failed" and "MCP server 'broken'" in result["reason"], result["reason"]
    assert not processes_running(HELPERS), "the server still starting outlived the mission"


def test_cancelling_a_mission_stops_its_mcp_servers_still_starting_at_once(router, tmp_path):
    from actors import MISSION_NAMESPACE, new_mission_id, start_mission
    from actors._mcp import STOP_TIMEOUT_S
    from controlplane import parse_mission

    server = {"name": "echo", "command": sys.executable, "args": [str(HELPERS)], "startup_timeout_s": 120,
              "env": {MCP_SERVER_WAITS_FOR: str(tmp_path / "never")}}
    spec = parse_mission({"name": "itest", "goal": "Test the runtime", "mcp_servers": [server],
                          "agents": [actor("caller", tools=["echo.*"])], "tasks": [task("t", "caller", "Shout hello")]})
    mission_id = new_mission_id(spec.name)
    handle = start_mission(spec, router=router, mission_id=mission_id)
    try:
        wait_for(lambda: actor_alive(f"{mission_id}:caller", MISSION_NAMESPACE) and processes_running(HELPERS),
                 timeout_s=60, what="the agent's actor and the server, still starting")
        cancelled_at = time.monotonic()
        status = ray.get(handle.cancel.remote("cancelled while starting"), timeout=60)
        took_s = time.monotonic() - cancelled_at
    finally:
        ray.kill(handle)
    assert status == "cancelled"
    assert took_s < STOP_TIMEOUT_S, f"the cancel took {took_s:.1f} s: it waited for the starting server to stop"
    wait_for(lambda: not processes_running(HELPERS), timeout_s=30, what="the server still starting to be stopped")


def test_an_mcp_server_that_does_not_start_fails_the_mission_before_any_task(router):
    server = {"name": "broken", "command": "/nonexistent/mcp-server", "startup_timeout_s": 10}
    result = run_mission(router, {"mcp_servers": [server], "agents": [actor("caller", tools=["broken.*"])],
                                  "tasks": [task("t", "caller", "Shout hello")]})
    assert result["status"] == "failed"
    assert result["reason"].startswith("SpecError: mcp_servers(broken): '/nonexistent/mcp-server' is invalid: MCP "
                                       "server 'broken': it did not start")  # the cause, not Ray's wrapper
    assert result["tasks"] == []  # nothing was planned or dispatched
    from actors import MISSION_NAMESPACE

    wait_for(lambda: not actor_alive(f"{result['mission_id']}:caller", MISSION_NAMESPACE), timeout_s=30,
             what="the agent started beside the server to go with the mission")


def test_a_stdio_server_that_exits_at_start_fails_the_mission_with_its_last_words_and_no_secret(router, mcp_token):
    """The reason quotes the end of the server's stderr (not the SDK's task-group wrapper), with the values of its
    references put back as `${NAME}`; the whole stderr goes on to the MCP host's Ray log, written the same way."""
    reference = f"${{{MCP_TOKEN_ENV}}}"
    server = {"name": "db", "command": "python", "args": [
        "-c", "import sys; sys.exit('cannot reach the database at ' + sys.argv[1])", f"postgresql://app:{reference}@db"]}
    result = run_mission(router, {"mcp_servers": [server], "agents": [actor("caller", tools=["db.*"])],
                                  "tasks": [task("t", "caller", "Shout hello")]})
    assert result["status"] == "failed" and result["tasks"] == []
    assert f"its stderr ended: cannot reach the database at postgresql://app:{reference}@db" in result["reason"], \
        result["reason"]
    assert "ExceptionGroup" not in result["reason"] and mcp_token not in json.dumps(result)
    logs = [path.read_text(errors="replace") for path in
            Path(ray._private.worker._global_node.get_logs_dir_path()).glob("worker-*.err")]
    copied = f"\ncannot reach the database at postgresql://app:{reference}@db\n"  # a line of its own: not the reason
    assert any(copied in log for log in logs) and not any(mcp_token in log for log in logs)


def test_a_tool_with_a_gpu_share_runs_as_a_ray_task_on_a_gpu(router):
    gpu_tool = {"name": "gpu_ids", "function": "tests.helpers.agent_code:gpu_ids",
                "resources": {"num_cpus": 0, "num_gpus": 0.5}}
    result = run_mission(router, {"tools": [gpu_tool], "agents": [actor("gpu-user", tools=["gpu_ids"])],
                                  "tasks": [task("t", "gpu-user", "Which GPU do you run on?")]})
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["t"]["output"] == "It ran on a GPU."
    assert by_id(result)["t"]["loop"]["tool_records"][0]["status"] == "ok"  # the tool raises without a GPU
