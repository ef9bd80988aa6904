"""`controlplane run --address` on a cluster whose Serve already runs: on a port the run did not ask for, and a
mission the cluster cannot place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ray
import yaml

from serving._keys import ApiKeyStore
from serving._secrets import API_KEYS_ENV
from tests.fixtures.serving import serving_test_config
from tests.helpers import by_id, free_port

ROOT = Path(__file__).parents[2]


def write_mission(tmp_path: Path, http_port: int, remote_key_file: str, **agent: object) -> Path:
    serving = tmp_path / "serving.yaml"  # the shared app's own config: the run leaves that app as it is
    serving.write_text(yaml.safe_dump(serving_test_config(http_port, remote_key_file)))
    mission = tmp_path / "mission.yaml"
    mission.write_text(yaml.safe_dump({
        "name": "on-a-cluster", "goal": "Call the router over HTTP", "serving": str(serving),
        "agents": [{"name": "caller", "role": "caller", "model": "scripted", "kind": "python",
                    "entrypoint": "tests.helpers.agent_code:calls_over_http", **agent}],
        "tasks": [{"id": "call", "agent": "caller", "description": "Ask over HTTP"}]}))
    return mission


def run_on_the_cluster(mission: Path, runs: Path, *flags: str, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-m", "controlplane", "run", str(mission), "--runs-dir", str(runs),
                           "--plain", "--address", ray.get_runtime_context().gcs_address, *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_a_run_on_a_cluster_whose_serve_runs_gives_its_agents_serves_port(router, http_port, remote_key_file,
                                                                           tmp_path):
    mission = write_mission(tmp_path, http_port, remote_key_file)
    asked = free_port()
    run = run_on_the_cluster(mission, tmp_path, "--mission-id", "on-a-cluster-1", "--http-port", str(asked))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"with HTTP on port {http_port}, which it keeps until it stops; --http-port {asked} is not applied" \
        in run.stdout
    assert f"HTTP API http://127.0.0.1:{http_port}/v1, with the mission's key" in run.stdout
    result = json.loads((tmp_path / "on-a-cluster-1" / "result.json").read_text())
    assert result["status"] == "succeeded", result["reason"]
    assert by_id(result)["call"]["output"] == {"base_url": f"http://127.0.0.1:{http_port}/v1", "reply": "Paris"}


def test_a_mission_the_cluster_cannot_place_is_refused_and_its_api_key_revoked(router, http_port, remote_key_file,
                                                                               tmp_path):
    """The mission's API key is made before its supervisor starts; a start that fails revokes it too."""
    mission = write_mission(tmp_path, http_port, remote_key_file, resources={"num_gpus": 64})
    keys_file = tmp_path / "keys.json"
    run = run_on_the_cluster(mission, tmp_path, "--mission-id", "unplaceable-1",
                             env={**os.environ, API_KEYS_ENV: str(keys_file)})
    assert run.returncode == 2 and "GPU" in run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
    assert not (tmp_path / "unplaceable-1" / "api_key").exists()
    [key] = ApiKeyStore(str(keys_file)).list()
    assert key.name == "run-unplaceable-1" and key.revoked_at_s is not None
