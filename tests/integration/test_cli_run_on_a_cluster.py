"""`controlplane run --address` on a cluster whose Serve already runs, on a port the run did not ask for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ray
import yaml

from tests.fixtures.serving import serving_test_config
from tests.helpers import by_id, free_port

ROOT = Path(__file__).parents[2]


def test_a_run_on_a_cluster_whose_serve_runs_gives_its_agents_serves_port(router, http_port, remote_key_file,
                                                                           tmp_path):
    serving = tmp_path / "serving.yaml"  # the shared app's own config: the run leaves that app as it is
    serving.write_text(yaml.safe_dump(serving_test_config(http_port, remote_key_file)))
    mission = tmp_path / "mission.yaml"
    mission.write_text(yaml.safe_dump({
        "name": "on-a-cluster", "goal": "Call the router over HTTP", "serving": str(serving),
        "agents": [{"name": "caller", "role": "caller", "model": "scripted", "kind": "python",
                    "entrypoint": "tests.helpers.agent_code:calls_over_http"}],
        "tasks": [{"id": "call", "agent": "caller", "description": "Ask over HTTP"}]}))
    asked = free_port()
    run = subprocess.run([sys.executable, "-m", "controlplane", "run", str(mission), "--runs-dir", str(tmp_path),
                          "--mission-id", "on-a-cluster-1", "--http-port", str(asked), "--plain",
                          "--address", ray.get_runtime_context().gcs_address],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"with HTTP on port {http_port}, which it keeps until it stops; --http-port {asked} is not applied" \
        in run.stdout
    assert f"HTTP API http://127.0.0.1:{http_port}/v1, with the mission's key" in run.stdout
    result = json.loads((tmp_path / "on-a-cluster-1" / "result.json").read_text())
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["call"]["output"] == {"base_url": f"http://127.0.0.1:{http_port}/v1", "reply": "Paris"}
