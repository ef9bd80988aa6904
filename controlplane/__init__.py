"""controlplane: a control plane for fleets of LLM agents on Ray.

What users call: the mission spec (`load_mission`, `MissionSpec`) and the error tree. The runtime lives in
`actors/`, `serving/` and `memory/`; the command line in `controlplane.cli`. Importing this package never imports Ray.
"""

from controlplane.config import AgentSpec, MissionSpec, TaskSpec, load_mission, parse_mission
from controlplane.errors import (
    AccessDenied,
    BackpressureError,
    BudgetExceeded,
    ControlPlaneError,
    MissionNotFound,
    ReplicaUnavailable,
    SetupError,
    SpecError,
)

__all__ = [
    "AccessDenied",
    "AgentSpec",
    "BackpressureError",
    "BudgetExceeded",
    "ControlPlaneError",
    "MissionNotFound",
    "MissionSpec",
    "ReplicaUnavailable",
    "SetupError",
    "SpecError",
    "TaskSpec",
    "load_mission",
    "parse_mission",
]
