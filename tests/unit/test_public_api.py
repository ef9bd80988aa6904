"""The public surface of each package, derived from the module itself (as httpx does): every name a package
binds without a leading underscore is in its sorted `__all__`, and `__all__` is pinned here, so a new public
name shows up in review."""

import importlib
import subprocess
import sys
import types

import pytest

PUBLIC = {
    "controlplane": [
        "AccessDenied", "AgentSpec", "BackpressureError", "BudgetExceeded", "ControlPlaneError", "MissionNotFound",
        "MissionSpec", "ReplicaUnavailable", "SetupError", "SpecError", "TaskSpec", "load_mission", "parse_mission"],
    "controlplane.config": [
        "AgentBudget", "AgentSpec", "AuthSpec", "BreakerSpec", "Budgets", "ConflictPolicy", "LimitSpec", "MemoryAccess",
        "MemoryConfig",
        "MissionLimitSpec", "MissionSpec", "OpenAIModelSpec", "PlannerSpec", "Policies", "ReplicaSpec", "Resources",
        "RouterSpec", "ScriptedModelSpec", "ScriptedRule", "ServingConfig", "TaskSpec", "VLLMModelSpec",
        "load_mission", "parse_mission", "parse_serving_config"],
    "controlplane.cli": ["EXIT_CANCELLED", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"],
    "serving": [
        "ChatMessage", "ChatRequest", "ChatResult", "Identity", "RouterClient", "SAMPLING_KEYS", "Usage", "app_builder",
        "build_app", "deploy", "load_serving_config", "mission_tokens", "serve_http_port"],
    "memory": [
        "CONFLICT_TOPIC", "Conflict", "Entry", "Hit", "Judge", "MemoryActor", "MemoryConfig", "MemoryReader",
        "NewEntry", "PostEvent", "Receipt", "RouterJudge", "SearchFilters", "Verdict", "start_memory_actor"],
    "actors": [
        "AgentActor", "MISSION_NAMESPACE", "SupervisorActor", "approvals", "approve", "deny", "find_supervisor",
        "follow", "new_mission_id", "running_missions", "start_mission", "stop_all"],
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names_are_derived_from_the_module_and_pinned(name):
    if name == "actors":
        pytest.importorskip("ray")
    module = importlib.import_module(name)
    bound = sorted(n for n, v in vars(module).items()
                   if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations")
    assert module.__all__ == sorted(module.__all__)
    assert bound == module.__all__, "a public name is bound but not in __all__ (or the other way round)"
    assert module.__all__ == PUBLIC[name]


def test_importing_controlplane_and_its_cli_does_not_import_ray():
    code = "import sys, controlplane, controlplane.cli, controlplane.config; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_an_agents_process_does_not_import_the_routers_app():
    """Every agent imports its code as it starts, nine at once on a small node: the router's FastAPI app cost each
    about 0.16 s of CPU, and agents only call the router."""
    code = "import sys, actors._agent, serving; print('serving._router' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
