"""Pin the public names of the runtime's packages: a new public name must show up in review."""

import controlplane


def test_controlplane_public_names():
    assert controlplane.__all__ == sorted(controlplane.__all__)
    assert controlplane.__all__ == [
        "AccessDenied", "AgentSpec", "Assignment", "BackpressureError", "BudgetExceeded", "BudgetTracker",
        "Budgets", "ConflictDecision", "ConflictPolicy", "ControlPlaneError", "Dag", "Event", "EventLog",
        "Finding", "MissionNotFound", "MissionSpec", "MissionStatus", "Plan", "Policies", "ReplicaUnavailable",
        "Scheduler", "SetupError", "SpecError", "TaskSpec", "TaskStatus", "default_model_path",
        "embedding_model_path", "load_mission", "parse_mission", "plan_schema", "repair_plan"]


def test_actors_public_names():
    import actors

    assert actors.__all__ == sorted(actors.__all__)
    assert actors.__all__ == ["AgentActor", "MISSION_NAMESPACE", "SupervisorActor", "find_supervisor", "follow",
                              "new_mission_id", "running_missions", "start_mission"]


def test_importing_controlplane_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, controlplane, controlplane._cli; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
