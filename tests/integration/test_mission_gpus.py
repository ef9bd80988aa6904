"""Fractional GPUs: four agents at num_gpus=0.25 share the session cluster's one logical GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import follow, start_mission
from actors._cluster import read_capacity
from controlplane import load_mission
from controlplane._core.placement import check_resources
from serving import RouterClient

MISSION = Path(__file__).parents[2] / "missions" / "testing" / "scripted_gpus.yaml"


def test_four_agents_at_a_quarter_gpu_share_one_gpu(router, ray_cluster):
    import ray

    spec = load_mission(MISSION)
    check_resources(spec, read_capacity())
    handle = start_mission(spec, router=router)
    try:
        result = follow(handle, timeout_s=120)
    finally:
        ray.kill(handle)
    assert result["status"] == "succeeded", result["reason"]
    assert {a["gpu_ids"][0] for a in result["agents"].values()} == {"0"}
    assert sorted(result["agents"]) == ["gpu-a", "gpu-b", "gpu-c", "gpu-d"]
    workers = [t for t in result["tasks"] if t["id"].startswith("w")]
    assert len({t["agent"] for t in workers}) == 4  # the role's tasks spread over all four agents
    assert max(t["started_at"] for t in workers) < min(t["ended_at"] for t in workers)



def test_more_gpus_than_the_cluster_has_are_refused_before_any_actor_starts(ray_cluster):
    import ray

    from actors import running_missions
    from controlplane import SpecError, parse_mission

    agents = [{"name": f"g{i}", "role": "worker", "resources": {"num_gpus": 0.25}} for i in range(5)]
    spec = parse_mission({"name": "toomany", "goal": "g", "agents": agents,
                          "tasks": [{"id": "t", "role": "worker", "description": "d"}]})
    with pytest.raises(SpecError, match="1.25 GPUs together but the cluster has 1"):
        start_mission(spec, router=RouterClient(), mission_id="toomany-1")
    assert "toomany-1" not in running_missions() and ray.cluster_resources()["GPU"] == 1


@pytest.mark.parametrize(("written", "named"), [
    ("available_node_types:\n  gpu: {resources: {GPU: many}}\n", "available_node_types.gpu.resources.GPU"),
    ("max_workers: 2\nmax_workers: 4\n", "'max_workers' (first on line 1)"),
])
def test_an_autoscaler_config_ray_could_not_read_refuses_the_mission_naming_the_file_and_field(
        ray_cluster, tmp_path, monkeypatch, written, named):
    from actors import running_missions
    from controlplane import SpecError, parse_mission

    config = tmp_path / "autoscaler.yaml"
    config.write_text(written)
    monkeypatch.setenv("CONTROLPLANE_AUTOSCALER_CONFIG", str(config))
    spec = parse_mission({"name": "scaled", "goal": "g", "agents": [{"name": "a", "role": "worker"}],
                          "tasks": [{"id": "t", "role": "worker", "description": "d"}]})
    with pytest.raises(SpecError, match=str(config)) as refused:
        start_mission(spec, router=RouterClient(), mission_id="scaled-1")
    assert named in str(refused.value) and "scaled-1" not in running_missions()
