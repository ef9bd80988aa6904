"""docs/kuberay/*.yaml are valid KubeRay resources: checked against KubeRay's own CRD schemas (v1.7.0, copied into
tests/data/kuberay/ with their source named), strictly (an unknown field fails, as with kubectl's strict field
validation), and consistent with what controlplane needs: the head resource, token auth, shared storage, and a
pre-flight node-type file that matches the worker groups."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from controlplane._core.placement import HEAD_RESOURCE, node_types_from_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {"RayJob": "ray.io_rayjobs.v1.schema.yaml", "RayService": "ray.io_rayservices.v1.schema.yaml"}
MANIFESTS = {"RayJob": "rayjob.yaml", "RayService": "rayservice.yaml"}


def strict(schema):
    """The schema with unknown fields refused wherever it lists the known ones."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module", params=sorted(SCHEMAS))
def case(request):
    kind = request.param
    text = (ROOT / "tests" / "data" / "kuberay" / SCHEMAS[kind]).read_text()
    schema = json.loads("".join(line for line in text.splitlines(True) if not line.startswith("#")))  # JSON is YAML
    docs = list(yaml.safe_load_all((ROOT / "docs" / "kuberay" / MANIFESTS[kind]).read_text()))
    resource = next(d for d in docs if d["kind"] == kind)
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    return kind, strict(schema), resource, config_map


def cluster_of(resource):
    return resource["spec"].get("rayClusterSpec") or resource["spec"]["rayClusterConfig"]


def test_the_manifest_validates_against_kuberays_crd_schema(case):
    kind, schema, resource, _ = case
    assert resource["apiVersion"] == "ray.io/v1"
    jsonschema.Draft7Validator(schema).validate(resource)


def test_a_misspelt_field_and_a_wrong_type_are_caught(case):
    _, schema, resource, _ = case
    typo = copy.deepcopy(resource)
    cluster_of(typo)["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.Draft7Validator(schema).validate(typo)
    wrong = copy.deepcopy(resource)
    cluster_of(wrong)["workerGroupSpecs"][0]["maxReplicas"] = "four"
    with pytest.raises(jsonschema.ValidationError, match="'four'"):
        jsonschema.Draft7Validator(schema).validate(wrong)


def test_head_pin_token_auth_and_shared_storage(case):
    _, _, resource, _ = case
    cluster = cluster_of(resource)
    head = cluster["headGroupSpec"]
    assert json.loads(json.loads(head["rayStartParams"]["resources"])) == {HEAD_RESOURCE: 1}
    assert cluster["authOptions"]["mode"] == "token" and cluster["enableInTreeAutoscaling"] is True
    for group in [head, *cluster["workerGroupSpecs"]]:
        mounts = {m["mountPath"] for c in group["template"]["spec"]["containers"] for m in c["volumeMounts"]}
        assert "/mnt/controlplane" in mounts  # every node sees the memory actor's data


def test_the_preflight_node_types_match_the_worker_groups(case):
    _, _, resource, config_map = case
    config = yaml.safe_load(config_map["data"]["autoscaler.yaml"])
    types = {t.name: t for t in node_types_from_config(config)}
    groups = cluster_of(resource)["workerGroupSpecs"]
    assert set(types) == {g["groupName"] for g in groups}
    for group in groups:
        params = group["rayStartParams"]
        wanted = {"CPU": float(params["num-cpus"]), **({"GPU": float(params["num-gpus"])} if "num-gpus" in params
                                                        else {})}
        assert dict(types[group["groupName"]].resources) == wanted
        assert types[group["groupName"]].max_workers == group["maxReplicas"]
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    assert head[HEAD_RESOURCE] == 1


def test_the_rayservice_serves_the_projects_router_app():
    docs = yaml.safe_load_all((ROOT / "docs" / "kuberay" / "rayservice.yaml").read_text())
    service = next(d for d in docs if d["kind"] == "RayService")
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert (app["name"], app["import_path"]) == ("controlplane", "serving:app_builder")
    assert (ROOT / app["args"]["config"].removeprefix("/app/")).is_file()


def test_the_rayjob_runs_a_mission_of_the_project():
    docs = yaml.safe_load_all((ROOT / "docs" / "kuberay" / "rayjob.yaml").read_text())
    job = next(d for d in docs if d["kind"] == "RayJob")
    words = job["spec"]["entrypoint"].split()
    assert words[:4] == ["python", "-m", "controlplane", "run"]
    assert (ROOT / words[4].removeprefix("/app/")).is_file()
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["CONTROLPLANE_AUTOSCALER_CONFIG"] == "/etc/controlplane/autoscaler.yaml"
