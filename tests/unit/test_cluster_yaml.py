"""cluster.yaml is checked against the cluster-config JSON schema that ships inside the `ray` package."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_matches_rays_own_schema(cluster, ray_schema):
    jsonschema.validate(cluster, ray_schema)


def test_cluster_yaml_passes_rays_launcher_validation(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_schema_check_rejects_a_broken_config(cluster, ray_schema):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="min_workers|'one'"):
        jsonschema.validate(broken, ray_schema)


def test_gpu_workers_autoscale_within_bounds(cluster):
    gpu = cluster["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"]
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_nodes_install_the_project_with_the_gpu_extra(cluster):
    assert any("--extra gpu" in command for command in cluster["setup_commands"])
