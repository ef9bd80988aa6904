"""Pre-flight placement: refuse only what no scale-up could satisfy; gang bundles; what is missing; head pin."""

import pytest

from controlplane import SpecError, parse_mission
from controlplane._core.placement import (
    HEAD_RESOURCE,
    ClusterCapacity,
    NodeType,
    agent_bundles,
    check_resources,
    head_pin,
    missing_for,
    node_types_from_config,
)

HEAD = {"CPU": 8, HEAD_RESOURCE: 1}
GPU_WORKER = NodeType(name="gpu_worker", resources={"CPU": 16, "GPU": 1}, max_workers=4)


def spec(*gpus: float, cpus: float = 0.25, strategy: str = "SPREAD"):
    agents = [{"name": f"a{i}", "role": "r", "resources": {"num_gpus": g, "num_cpus": cpus}}
              for i, g in enumerate(gpus)]
    return parse_mission({"name": "m", "goal": "g", "agents": agents, "placement": {"strategy": strategy},
                          "tasks": [{"id": "t", "role": "r", "description": "d"}]})


def test_gpus_the_autoscaler_can_add_are_counted_though_none_is_up():
    now = ClusterCapacity(nodes=[HEAD], fixed=[HEAD], node_types=[GPU_WORKER])
    check_resources(spec(1, 1, 1, 0.5), now)  # 3.5 GPUs of the 4 the autoscaler may add
    assert now.total("GPU") == 4 and now.total("CPU") == 8 + 64


def test_more_than_every_scale_up_gives_is_refused_naming_the_total_and_the_types():
    capacity = ClusterCapacity(nodes=[HEAD], fixed=[HEAD], node_types=[GPU_WORKER])
    with pytest.raises(SpecError) as info:
        check_resources(spec(1, 1, 1, 1, 0.5), capacity, source="m.yaml")
    assert info.value.where == "m.yaml: agents[*].resources.num_gpus"
    assert "4.5 GPUs together" in info.value.why and "gpu_worker x4" in info.value.why


def test_an_agent_must_fit_on_one_node_type_even_when_the_total_is_enough():
    capacity = ClusterCapacity(nodes=[HEAD], fixed=[HEAD], node_types=[GPU_WORKER])
    with pytest.raises(SpecError) as info:
        check_resources(spec(2), capacity)
    assert info.value.where.endswith("agents[0](a0).resources.num_gpus")
    assert "no node has more than 1 GPUs" in info.value.why


def test_without_an_autoscaler_only_the_nodes_up_now_count():
    capacity = ClusterCapacity(nodes=[{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}])
    check_resources(spec(1, 1), capacity)
    with pytest.raises(SpecError, match="3 GPUs together"):
        check_resources(spec(1, 1, 1), capacity)


def test_nodes_up_now_count_even_beyond_the_autoscaler_config():
    extra = {"CPU": 4, "GPU": 2}  # joined by hand, not by the autoscaler
    capacity = ClusterCapacity(nodes=[HEAD, extra, extra, extra], fixed=[HEAD], node_types=[GPU_WORKER])
    assert capacity.total("GPU") == 6
    check_resources(spec(2, 2, 2), capacity)


def test_strict_spread_needs_as_many_nodes_as_reserving_agents():
    capacity = ClusterCapacity(nodes=[HEAD], fixed=[HEAD],
                               node_types=[NodeType(name="cpu", resources={"CPU": 4}, max_workers=2)])
    check_resources(spec(0, 0, 0, strategy="STRICT_SPREAD"), capacity)  # head + 2 workers
    with pytest.raises(SpecError, match="at most 3 nodes"):
        check_resources(spec(0, 0, 0, 0, strategy="STRICT_SPREAD"), capacity)


def test_every_resource_no_scale_up_could_give_is_named_at_once():
    capacity = ClusterCapacity(nodes=[HEAD], fixed=[HEAD],
                               node_types=[NodeType(name="cpu", resources={"CPU": 4}, max_workers=1)])
    with pytest.raises(SpecError) as info:
        check_resources(spec(0.5, 0, 0, cpus=9, strategy="STRICT_SPREAD"), capacity, source="m.yaml")
    assert [info.value.where, *(problem.where for problem in info.value.also)] == [
        "m.yaml: agents[0](a0).resources.num_gpus", "m.yaml: agents[0](a0).resources.num_cpus",
        "m.yaml: agents[1](a1).resources.num_cpus", "m.yaml: agents[2](a2).resources.num_cpus",
        "m.yaml: agents[*].resources.num_gpus", "m.yaml: agents[*].resources.num_cpus", "m.yaml: placement.strategy"]


def test_bundles_leave_out_agents_that_ask_for_nothing():
    mission = spec(0.5, 0, cpus=0)
    assert agent_bundles(mission) == {"a0": {"GPU": 0.5}}


def test_missing_names_each_short_resource():
    why = missing_for([{"GPU": 1, "CPU": 1}, {"GPU": 1, "CPU": 1}], [{"CPU": 8}, {"CPU": 2, "GPU": 1}], "PACK")
    assert why == "1 of 2 agent bundles do not fit (CPU: 2 wanted, 10 free, GPU: 2 wanted, 1 free)"
    assert missing_for([{"CPU": 1}], [{"CPU": 8}], "SPREAD") == ""


def test_missing_under_strict_spread_counts_nodes():
    why = missing_for([{"CPU": 1}] * 3, [{"CPU": 8}, {"CPU": 8}], "STRICT_SPREAD")
    assert "STRICT_SPREAD needs 3 nodes, 2 are up" in why


def test_head_pin_only_where_the_head_declares_the_resource():
    assert head_pin({"CPU": 8, HEAD_RESOURCE: 1}) == {HEAD_RESOURCE: 0.001}
    assert head_pin({"CPU": 8}) == {}


def test_placement_defaults_and_bad_strategy():
    assert spec(0).placement.strategy == "SPREAD" and spec(0).placement.timeout_s == 300
    with pytest.raises(SpecError, match="placement.strategy"):
        spec(0, strategy="STRICT_PACK")


def test_node_types_come_from_the_autoscaler_config_without_the_head():
    config = {"max_workers": 3, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 2}, "max_workers": 0},
                                       "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "max_workers": 8},
                                       "cpu_worker": {"resources": {"CPU": 4}, "max_workers": 2}}}
    assert node_types_from_config(config) == [
        NodeType(name="cpu_worker", resources={"CPU": 4.0}, max_workers=2),
        NodeType(name="gpu_worker", resources={"CPU": 2.0, "GPU": 1.0}, max_workers=3)]


def test_the_projects_cluster_yaml_lets_a_mission_ask_for_four_gpus():
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).parents[2] / "cluster.yaml").read_text())
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    capacity = ClusterCapacity(nodes=[head], fixed=[head], node_types=node_types_from_config(config))
    check_resources(spec(1, 1, 1, 1), capacity)
    assert head.get(HEAD_RESOURCE) == 1


FORMAT = "available_node_types: {<type>: {resources:"


@pytest.mark.parametrize(("config", "where", "why", "fix"), [
    (None, "cfg.yaml", "an autoscaler config is a YAML mapping", FORMAT),
    ({"available_node_types": ["gpu_worker"]}, "cfg.yaml: available_node_types", "valid dictionary", FORMAT),
    ({"available_node_types": {"gpu": {"resources": {"GPU": "one"}}}},
     "cfg.yaml: available_node_types.gpu.resources.GPU", "valid number", FORMAT),
    ({"available_node_types": {"gpu": {"max_workers": 1.5}}}, "cfg.yaml: available_node_types.gpu.max_workers",
     "valid integer", FORMAT),
    ({"max_workers": -1}, "cfg.yaml: max_workers", "greater than or equal to 0", "use 0 or more"),
])
def test_an_autoscaler_config_not_in_rays_format_is_a_spec_error_naming_the_file_and_field(config, where, why, fix):
    with pytest.raises(SpecError) as refused:
        node_types_from_config(config, source="cfg.yaml")
    assert refused.value.where == where and why in refused.value.why
    assert fix in refused.value.fix


def test_what_the_autoscaler_config_leaves_out_counts_as_nothing_to_add():
    assert node_types_from_config({"cluster_name": "c", "available_node_types": None}) == []
    assert node_types_from_config({"available_node_types": {"w": {"resources": None}}}) == [
        NodeType(name="w", resources={}, max_workers=0)]
