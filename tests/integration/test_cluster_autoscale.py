"""Autoscaling on demand with Ray's fake multi-node provider: a mission whose agents ask for GPUs, on a cluster
that starts with none, passes the pre-flight check (it counts the GPU nodes the autoscaler may add), waits
while fake GPU nodes come up, runs on them, and the nodes go away after it. Both times are measured.

The cluster is a `ray start --head` of its own (token auth on, Ray 2.60's default), joined by
`controlplane run --address` in a process of its own; only its own processes are stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _fake_autoscaler import fake_autoscaling_cluster, run_driver
from conftest import free_port

ROOT = Path(__file__).parents[2]
MISSION = "missions/testing/scripted_gpus_autoscale.yaml"


def test_a_gpu_mission_brings_up_fake_gpu_nodes_which_go_away_after(tmp_path):
    from controlplane._core.placement import HEAD_RESOURCE

    runs = tmp_path / "runs"
    with fake_autoscaling_cluster(tmp_path, head_resources={HEAD_RESOURCE: 1}) as cluster:
        cmd = [sys.executable, "-m", "controlplane", "run", MISSION, "--address", cluster.address, "--runs-dir",
               str(runs), "--mission-id", "autoscale-1", "--http-port", str(free_port()), "--plain"]
        job = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=540)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        result = json.loads((runs / "autoscale-1" / "result.json").read_text())
        gone = run_driver(cluster, "wait-gone", "180")["gone_at_s"]
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
