"""Human approvals on real Ray with scripted transcripts: a call that needs approval waits (making no model call)
until a person decides through the Python API or the CLI; approved runs, denied and timed out reach the model as a
tool error; `approve_plan` holds the planner's tasks until the plan is approved."""

from __future__ import annotations

import json
import subprocess
import sys

import ray

from actors import approvals, approve, follow, start_mission
from controlplane import parse_mission
from controlplane._logfile import read_log
from tests.helpers import actor_pid, agent, by_id, task, wait_for

CALCULATOR = {"name": "calculator", "function": "controlplane.builtin_tools:calculator"}


def cli(*args: str) -> subprocess.CompletedProcess:
    address = ray.get_runtime_context().gcs_address
    return subprocess.run([sys.executable, "-m", "controlplane", *args, "--address", address],
                          capture_output=True, text=True, timeout=180)


def start(router, mission_id: str, run_dir: str | None = None, **data) -> object:
    spec = parse_mission({"name": "approvals", "goal": "Test approvals", **data})
    return start_mission(spec, router=router, mission_id=mission_id, run_dir=run_dir)


def analyst() -> dict:
    return agent("analyst", role="analyst", model="scripted-tools", tools=["calculator"], max_concurrency=2)


def test_an_approved_call_runs_and_a_denied_one_returns_a_tool_error(scripted_router):
    handle = start(scripted_router, "approvals-1", tools=[CALCULATOR], policies={"approve": ["calc*"]},
                   agents=[analyst()], tasks=[task("yes", "analyst", "Compute the total of the order"),
                                              task("no", "analyst", "Compute the total of the bill")])
    try:
        waiting = wait_for(lambda: len(approvals("approvals-1")) == 2 and approvals("approvals-1"), timeout_s=120,
                           what="both calls to wait for approval")
        ids = {a["call_id"].split("#")[0]: a["id"] for a in waiting}
        assert {a["tool"] for a in waiting} == {"calculator"} and all(a["arg_digest"] for a in waiting)
        assert [a["arguments"] for a in waiting] == [{"expression": "6*7"}] * 2  # what the person decides on
        listed = cli("approvals", "approvals-1")
        assert listed.returncode == 0 and ids["yes"] in listed.stdout and ids["no"] in listed.stdout, listed.stderr
        assert listed.stdout.count('arguments: {"expression": "6*7"}') == 2, listed.stdout
        status = cli("status", "approvals-1")
        assert "waiting for approval: 2 (`controlplane approvals approvals-1`)" in status.stdout, status.stderr

        decided = approve("approvals-1", ids["yes"], reason="fine")
        assert decided["status"] == "approved" and decided["reason"] == "fine"
        denied = cli("deny", "approvals-1", ids["no"], "--reason", "too risky")
        assert denied.returncode == 0 and "denied" in denied.stdout, denied.stderr

        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    tasks = by_id(result)
    assert result["status"] == "succeeded", result["reason"]
    assert tasks["yes"]["output"] == "The total is 42."  # the approved call ran
    assert tasks["no"]["output"] == "The calculator was not approved."  # the model read the denial as a tool error
    assert tasks["yes"]["model_calls"] == 2  # one call before the wait, one after: waiting made none
    decisions = {e["data"]["id"]: e for e in result["events"] if e["kind"] == "approval"
                 and e["status"] in ("approved", "denied")}
    assert decisions[ids["no"]]["data"]["reason"] == "too risky" and decisions[ids["yes"]]["status"] == "approved"
    assert [e["status"] for e in result["events"] if e["kind"] == "approval"].count("requested") == 2
    assert "6*7" not in json.dumps([e for e in result["events"] if e["kind"] == "approval"])  # the digest only


def test_a_call_that_waits_when_the_supervisor_restarts_still_waits_with_its_arguments_and_the_approval_holds(
        scripted_router, tmp_path):
    run_dir = str(tmp_path / "approvals-4")
    handle = start(scripted_router, "approvals-4", run_dir, tools=[{**CALCULATOR, "approval": "required"}],
                   agents=[analyst()], tasks=[task("t", "analyst", "Compute the total of the order")])
    try:
        [before] = wait_for(lambda: approvals("approvals-4"), timeout_s=120, what="the call to wait for approval")
        killed_pid = actor_pid(handle)
        ray.kill(handle, no_restart=False)  # Ray restarts it; it continues from its log
        wait_for(lambda: actor_pid(handle) not in (None, killed_pid), timeout_s=120, what="the supervisor's restart")
        [after] = wait_for(lambda: [a for a in _listed("approvals-4") if a["arguments"]], timeout_s=120,
                           what="the call to wait again, shown")
        assert after["id"] == before["id"] and after["arguments"] == {"expression": "6*7"}
        approve("approvals-4", after["id"], reason="checked")
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    assert by_id(result)["t"]["output"] == "The total is 42."
    logged = [(r.data["id"], r.data["status"]) for r in read_log(run_dir) if r.kind.startswith("approval")]
    assert logged == [(before["id"], "pending"), (before["id"], "approved")]


def _listed(mission_id: str) -> list[dict]:
    try:
        return approvals(mission_id)
    except Exception:  # the supervisor is restarting
        return []


def test_an_approval_that_times_out_is_a_denial(scripted_router):
    handle = start(scripted_router, "approvals-2", tools=[{**CALCULATOR, "approval": "required"}],
                   policies={"approval_timeout_s": 1.0}, agents=[analyst()],
                   tasks=[task("t", "analyst", "Compute the total of the order")])
    try:
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    assert by_id(result)["t"]["output"] == "The calculator was not approved."
    denial = [e for e in result["events"] if e["kind"] == "approval" and e["status"] == "denied"]
    assert len(denial) == 1 and denial[0]["data"]["decided_by"] == "timeout"


def test_an_auto_plan_waits_for_approval_before_any_task_runs_and_its_agents_start_meanwhile(scripted_router):
    handle = start(scripted_router, "approvals-3", plan="auto", planner={"model": "scripted"},
                   policies={"approve_plan": True}, agents=[agent("solo", model="scripted")])
    try:
        waiting = wait_for(lambda: approvals("approvals-3"), timeout_s=120, what="the plan to wait")
        assert [a["tool"] for a in waiting] == ["plan"]
        summary = ray.get(handle.summary.remote())
        assert summary["status"] == "planning" and not summary["tasks"]  # no task runs before the approval
        wait_for(lambda: any(e.get("status") == "placed" for e in ray.get(handle.events_since.remote(0))),
                 timeout_s=120, what="the agents to start while the plan waits")
        approve("approvals-3", waiting[0]["id"])
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    approval = result["plan"]["approval"]
    assert approval["status"] == "approved" and result["tasks"]
    shown = waiting[0]["arguments"]  # the plan, for the person to read
    assert shown == result["plan"]["tasks"] and {t["id"] for t in shown} == {t["id"] for t in result["tasks"]}
    assert all(t["description"] for t in shown)
    assert all(t["started_at"] >= approval["decided_at_s"] for t in result["tasks"] if t["started_at"])
    assert any(t["started_at"] for t in result["tasks"])  # the approved plan's tasks ran


def test_a_plan_that_waits_for_approval_when_the_supervisor_restarts_still_waits_and_no_task_runs_before_it(
        scripted_router, tmp_path):
    run_dir = str(tmp_path / "approvals-5")
    handle = start(scripted_router, "approvals-5", run_dir, plan="auto", planner={"model": "scripted"},
                   policies={"approve_plan": True}, agents=[agent("solo", model="scripted")])
    try:
        [before] = wait_for(lambda: approvals("approvals-5"), timeout_s=120, what="the plan to wait")
        killed_pid = actor_pid(handle)
        ray.kill(handle, no_restart=False)
        wait_for(lambda: actor_pid(handle) not in (None, killed_pid), timeout_s=120, what="the supervisor's restart")
        [after] = wait_for(lambda: [a for a in _listed("approvals-5") if a["arguments"]], timeout_s=120,
                           what="the plan to wait again, shown")
        assert (after["id"], after["tool"]) == (before["id"], "plan") and after["arguments"] == before["arguments"]
        summary = ray.get(handle.summary.remote())
        assert summary["status"] == "planning" and not summary["tasks"]  # the restart skipped no approval
        approve("approvals-5", after["id"])
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    assert result["plan"]["approval"]["status"] == "approved"
    assert all(t["started_at"] >= result["plan"]["approval"]["decided_at_s"] for t in result["tasks"])
