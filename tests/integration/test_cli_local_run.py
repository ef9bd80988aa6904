"""`controlplane run` with a local Ray of its own, as `make run` starts it:

- Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group, which holds the CLI and the local
  Ray it started. The mission is cancelled, not lost: it ends `cancelled` with its reason and result.json, the
  mission's API key is revoked, the CLI exits 3, and the local Ray is gone;
- an HTTP port another process holds: the CLI exits 2 naming the port and the fix, and leaves no Ray running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

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


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])  # SIGTERM: what `ray job stop` sends the job's driver
def test_ctrl_c_cancels_the_mission_writes_its_result_and_stops_the_local_ray(tmp_path, how):
    mission, runs = tmp_path / "chain.yaml", tmp_path / "runs"
    mission.write_text(yaml.safe_dump(CHAIN))
    output = tmp_path / "run.out"
    run = local_run(mission, runs, output, "--mission-id", "interrupted-1", "--http-port", str(free_port()))
    try:
        wait_for(lambda: "task t1 succeeded" in output.read_text() or run.poll() is not None,
                 timeout_s=240, interval_s=0.5, what="the mission's first tasks to succeed")
        gcs = (runs / "interrupted-1" / "ray_address").read_text().strip()
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
    assert not (runs / "interrupted-1" / "api_key").exists()  # the mission's HTTP key was revoked
    assert not reachable(gcs), f"the local Ray's GCS still answers at {gcs}"
    wait_for(lambda: not in_group(run.pid), timeout_s=20, what="the local Ray's processes to stop")


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
