"""`ray job submit --working-dir . -- python -m controlplane run ...` against its own `ray start --head`.

The cluster has token auth on (Ray 2.60's default for `ray start`), so the client sets RAY_AUTH_MODE=token.
It runs on non-default ports with its own temp dir, and only its own processes are stopped at the end. Its
jobs: a mission with fractional GPUs, one whose MCP server's credential is given only in the job's
`runtime_env` (`env_vars`), as a user passes a secret to a job, and one that `ray job stop` stops. And a
`controlplane run --address` whose driver is killed outright while its mission runs on.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from controlplane._trace_file import read_spans
from serving._keys import ApiKeyStore
from tests.fixtures.serving import TOOL_TRANSCRIPTS
from tests.helpers import by_id, free_port, free_ports, wait_for
from tests.helpers.agent_code import MCP_SERVER_TOKEN, MCP_SERVER_TOKEN_DIGEST
from tests.helpers.fake_autoscaler import START_ATTEMPTS, stop_processes_of

ROOT = Path(__file__).parents[2]
RAY = str(Path(os.sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head_cluster():
    """A `ray start --head` cluster with one logical GPU; yields (env, dashboard URL, GCS address)."""
    temp_dir = f"/tmp/cpjob-{uuid.uuid4().hex[:6]}"
    # As in an activated venv: the job's `python` is the project's.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_AUTH_MODE": "token", "PATH": f"{Path(RAY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    names = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "node-manager-port", "object-manager-port",
             "runtime-env-agent-port")
    try:
        for _ in range(START_ATTEMPTS):
            ports = dict(zip(names, free_ports(len(names))))
            cmd = [RAY, "start", "--head", "--num-cpus", "8", "--num-gpus", "1", "--temp-dir", temp_dir,
                   "--dashboard-host", "127.0.0.1", "--disable-usage-stats", "--min-worker-port", "0",
                   "--max-worker-port", "0", *[a for name, p in ports.items() for a in (f"--{name}", str(p))]]
            started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
            if started.returncode == 0:
                break
            stop_processes_of(temp_dir)  # a free port taken by another process meanwhile: try fresh ones
        assert started.returncode == 0, started.stdout + started.stderr
        yield env, f"http://127.0.0.1:{ports['dashboard-port']}", f"127.0.0.1:{ports['port']}"
    finally:
        stop_processes_of(temp_dir)


def test_ray_job_submit_runs_a_mission_with_fractional_gpus(head_cluster, tmp_path):
    env, dashboard, _ = head_cluster
    runs = tmp_path / "runs"
    cmd = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".", "--",
           "python", "-m", "controlplane", "run", "missions/testing/scripted_gpus.yaml", "--runs-dir", str(runs),
           "--mission-id", "jobsubmit-1", "--http-port", str(free_port())]
    job = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "mission jobsubmit-1 succeeded" in job.stdout
    ours = job.stdout[job.stdout.index("mission jobsubmit-1:"):job.stdout.index("mission jobsubmit-1 succeeded")]
    assert "task w1 running on gpu-" in ours and "\x1b[" not in ours  # not a TTY: plain lines, no ANSI
    result = json.loads((runs / "jobsubmit-1" / "result.json").read_text())
    assert result["status"] == "succeeded"
    assert {a["gpu_ids"][0] for a in result["agents"].values()} == {"0"} and len(result["agents"]) == 4
    events = (runs / "jobsubmit-1" / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["status"] == "succeeded"
    assert "| gpu-a |" in (runs / "jobsubmit-1" / "report.md").read_text()
    assert 'id="bottleneck"' in (runs / "jobsubmit-1" / "report.html").read_text()
    spans = read_spans(runs / "jobsubmit-1" / "traces.jsonl")  # the run's one trace, from every process
    assert len({s["trace_id"] for s in spans}) == 1
    assert {s["service"] for s in spans} == {"controlplane.supervisor", "controlplane.agent", "controlplane.router"}


def test_an_mcp_credential_given_in_the_jobs_runtime_env_reaches_the_server(head_cluster, tmp_path):
    env, dashboard, _ = head_cluster
    token, name = secrets.token_hex(16), "CONTROLPLANE_JOB_MCP_TOKEN"
    assert name not in env  # only the job's runtime_env has it
    serving = tmp_path / "serving.yaml"
    serving.write_text(yaml.safe_dump({"models": {"caller": {"kind": "scripted", "replies": TOOL_TRANSCRIPTS}}}))
    mission = tmp_path / "mission.yaml"
    mission.write_text(yaml.safe_dump({
        "name": "job-credential", "goal": "Call a server with a credential", "serving": str(serving),
        "mcp_servers": [{"name": "echo", "command": sys.executable, "args": [str(ROOT / "tests/helpers/agent_code.py")],
                         "env": {MCP_SERVER_TOKEN: f"${{{name}}}",
                                 MCP_SERVER_TOKEN_DIGEST: hashlib.sha256(token.encode()).hexdigest()}}],
        "agents": [{"name": "caller", "role": "caller", "model": "caller", "tools": ["echo.credential"]}],
        "tasks": [{"id": "call", "agent": "caller", "description": "Show your credential"}]}))
    runs = tmp_path / "runs"
    cmd = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".",
           "--runtime-env-json", json.dumps({"env_vars": {name: token}}), "--",
           "python", "-m", "controlplane", "run", str(mission), "--runs-dir", str(runs), "--mission-id",
           "jobcredential-1", "--http-port", str(free_port())]
    job = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    result = json.loads((runs / "jobcredential-1" / "result.json").read_text())
    assert result["status"] == "succeeded", result["reason"]
    call = by_id(result)["call"]
    assert [(r["tool"], r["status"]) for r in call["loop"]["tool_records"]] == [("echo.credential", "ok")]
    assert call["output"] == "The server accepted the credential."
    assert token not in job.stdout + job.stderr


def test_ray_job_stop_cancels_the_mission(head_cluster, tmp_path):
    """`ray job stop` sends the job's `run` SIGTERM and kills it 3 s later; the mission must not outlive its job."""
    env, dashboard, _ = head_cluster
    serving = tmp_path / "serving.yaml"
    serving.write_text(yaml.safe_dump({"models": {"slow": {"kind": "scripted", "latency_s": 60}}}))
    mission = tmp_path / "mission.yaml"
    mission.write_text(yaml.safe_dump({
        "name": "job-stop", "goal": "Be stopped", "serving": str(serving),
        "agents": [{"name": "waiter", "role": "waiter", "model": "slow"}],
        "tasks": [{"id": "wait", "agent": "waiter", "description": "Wait"}]}))
    runs, job_id = tmp_path / "runs", f"jobstop-{uuid.uuid4().hex[:6]}"
    submit = [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".", "--no-wait",
              "--submission-id", job_id, "--", "python", "-m", "controlplane", "run", str(mission), "--runs-dir",
              str(runs), "--mission-id", "jobstop-1", "--plain", "--http-port", str(free_port())]
    assert subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120).returncode == 0

    def logs() -> str:
        return subprocess.run([RAY, "job", "logs", job_id, "--address", dashboard], env=env, capture_output=True,
                              text=True, timeout=60).stdout

    wait_for(lambda: "task wait running" in logs(), timeout_s=240, interval_s=1.0, what="the job's task to run")
    stop = subprocess.run([RAY, "job", "stop", job_id, "--address", dashboard], env=env, capture_output=True,
                          text=True, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "interrupted (SIGTERM): cancelling the mission" in logs()
    ended = runs / "jobstop-1" / "result.json"  # the supervisor finishes the cancel if the job was killed first
    wait_for(ended.exists, timeout_s=60, what="the mission's result")
    result = json.loads(ended.read_text())
    assert (result["status"], result["reason"]) == ("cancelled", "interrupted by the driver (SIGTERM)")


def test_a_driver_killed_outright_while_its_mission_runs_on_leaves_no_active_key(head_cluster, tmp_path):
    """`run --address HEAD` killed with SIGKILL: the detached supervisor finishes the mission and revokes its key,
    which the driver could not."""
    env, _, gcs = head_cluster
    mission_id = f"orphaned-{uuid.uuid4().hex[:6]}"  # the key file outlives the test: a name of its own
    mission = tmp_path / "chain.yaml"
    mission.write_text(yaml.safe_dump({
        "name": "orphaned", "goal": "Run on without its driver",
        "serving": str(ROOT / "missions" / "testing" / "serving_scripted.yaml"),
        "agents": [{"name": "a", "role": "worker", "model": "scripted-slow"}],
        "tasks": [{"id": f"t{i}", "agent": "a", "description": "step", **({"depends_on": [f"t{i - 1}"]} if i else {})}
                  for i in range(30)]}))
    runs, output = tmp_path / "runs", tmp_path / "run.out"
    run = subprocess.Popen([sys.executable, "-m", "controlplane", "run", str(mission), "--address", gcs, "--runs-dir",
                            str(runs), "--mission-id", mission_id, "--plain", "--http-port", str(free_port())],
                           cwd=ROOT, env=env, stdout=output.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "task t1 succeeded" in output.read_text() or run.poll() is not None, timeout_s=240,
                 interval_s=0.1, what="the mission's first tasks to succeed")
        assert run.poll() is None, output.read_text()[-3000:]
        run.kill()
        run.wait(timeout=30)
        assert [k.active(time.time()) for k in ApiKeyStore().list() if k.name == f"run-{mission_id}"] == [True]
    finally:
        run.kill()
    ended = runs / mission_id / "result.json"
    wait_for(ended.exists, timeout_s=120, what="the supervisor to finish the mission without its driver")
    assert json.loads(ended.read_text())["status"] == "succeeded"
    assert [k.active(time.time()) for k in ApiKeyStore().list() if k.name == f"run-{mission_id}"] == [False]
    assert not (runs / mission_id / "api_key").exists()  # nor is its clear text left on disk
