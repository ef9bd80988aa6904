"""`controlplane run` with a local Ray of its own, as `make run` starts it:

- Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group, which holds the CLI and the local
  Ray it started. The mission is cancelled, not lost: it ends `cancelled` with its reason and result.json, the
  mission's API key is revoked, the CLI exits 3, and the local Ray is gone. Before, a call with that key is
  charged to the mission;
- a driver that `ray job stop` kills while it cancels has revoked the mission's API key already;
- a driver whose output's reader went away (`run m.yaml | head`) cancels the mission as Ctrl-C does;
- a driver and its local Ray killed outright: `controlplane resume` finishes the mission, running no task twice;
- an HTTP port another process holds: the CLI exits 2 naming the port and the fix, before a local Ray starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml

from controlplane._logfile import read_log
from controlplane.cli.connect import reachable
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).parents[2]
CHAIN = {"name": "interrupted", "goal": "Run long enough to be interrupted",
         "serving": str(ROOT / "missions" / "testing" / "serving_scripted.yaml"),
         "agents": [{"name": "a", "role": "worker", "model": "scripted-slow"}],
         "tasks": [{"id": f"t{i}", "agent": "a", "description": "step", **({"depends_on": [f"t{i - 1}"]} if i else {})}
                   for i in range(200)]}


def local_run(mission: Path, runs: Path, output: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own, as `make run` has
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane", "run", str(mission), "--runs-dir", str(runs), "--plain", *args],
        cwd=ROOT, env=env, stdout=output.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job's SIGINT is ignored


def kill_outright(run: subprocess.Popen) -> None:
    """SIGKILL for the driver and the local Ray it started, as the end of `ray job stop`'s grace, or the OOM killer."""
    if run.poll() is not None:
        return
    local_ray = psutil.Process(run.pid).children(recursive=True)
    os.killpg(run.pid, signal.SIGKILL)
    for process in local_ray:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    run.wait(timeout=30)
    psutil.wait_procs(local_ray, timeout=30)


def started_chain(tmp_path: Path, mission_id: str, *, tasks: int = 200) -> tuple[subprocess.Popen, Path, Path]:
    """`run` of a chain of scripted tasks, once its first two have succeeded: the process, the runs directory and
    the file of its output."""
    mission, runs, output = tmp_path / "chain.yaml", tmp_path / "runs", tmp_path / "run.out"
    mission.write_text(yaml.safe_dump(CHAIN | {"tasks": CHAIN["tasks"][:tasks]}))
    run = local_run(mission, runs, output, "--mission-id", mission_id, "--http-port", str(free_port()))
    try:
        wait_for(lambda: "task t1 succeeded" in output.read_text() or run.poll() is not None,
                 timeout_s=240, interval_s=0.1, what="the mission's first tasks to succeed")
    except BaseException:
        kill_outright(run)
        raise
    return run, runs, output


def call_with_the_missions_key(output: str, key_file: Path, **headers: str) -> int:
    """The HTTP status of a chat call to the API that `run` printed, with the key it wrote for the mission."""
    url = re.search(r"HTTP API (http://\S+/v1), with the mission's key", output).group(1)
    request = urllib.request.Request(
        f"{url}/chat/completions", method="POST",
        data=json.dumps({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": f"Bearer {key_file.read_text().strip()}", "Content-Type": "application/json",
                 **headers})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.status


def active_keys(name: str) -> list[str]:
    """The ids `controlplane keys list` shows active under `name`."""
    listed = subprocess.run([sys.executable, "-m", "controlplane", "keys", "list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.split()[1:3] == [name, "active"]]


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])  # SIGTERM: what `ray job stop` sends the job's driver
def test_ctrl_c_cancels_the_mission_writes_its_result_and_stops_the_local_ray(tmp_path, how):
    run, runs, output = started_chain(tmp_path, "interrupted-1")
    try:
        gcs = (runs / "interrupted-1" / "ray_address").read_text().strip()
        if how == "Ctrl-C":  # other tools call a model with the mission's key: the mission is charged
            key = runs / "interrupted-1" / "api_key"
            assert call_with_the_missions_key(output.read_text(), key) == 200
            assert call_with_the_missions_key(output.read_text(), key, **{"x-agent-id": "outside-tool"}) == 200
        interrupted = time.monotonic()
        if how == "Ctrl-C":  # the terminal sends it to the whole foreground group
            os.killpg(run.pid, signal.SIGINT)
        else:
            os.kill(run.pid, signal.SIGTERM)
        run.wait(timeout=120)
        took_s = time.monotonic() - interrupted
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    out = output.read_text()
    assert run.returncode == 3, out[-3000:]  # EXIT_CANCELLED
    assert f"interrupted ({how}): cancelling the mission" in out and took_s < 30, (took_s, out[-3000:])
    result = json.loads((runs / "interrupted-1" / "result.json").read_text())
    assert result["status"] == "cancelled" and result["reason"] == f"interrupted by the driver ({how})"
    done = [t for t in result["tasks"] if t["status"] == "succeeded"]
    assert 0 < len(done) < 200
    if how == "Ctrl-C":
        assert result["usage"]["by_agent"]["run-interrupted-1"]["llm_calls"] == 1, result["usage"]
        assert result["usage"]["by_agent"]["outside-tool"]["llm_calls"] == 1, result["usage"]
    assert not (runs / "interrupted-1" / "api_key").exists()  # the mission's HTTP key was revoked
    assert not reachable(gcs), f"the local Ray's GCS still answers at {gcs}"
    wait_for(lambda: not in_group(run.pid), timeout_s=20, what="the local Ray's processes to stop")


def test_a_driver_killed_while_it_cancels_has_revoked_the_missions_key_already(tmp_path):
    """`ray job stop` kills the driver 3 s after its SIGTERM, whether the cancel has ended or not."""
    run, runs, output = started_chain(tmp_path, "killed-1")
    try:
        assert (runs / "killed-1" / "api_key").exists(), output.read_text()[-3000:]
        os.kill(run.pid, signal.SIGTERM)
        wait_for(lambda: "interrupted (SIGTERM): cancelling the mission" in output.read_text(), timeout_s=30,
                 interval_s=0.02, what="the driver to start the cancel")
    finally:
        kill_outright(run)
    assert not (runs / "killed-1" / "api_key").exists(), output.read_text()[-3000:]


def test_a_run_whose_output_reader_goes_away_cancels_the_mission_as_ctrl_c_does(tmp_path):
    """`controlplane run m.yaml | head`: once `head` has its lines, the next line has no reader. The mission was
    lost with the local Ray, and the CLI's traceback named a BrokenPipeError."""
    mission, runs, errors = tmp_path / "chain.yaml", tmp_path / "runs", tmp_path / "run.err"
    mission.write_text(yaml.safe_dump(CHAIN))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "run", str(mission), "--runs-dir", str(runs), "--plain",
         "--mission-id", "piped-1", "--http-port", str(free_port())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors.open("w"), text=True, start_new_session=True)
    try:
        for line in run.stdout:  # `head`, up to the second task's success
            if "task t1 succeeded" in line:
                break
        run.stdout.close()
        run.wait(timeout=120)
    finally:
        kill_outright(run)
    said = errors.read_text()
    assert run.returncode == 3 and "Traceback" not in said, said[-3000:]  # EXIT_CANCELLED
    assert "interrupted (the reader of its output went away): cancelling the mission" in said, said[-3000:]
    result = json.loads((runs / "piped-1" / "result.json").read_text())
    assert result["status"] == "cancelled", result["reason"]
    assert result["reason"] == "interrupted by the driver (the reader of its output went away)"
    assert not (runs / "piped-1" / "api_key").exists()
    wait_for(lambda: not in_group(run.pid), timeout_s=20, what="the local Ray's processes to stop")


def test_a_mission_whose_driver_and_local_ray_were_killed_outright_is_finished_by_resume(tmp_path):
    run, runs, output = started_chain(tmp_path, "crashed-1", tasks=20)
    kill_outright(run)
    run_dir = runs / "crashed-1"
    assert (run_dir / "api_key").exists() and not (run_dir / "result.json").exists(), output.read_text()[-3000:]
    left_active = active_keys("run-crashed-1")  # what `keys list` shows the operator
    assert len(left_active) == 1, left_active
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    waited = subprocess.run([sys.executable, "-m", "controlplane", "wait", "crashed-1", "--runs-dir", str(runs),
                             "--timeout-s", "30"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert waited.returncode == 1 and "stopped before its end" in waited.stderr, waited.stderr  # not a wait for ever
    assert f"Fix: continue it with `controlplane resume {run_dir}`" in waited.stderr
    resumed = subprocess.run([sys.executable, "-m", "controlplane", "resume", str(run_dir), "--runs-dir", str(runs),
                              "--plain", "--http-port", str(free_port())],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "succeeded"
    successes = Counter(r.data["task"] for r in read_log(str(run_dir)) if r.kind == "task.succeeded")
    assert successes == Counter({f"t{i}": 1 for i in range(20)}), successes  # none lost, none run twice
    assert not (run_dir / "api_key").exists()  # the key the killed driver left was revoked, and the new one too
    assert active_keys("run-crashed-1") == []


def test_an_http_port_another_process_holds_is_refused_naming_it_and_no_ray_is_left(tmp_path):
    mission, runs, output = tmp_path / "one.yaml", tmp_path / "runs", tmp_path / "run.out"
    mission.write_text(yaml.safe_dump(CHAIN | {"tasks": CHAIN["tasks"][:1]}))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = local_run(mission, runs, output, "--mission-id", "blocked-1", "--http-port", str(port))
        try:
            run.wait(timeout=180)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    out = output.read_text()
    assert run.returncode == 2, out[-3000:]
    assert f"error: Serve's HTTP port {port} on 127.0.0.1 is in use by another process. Fix: stop that process" in out
    assert "Started a local Ray instance" not in out, out[-3000:]  # refused before Ray starts
    assert not (runs / "blocked-1" / "result.json").exists()  # no mission started
    # the local Ray's processes share the CLI's group; its dashboard's may take a moment after the CLI exits
    wait_for(lambda: not in_group(run.pid), timeout_s=20, what="the local Ray's processes to stop")


def in_group(pgid: int) -> list[psutil.Process]:
    """The processes still alive in process group `pgid`."""
    def member(proc: psutil.Process) -> bool:
        try:
            return os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE
        except (ProcessLookupError, psutil.NoSuchProcess):
            return False
    return [proc for proc in psutil.process_iter() if member(proc)]
