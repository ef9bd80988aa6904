"""`controlplane status` and `controlplane cancel` from another process, against a running mission."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ray

from actors import MISSION_NAMESPACE, follow, start_mission
from controlplane import parse_mission
from tests.helpers import actor_alive, agent, task, wait_for


def cli(*args: str) -> subprocess.CompletedProcess:
    address = ray.get_runtime_context().gcs_address
    return subprocess.run([sys.executable, "-m", "controlplane", *args, "--address", address],
                          capture_output=True, text=True, timeout=180)


def test_status_and_cancel_from_another_process(router, tmp_path):
    # 300 tasks of 0.2 s: a minute at least, so the mission still runs when the two CLI processes have started
    # (60 tasks were once enough; a faster per-task path finished them first)
    chain = [task("t0", "a")] + [task(f"t{i}", "a" if i % 2 else "b", deps=(f"t{i - 1}",)) for i in range(1, 300)]
    spec = parse_mission({"name": "cancelme", "goal": "Run long", "tasks": chain,
                          "agents": [agent("a", model="scripted-slow"), agent("b", model="scripted-slow")]})
    handle = start_mission(spec, router=router, mission_id="cancelme-1")
    try:
        wait_for(lambda: ray.get(handle.summary.remote())["tasks"].get("succeeded", 0) >= 1, timeout_s=120,
                 what="the first task to finish")
        with pytest.raises(TimeoutError, match="it runs on"):
            follow("cancelme-1", timeout_s=0.1)  # by its id
        status = cli("status", "cancelme-1", "--json", "--runs-dir", str(tmp_path))
        assert status.returncode == 0, status.stderr
        summary = json.loads(status.stdout)
        assert summary["status"] == "running" and summary["tasks"]["succeeded"] >= 1

        cancel = cli("cancel", "cancelme-1")
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelme-1: cancelled" in cancel.stdout
        result = follow(handle, timeout_s=60)
        assert result["status"] == "cancelled" and "controlplane cancel" in result["reason"]
        states = {t["status"] for t in result["tasks"]}
        assert states <= {"succeeded", "cancelled"} and "cancelled" in states
        assert result["events"][-1]["status"] == "cancelled"
        for name in ("a", "b"):  # the agents were killed
            wait_for(lambda name=name: not actor_alive(f"cancelme-1:{name}", MISSION_NAMESPACE), timeout_s=30,
                     what=f"agent {name} to be killed")
    finally:
        ray.kill(handle)


def test_unknown_missions_are_reported_with_the_known_ones(ray_cluster, tmp_path):
    recorded = tmp_path / "old-mission"
    recorded.mkdir()
    (recorded / "result.json").write_text(json.dumps({
        "mission_id": "old-mission", "status": "succeeded", "reason": "", "wall_s": 1.5,
        "usage": {"tokens": 10, "llm_calls": 2}, "tasks": [{"status": "succeeded"}, {"status": "succeeded"}]}))
    status = cli("status", "old-mission", "--runs-dir", str(tmp_path))
    assert status.returncode == 0 and "old-mission: succeeded" in status.stdout and "2 succeeded" in status.stdout
    missing = cli("cancel", "nope", "--runs-dir", str(tmp_path))
    assert missing.returncode == 1
    assert "No mission 'nope' is running or recorded; known:" in missing.stderr and "old-mission" in missing.stderr
