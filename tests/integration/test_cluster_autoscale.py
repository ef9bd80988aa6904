"""Autoscaling on demand with Ray's fake multi-node provider, and the CLI on a token-auth multi-node cluster.

A mission whose agents ask for GPUs, on a cluster that starts with none, passes the pre-flight check (it counts
the GPU nodes the autoscaler may add), waits while fake GPU nodes come up, runs on them, and the nodes go away
after it; both times are measured. `controlplane status` follows it from another process, and `controlplane
approvals` and `cancel` reach a second mission. The cluster is a `ray start --head` of its own with token auth
on (Ray 2.60's default); the CLI processes get no RAY_AUTH_MODE and must turn it on themselves. Only the
cluster's own processes are stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port, wait_for
from tests.helpers.fake_autoscaler import fake_autoscaling_cluster, run_driver

ROOT = Path(__file__).parents[2]
MISSION = "missions/testing/scripted_gpus_autoscale.yaml"
SLOW = {"name": "slow", "goal": "Run long enough to be cancelled",
        "serving": str(ROOT / "missions" / "testing" / "serving_scripted.yaml"),
        "agents": [{"name": "a", "role": "worker", "model": "scripted-slow", "resources": {"num_cpus": 0}}],
        "tasks": [{"id": f"t{i}", "agent": "a", "description": "step", **({"depends_on": [f"t{i - 1}"]} if i else {})}
                  for i in range(200)]}


def _cli(cluster, *args: str, wait: bool = True):
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}  # the CLI turns token auth on itself
    cmd = [sys.executable, "-m", "controlplane", *args, "--address", cluster.address]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _status(cluster, runs: Path, mission_id: str) -> str:
    done = _cli(cluster, "status", mission_id, "--runs-dir", str(runs))
    return done.stdout if done.returncode == 0 else ""


def test_a_gpu_mission_brings_up_fake_gpu_nodes_which_go_away_after(tmp_path):
    from controlplane._core.placement import HEAD_RESOURCE

    runs = tmp_path / "runs"
    with fake_autoscaling_cluster(tmp_path, head_resources={HEAD_RESOURCE: 1}) as cluster:
        run = _cli(cluster, "run", MISSION, "--runs-dir", str(runs), "--mission-id", "autoscale-1",
                   "--http-port", str(free_port()), "--plain", wait=False)
        seen = wait_for(lambda: "mission autoscale-1: " in _status(cluster, runs, "autoscale-1") or run.poll(),
                        timeout_s=240, interval_s=2, what="`controlplane status` to find the live mission")
        out, err = run.communicate(timeout=540)
        assert run.returncode == 0 and seen is True, out[-3000:] + err[-3000:]
        result = json.loads((runs / "autoscale-1" / "result.json").read_text())
        gone = run_driver(cluster, "wait-gone", "180")["gone_at_s"]
        _cancel_a_running_mission(cluster, tmp_path, runs)
    assert result["status"] == "succeeded", result["reason"]
    events = [json.loads(line) for line in (runs / "autoscale-1" / "events.jsonl").read_text().splitlines()]
    started = next(e["time_s"] for e in events if e["kind"] == "mission" and e["status"] == "starting")
    placed = next(e["time_s"] for e in events if e["kind"] == "mission" and e["status"] == "placed")
    waiting = [e for e in events if e["status"] == "waiting"]
    assert waiting and "GPU: 1.5 wanted, 0 free" in waiting[0]["message"]  # no GPU was up when it started
    assert all(a["gpu_ids"] for a in result["agents"].values())
    assert len({a["node_id"] for a in result["agents"].values()}) == 2  # two fake GPU nodes (1 GPU each)
    up_s, down_s = placed - started, gone - result["ended_at"]
    print(f"autoscale_gpu_node_up_s={up_s:.1f} autoscale_gpu_node_down_s={down_s:.1f}")
    assert 0 < down_s < 180


def _cancel_a_running_mission(cluster, tmp_path: Path, runs: Path) -> None:
    import yaml

    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(SLOW))
    run = _cli(cluster, "run", str(path), "--runs-dir", str(runs), "--mission-id", "slow-1", "--plain", wait=False)
    wait_for(lambda: "tasks: " in _status(cluster, runs, "slow-1") and "succeeded" in _status(cluster, runs, "slow-1")
             or run.poll() is not None, timeout_s=240, interval_s=2, what="the slow mission to run")
    listed = _cli(cluster, "approvals", "slow-1", "--runs-dir", str(runs))  # imports Ray before it joins
    assert listed.returncode == 0 and "mission slow-1: nothing waits for approval" in listed.stdout, listed.stderr
    assert "Connecting to existing Ray cluster" not in listed.stderr  # Ray's INFO lines come with -v only
    started = time.monotonic()
    cancel = _cli(cluster, "cancel", "slow-1", "--runs-dir", str(runs))
    out, err = run.communicate(timeout=120)
    assert cancel.returncode == 0 and "mission slow-1: cancelled" in cancel.stdout, cancel.stdout + cancel.stderr
    assert run.returncode == 3 and time.monotonic() - started < 60, out[-2000:] + err[-2000:]  # EXIT_CANCELLED
    assert json.loads((runs / "slow-1" / "result.json").read_text())["status"] == "cancelled"
